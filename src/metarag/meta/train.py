"""Meta-training: learn an initialisation that adapts to a new domain in a few steps.

The loop reads top to bottom: draw a meta-batch of episodes (support + query
sets, each from one domain) -> one meta-step of the chosen algorithm (MAML,
first-order MAML, Reptile, Meta-SGD) -> skip it if a loss is not finite ->
clip -> Adam step on the meta-parameters -> log -> meta-validation (adapt on
dev support sets, score the dev query sets) -> checkpoint.

The meta-parameters are the weights the inner loop adapts (``inner.params``);
the rest keeps its pretrained values. Test-time adaptation (`metarag.meta.adapt`)
uses the same ``inner`` settings, so what is meta-trained is what is adapted.
With ``inner.in_context`` every prompt of an episode, support and query, holds
its support set as in-context examples (MAML over MetaICL-style episodes), as
adaptation with ``in_context`` will put them.

Exact resume: episodes come from a `MetaBatchSampler` whose state is its seed
and a counter; the checkpoint holds that, the meta-parameters (not the frozen
base: a small checkpoint, `metarag.loop`), Adam's moments, the learned inner
rates (Meta-SGD) and every RNG. The model runs in eval mode (no
dropout), so a resumed run repeats an uninterrupted one step for step.

Distributed (``torchrun --nproc-per-node N -m metarag meta-train``, `metarag.distributed`):
every rank samples the whole meta-batch and takes its slice of the tasks; the
meta-gradients, losses and meta-validation results are combined across ranks
before the (identical) optimizer step, so the run follows the single-process
one with the same seed; rank 0 alone writes the run folder.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from metarag import distributed
from metarag.checkpoint import Checkpoint
from metarag.data.episodes import Episode, MetaBatchSampler
from metarag.data.schema import QAExample, Task
from metarag.loop import DataConfig, Run, TrainingError, lr_factor, prepare, train_only
from metarag.meta.adapt import AdaptConfig, adapted_names
from metarag.meta.algorithms import (
    MetaStepResult,
    maml_step,
    meta_sgd_lrs,
    reptile_step,
    set_grads,
)
from metarag.meta.inner import Batch, LearningRate, NonFiniteLossError, inner_loop, rag_loss_fn
from metarag.meta.params import Params, split_params
from metarag.rag.build import AUX_PREFIX, ModelConfig
from metarag.rag.model import RAGModel, source_cache

__all__ = ["ALGORITHMS", "LEARNED_LR_PREFIX", "DataConfig", "MetaOptimConfig", "MetaTrainConfig",
           "MetaTrainResult", "TrainingError", "learned_inner_lrs", "meta_train", "meta_validate"]

ALGORITHMS = ("maml", "fomaml", "reptile", "meta_sgd")
LEARNED_LR_PREFIX = AUX_PREFIX + "inner_lr."


@dataclass
class MetaOptimConfig:
    """The outer loop.

    Attributes:
        algorithm: "maml" (second order), "fomaml", "reptile" or "meta_sgd".
        meta_batch: Episodes (tasks) per meta-step.
        n_shot, n_query: Support and query examples per episode.
        outer_lr: Adam's rate for the meta-parameters (and Meta-SGD's rates).
        warmup_steps, steps: Linear warm-up, then linear decay to 0 at ``steps``.
        grad_clip: Max global norm of the meta-gradient.
    """

    algorithm: str = "fomaml"
    meta_batch: int = 4
    n_shot: int = 8
    n_query: int = 8
    outer_lr: float = 1e-4
    warmup_steps: int = 10
    steps: int = 100
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"meta.algorithm must be one of {', '.join(ALGORITHMS)}, "
                             f"got {self.algorithm!r}")
        if min(self.meta_batch, self.n_shot, self.n_query, self.steps) < 1:
            raise ValueError("meta.meta_batch, n_shot, n_query and steps must be >= 1")
        if not self.outer_lr > 0:
            raise ValueError(f"meta.outer_lr must be positive, got {self.outer_lr}")


@dataclass
class MetaTrainConfig:
    """A whole meta-training run; saved as config.yaml in the run folder."""

    out: str = "runs/meta-train"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    inner: AdaptConfig = field(default_factory=lambda: AdaptConfig(steps=1, batch_size=None))
    meta: MetaOptimConfig = field(default_factory=MetaOptimConfig)
    eval_every: int = 25
    val_episodes: int = 1
    checkpoint_every: int = 25
    log_every: int = 5
    keep_checkpoints: int = 2
    max_bad_steps: int = 5
    tensorboard: bool = True
    cache_dir: str | None = "runs/cache"
    # The frozen generator encoder's outputs per source, reused across meta-steps
    # (`metarag.rag.model.EncoderCache`; for a decoder-only generator adapting only
    # its top layers, the frozen layers' outputs: `PrefixCache`); 0 turns it off.
    encoder_cache_mb: float = 512

    def __post_init__(self) -> None:
        for name in ("eval_every", "checkpoint_every", "log_every", "max_bad_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.encoder_cache_mb < 0:
            raise ValueError(f"encoder_cache_mb must be >= 0, got {self.encoder_cache_mb}")
        if self.val_episodes < 0:
            raise ValueError(f"val_episodes must be >= 0, got {self.val_episodes}")


@dataclass
class MetaTrainResult:
    out: Path
    step: int
    last_loss: float
    validation: dict[str, float]
    skipped_steps: list[int]
    seconds: float


@dataclass(frozen=True)
class _TaskData:
    """An episode's support or query set together with the task whose corpus it retrieves
    from, and the examples its prompts hold (``inner.in_context``: the support set)."""

    task: str
    batch: Batch
    demos: tuple[QAExample, ...] = ()


class _CorpusSwitch:
    """Points the model at the right task's corpus before each loss (a no-op if it already is)."""

    def __init__(self, model: RAGModel, tasks: Sequence[Task], corpora: Mapping[str, Any]) -> None:
        self.model = model
        self.passages = {t.name: t.corpus for t in tasks}
        self.corpora = corpora
        self.current: str | None = None

    def use(self, task: str) -> None:
        if task != self.current:
            self.model.set_corpus(self.passages[task], self.corpora[task])
            self.current = task


