"""Hybrid retrieval by reciprocal-rank fusion, and the Retriever facade over all methods."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from metarag.retrieval.hits import Hits

if TYPE_CHECKING:
    from metarag.data.schema import Passage
    from metarag.retrieval.bm25 import BM25Index
    from metarag.retrieval.encoder import DenseEncoder
    from metarag.retrieval.index import DenseIndex, IndexKind

Method = Literal["dense", "bm25", "hybrid"]
METHODS = ("dense", "bm25", "hybrid")


def reciprocal_rank_fusion(runs: Sequence[Hits], *, k: int, rrf_k: int = 60) -> Hits:
    """Fuse rankings by reciprocal rank (Cormack, Clarke & Buettcher, SIGIR 2009).

    Each passage scores ``sum over runs of 1 / (rrf_k + rank)`` with rank 1 for
    a run's best hit; a run that did not return the passage adds nothing. Only
    ranks are used, so BM25 and cosine scores need no calibration against each
    other. Ties are broken by the best rank a passage reached anywhere, then by
    the order of ``runs`` (so the first run wins a tie).

    Args:
        runs: Rankings of the same queries (equal ``len``), e.g. dense and BM25.
        k: Passages to keep per query.
        rrf_k: The constant that damps the weight of top ranks; 60 in the paper.

    Returns:
        Hits named ``"rrf(<method>+<method>)"`` with fused scores.
    """
    if not runs:
        raise ValueError("reciprocal_rank_fusion needs at least one run")
    n_queries = len(runs[0])
    if any(len(r) != n_queries for r in runs):
        raise ValueError("all runs must rank the same queries; got query counts "
                         + ", ".join(str(len(r)) for r in runs))
    if rrf_k < 0:
        raise ValueError(f"rrf_k must be >= 0, got {rrf_k}")
    fused_ids: list[list[str]] = []
    fused_scores: list[list[float]] = []
    for q in range(n_queries):
        score: dict[str, float] = {}
        best: dict[str, tuple[int, int]] = {}  # id -> (best rank, run index)
        for r, run in enumerate(runs):
            for rank, pid in enumerate(run.ids[q], start=1):
                score[pid] = score.get(pid, 0.0) + 1.0 / (rrf_k + rank)
                best[pid] = min(best.get(pid, (rank, r)), (rank, r))
        order = sorted(score, key=lambda pid: (-score[pid], best[pid]))[:max(k, 0)]
        fused_ids.append(order)
        fused_scores.append([score[pid] for pid in order])
    method = "rrf(" + "+".join(run.method or "?" for run in runs) + ")"
    return Hits(fused_ids, fused_scores, method)


class Retriever:
    """One entry point for dense, BM25 and hybrid retrieval over a corpus.

    Attributes:
        dense: The FAISS index with its query encoder, or None.
        bm25: The BM25 index, or None.
        candidates: Hits fetched from each method before hybrid fusion (at least k).
        rrf_k: Reciprocal-rank-fusion constant.
    """

    def __init__(self, dense: DenseIndex | None = None, bm25: BM25Index | None = None, *,
                 candidates: int = 100, rrf_k: int = 60) -> None:
        if dense is None and bm25 is None:
            raise ValueError("a Retriever needs a DenseIndex, a BM25Index, or both")
        self.dense = dense
        self.bm25 = bm25
        self.candidates = candidates
        self.rrf_k = rrf_k

    @classmethod
    def build(cls, passages: Sequence[Passage], encoder: DenseEncoder | None = None, *,
              language: str = "en", dense: bool = True, bm25: bool = True,
              kind: IndexKind = "auto", batch_size: int = 64,
              show_progress: bool = False) -> Retriever:
        """Index a corpus for the chosen methods.

        Args:
            passages: The corpus.
            encoder: Dense encoder; None loads the default MiniLM (when ``dense``).
            language: BM25 tokenizer language.
            dense: Build the FAISS index.
            bm25: Build the BM25 index.
            kind: FAISS index kind.
            batch_size: Encoder batch size.
            show_progress: Progress bar while encoding.
        """
        from metarag.retrieval.bm25 import BM25Index
        from metarag.retrieval.encoder import DenseEncoder
        from metarag.retrieval.index import DenseIndex

        dense_index = None
        if dense:
            encoder = encoder if encoder is not None else DenseEncoder.from_pretrained()
            dense_index = DenseIndex.build(passages, encoder, kind=kind, batch_size=batch_size,
                                           show_progress=show_progress)
        bm25_index = BM25Index.build(passages, language) if bm25 else None
        return cls(dense_index, bm25_index)

    @property
    def methods(self) -> tuple[str, ...]:
        """The methods this retriever can run."""
        have = [m for m, index in (("dense", self.dense), ("bm25", self.bm25)) if index is not None]
        return (*have, "hybrid") if len(have) == 2 else tuple(have)

    def retrieve(self, questions: Sequence[str], k: int, method: Method | None = None) -> Hits:
        """The top-k passages for each question.

        Args:
            questions: Query strings.
            k: Passages per question.
            method: "dense", "bm25" or "hybrid" (RRF of both, each fetching
                ``max(k, candidates)``); None picks hybrid when both indexes exist,
                else the one that does.

        Raises:
            ValueError: The method needs an index this retriever does not have.
        """
        available = self.methods
        if method is None:
            method = "hybrid" if "hybrid" in available else available[0]
        if method not in METHODS:
            raise ValueError(f"unknown retrieval method {method!r}; expected one of "
                             f"{', '.join(METHODS)}")
        if method not in available:
            missing = [m for m, i in (("dense", self.dense), ("bm25", self.bm25)) if i is None]
            raise ValueError(f"method {method!r} needs a {' and '.join(missing)} index, which this "
                             f"Retriever lacks (it has: {', '.join(available)}); build it with "
                             "Retriever.build(passages, ...) or pass it to Retriever(...)")
        questions = list(questions)
        depth = k if method != "hybrid" else max(k, self.candidates)
        runs = []
        if method in ("dense", "hybrid") and self.dense is not None:
            runs.append(self.dense.search(questions, depth))
        if method in ("bm25", "hybrid") and self.bm25 is not None:
            runs.append(self.bm25.search(questions, depth))
        if method != "hybrid":
            return runs[0]
        return reciprocal_rank_fusion(runs, k=k, rrf_k=self.rrf_k)

    def __repr__(self) -> str:
        return f"Retriever(dense={self.dense!r}, bm25={self.bm25!r})"
