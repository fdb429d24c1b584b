"""Supervised training of the RAG model on one task or several (the multi-task baseline).

The loop reads top to bottom: sample a batch from one task -> RAG-sequence loss
-> skip the step if the loss is not finite -> clip -> AdamW step -> log ->
dev loss -> checkpoint. Batches are a pure function of (seed, step), and the
checkpoint holds weights, AdamW moments, the LR schedule position and every
RNG, so a killed run resumed from its last checkpoint continues exactly.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from metarag.checkpoint import (
    Checkpoint,
    latest_checkpoint,
    load_checkpoint,
    restore_optimizer,
    restore_rng,
    save_checkpoint,
)
from metarag.config import ConfigError, from_dict, save_config
from metarag.data.schema import QAExample, Task
from metarag.errors import MetaRAGError
from metarag.rag.build import (
    MODEL_CONFIG_KEY,
    BuiltModel,
    ModelConfig,
    build_model,
    load_weights,
    model_weights,
)

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


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then linear decay to zero.

    ``retriever_lr`` is the query encoder's own rate: a pretrained retriever
    driven at the generator's rate collapses onto a few passages within a few
    hundred steps (measured: xquad recall@5 fell from 100 to 20 at 2e-4).
    """

    lr: float = 5e-5
    retriever_lr: float = 1e-5
    weight_decay: float = 0.01
    warmup_steps: int = 20
    steps: int = 200
    batch_size: int = 8
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be >= 1")
        if not self.lr > 0 or not self.retriever_lr >= 0:
            raise ValueError(f"lr must be positive and retriever_lr non-negative, got "
                             f"{self.lr} and {self.retriever_lr}")


@dataclass
class TrainConfig:
    """A whole training run; saved as config.yaml in the run folder."""

    out: str = "runs/train"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval_every: int = 50
    checkpoint_every: int = 50
    log_every: int = 10
    keep_checkpoints: int = 2
    max_bad_steps: int = 5
    tensorboard: bool = True
    cache_dir: str | None = "runs/cache"

    def __post_init__(self) -> None:
        for name in ("eval_every", "checkpoint_every", "log_every", "max_bad_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


class TrainingError(MetaRAGError, RuntimeError):
    """Training cannot go on (e.g. the loss stayed non-finite)."""


@dataclass
class TrainResult:
    out: Path
    step: int
    last_loss: float
    dev_loss: dict[str, float]
    skipped_steps: list[int]
    seconds: float


def batch_for_step(tasks: list[Task], step: int, batch_size: int, seed: int
                   ) -> tuple[int, list[QAExample]]:
    """The training batch of a step: a task chosen uniformly, then examples from its train split.

    A pure function of (seed, step), so resuming needs no sampler state. Tasks are
    uniform, not proportional to size, so a small domain is not drowned by a large one.
    """
    rng = random.Random(f"{seed}:{step}")
    t = rng.randrange(len(tasks))
    train = tasks[t].train
    return t, rng.sample(train, min(batch_size, len(train)))


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then linear decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))



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