def _loss_fn(model: RAGModel, frozen: Params, corpus: _CorpusSwitch, encoder_cache_mb: float):
    """The RAG loss on the right task's corpus; `rag_loss_fn` caches what inner steps share.

    Built once per run, so its per-source cache of the generator's frozen part lives
    across meta-steps: BERT2BERT's encoder outputs, or a decoder-only model's
    frozen bottom layers when only layers above them adapt (`source_cache`).
    """
    adapted = [n for n, _ in model.named_parameters() if n not in frozen]
    rag_loss = rag_loss_fn(model, frozen, encoder_cache=source_cache(
        model, adapted, int(encoder_cache_mb * 2**20)))

    def loss_fn(params: Params, data: _TaskData) -> Tensor:
        corpus.use(data.task)
        if not data.demos:
            return rag_loss(params, data.batch)
        with model.demos_while(data.demos):
            return rag_loss(params, data.batch)

    return loss_fn


@dataclass(frozen=True)
class _Episode:
    support: _TaskData
    query: _TaskData
    task_name: str


def _wrap(episode: Episode, in_context: bool = False) -> _Episode:
    """An episode as the loss reads it; ``in_context``: its support set in every prompt, as
    test-time adaptation with ``in_context`` will put it (an example's own demo left out)."""
    name = episode.task_name
    demos = tuple(episode.support) if in_context else ()
    return _Episode(_TaskData(name, Batch.from_examples(episode.support), demos),
                    _TaskData(name, Batch.from_examples(episode.query), demos), name)


