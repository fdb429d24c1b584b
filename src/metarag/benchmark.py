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
of a pretrained LM tries first), ``metaicl`` (MetaICL: multi-task training with
``metaicl_demos`` examples of the same task in every prompt, then the k support
examples in the prompt at test time, no weight changes) and ``zero_shot`` (base,
no adaptation). ``X+in_context`` for an adapted method X is X adapted on the
support set that also sees it in its prompts (the same adapted weights as X's
cell): what a user of a meta-learned model runs. Two methods adapt as they are
asked, with the support set in every prompt (`AdaptConfig.in_context`):
``meta_in_context`` (MAML over MetaICL-style episodes: meta-trained with each
episode's support set in its prompts) and ``metaicl_finetune`` (the MetaICL
model, adapted so). ``meta_in_context`` runs ``meta.meta.algorithm`` (FOMAML in the
configs); `ALGORITHM_VARIANTS` are the same episodes, budget and prompts with another
meta-algorithm (Reptile, second-order MAML, Meta-SGD), to screen before the best runs
everywhere; Meta-SGD adapts with its learned per-parameter rates, scaled by each grid
rate over ``meta.inner.lr`` (the rate it meta-trained with: that grid point uses the
learned rates as they are). At 0 shots a method is its
starting point, unadapted: deterministic, so it is scored once (one record, no
interval), not once per seed. A steps curve (score against adaptation steps at
``curve_shots``) comes from snapshots of the same runs.

Each (held-out domain, method, shots, seed) cell is appended to ``out/cells.jsonl``
as soon as it is scored, tagged with a fingerprint of the settings that decide
its value; a re-run skips the cells it finds with the same fingerprint, so a
killed run resumes cell by cell and a larger grid (more seeds, shots, methods or
domains) computes only what is new. Cells are scored shots by shots across every
method (0 shots, then ``curve_shots``, then the rest), so a run stopped part-way
already holds whole comparisons at the shots that matter most.
``out/results.json`` holds this grid's cells
and the wall time of every stage; `metarag.evaluation.report` turns it into
report.md and PNG plots. Trained starting points are kept under ``out/<domain>/``
and reused (or resumed) when the benchmark is run again with the same training
settings; other settings are refused, naming what differs.
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import json
import logging
import os
import random
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from metarag.checkpoint import latest_checkpoint, load_checkpoint
from metarag.config import ConfigError, from_dict, to_dict
from metarag.data.schema import QAExample, Task
from metarag.errors import MetaRAGError
from metarag.generation.precision import cpu_name
from metarag.meta.adapt import AdaptConfig, adapted_names, support_batches, swapped_params
from metarag.meta.inner import Batch, LearningRate, RAGLoss, inner_loop, rag_loss_fn
from metarag.meta.params import Params, split_params
from metarag.meta.train import MetaTrainConfig, learned_inner_lrs, meta_train
from metarag.rag.build import BuiltModel, build_model, load_weights
from metarag.train import OptimConfig, TrainConfig, train

logger = logging.getLogger(__name__)

# meta_in_context with another meta-algorithm than ``meta.meta.algorithm``: method -> algorithm.
ALGORITHM_VARIANTS = {"reptile_in_context": "reptile", "maml_in_context": "maml",
                      "meta_sgd_in_context": "meta_sgd"}
# A starting point + adaptation: method -> (its starting point, adapts and answers with the
# support set in its prompts).
_ADAPTED = {"meta": ("meta", False), "meta_in_context": ("meta_in_context", True),
            **{m: (m, True) for m in ALGORITHM_VARIANTS},
            "metaicl_finetune": ("metaicl", True),
            "multitask_finetune": ("multitask_finetune", False), "finetune": ("finetune", False)}
DEMOS = "+in_context"  # X+in_context: X's adapted weights, the support set in the prompt
METHODS = ("meta", "meta+in_context", "meta_in_context", *ALGORITHM_VARIANTS, "metaicl",
           "metaicl_finetune", "multitask_finetune", "multitask_finetune+in_context",
           "finetune", "finetune+in_context", "in_context", "zero_shot")
