"""`metarag ask`: a trained model's answer to one question, with the passages it cites."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    import numpy as np

    from metarag.rag.build import BuiltModel

log = logging.getLogger(__name__)
SNIPPET = 200  # characters of a cited passage shown in the terminal


def ask(
    question: str = typer.Argument(..., help="The question to answer."),
    checkpoint: Path = typer.Option(
        ..., "--checkpoint", "-c", exists=True, file_okay=False,
        help="A checkpoint folder, or a run folder (its latest checkpoint)."),
    index: Path = typer.Option(
        ..., "--index", "-i", exists=True, file_okay=False,
        help="Folder written by `index build` with the model's encoder."),
    k: int | None = typer.Option(None, "-k", min=1,
                                 help="Passages to retrieve. Default: the model's own k."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object."),
) -> None:
    """Answer QUESTION from the indexed passages and list the passages the answer cites.

    Citations are ranked by their weight p(passage | question, answer).
    """
    if not question.strip():
        raise typer.BadParameter("the question is empty", param_hint="QUESTION")
    from metarag.evaluation.qa import answer_questions
    from metarag.rag.build import load_trained

    built, _ = load_trained(str(checkpoint))
    use_index(built, index, checkpoint=checkpoint)
    answer = answer_questions(built, [question], k=k)[0]
    citations = [{"id": c.passage_id, "title": c.title, "weight": c.weight,
                  "retrieval_score": c.retrieval_score, "text": c.text}
                 for c in answer.citations]
    if as_json:
        typer.echo(json.dumps({"question": question, "answer": answer.answer,
                               "citations": citations}, indent=2, ensure_ascii=False))
        return
    typer.echo(f"Answer: {answer.answer}\n\nCited passages:")
    for rank, c in enumerate(citations, start=1):
        title = f" [{c['title']}]" if c["title"] else ""
        text = " ".join(c["text"].split())
        text = text if len(text) <= SNIPPET else text[:SNIPPET - 3] + "..."
        typer.echo(f"{rank}. {c['id']}{title}  weight={c['weight']:.3f}\n   {text}")


def use_index(built: BuiltModel, directory: Path, *, checkpoint: Path | None = None) -> None:
    """Point the model's retrieval at a saved index's passages and embeddings.

    The stored vectors are read back from FAISS when the index kind allows it;
    otherwise the passages are re-encoded with the model's passage encoder.

    Raises:
        IndexMismatchError: The index was built with another encoder than the
            checkpoint's passage encoder (its vectors would not match the queries).
    """
    from metarag.data.io import read_json
    from metarag.errors import IndexMismatchError
    from metarag.retrieval import DenseIndex
    from metarag.retrieval.index import META_FILE

    try:
        dense = DenseIndex.load(directory, encoder=built.passage_encoder)
    except IndexMismatchError:
        recorded = read_json(directory / META_FILE).get("encoder") or {}
        mine = built.passage_encoder.identity()
        raise IndexMismatchError(
            f"index {directory} was built with encoder {recorded.get('name_or_path')!r} "
            f"(fingerprint {str(recorded.get('fingerprint'))[:12]}), but "
            f"{'checkpoint ' + str(checkpoint) if checkpoint else 'the model'} embeds passages "
            f"with {mine['name_or_path']!r} (fingerprint {mine['fingerprint'][:12]}), so its "
            "vectors would not match the model's questions. Rebuild the index with the model's "
            f"encoder: metarag index build <task> --out <folder> --encoder "
            f"{mine['name_or_path']}") from None
    if dense.encoder_identity is None:
        log.warning("index %s records no encoder; assuming its vectors come from the model's "
                    "passage encoder", directory)
    built.use_corpus(dense.passages, embeddings=_stored_vectors(dense), show_progress=True)


def _stored_vectors(dense: Any) -> np.ndarray | None:
    """The (N, D) passage vectors held by a FAISS index, or None when it cannot give them back."""
    import faiss

    try:
        if dense.kind == "ivf":
            # IVF lists are keyed by bucket; reconstruction needs the id -> slot map.
            faiss.extract_index_ivf(dense.index).make_direct_map()
        return dense.index.reconstruct_n(0, len(dense))
    except RuntimeError as err:
        log.info("the %s index cannot return its vectors (%s); re-encoding %d passages",
                 dense.kind, str(err).strip().splitlines()[0] if str(err).strip() else err,
                 len(dense))
        return None
