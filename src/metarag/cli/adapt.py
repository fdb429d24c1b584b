"""`metarag adapt`: adapt a trained or meta-trained model to a new domain from a few examples."""

from __future__ import annotations

from pathlib import Path

import typer

from metarag.cli.common import CacheDirOption, cache_dir_value


def adapt(
    checkpoint: Path = typer.Option(..., "--checkpoint", "-c", exists=True, file_okay=False,
                                    help="A checkpoint or run folder (meta-train or train)."),
    task: str = typer.Option(..., "--task-file", "--task", "-t",
                             help="The new domain: a task folder (corpus + QA, see "
                             "docs/DATA_FORMAT.md), a shared dataset folder or "
                             "synthetic/<domain>."),
    shots: int = typer.Option(16, min=1, help="Labelled examples to adapt on (from the train "
                              "split)."),
    steps: int | None = typer.Option(None, min=0, help="SGD steps. Default: the meta-training "
                                     "run's inner.steps, else 8."),
    lr: float | None = typer.Option(None, help="SGD step size. Default: a Meta-SGD run's "
                                    "learned per-parameter rates, else the meta-training run's "
                                    "inner.lr, else 1e-3."),
    in_context: bool | None = typer.Option(
        None, "--in-context/--no-in-context",
        help="Adapt with the support set in every prompt (an example's own left out), as "
        "the model will then be asked: `ask` and `serve` put it in the prompt by default. "
        "Default: as the model was trained to read: on after meta-training over "
        "in-context episodes (inner.in_context) or MetaICL training (demos > 0), else off."),
    seed: int = typer.Option(0, help="Which shots are drawn, and the split seed."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the adapted model and the "
                             "new domain's index."),
    cache_dir: str = CacheDirOption,
) -> None:
    """Index the new domain's corpus, adapt on SHOTS examples, save the adapted model.

    The adapted model is a checkpoint folder (OUT/step-...) that `metarag evaluate
    --checkpoint OUT` and `metarag ask --checkpoint OUT --index OUT/index` accept;
    the starting checkpoint is not modified.
    """
    import random
    import time
    from dataclasses import asdict

    from metarag.checkpoint import load_checkpoint, save_checkpoint
    from metarag.data.loaders import load_task
    from metarag.meta.adapt import AdaptConfig, adapted_names
    from metarag.meta.adapt import adapt as run
    from metarag.meta.train import learned_inner_lrs
    from metarag.rag.build import (
        AUX_PREFIX,
        BASE_KEY,
        MODEL_CONFIG_KEY,
        base_record,
        build_seed,
        load_trained,
        model_weights,
    )
    from metarag.retrieval import DenseIndex
    from metarag.retrieval.cache import cached_embeddings

    started = time.perf_counter()
    built, state = load_trained(str(checkpoint))
    built.cache_dir = cache_dir_value(cache_dir)
    trained_inner = state.get("config", {}).get("inner", {})
    config = AdaptConfig(**{**AdaptConfig().__dict__, **trained_inner})
    config.steps = steps if steps is not None else (config.steps if trained_inner else 8)
    config.lr = lr if lr is not None else config.lr
    config.batch_size = config.batch_size or 16
    trained_with_demos = bool(config.in_context or state.get("config", {}).get("demos"))
    config.in_context = in_context if in_context is not None else trained_with_demos
    target = load_task(task, seed=seed)
    if len(target.train) < shots:
        raise typer.BadParameter(f"{target.name} has {len(target.train)} train examples; "
                                 f"--shots {shots} needs that many")
    support = random.Random(f"adapt:{seed}").sample(sorted(target.train, key=lambda e: e.id),
                                                     shots)
    # Embed once: the saved index and the adapted model's retrieval share the vectors.
    vectors = cached_embeddings(built.passage_encoder, target.corpus, built.cache_dir,
                                show_progress=True)
    DenseIndex.from_embeddings(target.corpus, vectors, encoder=built.passage_encoder,
                               language=target.language).save(out / "index")
    built.use_corpus(target.corpus, embeddings=vectors)
    start = load_checkpoint(checkpoint).model
    learned = None if lr is not None else (learned_inner_lrs(start) or None)
    adapted = run(built, support, config=config, learned_lrs=learned)
    # The adapted model differs from the base in what the start trained and what was
    # adapted now; only those weights are saved (all of them after an old full start).
    trained = {k for k in start if not k.startswith(AUX_PREFIX)}
    trained |= set(adapted_names(adapted.model, config))
    saved = save_checkpoint(out, config.steps, model=model_weights(adapted.model, trained),
                            keep=1, state={
                                MODEL_CONFIG_KEY: state[MODEL_CONFIG_KEY], "kind": "adapted",
                                BASE_KEY: base_record(adapted.model, seed=build_seed(state)),
                                "adapted_from": str(checkpoint), "task": target.name,
                                "task_source": str(task), "shots": shots,
                                "support_ids": [e.id for e in support], "adapt": asdict(config),
                                "learned_lrs": learned is not None,
                                "config": {"data": {"seed": seed}}})
    rate = "Meta-SGD's learned rates" if learned else f"lr {config.lr:g}"
    typer.echo(f"adapted to {target.name} with {shots} shots, {config.steps} steps at {rate} "
               f"({time.perf_counter() - started:.0f} s): {saved}\n"
               f"ask it: metarag ask --checkpoint {out} --index {out / 'index'} \"...\"")