# At 0 shots these are another method's cell (in_context: zero_shot; metaicl_finetune: metaicl).
_NO_ZERO_SHOT = ("in_context", "metaicl_finetune")
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
        answer_batch_size: Test questions answered in one batched generation.
        meta: The meta-training run (data, model, inner loop, outer loop).
        multitask: The multi-task baseline's optimiser.
        match_budget: Replace ``multitask.steps`` so that the baseline back-propagates
            through as many examples as meta-training does (`meta_examples`: support
            sets once per inner step, plus query sets) at its own batch size; MetaICL
            training gets the same steps.
        metaicl_demos: Examples of the same task in every MetaICL training prompt.
        methods: The methods compared on every held-out domain (module docstring); by
            default all but the `ALGORITHM_VARIANTS`, which are named to be run.
        screen_methods: More methods, scored on the first held-out domain only: the
            screening of meta-learning variants before the best of them runs on every
            domain. The report's claims over all domains never pick them, but count
            them among the meta-learned candidates (the Bonferroni correction).
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
    answer_batch_size: int = 24
    meta: MetaTrainConfig = field(default_factory=MetaTrainConfig)
    multitask: OptimConfig = field(default_factory=OptimConfig)
    match_budget: bool = True
    metaicl_demos: int = 4
    methods: list[str] = field(default_factory=lambda: [m for m in METHODS
                                                        if m not in ALGORITHM_VARIANTS])
    screen_methods: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods + self.screen_methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
        if set(self.methods) & set(self.screen_methods):
            raise ValueError("a method is in both methods and screen_methods: "
                             f"{sorted(set(self.methods) & set(self.screen_methods))}")
        if self.screen_methods and not self.held_out:
            raise ValueError("screen_methods are scored on the first of held_out: list them")
        if not self.seeds or not self.shots or not self.lr_grid:
            raise ValueError("seeds, shots and lr_grid must not be empty")
        if min(self.shots) < 0 or self.test_examples < 1 or self.answer_batch_size < 1:
            raise ValueError("shots must be >= 0, test_examples and answer_batch_size >= 1")
        if self.adapt.in_context or self.meta.inner.in_context:
            raise ValueError("adapt.in_context and meta.inner.in_context are set per method "
                             "here: add meta_in_context or metaicl_finetune to methods instead")


def methods_on(config: BenchmarkConfig, held_out: str) -> list[str]:
    """The methods scored on one held-out domain (`screen_methods` on the first only)."""
    screening = config.screen_methods if config.held_out[:1] == [held_out] else []
    return [m for m in METHODS if m in config.methods or m in screening]


class BenchmarkError(MetaRAGError, RuntimeError):
    """The benchmark cannot run as configured (e.g. too few examples in a held-out domain)."""


def run_benchmark(config: BenchmarkConfig, *, tasks: list[Task] | None = None,
                  show_progress: bool = True) -> dict[str, Any]:
    """Run the protocol; returns (and writes) the results dict that `write_report` reads."""
    from metarag.data.loaders import load_tasks
    from metarag.evaluation.report import write_report

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
    cells = CellStore(Path(config.out), config)
    try:
        for name in held_out:
            _check_sizes(by_name[name], config)
            if not cells.done_for(name):
                _run_domain(config, by_name[name], [t for t in tasks if t.name != name],
                            cells, show_progress)
        results = cells.save()
    finally:
        cells.close()
    write_report(results, config.out)
    return results


def report_benchmark(config: BenchmarkConfig) -> dict[str, Any]:
    """Rebuild results.json, the report and the plots from the cells on disk, computing
    nothing: a run's progress so far (also while it runs), or a view of part of its grid."""
    from metarag.evaluation.report import write_report

    out = Path(config.out)
    if not (out / "cells.jsonl").is_file():
        raise BenchmarkError(f"{out / 'cells.jsonl'} does not exist: no cells to report")
    cells = CellStore(out, config, read_only=True)
    results = cells.save()
    write_report(results, config.out)
    return results


