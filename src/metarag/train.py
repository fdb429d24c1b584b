"""Supervised training of the RAG model on one task or several (the multi-task baseline).

The loop reads top to bottom: sample a batch from one task -> RAG-sequence loss
-> skip the step if the loss is not finite -> clip -> AdamW step -> log ->
dev loss -> checkpoint. Batches are a pure function of (seed, step), and the
checkpoint holds the trained weights, AdamW moments, the LR schedule position and
every RNG, so a killed run resumed from its last checkpoint continues exactly.

What trains is chosen as in meta-training (``params``/``exclude``, presets of
`metarag.meta.params`, default LoRA), so that the multi-task baseline and the
meta-learned initialisation update the same weights; the rest stays frozen and
is not saved. The run folder, resume, skipped steps and checkpoints are the
skeleton both loops share (`metarag.loop`).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from metarag.data.schema import QAExample, Task
from metarag.loop import (  # DataConfig ... lr_factor: re-exported, others import them here
    DataConfig,
    Run,
    RunLog,
    TrainingError,
    checkpoint_to_resume,
    embed_corpus,
    lr_factor,
    prepare,
    train_only,
)
from metarag.meta.params import select_params
from metarag.rag.build import BuiltModel, ModelConfig

__all__ = ["DataConfig", "OptimConfig", "RunLog", "TrainConfig", "TrainResult", "TrainingError",
           "batch_for_step", "checkpoint_to_resume", "demos_for_step", "dev_losses",
           "embed_corpus", "lr_factor", "train"]


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
    """A whole training run; saved as config.yaml in the run folder.

    Attributes:
        params: Presets or patterns of the weights that train (`metarag.meta.params`),
            as meta-training's ``inner.params``; the default, LoRA, is meta-training's
            default. ``[all]`` trains every weight (the BERT configs do).
        exclude: Patterns removed from ``params`` (meta-training's default too).
        demos: MetaICL-style training: this many other train examples of the batch's
            task in every prompt (drawn per step), so the model learns to use
            demonstrations; 0 trains on plain prompts.
    """

    out: str = "runs/train"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    params: list[str] = field(default_factory=lambda: ["lora"])
    exclude: list[str] = field(default_factory=lambda: ["embeddings"])
    eval_every: int = 50
    checkpoint_every: int = 50
    log_every: int = 10
    keep_checkpoints: int = 2
    max_bad_steps: int = 5
    tensorboard: bool = True
    cache_dir: str | None = "runs/cache"
    demos: int = 0

    def __post_init__(self) -> None:
        if self.demos < 0:
            raise ValueError(f"demos must be >= 0, got {self.demos}")
        for name in ("eval_every", "checkpoint_every", "log_every", "max_bad_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.params:
            raise ValueError("params is empty: name at least one preset, e.g. 'lora' or 'all'")


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


def demos_for_step(task: Task, batch: list[QAExample], step: int, k: int, seed: int
                   ) -> list[QAExample]:
    """MetaICL's demonstrations for a step: k train examples of the task outside the batch.

    A pure function of (seed, step), like `batch_for_step`.
    """
    ids = {e.id for e in batch}
    pool = [e for e in task.train if e.id not in ids]
    return random.Random(f"{seed}:{step}:demos").sample(pool, min(k, len(pool)))


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

    started = time.perf_counter()
    optim = config.optim
    run = Run(config, total=optim.steps, resume=resume, stop_after=stop_after,
              hint="Lower optim.lr or check the data")
    tasks, built, corpora = prepare(config, tasks)
    empty = [t.name for t in tasks if not t.train]
    if empty:
        raise TrainingError(f"no training examples in {', '.join(empty)}")
    model = built.model
    trained = train_only(model, select_params(model, config.params, config.exclude))

    # Query encoder first, generator second: two groups with their own base rates.
    own = dict(model.named_parameters())
    names = sorted(trained, key=lambda n: not n.startswith("query_model."))
    params = [own[n] for n in names]
    n_query = sum(n.startswith("query_model.") for n in names)
    base_lrs = [optim.retriever_lr, optim.lr]
    optimizer = torch.optim.AdamW(
        [{"params": params[:n_query]}, {"params": params[n_query:]}],
        lr=optim.lr, weight_decay=optim.weight_decay)
    run.restore(model, optimizer, names)

    loss_value = float("nan")
    dev: dict[str, float] = {}
    model.train()
    bar = tqdm(range(run.start, run.end), initial=run.start, total=optim.steps, desc="train",
               disable=not show_progress)
    for step in bar:
        # The LR is a function of the step alone (no scheduler state to resume).
        factor = lr_factor(step, optim.warmup_steps, optim.steps)
        for group, base in zip(optimizer.param_groups, base_lrs):
            group["lr"] = base * factor
        t, batch = batch_for_step(tasks, step, optim.batch_size, config.seed)
        task = tasks[t]
        model.set_corpus(task.corpus, corpora[task.name])
        with model.demos_while(demos_for_step(task, batch, step, config.demos, config.seed)):
            loss = model([e.question for e in batch], [e.answers[0] for e in batch]).loss
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            run.skip(step, f"loss is {loss_value}", task=task.name, loss=loss_value)
            continue
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, optim.grad_clip).item()
        if not math.isfinite(grad_norm):
            run.skip(step, f"gradient norm is {grad_norm}", task=task.name)
            continue
        optimizer.step()
        run.step_ok()
        done = step + 1
        if run.due(done, config.log_every):
            run.log.write({"step": done, "loss": loss_value, "lr": optim.lr * factor,
                           "grad_norm": grad_norm, "task": task.name,
                           "seconds": time.perf_counter() - started})
        bar.set_postfix(loss=f"{loss_value:.3f}", task=task.name.split("/")[-1])
        if run.due(done, config.eval_every, last=optim.steps):
            dev = dev_losses(built, tasks, corpora, config)
            run.log.write({"step": done, **{f"dev_loss/{k}": v for k, v in dev.items()}})
            model.train()
        if run.due(done, config.checkpoint_every):
            run.save(done, model=model, trained=trained, optimizer=optimizer,
                     param_names=names, state={"dev_loss": dev,
                                               "tasks": [t.name for t in tasks]})
    run.close()
    return TrainResult(run.out, run.end, loss_value, dev, run.skipped,
                       time.perf_counter() - started)


@torch.no_grad()
def dev_losses(built: BuiltModel, tasks: list[Task], corpora: dict[str, Any],
               config: TrainConfig) -> dict[str, float]:
    """Mean RAG loss on the first ``dev_examples`` dev questions of each task (with
    MetaICL training, the first ``demos`` train examples of the task in the prompt)."""
    model = built.model
    model.eval()
    losses = {}
    for task in tasks:
        examples = task.dev[: config.data.dev_examples]
        if not examples:
            continue
        model.set_corpus(task.corpus, corpora[task.name])
        total = 0.0
        with model.demos_while(task.train[:config.demos]):
            for i in range(0, len(examples), config.optim.batch_size):
                chunk = examples[i:i + config.optim.batch_size]
                total += model([e.question for e in chunk], [e.answers[0] for e in chunk]
                               ).loss.item() * len(chunk)
        losses[task.name] = total / len(examples)
    return losses
