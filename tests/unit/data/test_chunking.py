"""Chunking: spans round-trip, sizes and overlap hold, gold ids follow the answer."""

from __future__ import annotations

import pytest

from metarag.data.chunking import (
    Chunk,
    chunk_document,
    chunk_document_spans,
    chunk_text,
    gold_passage_ids,
    token_spans,
)

WORDS = " ".join(f"w{i}" for i in range(100))  # "w0 w1 ... w99"


def _words(chunk: Chunk) -> list[str]:
    return chunk.text.split()


def test_spans_round_trip_to_the_original_text() -> None:
    text = "  Alpha beta,\tgamma\n\ndelta  epsilon zeta eta theta  "
    chunks = chunk_text(text, max_tokens=3, overlap=1)
    for c in chunks:
        assert text[c.start:c.end] == c.text
        assert c.text == c.text.strip()
    assert chunks[0].text == "Alpha beta,\tgamma"
    assert chunks[-1].text.endswith("theta")


def test_size_and_overlap() -> None:
    chunks = chunk_text(WORDS, max_tokens=10, overlap=3)
    assert all(len(_words(c)) <= 10 for c in chunks)
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert _words(a)[-3:] == _words(b)[:3]
    # Every word is covered, first to last, and no chunk is only overlap.
    assert _words(chunks[0])[0] == "w0" and _words(chunks[-1])[-1] == "w99"
    assert len(_words(chunks[-1])) > 3
    # stride 7: windows start at 0, 7, ..., 91 -> 14 chunks, the last one w91..w99
    assert len(chunks) == 14
    assert _words(chunks[-1]) == [f"w{i}" for i in range(91, 100)]


def test_zero_overlap_partitions_the_tokens() -> None:
    chunks = chunk_text(WORDS, max_tokens=25, overlap=0)
    assert [w for c in chunks for w in _words(c)] == WORDS.split()


def test_short_text_is_one_chunk_and_blank_text_none() -> None:
    assert chunk_text("just a few words", max_tokens=150) == [Chunk(0, 16, "just a few words")]
    assert chunk_text(WORDS, max_tokens=100, overlap=30) == [Chunk(0, len(WORDS), WORDS)]
    assert chunk_text(" \n\t ") == []


def test_chinese_is_chunked_by_characters() -> None:
    text = "北京是中华人民共和国的首都，也是全国的政治中心。"  # 24 characters, no spaces
    assert len(token_spans(text, "zh")) == len(text)
    assert len(chunk_text(text, max_tokens=150, language="en")) == 1  # one "word" in English
    chunks = chunk_text(text, max_tokens=10, overlap=2, language="zh")
    assert [len(c.text) for c in chunks] == [10, 10, 8]
    assert chunks[0].text[-2:] == chunks[1].text[:2]
    assert all(text[c.start:c.end] == c.text for c in chunks)


def test_chinese_spaces_are_not_tokens() -> None:
    chunks = chunk_text("北京 是 首都", max_tokens=2, overlap=0, language="zh")
    assert [c.text for c in chunks] == ["北京", "是 首", "都"]


@pytest.mark.parametrize(("max_tokens", "overlap"), [(0, 0), (5, 5), (5, -1)])
def test_bad_sizes_are_rejected(max_tokens: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="max_tokens|overlap"):
        chunk_text(WORDS, max_tokens=max_tokens, overlap=overlap)


def test_document_ids_title_and_source() -> None:
    single = chunk_document("doc", "short text", title="T")
    assert [(p.id, p.text, p.title, p.source) for p in single] == [
        ("doc", "short text", "T", "doc")]
    many = chunk_document("doc", WORDS, source="file.json", max_tokens=40, overlap=10)
    assert [p.id for p in many] == ["doc#0", "doc#1", "doc#2"]
    assert {p.source for p in many} == {"file.json"}
    assert chunk_document("doc", "   ") == []


def test_gold_ids_follow_the_answer() -> None:
    pieces = chunk_document_spans("d", WORDS, max_tokens=10, overlap=3)  # starts w0, w7, w14, ...
    start = WORDS.index("w20")
    end = WORDS.index("w21") + len("w21")
    # w20 w21 lie in chunk 2 (w14..w23) only.
    assert gold_passage_ids(pieces, start, end) == ("d#2",)
    # w22 lies in chunk 2 (w14..w23) and in chunk 3 (w21..w30): both hold it whole.
    start = WORDS.index("w22")
    assert gold_passage_ids(pieces, start, start + 3) == ("d#2", "d#3")


def test_gold_ids_of_an_answer_straddling_chunks() -> None:
    pieces = chunk_document_spans("d", WORDS, max_tokens=10, overlap=3)
    # w12..w24 (13 words) fits in no chunk: every chunk touching it is gold.
    start = WORDS.index("w12")
    end = WORDS.index("w24") + len("w24")
    assert gold_passage_ids(pieces, start, end) == ("d#1", "d#2", "d#3")
    covered = " ".join(p.passage.text for p in pieces if p.passage.id in ("d#1", "d#2", "d#3"))
    assert all(f"w{i}" in covered.split() for i in range(12, 25))


def test_gold_ids_of_a_single_chunk_document() -> None:
    pieces = chunk_document_spans("p7", "The answer is here.")
    assert gold_passage_ids(pieces, 14, 18) == ("p7",)