def _run_domain(config: BenchmarkConfig, target: Task, others: list[Task], cells: CellStore,
                show_progress: bool) -> None:
    """Every cell of one held-out domain still to score (its starting points trained first)."""
    methods = methods_on(config, target.name)
    starts = _starting_points(config, target.name, others, cells, show_progress)
    # Cells may come from several machines (runs span sessions): say what computed each.
    cells.computed_with = {"cpu": cpu_name(),
                           "compute_dtype": str(starts["finetune"].model.generator.compute_dtype)}
    if "zero_shot" in methods:
        for _, seed in cells.todo(target.name, "zero_shot"):
            starts["finetune"].use_corpus(target.corpus, language=target.language)
            with cells.cell(target.name, "zero_shot", 0, seed) as add:
                add(_record(target, "zero_shot", 0, 0, seed, None,
                            _score(starts["finetune"], target, config)))
    losses: dict[str, tuple[Params, RAGLoss, Params]] = {}  # per adapted method, built once
    # Shots by shots, every method: a run stopped early (they span sessions) already
    # holds whole comparisons, the aim's shots (curve_shots) first.
    for shots in shot_order(config):
        for method, (start, in_context) in _ADAPTED.items():
            wanted = [m for m in (method, method + DEMOS) if m in methods]
            if wanted:
                _evaluate_adapted(config, method, wanted, starts[start], target, cells,
                                  show_progress, shots=shots, losses=losses,
                                  in_context=in_context)
        for method in ("in_context", "metaicl"):
            if method in methods:
                start = starts["metaicl" if method == "metaicl" else "finetune"]
                _evaluate_in_context(config, method, start, target, cells, shots=shots)


def shot_order(config: BenchmarkConfig) -> list[int]:
    """The order cells are scored in: 0 shots (no adaptation), ``curve_shots``, the rest."""
    first = [s for s in (0, config.curve_shots) if s in config.shots]
    return first + [s for s in config.shots if s not in first]


