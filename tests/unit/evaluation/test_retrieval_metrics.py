import pytest

from metarag.evaluation.retrieval import (
    RetrievalScores,
    markdown_table,
    mean_reciprocal_rank,
    recall_at_k,
)

RANKED = [["a", "b", "c"], ["x", "y", "z"], ["p", "q", "r"]]
GOLD = [{"b"}, {"x", "r"}, {"nope"}]


def test_recall_at_k_by_hand():
    assert recall_at_k(RANKED, GOLD, 1) == pytest.approx(1 / 3)  # only query 2 hits at rank 1
    assert recall_at_k(RANKED, GOLD, 2) == pytest.approx(2 / 3)
    assert recall_at_k(RANKED, GOLD, 3) == pytest.approx(2 / 3)  # query 3 never hits


def test_mrr_by_hand():
    # ranks of the first gold id: 2, 1, none -> (1/2 + 1 + 0) / 3
    assert mean_reciprocal_rank(RANKED, GOLD) == pytest.approx(0.5)


def test_metrics_reject_bad_arguments():
    with pytest.raises(ValueError, match="k must be"):
        recall_at_k(RANKED, GOLD, 0)
    with pytest.raises(ValueError, match="rankings"):
        mean_reciprocal_rank(RANKED, GOLD[:2])
    assert recall_at_k([], [], 5) == 0.0


def test_markdown_table_has_one_row_per_result():
    s = RetrievalScores(task="t", method="dense", split="test", questions=3,
                        recall={1: 1 / 3, 5: 2 / 3}, mrr=0.5, mrr_cutoff=5)
    table = markdown_table([s, s])
    assert table.splitlines()[0] == "| task | method | questions | R@1 | R@5 | MRR@5 |"
    assert "| t | dense | 3 | 33.3 | 66.7 | 50.0 |" in table
    assert len(table.splitlines()) == 4