def meta_train(config: MetaTrainConfig, *, resume: bool = False, tasks: list[Task] | None = None,
               stop_after: int | None = None, show_progress: bool = True) -> MetaTrainResult:
    """Meta-train (or resume) a run; see the module docstring for the loop.

    Args:
        config: The run's configuration.
        resume: Continue from the newest checkpoint in ``config.out`` (it must exist).
        tasks: Already-loaded meta-training tasks (else loaded from ``config.data``).
        stop_after: Stop after this many meta-steps of *this* invocation; resume later.
        show_progress: A progress bar with loss and ETA.
    """
    from tqdm.auto import tqdm

    started = time.perf_counter()
    meta = config.meta
    distributed.init()  # joins torchrun's group when launched by it; else a no-op
    if meta.meta_batch < distributed.world_size():
        raise TrainingError(f"meta.meta_batch ({meta.meta_batch}) is smaller than the number "
                            f"of processes ({distributed.world_size()}), which would leave a "
                            "process without tasks; raise meta.meta_batch or run fewer")
    main = distributed.is_main()
    run = Run(config, total=meta.steps, resume=resume, stop_after=stop_after,
              hint="Lower inner.lr or meta.outer_lr", writes=main)
    tasks, built, corpora = prepare(config, tasks)
    sampler = MetaBatchSampler(tasks, n_shot=meta.n_shot, n_query=meta.n_query,
                               meta_batch_size=meta.meta_batch, seed=config.seed)
    model = built.model
    model.eval()  # no dropout: deterministic steps, as at adaptation time
    switch = _CorpusSwitch(model, tasks, corpora)

    # Only the meta-parameters learn (and are saved); the rest is the frozen base.
    names = train_only(model, adapted_names(model, config.inner))
    meta_params, frozen = split_params(model, names)
    loss_fn = _loss_fn(model, frozen, switch, config.encoder_cache_mb)
    rates = meta_sgd_lrs(meta_params, config.inner.lr) if meta.algorithm == "meta_sgd" else None
    aux = {LEARNED_LR_PREFIX + k: v for k, v in rates.items()} if rates else {}
    opt_params = {**meta_params, **aux}
    optimizer = torch.optim.Adam(list(opt_params.values()), lr=meta.outer_lr)

    def restore_method_state(ckpt: Checkpoint) -> None:
        if rates is not None:
            with torch.no_grad():
                for k, v in rates.items():
                    v.copy_(ckpt.model[LEARNED_LR_PREFIX + k])
        sampler.load_state_dict(ckpt.state["sampler"])

    run.restore(model, optimizer, list(opt_params), extra=restore_method_state)
    distributed.broadcast_params(opt_params.values())  # every rank starts from rank 0's
    val_episodes = _validation_episodes(tasks, config)

    loss_value = float("nan")
    validation: dict[str, float] = {}
    bar = tqdm(range(run.start, run.end), initial=run.start, total=meta.steps,
               desc=f"meta-train ({meta.algorithm})", disable=not (show_progress and main))
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = meta.outer_lr * lr_factor(step, meta.warmup_steps, meta.steps)
        # Every rank draws the whole meta-batch (the same on all) and runs its slice.
        episodes = [_wrap(e, config.inner.in_context) for e in sampler.sample()]
        mine = distributed.shard(episodes)
        error: NonFiniteLossError | None = None
        try:
            result = _meta_step(meta.algorithm, loss_fn, meta_params, mine, config.inner,
                                rates)
        except NonFiniteLossError as err:
            result, error = None, err
        # Losses over the whole meta-batch; a failure on any rank skips the step on all.
        losses = _meta_batch_losses(result, error, len(episodes))
        if losses.failure is not None:
            run.skip(step, losses.failure, cause=error)
            continue
        optimizer.zero_grad(set_to_none=True)
        set_grads(meta_params, result.grads)
        if rates is not None and result.lr_grads:
            set_grads(rates, result.lr_grads)
        # Mean over this rank's tasks -> mean over the meta-batch, equal on every rank.
        distributed.all_reduce_grads(opt_params.values(), len(mine), len(episodes))
        grad_norm = torch.nn.utils.clip_grad_norm_(list(opt_params.values()),
                                                   meta.grad_clip).item()
        if not math.isfinite(grad_norm):
            run.skip(step, "non-finite gradient")
            continue
        optimizer.step()
        run.step_ok()
        done = step + 1
        loss_value = losses.query if losses.query is not None else float("nan")
        if run.due(done, config.log_every):
            run.log.write({"step": done, "query_loss": losses.query,
                           "support_loss": losses.support, "grad_norm": grad_norm,
                           "lr": optimizer.param_groups[0]["lr"],
                           "tasks": [e.task_name for e in episodes],
                           "seconds": time.perf_counter() - started})
        bar.set_postfix(query=f"{loss_value:.3f}", support=f"{losses.support or 0:.3f}")
        if val_episodes and run.due(done, config.eval_every, last=meta.steps):
            # Each rank scores its slice of the dev episodes; rank order is episode order.
            mine_val = _validation_losses(loss_fn, meta_params, distributed.shard(val_episodes),
                                          config.inner, rates)
            validation = _summarise([r for part in distributed.all_gather_objects(mine_val)
                                     for r in part])
            run.log.write({"step": done, **{f"val/{k}": v for k, v in validation.items()}})
        if run.due(done, config.checkpoint_every):
            run.save(done, model=model, trained=names, optimizer=optimizer,
                     param_names=list(opt_params), aux=aux,
                     state={"sampler": sampler.state_dict(), "validation": validation,
                            "kind": "meta-train", "tasks": [t.name for t in tasks]})
    run.close()
    return MetaTrainResult(run.out, run.end, loss_value, validation, run.skipped,
                           time.perf_counter() - started)


