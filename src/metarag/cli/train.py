"""`metarag train`: supervised or multi-task training of the RAG model."""

from __future__ import annotations

from pathlib import Path

import typer


def train(
    config: Path | None = typer.Option(None, "--config", "-c", exists=True, dir_okay=False,
                                       help="YAML config (see configs/). Default: built-in "
                                       "defaults on the synthetic suite."),
    overrides: list[str] | None = typer.Option(
        None, "--set", "-s", help="Override a config key, e.g. --set optim.lr=3e-5 "
        "--set data.tasks=[xquad,agxqa]; repeat the option."),
    resume: bool = typer.Option(False, "--resume",
                                help="Continue the run in the config's `out` folder from its "
                                "latest checkpoint."),
    stop_after: int | None = typer.Option(None, help="Stop after this many steps (resume later)."),
) -> None:
    """Train the retriever and generator jointly on one task or several.

    Several tasks give the multi-task baseline of the evaluation protocol. The run
    folder gets config.yaml, log.jsonl, tensorboard/ and step-N/ checkpoints.
    """
    from metarag.config import load_config
    from metarag.train import TrainConfig
    from metarag.train import train as run

    cfg = load_config(TrainConfig, config, overrides or [])
    result = run(cfg, resume=resume, stop_after=stop_after)
    dev = ", ".join(f"{k} {v:.3f}" for k, v in result.dev_loss.items()) or "not evaluated"
    typer.echo(f"step {result.step}: loss {result.last_loss:.4f}; dev loss: {dev}; "
               f"{result.seconds:.0f} s; run folder {result.out}")
    if result.skipped_steps:
        typer.echo(f"skipped steps (non-finite loss or gradient): {result.skipped_steps}")
