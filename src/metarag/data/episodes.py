"""Episodes for meta-learning: k-shot support sets and query sets drawn from tasks.

An episode is what one inner/outer step of MAML sees: the model adapts on the
support set and is scored on the query set (Finn et al. 2017). Both come from
the same split of one task and never share an example.

Reproducibility and exact resume: episode number ``i`` is drawn from an RNG
seeded by ``(seed, i)`` alone, so a sampler's whole state is its seed and the
number of episodes drawn so far. `state_dict()` is plain JSON; restoring it
into a fresh sampler over the same data gives exactly the episodes the
interrupted run would have drawn next, at O(1) cost (no replay).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from metarag.data.schema import QAExample, Task
from metarag.errors import DataError


@dataclass(frozen=True)
class Episode:
    """One task's support set (to adapt on) and query set (to score the adapted model).

    Attributes:
        support: The n_shot examples used by the inner loop.
        query: The n_query examples used by the outer loss; disjoint from support.
        task_name: The task both sets come from.
    """

    support: list[QAExample]
    query: list[QAExample]
    task_name: str


def _check_sizes(n_shot: int, n_query: int) -> None:
    if n_shot < 0 or n_query < 0:
        raise ValueError(f"n_shot and n_query must be >= 0, got n_shot={n_shot}, n_query={n_query}")
    if n_shot + n_query == 0:
        raise ValueError("an episode needs at least one example: n_shot + n_query must be >= 1")


def _pool(examples: Sequence[QAExample], task_name: str, split: str, need: int) -> list[QAExample]:
    """Sort by id (so episodes do not depend on input order) and check the pool is big enough."""
    pool = sorted(examples, key=lambda e: e.id)
    ids = [e.id for e in pool]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise DataError(f"task {task_name!r}", f"split {split!r}",
                        f"duplicate example ids {dupes}: support and query could overlap")
    if len(pool) < need:
        raise DataError(f"task {task_name!r}", f"split {split!r}",
                        f"has {len(pool)} examples but an episode needs n_shot + n_query = {need}; "
                        "lower n_shot/n_query or give the task more examples in this split")
    return pool


def _draw(pool: Sequence[QAExample], rng: random.Random, n_shot: int, n_query: int,
          task_name: str) -> Episode:
    # Sampling without replacement is what keeps support and query disjoint.
    picked = rng.sample(range(len(pool)), n_shot + n_query)
    return Episode(support=[pool[i] for i in picked[:n_shot]],
                   query=[pool[i] for i in picked[n_shot:]], task_name=task_name)


class EpisodeSampler:
    """Draws k-shot episodes from one task's split, reproducibly and resumably.

    Example:
        >>> sampler = EpisodeSampler(task, n_shot=4, n_query=8, seed=0)
        >>> episode = sampler.sample()          # or: for episode in sampler: ...
        >>> state = sampler.state_dict()        # JSON-serialisable; save with the checkpoint
    """

    def __init__(
        self,
        task_or_examples: Task | Sequence[QAExample],
        *,
        n_shot: int,
        n_query: int,
        seed: int,
        split: str = "train",
        task_name: str | None = None,
    ) -> None:
        """Build a sampler.

        Args:
            task_or_examples: A task (its `split` is used) or the examples themselves.
            n_shot: Support-set size (0 allowed, for zero-shot evaluation episodes).
            n_query: Query-set size.
            seed: Episode ``i`` depends only on ``(seed, i)``.
            split: Which split of the task to draw from; ignored for a plain list.
            task_name: Name for episodes drawn from a plain list (default "examples").

        Raises:
            DataError: The split has fewer than n_shot + n_query examples, or
                repeats an example id.
        """
        _check_sizes(n_shot, n_query)
        if isinstance(task_or_examples, Task):
            self.task_name = task_name or task_or_examples.name
            examples = task_or_examples.split(split)
        else:
            self.task_name = task_name or "examples"
            examples = list(task_or_examples)
        self.n_shot, self.n_query, self.seed, self.split = n_shot, n_query, seed, split
        self._pool = _pool(examples, self.task_name, split, n_shot + n_query)
        self.episodes_drawn = 0

    def sample(self) -> Episode:
        """Draw the next episode."""
        rng = random.Random(f"metarag-episode:{self.seed}:{self.episodes_drawn}")
        self.episodes_drawn += 1
        return _draw(self._pool, rng, self.n_shot, self.n_query, self.task_name)

    def __iter__(self) -> Iterator[Episode]:
        """Endless stream of episodes; stop with `itertools.islice` or a step count."""
        while True:
            yield self.sample()

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: the seed, the episodes drawn, and what they came from."""
        return {"kind": "EpisodeSampler", "seed": self.seed, "episodes_drawn": self.episodes_drawn,
                "task_name": self.task_name, "split": self.split, "n_shot": self.n_shot,
                "n_query": self.n_query, "pool_size": len(self._pool)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from `state_dict()`: the next episode is the one the saved run would draw.

        Raises:
            ValueError: The state was saved from a sampler over other data or
                episode sizes, where resuming would not be exact.
        """
        _check_state(state, self.state_dict(), ("kind", "task_name", "split", "n_shot", "n_query",
                                                "pool_size"), "episodes_drawn")
        self.seed = int(state["seed"])
        self.episodes_drawn = int(state["episodes_drawn"])


class MetaBatchSampler:
    """Draws meta-batches: ``meta_batch_size`` episodes, each from a randomly chosen task.

    Task choice: each episode's task is drawn independently (with replacement,
    so a batch may hold two episodes of one task) either uniformly
    (``weighting="uniform"``, the MAML default: every domain counts the same)
    or with probability proportional to the size of the task's split
    (``weighting="proportional"``: every example counts the same, so big tasks
    dominate). Episode ``j`` of batch ``b`` depends only on ``(seed, b, j)``.
    """

    def __init__(
        self,
        tasks: Sequence[Task],
        *,
        n_shot: int,
        n_query: int,
        meta_batch_size: int,
        seed: int,
        split: str = "train",
        weighting: Literal["uniform", "proportional"] = "uniform",
    ) -> None:
        """Build a sampler over several tasks.

        Args:
            tasks: The meta-training tasks; names must be unique.
            n_shot: Support-set size of every episode.
            n_query: Query-set size of every episode.
            meta_batch_size: Episodes per meta-batch.
            seed: Batch ``b`` depends only on ``(seed, b)``.
            split: Split of every task to draw from.
            weighting: "uniform" or "proportional" task choice (see the class docstring).

        Raises:
            DataError: A task's split is smaller than n_shot + n_query.
            ValueError: No tasks, repeated task names, or bad sizes/weighting.
        """
        _check_sizes(n_shot, n_query)
        if not tasks:
            raise ValueError("MetaBatchSampler needs at least one task")
        if meta_batch_size < 1:
            raise ValueError(f"meta_batch_size must be >= 1, got {meta_batch_size}")
        if weighting not in ("uniform", "proportional"):
            raise ValueError(f"weighting must be 'uniform' or 'proportional', got {weighting!r}")
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique, got {names}")
        self.n_shot, self.n_query, self.seed, self.split = n_shot, n_query, seed, split
        self.meta_batch_size, self.weighting = meta_batch_size, weighting
        self.task_names = names
        self._pools = [_pool(t.split(split), t.name, split, n_shot + n_query) for t in tasks]
        sizes = [len(p) for p in self._pools]
        weights = [1.0] * len(sizes) if weighting == "uniform" else [float(s) for s in sizes]
        self.task_probabilities = {n: w / sum(weights) for n, w in zip(names, weights, strict=True)}
        self.batches_drawn = 0

    def sample(self) -> list[Episode]:
        """Draw the next meta-batch."""
        batch = []
        weights = list(self.task_probabilities.values())
        for j in range(self.meta_batch_size):
            rng = random.Random(f"metarag-metabatch:{self.seed}:{self.batches_drawn}:{j}")
            t = rng.choices(range(len(self._pools)), weights=weights)[0]
            batch.append(_draw(self._pools[t], rng, self.n_shot, self.n_query, self.task_names[t]))
        self.batches_drawn += 1
        return batch

    def __iter__(self) -> Iterator[list[Episode]]:
        """Endless stream of meta-batches."""
        while True:
            yield self.sample()

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: the seed, the batches drawn, and what they came from."""
        return {"kind": "MetaBatchSampler", "seed": self.seed, "batches_drawn": self.batches_drawn,
                "task_names": list(self.task_names), "split": self.split, "n_shot": self.n_shot,
                "n_query": self.n_query, "meta_batch_size": self.meta_batch_size,
                "weighting": self.weighting, "pool_sizes": [len(p) for p in self._pools]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from `state_dict()`: the next batch is the one the saved run would draw.

        Raises:
            ValueError: The state was saved over other tasks or settings.
        """
        _check_state(state, self.state_dict(), ("kind", "task_names", "split", "n_shot", "n_query",
                                                "meta_batch_size", "weighting", "pool_sizes"),
                     "batches_drawn")
        self.seed = int(state["seed"])
        self.batches_drawn = int(state["batches_drawn"])


TaskSampler = MetaBatchSampler
"""Alias: the multi-task sampler under the name some meta-learning code uses."""


def _check_state(state: dict[str, Any], current: dict[str, Any], keys: Sequence[str],
                 counter: str) -> None:
    missing = [k for k in (*keys, "seed", counter) if k not in state]
    if missing:
        raise ValueError(f"sampler state lacks {missing}; was it saved by state_dict()?")
    # JSON turns tuples into lists; compare in that form.
    differ = [k for k in keys if state[k] != current[k]]
    if differ:
        shown = "; ".join(f"{k}: saved {state[k]!r}, now {current[k]!r}" for k in differ)
        raise ValueError(f"cannot resume exactly, the sampler differs from the saved one "
                         f"({shown}); rebuild it with the saved data and settings")