@dataclass(frozen=True)
class _MetaBatchLosses:
    """A meta-step's losses over the whole meta-batch (all ranks), as a single process logs them.

    Attributes:
        query: Mean query loss over the tasks (None when no task computed one).
        support: Mean support loss of the meta-parameters over the tasks that have one.
        failure: Why the step is skipped (a non-finite loss on some rank), or None.
    """

    query: float | None
    support: float | None
    failure: str | None


def _meta_batch_losses(result: MetaStepResult | None, error: NonFiniteLossError | None,
                       n_total: int) -> _MetaBatchLosses:
    """Sum this rank's task losses with the other ranks' (one collective; none alone)."""
    tasks = result.tasks if result is not None else []
    queries = [t.query for t in tasks if t.query is not None]
    supports = [t.support[0] for t in tasks if t.support]
    failed, q_sum, n_q, s_sum, n_s = distributed.all_reduce_sums(
        [float(error is not None), sum(queries), len(queries), sum(supports), len(supports)])
    failure = None
    if failed:
        # Rare: the reason, from the first rank that failed, for every rank's log.
        reasons = distributed.all_gather_objects(None if error is None else str(error))
        failure = next((f"rank {r}: {m}" if distributed.is_distributed() else m)
                       for r, m in enumerate(reasons) if m is not None)
    return _MetaBatchLosses(q_sum / n_total if n_q else None, s_sum / n_s if n_s else None,
                            failure)


def _meta_step(algorithm: str, loss_fn, meta_params: Params, episodes: list[_Episode],
               inner: AdaptConfig, rates: Params | None):
    if algorithm == "reptile":
        return reptile_step(loss_fn, meta_params, episodes, inner_steps=max(1, inner.steps),
                            inner_lr=inner.lr)
    lr: LearningRate = rates if rates is not None else inner.lr
    return maml_step(loss_fn, meta_params, episodes, inner_steps=inner.steps, inner_lr=lr,
                     first_order=algorithm == "fomaml")


def _validation_episodes(tasks: Sequence[Task], config: MetaTrainConfig) -> list[_Episode]:
    """Fixed dev episodes (the same at each validation) from tasks with a big enough dev split."""
    meta = config.meta
    episodes = []
    for task in tasks:
        if config.val_episodes and len(task.dev) >= meta.n_shot + meta.n_query:
            sampler = MetaBatchSampler([task], n_shot=meta.n_shot, n_query=meta.n_query,
                                       meta_batch_size=config.val_episodes, seed=config.seed,
                                       split="dev")
            episodes += [_wrap(e, config.inner.in_context) for e in sampler.sample()]
    return episodes


def meta_validate(loss_fn, meta_params: Params, episodes: Sequence[_Episode], inner: AdaptConfig,
                  rates: Params | None = None) -> dict[str, float]:
    """Query loss before and after adapting on each dev episode's support set, per task and mean."""
    return _summarise(_validation_losses(loss_fn, meta_params, episodes, inner, rates))


def _validation_losses(loss_fn, meta_params: Params, episodes: Sequence[_Episode],
                       inner: AdaptConfig, rates: Params | None
                       ) -> list[tuple[str, float, float]]:
    """(task, query loss before, after adapting) per episode, in order."""
    start = {k: v.detach() for k, v in meta_params.items()}
    lr = {k: v.detach() for k, v in rates.items()} if rates is not None else inner.lr
    records = []
    for ep in episodes:
        with torch.no_grad():
            before = loss_fn(start, ep.query).item()
        adapted = inner_loop(loss_fn, start, ep.support, steps=max(1, inner.steps), lr=lr,
                             first_order=True)
        with torch.no_grad():
            records.append((ep.task_name, before, loss_fn(adapted, ep.query).item()))
    return records


def _summarise(records: Sequence[tuple[str, float, float]]) -> dict[str, float]:
    before: dict[str, list[float]] = {}
    after: dict[str, list[float]] = {}
    for task, loss_before, loss_after in records:
        before.setdefault(task, []).append(loss_before)
        after.setdefault(task, []).append(loss_after)
    summary = {"loss_before": _mean(before), "loss_after": _mean(after)}
    summary.update({f"loss_after/{k}": sum(v) / len(v) for k, v in after.items()})
    return summary


def _mean(by_task: Mapping[str, list[float]]) -> float:
    values = [x for v in by_task.values() for x in v]
    return sum(values) / len(values) if values else float("nan")


def learned_inner_lrs(checkpoint_model: Mapping[str, Tensor]) -> Params:
    """Meta-SGD's learned per-parameter rates from a checkpoint's weights (empty if none)."""
    return {k[len(LEARNED_LR_PREFIX):]: v for k, v in checkpoint_model.items()
            if k.startswith(LEARNED_LR_PREFIX)}
