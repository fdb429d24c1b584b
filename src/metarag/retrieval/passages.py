"""Passages as retrievers see them: the indexed text, id checks, and the JSONL both indexes save."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from metarag.data.io import read_jsonl, require
from metarag.data.schema import Passage


def passage_text(passage: Passage) -> str:
    """The text a retriever indexes for a passage: ``"title: text"``, or ``text`` without a title.

    The title often carries the topic that the paragraph itself only refers to
    ("It was founded in 1209"), so dense and BM25 indexes both see it.
    """
    return f"{passage.title}: {passage.text}" if passage.title else passage.text


def check_passages(passages: Sequence[Passage]) -> list[Passage]:
    """A list copy of a non-empty corpus with unique ids, or ValueError saying which ids repeat."""
    passages = list(passages)
    if not passages:
        raise ValueError("cannot index an empty corpus: pass at least one Passage")
    dupes = [i for i, c in Counter(p.id for p in passages).items() if c > 1]
    if dupes:
        shown = ", ".join(repr(d) for d in dupes[:5])
        raise ValueError(f"duplicate passage ids ({len(dupes)}): {shown}; ids must be unique")
    return passages


def write_passages(passages: Sequence[Passage], path: Path) -> None:
    """One JSON object per line: id, text, title, source."""
    with open(path, "w", encoding="utf-8") as f:
        for p in passages:
            f.write(json.dumps({"id": p.id, "text": p.text, "title": p.title,
                                "source": p.source}, ensure_ascii=False) + "\n")


def read_passages(path: Path) -> list[Passage]:
    """Read what :func:`write_passages` wrote; DataError names the file and record when wrong."""
    passages = []
    for n, row in enumerate(read_jsonl(path), start=1):
        where = f"record {n}"
        passages.append(Passage(
            id=require(row, "id", path, where, str), text=require(row, "text", path, where, str),
            title=row.get("title", "") or "", source=row.get("source", "") or "",
        ))
    return passages
