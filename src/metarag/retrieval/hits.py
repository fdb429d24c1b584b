"""Hits: what every retriever returns, ranked passage ids and scores per query."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Hits:
    """Ranked passages for a batch of queries, best first.

    Attributes:
        ids: ``ids[q]`` are the passage ids retrieved for query q, best first; may
            be shorter than k (small corpus, or a BM25 query sharing no term with
            any passage) or empty.
        scores: ``scores[q][r]`` is the score of ``ids[q][r]``; higher is better, and
            comparable only within one method (cosine for dense, BM25 for sparse,
            fused reciprocal rank for hybrid).
        method: Which retriever produced them, e.g. "dense", "bm25", "rrf(dense+bm25)".
    """

    ids: list[list[str]]
    scores: list[list[float]]
    method: str = ""

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.scores):
            raise ValueError(f"Hits: {len(self.ids)} id lists but {len(self.scores)} score lists")
        for q, (i, s) in enumerate(zip(self.ids, self.scores, strict=True)):
            if len(i) != len(s):
                raise ValueError(f"Hits: query {q} has {len(i)} ids but {len(s)} scores")

    def __len__(self) -> int:
        """Number of queries."""
        return len(self.ids)

    def top(self, k: int) -> Hits:
        """The first k hits of every query."""
        return Hits([i[:k] for i in self.ids], [s[:k] for s in self.scores], self.method)
