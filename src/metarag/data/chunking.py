"""Split long documents into overlapping passages and map answer spans to them.

A retriever encodes a few hundred word pieces at most, so a 3,600-word paper
must become many passages. Chunks keep character offsets into the original
text so an extractive answer's span can be mapped to the chunks that hold it
(the gold passages behind recall@k).

Tokens are whitespace-separated words, except for Chinese and Japanese, which
do not separate words with spaces: there every non-space character is a token
(the same convention the metrics use for those languages).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from metarag.data.schema import Passage

# Languages written without spaces between words: one character = one token.
CHARACTER_LANGUAGES = frozenset({"zh", "ja"})

_WORD = re.compile(r"\S+")
_CHAR = re.compile(r"\S")


@dataclass(frozen=True)
class Chunk:
    """A window of a text: ``text == original[start:end]``.

    Attributes:
        start: Offset of the chunk's first character in the original text.
        end: Offset one past its last character.
        text: The chunk itself (starts and ends on a token, never on a space).
    """

    start: int
    end: int
    text: str


class PassageChunk(NamedTuple):
    """A passage made from a document together with where it sits in that document."""

    passage: Passage
    chunk: Chunk


def token_spans(text: str, language: str = "en") -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of the tokens of ``text`` (see module docstring)."""
    pattern = _CHAR if language in CHARACTER_LANGUAGES else _WORD
    return [m.span() for m in pattern.finditer(text)]


def chunk_text(
    text: str, *, max_tokens: int = 150, overlap: int = 30, language: str = "en"
) -> list[Chunk]:
    """Cut ``text`` into windows of at most ``max_tokens`` tokens.

    Consecutive chunks share exactly ``overlap`` tokens, so an answer that
    straddles one boundary usually lies whole inside the next chunk. The last
    chunk may be shorter; a text of at most ``max_tokens`` tokens is one chunk.
    Leading and trailing whitespace belongs to no chunk.

    Args:
        text: The document.
        max_tokens: Largest chunk, in tokens.
        overlap: Tokens shared by consecutive chunks; ``0 <= overlap < max_tokens``.
        language: ISO 639-1 code; "zh" and "ja" count characters, others words.

    Returns:
        The chunks in document order; empty when ``text`` has no tokens.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    if not 0 <= overlap < max_tokens:
        raise ValueError(f"overlap must be in [0, max_tokens={max_tokens}), got {overlap}")
    spans = token_spans(text, language)
    if not spans:
        return []
    stride = max_tokens - overlap
    chunks = []
    first = 0
    while True:
        last = min(first + max_tokens, len(spans)) - 1
        start, end = spans[first][0], spans[last][1]
        chunks.append(Chunk(start, end, text[start:end]))
        if last == len(spans) - 1:
            return chunks
        first += stride


def chunk_document_spans(
    doc_id: str,
    text: str,
    *,
    title: str = "",
    source: str = "",
    max_tokens: int = 150,
    overlap: int = 30,
    language: str = "en",
) -> list[PassageChunk]:
    """Chunk a document into passages, keeping each passage's span.

    Passage ids: ``doc_id`` itself when the document fits in one chunk (so
    short paragraphs keep their source id), else ``f"{doc_id}#{i}"`` for
    ``i = 0, 1, ...`` in document order.

    Args:
        doc_id: Unique id of the document within its task.
        text: The document.
        title: Copied to every passage.
        source: Copied to every passage; defaults to ``doc_id``.
        max_tokens, overlap, language: As in `chunk_text`.

    Returns:
        One (passage, chunk) pair per chunk; empty when ``text`` is blank.
    """
    chunks = chunk_text(text, max_tokens=max_tokens, overlap=overlap, language=language)
    source = source or doc_id
    if len(chunks) == 1:
        return [PassageChunk(Passage(doc_id, chunks[0].text, title, source), chunks[0])]
    return [
        PassageChunk(Passage(f"{doc_id}#{i}", c.text, title, source), c)
        for i, c in enumerate(chunks)
    ]


def chunk_document(
    doc_id: str,
    text: str,
    *,
    title: str = "",
    source: str = "",
    max_tokens: int = 150,
    overlap: int = 30,
    language: str = "en",
) -> list[Passage]:
    """The passages of `chunk_document_spans`, without their spans."""
    pieces = chunk_document_spans(doc_id, text, title=title, source=source,
                                  max_tokens=max_tokens, overlap=overlap, language=language)
    return [p.passage for p in pieces]


def gold_passage_ids(
    pieces: Sequence[PassageChunk], answer_start: int, answer_end: int
) -> tuple[str, ...]:
    """Ids of the passages that hold the answer ``text[answer_start:answer_end]``.

    The passages whose chunk contains the whole span; when none does (the
    answer is longer than the overlap and straddles a boundary), the passages
    whose chunk overlaps it, so the answer is still fully covered.

    Args:
        pieces: A document's passages with spans, from `chunk_document_spans`.
        answer_start: Offset of the answer in the document.
        answer_end: Offset one past its end.
    """
    whole = tuple(p.passage.id for p in pieces
                  if p.chunk.start <= answer_start and answer_end <= p.chunk.end)
    if whole:
        return whole
    return tuple(p.passage.id for p in pieces
                 if p.chunk.start < answer_end and answer_start < p.chunk.end)
