"""What the two training loops share: the run folder around a step.

`metarag.train` (multi-task supervised training) and `metarag.meta.train`
(meta-training) differ in what one step computes; what goes on around it is here,
once::

    tasks, built, corpora = prepare(config, tasks)          # seeds, data, model, corpora
    names = train_only(built.model, select_params(...))     # the rest is frozen
    run = Run(config, total=steps, resume=resume, stop_after=stop_after, hint="Lower ...")
    run.restore(built.model, optimizer, names)              # weights, optimizer, RNG
    for step in range(run.start, run.end):
        ...                                                 # one step
        if not finite: run.skip(step, "loss is nan"); continue
        run.step_ok()
        done = step + 1
        if run.due(done, config.log_every): run.log.write({...})
        if run.due(done, config.checkpoint_every): run.save(done, ...)
    run.close()

A checkpoint holds the trained weights only (`metarag.rag.build.model_weights`) and
the base they were trained on (`metarag.rag.build.base_record`), with the model
config, the run config, the optimizer's state and every RNG, so a killed run
resumes exactly.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from metarag import distributed
from metarag.checkpoint import (
    Checkpoint,
    latest_checkpoint,
    load_checkpoint,
    restore_optimizer,
    restore_rng,
    save_checkpoint,
)
from metarag.config import ConfigError, from_dict, save_config
from metarag.data.schema import Task
from metarag.errors import MetaRAGError
from metarag.rag.build import (
    BASE_KEY,
    MODEL_CONFIG_KEY,
    BuiltModel,
    ModelConfig,
    base_record,
    build_model,
    load_weights,
    model_weights,
)
from metarag.rag.model import RAGModel

logger = logging.getLogger(__name__)


@dataclass
class DataConfig:
    """Which tasks to train on.

    Attributes:
        data: Folder of task folders (e.g. ../shared/data); None for the synthetic suite.
        tasks: Task names to keep; empty for all.
        seed: Split seed.
        max_tokens, overlap: Chunking of long documents.
        dev_examples: Dev questions per task for the periodic dev loss.
    """

    data: str | None = None
    tasks: list[str] = field(default_factory=list)
    seed: int = 0
    max_tokens: int = 150
    overlap: int = 30
    dev_examples: int = 32


class TrainingError(MetaRAGError, RuntimeError):
    """Training cannot go on (e.g. the loss stayed non-finite)."""


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then linear decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def prepare(config: Any, tasks: list[Task] | None
            ) -> tuple[list[Task], BuiltModel, dict[str, Any]]:
    """Seed every RNG, load the tasks, build the model and embed each corpus once.

    Args:
        config: A run config with ``seed``, ``data`` (`DataConfig`), ``model``
            (`ModelConfig`) and ``cache_dir``.
        tasks: Already-loaded tasks, or None to load ``config.data``.

    Returns:
        The tasks, the model (its passage side frozen) and each task's passage
        embeddings by task name.
    """
    from metarag.data.loaders import load_tasks

    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed % 2**32)
    if tasks is None:
        data = config.data
        tasks = load_tasks(data.data, data.tasks or None, seed=data.seed,
                           max_tokens=data.max_tokens, overlap=data.overlap)
    # Under torchrun, each machine's first process converts the model and embeds the
    # corpora into the disk caches first; the others then read them (`distributed`).
    with distributed.local_main_first():
        built = build_model(config.model, seed=config.seed)
        # The passage side is frozen: embed each corpus once.
        corpora = {t.name: embed_corpus(built, t, config.cache_dir,
                                        show_progress=distributed.is_main())
                   for t in tasks}
    return tasks, built, corpora


def train_only(model: nn.Module, names: Sequence[str]) -> list[str]:
    """Freeze every parameter but ``names`` (no gradients are computed for the base).

    Returns:
        ``names``, as a list.
    """
    wanted = set(names)
    for name, p in model.named_parameters():
        p.requires_grad_(name in wanted)
    return list(names)


def embed_corpus(built: BuiltModel, task: Task, cache_dir: str | None, *,
                 show_progress: bool = True) -> Any:
    """The task's passage embeddings from the frozen passage encoder (cached on disk)."""
    from metarag.retrieval.cache import cached_embeddings

    logger.info("%s: embedding %d passages", task.name, len(task.corpus))
    return cached_embeddings(built.passage_encoder, task.corpus, cache_dir,
                             show_progress=show_progress)