def train(config: TrainConfig, *, resume: bool = False, tasks: list[Task] | None = None,
          stop_after: int | None = None, show_progress: bool = True) -> TrainResult:
    """Train (or resume) a run; see the module docstring for the loop.

    Args:
        config: The run's configuration.
        resume: Continue from the newest checkpoint in ``config.out`` (it must exist).
        tasks: Already-loaded tasks (else loaded from ``config.data``).
        stop_after: Stop after this many steps of *this* invocation (a time budget);
            the run can be resumed later.
        show_progress: A progress bar with loss and ETA.
    """
    from tqdm.auto import tqdm

    from metarag.data.loaders import load_tasks

    started = time.perf_counter()
    out = Path(config.out)
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    if tasks is None:
        tasks = load_tasks(config.data.data, config.data.tasks or None, seed=config.data.seed,
                           max_tokens=config.data.max_tokens, overlap=config.data.overlap)
    empty = [t.name for t in tasks if not t.train]
    if empty:
        raise TrainingError(f"no training examples in {', '.join(empty)}")
    built = build_model(config.model, seed=config.seed)
    model = built.model
    # The passage side is frozen: embed each corpus once.
    corpora = {t.name: embed_corpus(built, t, config.cache_dir) for t in tasks}

    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    # Query encoder first, generator second: two groups with their own base rates.
    trainable.sort(key=lambda item: not item[0].startswith("query_model."))
    names = [n for n, _ in trainable]
    params = [p for _, p in trainable]
    n_query = sum(n.startswith("query_model.") for n in names)
    base_lrs = [config.optim.retriever_lr, config.optim.lr]
    optimizer = torch.optim.AdamW(
        [{"params": params[:n_query]}, {"params": params[n_query:]}],
        lr=config.optim.lr, weight_decay=config.optim.weight_decay)

    start = 0
    ckpt = checkpoint_to_resume(out, config.model, resume)
    if ckpt is not None:
        load_weights(model, ckpt)
        restore_optimizer(optimizer, ckpt, names)
        start = int(ckpt.state["step"])
        restore_rng(ckpt)
        logger.info("resumed %s at step %d", ckpt.path, start)
    save_config(config, out / "config.yaml")
    log = RunLog(out, start, tensorboard=config.tensorboard)

    end = config.optim.steps if stop_after is None else min(config.optim.steps,
                                                            start + stop_after)
    bad: list[int] = []
    skipped: list[int] = []
    loss_value = float("nan")
    dev: dict[str, float] = {}
    model.train()
    bar = tqdm(range(start, end), initial=start, total=config.optim.steps, desc="train",
               disable=not show_progress)
    for step in bar:
        # The LR is a function of the step alone (no scheduler state to resume).
        factor = lr_factor(step, config.optim.warmup_steps, config.optim.steps)
        for group, base in zip(optimizer.param_groups, base_lrs):
            group["lr"] = base * factor
        lr = config.optim.lr * factor
        t, batch = batch_for_step(tasks, step, config.optim.batch_size, config.seed)
        task = tasks[t]
        model.set_corpus(task.corpus, corpora[task.name])
        loss = model([e.question for e in batch], [e.answers[0] for e in batch]).loss
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            bad.append(step)
            skipped.append(step)
            logger.warning("step %d (%s): loss is %s; step skipped", step, task.name, loss_value)
            log.write({"step": step, "event": "skipped", "task": task.name, "loss": loss_value})
            if len(bad) >= config.max_bad_steps:
                last = latest_checkpoint(out)
                raise TrainingError(
                    f"loss was not finite for {len(bad)} steps in a row (steps {bad[0]}-"
                    f"{bad[-1]}); stopping. Last good checkpoint: {last or 'none'}. Lower "
                    "optim.lr or check the data, then resume from it with --resume.")
            continue
        bad.clear()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, config.optim.grad_clip).item()
        if not math.isfinite(grad_norm):
            skipped.append(step)
            logger.warning("step %d (%s): gradient norm is %s; step skipped",
                           step, task.name, grad_norm)
            continue
        optimizer.step()
        done = step + 1
        if done % config.log_every == 0 or done == end:
            log.write({"step": done, "loss": loss_value, "lr": lr,
                       "grad_norm": grad_norm, "task": task.name,
                       "seconds": time.perf_counter() - started})
        bar.set_postfix(loss=f"{loss_value:.3f}", task=task.name.split("/")[-1])
        if done % config.eval_every == 0 or done == config.optim.steps:
            dev = dev_losses(built, tasks, corpora, config)
            log.write({"step": done, **{f"dev_loss/{k}": v for k, v in dev.items()}})
            model.train()
        if done % config.checkpoint_every == 0 or done == end:
            save_checkpoint(out, done, model=model_weights(model), optimizer=optimizer,
                            param_names=names, keep=config.keep_checkpoints,
                            state={MODEL_CONFIG_KEY: asdict(config.model),
                                   "config": asdict(config), "dev_loss": dev,
                                   "tasks": [t.name for t in tasks]})
    log.close()
    return TrainResult(out, end, loss_value, dev, skipped, time.perf_counter() - started)


@torch.no_grad()
def dev_losses(built: BuiltModel, tasks: list[Task], corpora: dict[str, Any],
               config: TrainConfig) -> dict[str, float]:
    """Mean RAG loss on the first ``dev_examples`` dev questions of each task."""
    model = built.model
    model.eval()
    losses = {}
    for task in tasks:
        examples = task.dev[: config.data.dev_examples]
        if not examples:
            continue
        model.set_corpus(task.corpus, corpora[task.name])
        total = 0.0
        for i in range(0, len(examples), config.optim.batch_size):
            chunk = examples[i:i + config.optim.batch_size]
            total += model([e.question for e in chunk], [e.answers[0] for e in chunk]
                           ).loss.item() * len(chunk)
        losses[task.name] = total / len(examples)
    return losses


def embed_corpus(built: BuiltModel, task: Task, cache_dir: str | None) -> Any:
    """The task's passage embeddings from the frozen passage encoder (cached on disk)."""
    from metarag.retrieval.cache import cached_embeddings

    logger.info("%s: embedding %d passages", task.name, len(task.corpus))
    return cached_embeddings(built.passage_encoder, task.corpus, cache_dir,
                             show_progress=True)


class RunLog:
    """JSONL log (and TensorBoard scalars); on resume, entries past the resume step go."""

    def __init__(self, out: Path, start: int, *, tensorboard: bool) -> None:
        self.path = out / "log.jsonl"
        if self.path.is_file():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= start]
            self.path.write_text("".join(line + "\n" for line in kept))
        self.file = self.path.open("a")
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=start or None)

    def write(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, int | float) and math.isfinite(value):
                    self.tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()
