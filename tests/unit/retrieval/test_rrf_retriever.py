"""Reciprocal-rank fusion on hand-made rankings, and the Retriever facade."""

from __future__ import annotations

import pytest

from metarag.data.schema import Passage
from metarag.retrieval.bm25 import BM25Index
from metarag.retrieval.encoder import DenseEncoder
from metarag.retrieval.hits import Hits
from metarag.retrieval.hybrid import Retriever, reciprocal_rank_fusion
from metarag.retrieval.index import DenseIndex


def _run(method: str, *rankings: list[str]) -> Hits:
    return Hits([list(r) for r in rankings], [[1.0] * len(r) for r in rankings], method)


def test_rrf_matches_hand_computation() -> None:
    dense = _run("dense", ["a", "b", "c"])
    bm25 = _run("bm25", ["b", "c", "d"])
    fused = reciprocal_rank_fusion([dense, bm25], k=10, rrf_k=60)
    # a: 1/61; b: 1/62 + 1/61; c: 1/63 + 1/62; d: 1/63
    expected = {"b": 1 / 62 + 1 / 61, "c": 1 / 63 + 1 / 62, "a": 1 / 61, "d": 1 / 63}
    assert fused.ids == [["b", "c", "a", "d"]]
    assert fused.scores[0] == pytest.approx([expected[i] for i in fused.ids[0]], abs=1e-12)
    assert fused.method == "rrf(dense+bm25)"


def test_rrf_small_constant_favours_top_ranks() -> None:
    # With rrf_k=0: x = 1/1 + 1/3 = 1.333, y = 1/2 + 1/2 = 1.0, z = 1/3 + 1/1 = 1.333
    a = _run("a", ["x", "y", "z"])
    b = _run("b", ["z", "y", "x"])
    fused = reciprocal_rank_fusion([a, b], k=3, rrf_k=0)
    # x and z tie; both reach rank 1, x in the first run, so x wins the tie.
    assert fused.ids == [["x", "z", "y"]]
    assert fused.scores[0] == pytest.approx([4 / 3, 4 / 3, 1.0])


def test_rrf_truncates_and_handles_several_queries_and_empty_runs() -> None:
    a = _run("a", ["p", "q", "r"], [])
    b = _run("b", ["r", "s"], [])
    fused = reciprocal_rank_fusion([a, b], k=2)
    assert fused.ids == [["r", "p"], []]


def test_rrf_rejects_mismatched_runs() -> None:
    with pytest.raises(ValueError, match="same queries"):
        reciprocal_rank_fusion([_run("a", ["x"]), _run("b", ["x"], ["y"])], k=1)
    with pytest.raises(ValueError, match="at least one run"):
        reciprocal_rank_fusion([], k=1)


def test_hits_validates_lengths() -> None:
    with pytest.raises(ValueError, match="query 0 has 2 ids but 1 scores"):
        Hits([["a", "b"]], [[1.0]])


def test_retriever_methods(tiny_encoder: DenseEncoder, corpus: list[Passage]) -> None:
    dense = DenseIndex.build(corpus, tiny_encoder)
    bm25 = BM25Index.build(corpus)
    retriever = Retriever(dense, bm25, candidates=4)
    assert retriever.methods == ("dense", "bm25", "hybrid")
    questions = ["What do mitochondria produce?", "interest rates"]
    assert retriever.retrieve(questions, 2, "dense") == dense.search(questions, 2)
    assert retriever.retrieve(questions, 2, "bm25") == bm25.search(questions, 2)
    expected = reciprocal_rank_fusion([dense.search(questions, 4), bm25.search(questions, 4)], k=2)
    assert retriever.retrieve(questions, 2, "hybrid") == expected
    assert retriever.retrieve(questions, 2) == expected  # hybrid is the default with both


def test_retriever_with_one_index_explains_what_is_missing(corpus: list[Passage]) -> None:
    retriever = Retriever(bm25=BM25Index.build(corpus))
    assert retriever.methods == ("bm25",)
    assert retriever.retrieve(["mitochondria"], 1).ids == [["mito"]]
    with pytest.raises(ValueError, match="needs a dense index"):
        retriever.retrieve(["q"], 1, "hybrid")
    with pytest.raises(ValueError, match="unknown retrieval method"):
        retriever.retrieve(["q"], 1, "colbert")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs a DenseIndex, a BM25Index, or both"):
        Retriever()
