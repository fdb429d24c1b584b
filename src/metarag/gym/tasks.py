"""Where the environment's tasks come from, and how one episode is drawn from a task.

An episode is a new task: ``shots`` support examples from its train split (to
adapt on) and ``n_questions`` questions from the query split (to answer), never
sharing an example, as in `metarag.data.episodes`. Draws use the environment's
``np_random``, so ``reset(seed=...)`` fixes them; pools are sorted by example id
first, so episodes do not depend on the order a loader returned examples in.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from metarag.data.schema import SPLITS, QAExample, Task
from metarag.errors import DataError

TaskSource = str | os.PathLike[str] | Task


@dataclass(frozen=True)
class EpisodePlan:
    """What one episode shows: the task, its support set and the questions to answer."""

    task: Task
    support: tuple[QAExample, ...]
    questions: tuple[QAExample, ...]


def resolve_tasks(tasks: TaskSource | Sequence[TaskSource] | None, *, seed: int = 0
                  ) -> list[Task]:
    """The tasks episodes are drawn from.

    Args:
        tasks: None for the embedded synthetic suite (`metarag.data.synthetic`, 8
            domains); else task sources for `metarag.data.loaders.load_task`
            (``"synthetic/legal"``, a shared dataset folder such as
            ``../shared/data/agxqa``, a user task folder) or loaded `Task` objects.
        seed: Split seed given to the loaders (and the synthetic suite's seed).

    Raises:
        ValueError: No tasks, or two tasks with the same name.
    """
    if tasks is None:
        from metarag.data.synthetic import synthetic_suite

        return synthetic_suite(seed=seed)
    if isinstance(tasks, (str, os.PathLike, Task)):
        tasks = [tasks]
    loaded = []
    for source in tasks:
        if isinstance(source, Task):
            loaded.append(source)
        else:
            from metarag.data.loaders import load_task

            loaded.append(load_task(source, seed=seed))
    if not loaded:
        raise ValueError("tasks is empty: give at least one task source, or None for the "
                         "synthetic suite")
    names = [t.name for t in loaded]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"tasks names {dupes} more than once; each task may appear once")
    return loaded


def answerable(examples: Sequence[QAExample]) -> tuple[QAExample, ...]:
    """Examples with at least one reference answer (others cannot be scored), sorted by id."""
    return tuple(sorted((e for e in examples if e.answers), key=lambda e: e.id))


@dataclass(frozen=True)
class TaskPools:
    """A task's answerable examples to draw support sets and questions from (sorted by id)."""

    task: Task
    train: tuple[QAExample, ...]
    query: tuple[QAExample, ...]  # the query split's; the train pool itself when split="train"


def task_pools(task: Task, *, shots: int, n_questions: int, split: str) -> TaskPools:
    """The pools of ``task``, checked to be large enough for an episode of this size.

    Raises:
        ValueError: ``split`` is not a split name.
        DataError: Too few answerable examples, naming the task, the split and the sizes.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    train, query = answerable(task.train), answerable(task.split(split))
    where = f"task {task.name!r}"
    if split == "train":
        if len(train) < shots + n_questions:
            raise DataError(where, "split 'train'",
                            f"has {len(train)} answerable examples; shots + n_questions = "
                            f"{shots + n_questions} are needed (they never overlap)")
    elif len(train) < shots:
        raise DataError(where, "split 'train'",
                        f"has {len(train)} answerable examples, fewer than shots={shots}")
    elif len(query) < n_questions:
        raise DataError(where, f"split {split!r}", f"has {len(query)} answerable examples, "
                        f"fewer than n_questions={n_questions}")
    return TaskPools(task, train, query)


def draw_episode(pools: TaskPools, rng: np.random.Generator, *, shots: int,
                 n_questions: int) -> EpisodePlan:
    """Draw a support set, then questions that are not in it (sizes checked by `task_pools`)."""
    support = [pools.train[i] for i in rng.choice(len(pools.train), size=shots, replace=False)]
    taken = {e.id for e in support}
    pool = [e for e in pools.query if e.id not in taken]
    questions = [pool[i] for i in rng.choice(len(pool), size=n_questions, replace=False)]
    return EpisodePlan(pools.task, tuple(support), tuple(questions))
