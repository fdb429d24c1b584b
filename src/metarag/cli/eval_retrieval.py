"""`metarag eval-retrieval`: recall@k and MRR of dense, BM25 and hybrid retrieval per task."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import typer

from metarag.cli.common import (
    CacheDirOption,
    DataOption,
    EncoderOption,
    SeedOption,
    TaskOption,
    cache_dir_value,
    load,
)

log = logging.getLogger(__name__)
METHODS = ("dense", "bm25", "hybrid")


def eval_retrieval(
    data: Path | None = DataOption,
    task: list[str] | None = TaskOption,
    method: list[str] | None = typer.Option(
        None, "--method", "-m", help="dense, bm25, hybrid; repeat the option. Default: all."),
    k: list[int] | None = typer.Option(
        None, "-k", help="Recall cut-offs; repeat the option. Default: 1, 5, 20."),
    split: str = typer.Option("test", help="QA split to score: train, dev or test."),
    encoder: str | None = EncoderOption,
    batch_size: int = typer.Option(64, help="Passages per encoding batch."),
    seed: int = SeedOption,
    cache_dir: str = CacheDirOption,
    out: Path = typer.Option(Path("runs/eval-retrieval"), "--out", "-o",
                             help="Folder for retrieval.json and retrieval.md."),
) -> None:
    """Score retrieval on each task's split against its gold passages.

    Every passage of a task's corpus is indexed; each question of the split is
    asked. Writes OUT/retrieval.json (all figures and settings) and
    OUT/retrieval.md (a markdown table), and prints the table.
    """
    from metarag.evaluation.retrieval import evaluate_retrieval, markdown_table
    from metarag.retrieval import BM25Index, DenseEncoder, DenseIndex, Retriever
    from metarag.retrieval.cache import cached_embeddings

    methods = method or list(METHODS)
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise typer.BadParameter(f"unknown method {', '.join(bad)}; use {', '.join(METHODS)}",
                                 param_hint="--method")
    ks = sorted(set(k or [1, 5, 20]))
    started = time.perf_counter()
    tasks = load(data, task, seed)
    enc = DenseEncoder.from_pretrained(encoder) if {"dense", "hybrid"} & set(methods) else None
    scores = []
    for t in tasks:
        log.info("%s: indexing %d passages", t.name, len(t.corpus))
        dense = None
        if enc is not None:
            emb = cached_embeddings(enc, t.corpus, cache_dir_value(cache_dir),
                                    batch_size=batch_size, show_progress=True)
            dense = DenseIndex.from_embeddings(t.corpus, emb, encoder=enc, language=t.language)
        bm25 = (BM25Index.build(t.corpus, language=t.language)
                if {"bm25", "hybrid"} & set(methods) else None)
        scores += evaluate_retrieval(t, Retriever(dense=dense, bm25=bm25), methods=methods,
                                     ks=ks, split=split)
    table = markdown_table(scores)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "settings": {"data": str(data) if data else "synthetic", "tasks": [t.name for t in tasks],
                     "methods": methods, "ks": ks, "split": split, "seed": seed,
                     "encoder": enc.identity() if enc is not None else None},
        "results": [s.to_dict() for s in scores],
        "wall_seconds": time.perf_counter() - started,
    }
    (out / "retrieval.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    (out / "retrieval.md").write_text(table)
    typer.echo(table)
    typer.echo(f"wrote {out / 'retrieval.json'} and {out / 'retrieval.md'} "
               f"({report['wall_seconds']:.0f} s)")
