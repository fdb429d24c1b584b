"""`metarag meta-train`: learn an initialisation that adapts to a new domain in a few steps."""

from __future__ import annotations

from pathlib import Path

import typer


def meta_train(
    config: Path | None = typer.Option(None, "--config", "-c", exists=True, dir_okay=False,
                                       help="YAML config (see configs/meta-synthetic.yaml). "
                                       "Default: built-in defaults on the synthetic suite."),
    overrides: list[str] | None = typer.Option(
        None, "--set", "-s", help="Override a config key, e.g. --set meta.algorithm=maml "
        "--set inner.steps=2 --set inner.params=[decoder]; repeat the option."),
    resume: bool = typer.Option(False, "--resume",
                                help="Continue the run in the config's `out` folder from its "
                                "latest checkpoint (sampler, optimiser and RNG included)."),
    stop_after: int | None = typer.Option(None,
                                          help="Stop after this many meta-steps (resume later)."),
) -> None:
    """Meta-train the RAG model over episodes from several domains.

    Algorithms (meta.algorithm): maml (second order), fomaml, reptile, meta_sgd.
    Each meta-step draws meta.meta_batch episodes (n_shot support + n_query query
    examples from one domain each), adapts on the support sets with inner.steps
    SGD steps on the inner.params weights, and updates the initialisation from
    the query losses. The run folder gets config.yaml, log.jsonl (query, support
    and meta-validation losses), tensorboard/ and step-N/ checkpoints that
    `metarag adapt`, `evaluate` and `ask` accept.

    On several processes: `torchrun --nproc-per-node N -m metarag meta-train ...`
    splits each meta-batch's tasks across them; rank 0 writes (docs/DISTRIBUTED.md).
    """
    import logging

    from metarag import distributed
    from metarag.config import load_config
    from metarag.meta.train import MetaTrainConfig
    from metarag.meta.train import meta_train as run

    cfg = load_config(MetaTrainConfig, config, overrides or [])
    distributed.init()
    main = distributed.is_main()
    try:
        if not main:  # rank 0 reports progress; the others only warnings
            logging.getLogger().setLevel(logging.WARNING)
        result = run(cfg, resume=resume, stop_after=stop_after)
    finally:
        distributed.destroy()
    if not main:
        return
    val = result.validation
    summary = (f"dev query loss {val['loss_before']:.3f} before / {val['loss_after']:.3f} after "
               "adaptation" if val else "not validated")
    typer.echo(f"meta-step {result.step}: query loss {result.last_loss:.4f}; {summary}; "
               f"{result.seconds:.0f} s; run folder {result.out}")
    if result.skipped_steps:
        typer.echo(f"skipped meta-steps (non-finite loss or gradient): {result.skipped_steps}")