class CellStore:
    """The benchmark's cells on disk: appended one by one, found again on a re-run.

    ``cells.jsonl`` holds one line per finished (held_out, method, shots, seed) cell:
    its records (the main one and its steps-curve points), its wall time, the CPU
    and the generator's compute dtype (``precision: auto`` resolves per machine),
    and the fingerprint of the settings that decide its value (everything but which
    cells the grid asks for and where files go). ``results.json`` is this grid's view.
    """

    # Settings that choose cells or files, not a cell's value.
    _SELECTION = {"out", "held_out", "shots", "seeds", "methods", "screen_methods"}

    def __init__(self, out: Path, config: BenchmarkConfig, *, read_only: bool = False) -> None:
        self.read_only, self._lock = read_only, None
        if not read_only:
            out.mkdir(parents=True, exist_ok=True)
            # One process per folder: two appending and rewriting cells.jsonl would lose cells.
            self._lock = (out / ".lock").open("w")
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                self._lock.close()
                raise BenchmarkError(f"another benchmark is running in {out}; wait for it or "
                                     "give this one another `out`") from None
        self.out, self.config, self.path = out, config, out / "cells.jsonl"
        settings = {k: v for k, v in _flat(to_dict(config)).items()
                    if k.split(".")[0] not in self._SELECTION
                    and k.split(".")[-1] not in _BOOKKEEPING
                    and not (k in _ADDED_LATER and v == _ADDED_LATER[k])}
        self.fingerprint = hashlib.sha256(
            json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.cells: dict[tuple, dict[str, Any]] = {}
        self.stages: dict[str, float] = {}
        self.computed_with: dict[str, str] = {}  # the machine and precision, kept per cell
        self._mark = time.perf_counter()  # the end of the last cell or stage
        self._load()

    def _load(self) -> None:
        if not self.path.is_file():
            return
        kept, other = [], 0
        text = self.path.read_text(encoding="utf-8")
        for number, line in enumerate(text.splitlines(), 1):
            try:
                cell = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a killed run
                logger.warning("%s:%d is not JSON (a killed run?); that cell is redone",
                               self.path, number)
                continue
            kept.append(line)
            if cell.get("fingerprint") != self.fingerprint:
                other += 1
                continue
            self.cells[tuple(cell["key"])] = cell
            self.stages.update(cell.get("stages", {}))
        cut = len(kept) != len(text.splitlines()) or (text and not text.endswith("\n"))
        if cut and not self.read_only:  # (read only: a running benchmark may be writing it)
            # Drop the cut line, so that the next cell starts a line of its own.
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
            tmp.replace(self.path)
        if other:
            logger.info("%s: %d cells were computed with other settings; not reused",
                        self.path, other)
        if self.cells:
            logger.info("%s: %s %d finished cells", self.path,
                        "reading" if self.read_only else "resuming with", len(self.cells))

    def close(self) -> None:
        """Let another run use the folder."""
        if self._lock is not None:
            self._lock.close()

    @staticmethod
    def _key(held_out: str, method: str, shots: int, seed: int) -> tuple:
        # An unadapted (0-shot) cell does not depend on the seed: one per method, whatever
        # the grid's first seed is (its record keeps the seed it was scored under).
        return (held_out, method, shots, None if shots == 0 else seed)

    def has(self, held_out: str, method: str, shots: int, seed: int) -> bool:
        return self._key(held_out, method, shots, seed) in self.cells

    def todo(self, held_out: str, method: str, shots: int | None = None
             ) -> list[tuple[int, int]]:
        """The (shots, seed) cells of one method still to score (0 shots: one seed), at
        ``shots`` only when given."""
        config = self.config
        if method == "zero_shot":  # the floor every shots table shows
            cells = [(0, config.seeds[0])]
        else:
            # X+in_context at 0 shots is X; see _NO_ZERO_SHOT for the others.
            unadapted = 0 in config.shots and method not in _NO_ZERO_SHOT and DEMOS not in method
            cells = [(0, config.seeds[0])] if unadapted else []
            cells += [(shots, seed) for shots in config.shots if shots > 0
                      for seed in config.seeds]
        return [c for c in cells if not self.has(held_out, method, *c)
                and shots in (None, c[0])]

    def done_for(self, held_out: str) -> bool:
        return all(not self.todo(held_out, m) for m in methods_on(self.config, held_out))

    def stage(self, name: str) -> None:
        """A stage (training a starting point) just ended: its wall time is the time since
        the last cell or stage (building the model included); kept with the next cell."""
        now = time.perf_counter()
        self.stages[name] = round(now - self._mark, 1)
        self._mark = now

    @contextmanager
    def cell(self, held_out: str, method: str, shots: int, seed: int):
        """Collect one cell's records (``add(record)``); appended when the block ends."""
        records: list[dict[str, Any]] = []
        yield records.append
        # Since the last cell or stage: the adaptation it needed, loading, the scoring.
        now = time.perf_counter()
        line = {"key": list(self._key(held_out, method, shots, seed)),
                "fingerprint": self.fingerprint,
                "records": records, "seconds": round(now - self._mark, 1),
                "stages": dict(self.stages), **self.computed_with}
        self._mark = now
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.cells[tuple(line["key"])] = line
        self.save()

    def save(self) -> dict[str, Any]:
        """results.json: the records of the cells this grid asks for, written atomically."""
        config = self.config
        held = set(config.held_out) if config.held_out else None
        wanted = [c for key, c in self.cells.items()
                  if (held is None or key[0] in held) and key[1] in methods_on(config, key[0])
                  and key[2] in config.shots
                  and (key[3] in config.seeds or key[2] == 0)]
        records = [r for c in wanted for r in c["records"]]
        stages = {k: v for k, v in self.stages.items()
                  if held is None or k.rsplit("/train ", 1)[0] in held}
        results = {"config": asdict(config), "metrics": METRICS, "primary_metric": "f1",
                   "methods": [m for m in METHODS
                               if m in config.methods or m in config.screen_methods],
                   "screened": {m: config.held_out[0] for m in config.screen_methods},
                   "records": records,
                   "stages": stages,
                   "wall_seconds": round(sum(c["seconds"] for c in wanted)
                                         + sum(stages.values()), 1)}
        tmp = self.out / "results.json.tmp"
        tmp.write_text(json.dumps(results, indent=1))
        tmp.replace(self.out / "results.json")
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
                     cells: CellStore, show_progress: bool) -> dict[str, BuiltModel]:
    """Base, meta-learned, multi-task and MetaICL models for one held-out domain (trained
    or reused); each training's wall time is a stage of the results."""
    root = Path(config.out) / _slug(held_out)
    base = build_model(config.meta.model, seed=config.meta.seed)
    base.cache_dir = config.meta.cache_dir
    base.model.eval()
    starts = {"finetune": base}
    wanted = {m.split("+")[0] for m in methods_on(config, held_out)}
    runs: dict[str, tuple[Any, Any, int]] = {}
    for method in ("meta", "meta_in_context", *ALGORITHM_VARIANTS):
        if method in wanted:
            meta_cfg = copy.deepcopy(config.meta)
            meta_cfg.out = str(root / method)
            meta_cfg.inner.in_context = method != "meta"
            meta_cfg.meta.algorithm = ALGORITHM_VARIANTS.get(method, meta_cfg.meta.algorithm)
            runs[method] = (meta_train, meta_cfg, meta_cfg.meta.steps)
    if "multitask_finetune" in wanted:
        mt_cfg = _multitask_config(config, root / "multitask")
        runs["multitask_finetune"] = (train, mt_cfg, mt_cfg.optim.steps)
    if "metaicl" in wanted or "metaicl_finetune" in wanted:
        icl_cfg = _multitask_config(config, root / "metaicl", demos=config.metaicl_demos)
        runs["metaicl"] = (train, icl_cfg, icl_cfg.optim.steps)
    for method, (fn, cfg, steps) in runs.items():
        if _train_or_resume(fn, cfg, steps, others, show_progress):
            cells.stage(f"{held_out}/train {method}")
        starts[method] = _load_start(base, cfg.out)
    return starts