def checkpoint_to_resume(out: Path, model_config: ModelConfig, resume: bool) -> Checkpoint | None:
    """The checkpoint a run continues from, or None for a fresh run in an empty ``out``.

    Raises:
        TrainingError: ``resume`` without a checkpoint in ``out``; a fresh run over
            an existing one (it would mix two runs' checkpoints); or a checkpoint
            of another model config. Configs saved before a field existed compare
            with that field at its default.
    """
    latest = latest_checkpoint(out)
    if not resume:
        if latest is not None:
            raise TrainingError(f"{out} already holds a run; pass --resume to continue it, "
                                "or choose another --out")
        return None
    if latest is None:
        raise TrainingError(f"--resume: no checkpoint in {out}; start without --resume")
    ckpt = load_checkpoint(latest)
    try:
        same = from_dict(ModelConfig, ckpt.state[MODEL_CONFIG_KEY]) == model_config
    except (KeyError, ConfigError):  # no model config, or one this version cannot read
        same = False
    if not same:
        raise TrainingError(f"{latest}: was trained with another model config; "
                            "resume with the run's own config.yaml")
    return ckpt


class Run:
    """One run folder around a training loop: resume, log, skipped steps, checkpoints.

    Args:
        config: The run config (``out``, ``seed``, ``model``, ``tensorboard``,
            ``keep_checkpoints``, ``max_bad_steps``); saved as ``config.yaml``.
        total: The run's length in steps.
        resume: Continue from the newest checkpoint in ``config.out``.
        stop_after: Stop after this many steps of this invocation (None: run to ``total``).
        hint: What to change when steps keep failing, e.g. "Lower optim.lr".
        writes: Whether this process writes the run folder (config, log, TensorBoard,
            checkpoints). False on all ranks but 0 of a distributed run: they read
            the checkpoint they resume from, and nothing else touches the disk.

    Attributes:
        checkpoint: The checkpoint resumed from, or None.
        start, end: This invocation's steps are ``range(start, end)``.
        skipped: Steps skipped so far (non-finite loss or gradient).
        log: The run's `RunLog`, open after `restore`.

    Raises:
        TrainingError: See `checkpoint_to_resume`.
    """

    def __init__(self, config: Any, *, total: int, resume: bool, stop_after: int | None,
                 hint: str, writes: bool = True) -> None:
        self.config = config
        self.writes = writes
        self.out = Path(config.out)
        self.total = total
        self.hint = hint
        self.checkpoint = checkpoint_to_resume(self.out, config.model, resume)
        self.start = int(self.checkpoint.state["step"]) if self.checkpoint is not None else 0
        self.end = total if stop_after is None else min(total, self.start + stop_after)
        self.skipped: list[int] = []
        self._bad: list[int] = []  # consecutive failed steps
        self.log: RunLog | None = None

    def restore(self, model: RAGModel, optimizer: torch.optim.Optimizer,
                param_names: list[str],
                extra: Callable[[Checkpoint], None] | None = None) -> None:
        """Put back what the resumed checkpoint saved, then write config.yaml and open the log.

        Weights, the optimizer's state, whatever ``extra`` restores (e.g. a sampler),
        and last the RNGs, so nothing drawn while restoring shifts them. The config is
        written only once the checkpoint has loaded, so a refused resume leaves the
        run folder as it was.
        """
        ckpt = self.checkpoint
        if ckpt is not None:
            load_weights(model, ckpt)
            restore_optimizer(optimizer, ckpt, param_names)
            if extra is not None:
                extra(ckpt)
            restore_rng(ckpt)
            logger.info("resumed %s at step %d", ckpt.path, self.start)
        if not self.writes:
            self.log = RunLog(None, self.start, tensorboard=False)
            return
        save_config(self.config, self.out / "config.yaml")
        self.log = RunLog(self.out, self.start, tensorboard=self.config.tensorboard)

    def due(self, done: int, every: int, last: int | None = None) -> bool:
        """Whether a periodic action falls after ``done`` steps: every ``every`` steps,
        and at ``last`` (default: the end of this invocation)."""
        return done % every == 0 or done == (self.end if last is None else last)

    def skip(self, step: int, reason: str, *, cause: BaseException | None = None,
             **record: Any) -> None:
        """Log a skipped step (no update); stop the run after too many in a row.

        Raises:
            TrainingError: ``max_bad_steps`` steps failed in a row, naming them, the
                last good checkpoint and the run's hint.
        """
        self.skipped.append(step)
        self._bad.append(step)
        if self.writes:  # once per run, not once per process
            logger.warning("step %d: %s; step skipped", step, reason)
        if self.log is None:
            raise RuntimeError("Run.skip before Run.restore (which opens the log)")
        self.log.write({"step": step, "event": "skipped", "reason": reason, **record})
        if len(self._bad) >= self.config.max_bad_steps:
            raise TrainingError(
                f"a loss or gradient was not finite for {len(self._bad)} steps in a row "
                f"(steps {self._bad[0]}-{self._bad[-1]}; last: {reason}); stopping. Last good "
                f"checkpoint: {latest_checkpoint(self.out) or 'none'}. {self.hint}, then "
                "resume from it with --resume.") from cause

    def step_ok(self) -> None:
        """A step updated the weights: the count of failed steps in a row starts again."""
        self._bad.clear()

    def save(self, done: int, *, model: RAGModel, trained: Sequence[str],
             optimizer: torch.optim.Optimizer, param_names: list[str],
             aux: Mapping[str, torch.Tensor] | None = None,
             state: Mapping[str, Any] | None = None) -> Path | None:
        """Checkpoint the trained weights (not the base), the optimizer and the run's state.

        Args:
            done: Steps done.
            model: The model.
            trained: Names of the weights the run trains (`model_weights`).
            optimizer, param_names: The optimizer and its parameters' names, in order.
            aux: Method tensors saved beside the model's (names under
                `metarag.rag.build.AUX_PREFIX`), e.g. Meta-SGD's learned rates.
            state: Extra JSON state (sampler, metrics, kind...).

        Returns:
            The checkpoint folder, or None in a process that does not write.
        """
        if not self.writes:
            return None
        weights = model_weights(model, trained)
        weights.update({k: v.detach() for k, v in (aux or {}).items()})
        return save_checkpoint(
            self.out, done, model=weights, optimizer=optimizer, param_names=param_names,
            keep=self.config.keep_checkpoints,
            state={MODEL_CONFIG_KEY: asdict(self.config.model),
                   BASE_KEY: base_record(model, seed=self.config.seed),
                   "config": asdict(self.config), **(state or {})})

    def close(self) -> None:
        if self.log is not None:
            self.log.close()


class RunLog:
    """JSONL log (and TensorBoard scalars); on resume, entries past the resume step go.

    With ``out`` None it writes nothing (the ranks of a distributed run but 0).
    """

    def __init__(self, out: Path | None, start: int, *, tensorboard: bool) -> None:
        self.file = None
        self.tb = None
        if out is None:
            return
        self.path = out / "log.jsonl"
        if self.path.is_file():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= start]
            self.path.write_text("".join(line + "\n" for line in kept))
        self.file = self.path.open("a")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=start or None)

    def write(self, record: dict[str, Any]) -> None:
        if self.file is None:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, int | float) and math.isfinite(value):
                    self.tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.tb is not None:
            self.tb.close()
