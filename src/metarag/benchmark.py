"""The evaluation protocol: leave one domain out, adapt every method the same way, compare.

For each held-out domain:

1. **Train the starting points** on the other domains, at the same budget:
   the meta-learned init (`metarag.meta.train`) and the multi-task model
   (`metarag.train`, back-propagating through as many examples as meta-training).
   The base model (the untrained warm start) needs no training.
2. **Adapt** each starting point with k shots from the held-out domain's train
   split (k in ``shots``, several seeds): same `adapt_params`, same steps, same
   parameter subset, and a learning rate picked from the same grid for every
   method by the loss on the held-out domain's dev split.
3. **Score** answers and retrieval on a fixed subset of the held-out test split.

Methods: ``meta`` (the meta-learned init + adaptation), ``multitask_finetune``,
``finetune`` (base + adaptation), ``in_context`` (base, no weight changes, the
k support examples in every prompt, as many as fit the token budget: what a user
of a pretrained LM tries first) and ``zero_shot`` (base, no adaptation). At 0
shots a method is its starting point, unadapted: deterministic, so it is scored
once (one record, no interval), not once per seed. A steps curve (score against
adaptation steps at ``curve_shots``) comes from snapshots of the same runs.

Everything lands in ``out/results.json``; `metarag.evaluation.report` turns it
into report.md and PNG plots. Trained starting points are kept under
``out/<domain>/`` and reused (or resumed) when the benchmark is run again with
the same training settings; other settings are refused, naming what differs.
"""

from __future__ import annotations

import copy
import json
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from metarag.checkpoint import latest_checkpoint, load_checkpoint
from metarag.config import ConfigError, from_dict, to_dict
from metarag.data.schema import QAExample, Task
from metarag.errors import MetaRAGError
from metarag.meta.adapt import AdaptConfig, adapted_names, support_batches, swapped_params
from metarag.meta.inner import Batch, inner_loop, rag_loss_fn
from metarag.meta.params import Params, split_params
from metarag.meta.train import MetaTrainConfig, meta_train
from metarag.rag.build import BuiltModel, build_model, load_weights
from metarag.train import OptimConfig, TrainConfig, train

logger = logging.getLogger(__name__)

METHODS = ("meta", "multitask_finetune", "finetune", "in_context", "zero_shot")
_UNTRAINED = ("in_context", "zero_shot")  # scored from the base model, no adaptation
METRICS = ["rougeL", "f1", "exact_match", "bleu", "meteor", "rouge1", "rouge2", "recall@5"]


@dataclass
class BenchmarkConfig:
    """A leave-one-domain-out comparison; ``meta`` also gives the data and model.

    Attributes:
        out: Folder for results.json, the report, plots and trained starting points.
        held_out: Task names to hold out, one at a time (empty: every task).
        shots: Support-set sizes to adapt with (0: no adaptation).
        seeds: One support sample per seed (and shots).
        lr_grid: Adaptation learning rates; each method gets the best on dev.
        adapt: Steps, adapted parameters and batch size (``lr`` is taken from the grid).
        curve_shots, curve_steps: The score-against-steps curve (empty: none).
        test_examples: Test questions scored per held-out domain (a fixed subset).
        dev_examples: Dev questions that pick the learning rate.
        meta: The meta-training run (data, model, inner loop, outer loop).
        multitask: The multi-task baseline's optimiser.
        match_budget: Replace ``multitask.steps`` so that the baseline back-propagates
            through as many examples as meta-training does (`meta_examples`: support
            sets once per inner step, plus query sets) at its own batch size.
    """

    out: str = "runs/benchmark"
    held_out: list[str] = field(default_factory=list)
    shots: list[int] = field(default_factory=lambda: [0, 4, 16, 64])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    lr_grid: list[float] = field(default_factory=lambda: [1e-3, 3e-3])
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    curve_shots: int = 16
    curve_steps: list[int] = field(default_factory=lambda: [0, 1, 2, 4, 8])
    test_examples: int = 30
    dev_examples: int = 16
    meta: MetaTrainConfig = field(default_factory=MetaTrainConfig)
    multitask: OptimConfig = field(default_factory=OptimConfig)
    match_budget: bool = True
    methods: list[str] = field(default_factory=lambda: list(METHODS))

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
        if not self.seeds or not self.shots or not self.lr_grid:
            raise ValueError("seeds, shots and lr_grid must not be empty")
        if min(self.shots) < 0 or self.test_examples < 1:
            raise ValueError("shots must be >= 0 and test_examples >= 1")


