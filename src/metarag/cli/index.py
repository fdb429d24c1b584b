"""`metarag index build`: embed a task's corpus into a FAISS index on disk."""

from __future__ import annotations

from pathlib import Path

import typer

from metarag.cli.common import EncoderOption, SeedOption

BM25_FOLDER = "bm25"
app = typer.Typer(help="Build dense passage indexes.", no_args_is_help=True)


@app.command("build")
def build(
    source: str = typer.Argument(
        ..., help="A task: a task folder (shared dataset, user format, saved HF dataset) "
        "or synthetic/<domain>."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the index into."),
    encoder: str | None = EncoderOption,
    kind: str = typer.Option("auto", help="FAISS index: auto, flat, ivf or hnsw."),
    batch_size: int = typer.Option(64, help="Passages per encoding batch."),
    seed: int = SeedOption,
) -> None:
    """Encode every passage of SOURCE and save the index, its passages and encoder identity.

    A BM25 index of the same passages goes into OUT/bm25, so `retrieve` can use
    --method bm25 or hybrid without rebuilding it.
    """
    from metarag.data.loaders import load_task
    from metarag.retrieval import BM25Index, DenseEncoder, DenseIndex

    task = load_task(source, seed=seed)
    enc = DenseEncoder.from_pretrained(encoder)
    index = DenseIndex.build(task.corpus, enc, kind=kind, batch_size=batch_size,
                             show_progress=True, language=task.language)
    index.save(out)
    BM25Index.build(task.corpus, language=task.language).save(out / BM25_FOLDER)
    typer.echo(f"indexed {len(task.corpus)} passages of {task.name} into {out}")
