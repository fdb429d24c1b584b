"""Retrieval quality: recall@k and MRR of ranked passages against gold passage ids.

recall@k here is the share of questions with at least one gold passage in the
top k (the "answer recall" used by DPR/RAG); with chunked documents any chunk
holding the answer counts. Questions without gold passages are left out and
counted, never scored as misses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from metarag.data.schema import Task


def recall_at_k(ranked: Sequence[Sequence[str]], gold: Sequence[set[str]], k: int) -> float:
    """Share of queries with a gold id among their first k ranked ids."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if len(ranked) != len(gold):
        raise ValueError(f"{len(ranked)} rankings but {len(gold)} gold sets")
    if not ranked:
        return 0.0
    return sum(bool(g.intersection(r[:k])) for r, g in zip(ranked, gold)) / len(ranked)


def mean_reciprocal_rank(ranked: Sequence[Sequence[str]], gold: Sequence[set[str]]) -> float:
    """Mean of 1/rank of the first gold id (0 when none is ranked)."""
    if len(ranked) != len(gold):
        raise ValueError(f"{len(ranked)} rankings but {len(gold)} gold sets")
    if not ranked:
        return 0.0
    total = 0.0
    for r, g in zip(ranked, gold):
        total += next((1.0 / i for i, pid in enumerate(r, start=1) if pid in g), 0.0)
    return total / len(ranked)


@dataclass
class RetrievalScores:
    """Scores of one retrieval method on one task split."""

    task: str
    method: str
    split: str
    questions: int
    recall: dict[int, float]
    mrr: float
    mrr_cutoff: int
    no_gold: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["recall"] = {f"@{k}": v for k, v in self.recall.items()}
        return out


def evaluate_retrieval(
    task: Task,
    retriever: Any,
    *,
    methods: Sequence[str] = ("dense", "bm25", "hybrid"),
    ks: Sequence[int] = (1, 5, 20),
    split: str = "test",
) -> list[RetrievalScores]:
    """Score each method's rankings for a task split.

    Args:
        task: The task whose split questions are asked against its corpus.
        retriever: A `metarag.retrieval.Retriever` over the task's corpus.
        methods: Retrieval methods to compare.
        ks: Cut-offs for recall; MRR is computed over the top max(ks).
        split: Which QA split to score.
    """
    import time

    examples = task.split(split)
    scored = [e for e in examples if e.gold_passage_ids]
    questions = [e.question for e in scored]
    gold = [set(e.gold_passage_ids) for e in scored]
    depth = max(ks)
    results = []
    for method in methods:
        start = time.perf_counter()
        hits = retriever.retrieve(questions, k=depth, method=method) if questions else None
        ranked = hits.ids if hits is not None else []
        results.append(RetrievalScores(
            task=task.name, method=method, split=split, questions=len(scored),
            recall={k: recall_at_k(ranked, gold, k) for k in ks},
            mrr=mean_reciprocal_rank(ranked, gold), mrr_cutoff=depth,
            no_gold=len(examples) - len(scored), seconds=time.perf_counter() - start,
        ))
    return results


def markdown_table(scores: Sequence[RetrievalScores]) -> str:
    """A markdown table with one row per (task, method)."""
    if not scores:
        return "(no results)\n"
    ks = sorted(scores[0].recall)
    head = ["task", "method", "questions", *(f"R@{k}" for k in ks),
            f"MRR@{scores[0].mrr_cutoff}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in scores:
        cells = [s.task, s.method, str(s.questions),
                 *(f"{100 * s.recall[k]:.1f}" for k in ks), f"{100 * s.mrr:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