class BenchmarkError(MetaRAGError, RuntimeError):
    """The benchmark cannot run as configured (e.g. too few examples in a held-out domain)."""


def run_benchmark(config: BenchmarkConfig, *, tasks: list[Task] | None = None,
                  show_progress: bool = True) -> dict[str, Any]:
    """Run the protocol; returns (and writes) the results dict that `write_report` reads."""
    from metarag.data.loaders import load_tasks
    from metarag.evaluation.report import write_report

    started = time.perf_counter()
    data = config.meta.data
    if tasks is None:
        tasks = load_tasks(data.data, data.tasks or None, seed=data.seed,
                           max_tokens=data.max_tokens, overlap=data.overlap)
    by_name = {t.name: t for t in tasks}
    held_out = config.held_out or list(by_name)
    missing = [h for h in held_out if h not in by_name]
    if missing:
        raise BenchmarkError(f"held-out tasks {missing} are not among the loaded tasks "
                             f"({', '.join(by_name)})")
    if len(tasks) < 2:
        raise BenchmarkError("leave-one-domain-out needs at least two tasks")
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    for name in held_out:
        target = by_name[name]
        _check_sizes(target, config)
        others = [t for t in tasks if t.name != name]
        starts = _starting_points(config, name, others, show_progress)
        for method in [m for m in config.methods if m not in _UNTRAINED]:
            records += _evaluate_method(config, method, starts[method], target, show_progress)
        if "in_context" in config.methods:
            records += _evaluate_in_context(config, starts["finetune"], target)
        if "zero_shot" in config.methods:
            starts["finetune"].use_corpus(target.corpus, language=target.language)
            records.append(_record(target, "zero_shot", 0, 0, config.seeds[0], None,
                                   _score(starts["finetune"], target, config)))
        _save(out, config, records, time.perf_counter() - started)
    results = _save(out, config, records, time.perf_counter() - started)
    write_report(results, out)
    return results


def _check_sizes(task: Task, config: BenchmarkConfig) -> None:
    need = max(max(config.shots), config.curve_shots if config.curve_steps else 0)
    if len(task.train) < need:
        raise BenchmarkError(f"held-out task {task.name!r} has {len(task.train)} train examples; "
                             f"{need} shots need at least that many")
    if not task.test or not task.dev:
        raise BenchmarkError(f"held-out task {task.name!r} needs dev and test examples")


def _slug(name: str) -> str:
    return name.replace("/", "_")


def _starting_points(config: BenchmarkConfig, held_out: str, others: list[Task],
                     show_progress: bool) -> dict[str, BuiltModel]:
    """Base, meta-learned and multi-task models for one held-out domain (trained or reused)."""
    root = Path(config.out) / _slug(held_out)
    base = build_model(config.meta.model, seed=config.meta.seed)
    base.cache_dir = config.meta.cache_dir
    base.model.eval()
    starts = {"finetune": base}
    if "meta" in config.methods:
        meta_cfg = copy.deepcopy(config.meta)
        meta_cfg.out = str(root / "meta")
        _train_or_resume(meta_train, meta_cfg, meta_cfg.meta.steps, others, show_progress)
        starts["meta"] = _load_start(base, meta_cfg.out)
    if "multitask_finetune" in config.methods:
        mt_cfg = _multitask_config(config, root / "multitask")
        _train_or_resume(train, mt_cfg, mt_cfg.optim.steps, others, show_progress)
        starts["multitask_finetune"] = _load_start(base, mt_cfg.out)
    return starts


