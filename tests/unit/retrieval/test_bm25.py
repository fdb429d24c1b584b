"""BM25Index: tokenizers per language, known answers, empty queries, save/load."""

from __future__ import annotations

from pathlib import Path

import pytest

from metarag.data.schema import Passage
from metarag.errors import DataError
from metarag.retrieval.bm25 import BM25Index, tokenize


def test_english_tokenizer_lowercases_stems_and_drops_stopwords() -> None:
    assert tokenize("The Plants are growing in the gardens") == ["plant", "grow", "garden"]


def test_chinese_tokenizer_gives_character_unigrams_and_bigrams() -> None:
    assert tokenize("北京大学 in 1898年", "zh") == [
        "北", "京", "大", "学", "北京", "京大", "大学", "in", "1898", "年"]
    assert tokenize("x", "zh-CN") == ["x"]


def test_other_languages_get_plain_lowercase_words() -> None:
    assert tokenize("Les Maisons de Paris", "fr") == ["les", "maisons", "de", "paris"]


def test_passage_sharing_the_rare_words_ranks_first(corpus: list[Passage]) -> None:
    index = BM25Index.build(corpus)
    hits = index.search(["When was the Eiffel Tower finished?", "What do mitochondria produce?",
                         "interest rates and inflation", "lava erupting"], k=3)
    assert [ids[0] for ids in hits.ids] == ["eiffel", "mito", "bank", "volcano"]
    assert all(s == sorted(s, reverse=True) and s[0] > 0 for s in hits.scores)
    assert hits.method == "bm25"


def test_stemming_matches_inflections(corpus: list[Passage]) -> None:
    hits = BM25Index.build(corpus).search(["erupted volcanoes", "plant"], k=1)
    assert hits.ids == [["volcano"], ["photo"]]


def test_queries_without_known_tokens_get_no_hits(corpus: list[Passage]) -> None:
    index = BM25Index.build(corpus)
    hits = index.search(["", "the of and", "zzzqqq unseenword"], k=5)
    assert hits.ids == [[], [], []] and hits.scores == [[], [], []]


def test_only_matching_passages_are_returned_and_k_is_clamped(corpus: list[Passage]) -> None:
    index = BM25Index.build(corpus)
    hits = index.search(["energy"], k=100)
    assert hits.ids == [["mito"]]
    assert len(index.search(["the tower china plants magma bank cell"], k=100).ids[0]) == 6


def test_chinese_corpus() -> None:
    corpus = [
        Passage("a", "长城是中国古代的军事防御工程。"),
        Passage("b", "熊猫主要吃竹子，生活在四川的山区。"),
        Passage("c", "上海是中国最大的经济中心之一。"),
    ]
    index = BM25Index.build(corpus, language="zh")
    hits = index.search(["熊猫吃什么？", "长城是什么工程", "上海的经济"], k=2)
    assert [ids[0] for ids in hits.ids] == ["b", "a", "c"]


def test_save_load_round_trip(corpus: list[Passage], tmp_path: Path) -> None:
    index = BM25Index.build(corpus)
    questions = ["Eiffel tower fair", "cells energy ATP", "nothing matches zzz"]
    before = index.search(questions, k=3)
    index.save(tmp_path / "bm25")
    assert not list((tmp_path / "bm25").glob(".*"))  # no staging leftovers
    loaded = BM25Index.load(tmp_path / "bm25")
    assert loaded.passages == corpus and loaded.language == "en"
    assert loaded.search(questions, k=3) == before


def test_load_errors_name_the_file(corpus: list[Passage], tmp_path: Path) -> None:
    BM25Index.build(corpus).save(tmp_path)
    (tmp_path / "vocab.index.json").write_text("{}")
    with pytest.raises(DataError, match=r"vocab\.index\.json.*bytes but bm25\.json records"):
        BM25Index.load(tmp_path)
    (tmp_path / "bm25.json").unlink()
    with pytest.raises(DataError, match=r"bm25\.json: file not found"):
        BM25Index.load(tmp_path)


def test_corpus_without_tokens_is_refused() -> None:
    with pytest.raises(ValueError, match="no passage has a single 'en' token"):
        BM25Index.build([Passage("a", "the of"), Passage("b", "...")])