def _multitask_config(config: BenchmarkConfig, out: Path, *, demos: int = 0) -> TrainConfig:
    meta = config.meta
    optim = copy.deepcopy(config.multitask)
    if config.match_budget:
        optim.steps = max(1, round(meta_examples(meta) / optim.batch_size))
    # The same weights as meta-training's (and every method's adaptation) train.
    return TrainConfig(out=str(out), seed=meta.seed, data=meta.data, model=meta.model,
                       params=list(meta.inner.params), exclude=list(meta.inner.exclude),
                       optim=optim, eval_every=max(1, optim.steps), checkpoint_every=
                       max(1, optim.steps // 4), keep_checkpoints=meta.keep_checkpoints,
                       tensorboard=meta.tensorboard, cache_dir=meta.cache_dir, demos=demos)


def meta_examples(config: MetaTrainConfig) -> int:
    """Examples meta-training back-propagates through: each episode's support set once
    per inner step, and its query set."""
    m = config.meta
    return m.steps * m.meta_batch * (max(1, config.inner.steps) * m.n_shot + m.n_query)


# Settings added after cells were written, at the value those cells ran with: left out of
# the fingerprint at that value, so that the cells stay valid.
_ADDED_LATER = {"adapt.in_context": False, "meta.inner.in_context": False}

# Settings that do not change what a run learns: a run differing only in these is reused.
_BOOKKEEPING = {"out", "cache_dir", "tensorboard", "log_every", "checkpoint_every",
                "keep_checkpoints", "encoder_cache_mb"}


def _train_or_resume(fn: Any, cfg: Any, steps: int, tasks: list[Task], show_progress: bool
                     ) -> bool:
    """Train (or finish) a starting point; False when a finished one is reused."""
    last = latest_checkpoint(cfg.out)
    if last is not None:
        state = load_checkpoint(last).state
        _check_same_settings(cfg, state.get("config"), last)
        if int(state["step"]) >= steps:
            logger.info("reusing %s", last)
            return False
    fn(cfg, resume=last is not None, tasks=tasks, show_progress=show_progress)
    return True


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


def _evaluate_adapted(config: BenchmarkConfig, method: str, wanted: list[str],
                      start: BuiltModel, task: Task, cells: CellStore, show_progress: bool,
                      *, shots: int, losses: dict[str, tuple[Params, RAGLoss, Params]],
                      in_context: bool = False) -> None:
    """The cells of one adapted method (and of ``method+in_context``) at ``shots`` still
    to score.

    Each (shots, seed) adapts once; the adapted weights are scored as they are and,
    for ``+in_context``, with the support set in the prompt. ``in_context``: the
    method adapts, picks its rate and is scored with the support set in every prompt.
    ``method`` gets the steps curve at ``curve_shots``. ``losses`` keeps each method's
    initial weights, loss function and learned rates (Meta-SGD) from one call to the next.
    """
    from tqdm.auto import tqdm

    todo = sorted({c for m in wanted for c in cells.todo(task.name, m, shots)})
    if not todo:
        return
    start.use_corpus(task.corpus, language=task.language)
    if method not in losses:
        names = adapted_names(start.model, config.adapt)
        # One loss function for every cell and rate: its frozen tensors stay the same
        # objects, so what lies below the adapted weights is computed once per source
        # (BERT2BERT's encoder outputs; Gemma's frozen-prefix states when only top
        # layers adapt).
        params, frozen = split_params(start.model, names)
        losses[method] = ({k: v.detach() for k, v in params.items()},
                          rag_loss_fn(start.model, frozen),
                          _learned_rates(config, task.name, _ADAPTED[method][0]))
    init, loss_fn, rates = losses[method]
    for _, seed in tqdm(todo, desc=f"{task.name}: {method}, {shots} shots",
                        disable=not show_progress):
        support = _support(task, shots, seed)
        if shots == 0:
            with cells.cell(task.name, method, 0, seed) as add:
                add(_record(task, method, 0, 0, seed, None, _score(start, task, config)))
            continue
        curve = config.curve_steps if shots == config.curve_shots and method in wanted else []
        started = time.perf_counter()
        with _in_prompts(start, support, in_context):
            lr, snapshots = _adapt_with_best_lr(config, init, loss_fn, support, task, curve,
                                                rates)
        adapted = snapshots[config.adapt.steps]
        for name in wanted:
            if cells.has(task.name, name, shots, seed):
                continue
            with cells.cell(task.name, name, shots, seed) as add:
                if name == method:
                    for steps, params in sorted(snapshots.items()):
                        with swapped_params(start.model, params), \
                                _in_prompts(start, support, in_context):
                            scores = _score(start, task, config)
                        add(_record(task, name, shots, steps, seed, lr, scores, config,
                                    curve=steps != config.adapt.steps))
                else:
                    with swapped_params(start.model, adapted), start.model.demos_while(support):
                        add(_record(task, name, shots, config.adapt.steps, seed, lr,
                                    _score(start, task, config), config))
        logger.info("%s %s shots=%d seed=%d lr=%g (%.0f s)", task.name, "/".join(wanted), shots,
                    seed, lr, time.perf_counter() - started)


def _in_prompts(start: BuiltModel, support: list[QAExample], on: bool):
    """While the block runs, the support set in every prompt when ``on`` (adapting, picking
    the rate and answering alike); else nothing changes."""
    return start.model.demos_while(support) if on else nullcontext()


def _evaluate_in_context(config: BenchmarkConfig, method: str, start: BuiltModel, task: Task,
                         cells: CellStore, *, shots: int) -> None:
    """In-context k-shot (``in_context``: the base; ``metaicl``: the MetaICL-trained model)
    at ``shots``: each cell's support set as demos in the prompts, no weight changes, no
    rate to pick.

    ``in_context`` at 0 shots is zero-shot, so it scores only k > 0.
    """
    todo = cells.todo(task.name, method, shots)
    if not todo:
        return
    start.use_corpus(task.corpus, language=task.language)
    for _, seed in todo:
        with cells.cell(task.name, method, shots, seed) as add, \
                start.model.demos_while(_support(task, shots, seed)):
            scores = _score(start, task, config)
            add(_record(task, method, shots, 0, seed, None, scores))
        logger.info("%s %s shots=%d seed=%d: F1 %.1f", task.name, method, shots, seed,
                    scores.get("f1") or 0.0)


def _support(task: Task, shots: int, seed: int) -> list[QAExample]:
    """``shots`` train examples drawn by (seed, shots); a fixed sample for each cell."""
    pool = sorted(task.train, key=lambda e: e.id)
    return random.Random(f"benchmark:{task.name}:{seed}:{shots}").sample(pool, shots)


def _adapt_snapshots(init: Params, loss_fn: RAGLoss, support: list[QAExample], steps: int,
                     lr: LearningRate, batch_size: int | None, keep: list[int]
                     ) -> dict[int, Params]:
    """Adapted parameters after ``steps`` SGD steps from ``init``, and after each step
    count in ``keep``.

    The same computation as `metarag.meta.adapt.adapt_params`, with snapshots along the way.
    """
    current = init
    wanted = {s for s in keep if s <= steps} | {steps}
    out = {0: current} if 0 in wanted else {}
    for step, batch in enumerate(support_batches(support, steps, batch_size), start=1):
        current = {k: v.detach() for k, v in
                   inner_loop(loss_fn, current, batch, steps=1, lr=lr, first_order=True).items()}
        if step in wanted:
            out[step] = current
    return out


def _learned_rates(config: BenchmarkConfig, held_out: str, start: str) -> Params:
    """A meta-trained starting point's learned per-parameter rates (Meta-SGD), else none."""
    if start not in ("meta", "meta_in_context", *ALGORITHM_VARIANTS):
        return {}
    return learned_inner_lrs(load_checkpoint(Path(config.out) / _slug(held_out) / start).model)


def _adapt_with_best_lr(config: BenchmarkConfig, init: Params, loss_fn: RAGLoss,
                        support: list[QAExample], task: Task, curve: list[int],
                        rates: Params | None = None) -> tuple[float, dict[int, Params]]:
    """Adapt at every grid rate; keep the one whose model has the lowest held-out dev loss
    (through ``loss_fn``, the same value as a plain forward).

    ``rates``: Meta-SGD's learned per-parameter rates, scaled at each grid rate by
    rate / ``meta.inner.lr`` (the learned rates themselves where the two are equal).
    Returns the rate and its snapshots (see `_adapt_snapshots`).
    """
    dev = Batch.from_examples(task.dev[:config.dev_examples])
    best: tuple[float, float, dict[int, Params]] | None = None
    for lr in config.lr_grid:
        step_lr: LearningRate = lr
        if rates:
            step_lr = {k: v * (lr / config.meta.inner.lr) for k, v in rates.items()}
        snapshots = _adapt_snapshots(init, loss_fn, support, config.adapt.steps, step_lr,
                                     config.adapt.batch_size, curve)
        if len(config.lr_grid) == 1:
            return lr, snapshots
        with torch.no_grad():
            loss = loss_fn(snapshots[config.adapt.steps], dev).item()
        loss = loss if loss == loss else float("inf")  # NaN loses
        if best is None or loss < best[0]:
            best = (loss, lr, snapshots)
    return best[1], best[2]


def _score(built: BuiltModel, task: Task, config: BenchmarkConfig) -> dict[str, float | None]:
    from metarag.evaluation.qa import evaluate_qa

    result = evaluate_qa(built, task, split="test", max_examples=config.test_examples,
                         batch_size=config.answer_batch_size, ks=(1, 5))
    return {k: v for k, v in result.metrics.items() if k in METRICS}


def _record(task: Task, method: str, shots: int, steps: int, seed: int, lr: float | None,
            scores: dict[str, Any], config: BenchmarkConfig | None = None, *,
            curve: bool = False) -> dict[str, Any]:
    record = {"held_out": task.name, "method": method, "shots": shots, "steps": steps,
              "seed": seed, "lr": lr, "scores": scores}
    if lr is not None and config is not None and len(config.lr_grid) > 1:
        # A rate picked at the grid's edge says the grid may be too narrow (the report counts).
        record["lr_at_edge"] = lr in (min(config.lr_grid), max(config.lr_grid))
    if curve:
        record["curve"] = True
    return record