def _multitask_config(config: BenchmarkConfig, out: Path) -> TrainConfig:
    meta = config.meta
    optim = copy.deepcopy(config.multitask)
    if config.match_budget:
        optim.steps = max(1, round(meta_examples(meta) / optim.batch_size))
    # The same weights as meta-training's (and every method's adaptation) train.
    return TrainConfig(out=str(out), seed=meta.seed, data=meta.data, model=meta.model,
                       params=list(meta.inner.params), exclude=list(meta.inner.exclude),
                       optim=optim, eval_every=max(1, optim.steps), checkpoint_every=
                       max(1, optim.steps // 4), tensorboard=meta.tensorboard,
                       cache_dir=meta.cache_dir)


def meta_examples(config: MetaTrainConfig) -> int:
    """Examples meta-training back-propagates through: each episode's support set once
    per inner step, and its query set."""
    m = config.meta
    return m.steps * m.meta_batch * (max(1, config.inner.steps) * m.n_shot + m.n_query)


# Settings that do not change what a run learns: a run differing only in these is reused.
_BOOKKEEPING = {"out", "cache_dir", "tensorboard", "log_every", "checkpoint_every",
                "keep_checkpoints", "encoder_cache_mb"}


def _train_or_resume(fn: Any, cfg: Any, steps: int, tasks: list[Task], show_progress: bool
                     ) -> None:
    last = latest_checkpoint(cfg.out)
    if last is not None:
        state = load_checkpoint(last).state
        _check_same_settings(cfg, state.get("config"), last)
        if int(state["step"]) >= steps:
            logger.info("reusing %s", last)
            return
    fn(cfg, resume=last is not None, tasks=tasks, show_progress=show_progress)


def _check_same_settings(cfg: Any, saved: Any, checkpoint: Any) -> None:
    """Refuse to reuse or resume a starting point trained with other settings.

    Configs saved before a field existed compare with that field at its default.
    """
    try:
        before = to_dict(from_dict(type(cfg), saved))
    except ConfigError:  # no config, or one this version cannot read
        before = {}
    before, now = _flat(before), _flat(to_dict(cfg))
    keys = {k for k in set(now) | set(before) if k.split(".")[0] not in _BOOKKEEPING}
    changed = sorted(k for k in keys if before.get(k) != now.get(k))
    if changed:
        raise BenchmarkError(
            f"{checkpoint} was trained with other settings ({', '.join(changed)} differ from "
            "this benchmark's); delete its folder or give the benchmark another `out`")


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"meta": {"steps": 60}}`` -> ``{"meta.steps": 60}``."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def _load_start(base: BuiltModel, run: str) -> BuiltModel:
    """A copy of the base model with a run's trained weights (same config, so same shapes)."""
    model = copy.deepcopy(base.model)
    load_weights(model, load_checkpoint(run))
    model.eval()
    return BuiltModel(model, base.passage_encoder, base.cache_dir)


def _evaluate_method(config: BenchmarkConfig, method: str, start: BuiltModel, task: Task,
                     show_progress: bool) -> list[dict[str, Any]]:
    """Every (shots, seed) cell of one method on one held-out task, plus its steps curve."""
    from tqdm.auto import tqdm

    records = []
    start.use_corpus(task.corpus, language=task.language)
    names = adapted_names(start.model, config.adapt)
    if 0 in config.shots:  # unadapted: deterministic, so one record (no seed to vary)
        records.append(_record(task, method, 0, 0, config.seeds[0], None,
                               _score(start, task, config)))
    cells = [(shots, seed) for shots in config.shots if shots > 0 for seed in config.seeds]
    for shots, seed in tqdm(cells, desc=f"{task.name}: {method}", disable=not show_progress):
        support = _support(task, shots, seed)
        curve = config.curve_steps if shots == config.curve_shots else []
        lr, snapshots = _adapt_with_best_lr(config, start, names, support, task, curve)
        for steps, params in sorted(snapshots.items()):
            with swapped_params(start.model, params):
                scores = _score(start, task, config)
            records.append(_record(task, method, shots, steps, seed, lr, scores,
                                   curve=steps != config.adapt.steps))
        logger.info("%s %s shots=%d seed=%d lr=%g: ROUGE-L %.1f", task.name, method, shots,
                    seed, lr, records[-1]["scores"].get("rougeL") or 0.0)
    return records


