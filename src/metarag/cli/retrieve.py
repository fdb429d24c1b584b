"""`metarag retrieve`: ranked passages for a question from a saved index."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def retrieve(
    question: str = typer.Argument(..., help="The question to retrieve passages for."),
    index: Path = typer.Option(..., "--index", "-i", help="Folder written by `index build`.",
                               exists=True, file_okay=False),
    k: int = typer.Option(5, "-k", help="How many passages to return.", min=1),
    method: str = typer.Option("dense", help="dense, bm25 or hybrid (reciprocal-rank fusion)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Print the top-k passages for QUESTION with their scores."""
    from metarag.retrieval import BM25Index, DenseIndex, Retriever

    if not question.strip():
        raise typer.BadParameter("the question is empty", param_hint="QUESTION")
    from metarag.cli.index import BM25_FOLDER

    dense = DenseIndex.load(index)
    bm25 = None
    if method != "dense":
        saved = index / BM25_FOLDER
        bm25 = (BM25Index.load(saved) if saved.is_dir()
                else BM25Index.build(dense.passages, language=dense.language))
    hits = Retriever(dense=dense, bm25=bm25).retrieve([question], k=k, method=method)
    by_id = {p.id: p for p in dense.passages}
    ranked = [{"rank": r, "id": pid, "score": score, "title": by_id[pid].title,
               "text": by_id[pid].text}
              for r, (pid, score) in enumerate(zip(hits.ids[0], hits.scores[0]), start=1)]
    if as_json:
        typer.echo(json.dumps(ranked, indent=2, ensure_ascii=False))
        return
    for hit in ranked:
        title = f" [{hit['title']}]" if hit["title"] else ""
        text = hit["text"] if len(hit["text"]) <= 300 else hit["text"][:297] + "..."
        typer.echo(f"{hit['rank']}. {hit['id']}{title}  score={hit['score']:.4f}\n   {text}")