def _evaluate_in_context(config: BenchmarkConfig, base: BuiltModel, task: Task
                         ) -> list[dict[str, Any]]:
    """In-context k-shot: each cell's support set as demos in the base model's prompts.

    0 shots is the zero-shot method, so only k > 0 is scored; no rate is picked.
    """
    base.use_corpus(task.corpus, language=task.language)
    records = []
    for shots in [s for s in config.shots if s > 0]:
        for seed in config.seeds:
            base.model.use_demos(_support(task, shots, seed))
            try:
                scores = _score(base, task, config)
            finally:
                base.model.demos = ()
            records.append(_record(task, "in_context", shots, 0, seed, None, scores))
            logger.info("%s in_context shots=%d seed=%d: ROUGE-L %.1f", task.name, shots, seed,
                        scores.get("rougeL") or 0.0)
    return records


def _support(task: Task, shots: int, seed: int) -> list[QAExample]:
    """``shots`` train examples drawn by (seed, shots); a fixed sample for each cell."""
    pool = sorted(task.train, key=lambda e: e.id)
    return random.Random(f"benchmark:{task.name}:{seed}:{shots}").sample(pool, shots)


def _adapt_snapshots(start: BuiltModel, names: list[str], support: list[QAExample],
                     steps: int, lr: float, batch_size: int | None, keep: list[int]
                     ) -> dict[int, Params]:
    """Adapted parameters after ``steps`` SGD steps, and after each step count in ``keep``.

    The same computation as `metarag.meta.adapt.adapt_params`, with snapshots along the way.
    """
    model = start.model
    meta, frozen = split_params(model, names)
    current = {k: v.detach() for k, v in meta.items()}
    loss_fn = rag_loss_fn(model, frozen)
    wanted = {s for s in keep if s <= steps} | {steps}
    out = {0: current} if 0 in wanted else {}
    for step, batch in enumerate(support_batches(support, steps, batch_size), start=1):
        current = {k: v.detach() for k, v in
                   inner_loop(loss_fn, current, batch, steps=1, lr=lr, first_order=True).items()}
        if step in wanted:
            out[step] = current
    return out


def _adapt_with_best_lr(config: BenchmarkConfig, start: BuiltModel, names: list[str],
                        support: list[QAExample], task: Task, curve: list[int]
                        ) -> tuple[float, dict[int, Params]]:
    """Adapt at every grid rate; keep the one whose model has the lowest held-out dev loss.

    Returns the rate and its snapshots (see `_adapt_snapshots`).
    """
    dev = Batch.from_examples(task.dev[:config.dev_examples])
    best: tuple[float, float, dict[int, Params]] | None = None
    for lr in config.lr_grid:
        snapshots = _adapt_snapshots(start, names, support, config.adapt.steps, lr,
                                     config.adapt.batch_size, curve)
        if len(config.lr_grid) == 1:
            return lr, snapshots
        with swapped_params(start.model, snapshots[config.adapt.steps]), torch.no_grad():
            loss = start.model(dev.questions, dev.answers).loss.item()
        loss = loss if loss == loss else float("inf")  # NaN loses
        if best is None or loss < best[0]:
            best = (loss, lr, snapshots)
    return best[1], best[2]


def _score(built: BuiltModel, task: Task, config: BenchmarkConfig) -> dict[str, float | None]:
    from metarag.evaluation.qa import evaluate_qa

    result = evaluate_qa(built, task, split="test", max_examples=config.test_examples,
                         ks=(1, 5))
    return {k: v for k, v in result.metrics.items() if k in METRICS}


def _record(task: Task, method: str, shots: int, steps: int, seed: int, lr: float | None,
            scores: dict[str, Any], *, curve: bool = False) -> dict[str, Any]:
    record = {"held_out": task.name, "method": method, "shots": shots, "steps": steps,
              "seed": seed, "lr": lr, "scores": scores}
    if curve:
        record["curve"] = True
    return record


def _save(out: Path, config: BenchmarkConfig, records: list[dict[str, Any]],
          seconds: float) -> dict[str, Any]:
    results = {"config": asdict(config), "metrics": METRICS, "primary_metric": "rougeL",
               "methods": [m for m in METHODS if m in config.methods], "records": records,
               "wall_seconds": round(seconds, 1)}
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(out / "results.json")
    return results
