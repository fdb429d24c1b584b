"""The three types every part of metarag speaks: Passage, QAExample, Task.

A task is one domain's passage corpus plus QA examples split into fixed
train/dev/test sets. Gold passage ids point into the corpus so retrieval
recall can be measured.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from metarag.errors import DataError

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class Passage:
    """One retrievable unit of text (a paragraph, a table, or a chunk of a document).

    Attributes:
        id: Unique within the task's corpus.
        text: The passage text the retriever and generator see.
        title: Document title, if any (prepended for encoding).
        source: Where it came from, e.g. the document id it was chunked from.
    """

    id: str
    text: str
    title: str = ""
    source: str = ""


@dataclass(frozen=True)
class QAExample:
    """A question with its reference answers and the passages that hold them.

    Attributes:
        id: Unique within the task.
        question: The question text.
        answers: One or more reference answers (any of them counts as right).
        gold_passage_ids: Ids of corpus passages that contain the answer.
        language: ISO 639-1 code, e.g. "en" or "zh".
        metadata: Source-specific extras (e.g. PubMedQA's yes/no/maybe decision).
    """

    id: str
    question: str
    answers: tuple[str, ...]
    gold_passage_ids: tuple[str, ...] = ()
    language: str = "en"
    metadata: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass
class Task:
    """One domain's corpus and its QA splits.

    Attributes:
        name: Short identifier, e.g. "xquad" or "synthetic/pharmacy".
        domain: Human-readable domain, e.g. "biomedical".
        language: ISO 639-1 code shared by the corpus and questions.
        corpus: Every passage the retriever may return.
        train, dev, test: Disjoint QA splits.
        skipped: Items a noisy source forced us to drop, counted by reason, so
            nothing is lost silently.
        notes: Items kept but repaired or flagged (e.g. a wrong answer offset
            found again by string search), counted by what was done.
    """

    name: str
    domain: str
    language: str
    corpus: list[Passage]
    train: list[QAExample]
    dev: list[QAExample]
    test: list[QAExample]
    skipped: dict[str, int] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)

    def split(self, name: str) -> list[QAExample]:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        return getattr(self, name)

    @property
    def examples(self) -> list[QAExample]:
        return [*self.train, *self.dev, *self.test]

    def passage_lookup(self) -> dict[str, Passage]:
        return {p.id: p for p in self.corpus}

    def summary(self) -> dict[str, Any]:
        return {
            "task": self.name,
            "domain": self.domain,
            "language": self.language,
            "passages": len(self.corpus),
            "train": len(self.train),
            "dev": len(self.dev),
            "test": len(self.test),
            "skipped": dict(self.skipped),
            "notes": dict(self.notes),
        }

    def validate(self, source: object | None = None) -> Task:
        """Check the invariants every consumer relies on; raise DataError naming the problem.

        - the corpus is not empty and passage ids are unique;
        - example ids are unique across all splits (so splits are disjoint);
        - every gold passage id exists in the corpus.
        """
        where = source if source is not None else f"task {self.name!r}"
        if not self.corpus:
            raise DataError(where, None, "the corpus is empty: a task needs passages to retrieve")
        _no_duplicates((p.id for p in self.corpus), where, "passage id")
        _no_duplicates((e.id for e in self.examples), where, "example id")
        ids = {p.id for p in self.corpus}
        for split in SPLITS:
            for ex in self.split(split):
                missing = [g for g in ex.gold_passage_ids if g not in ids]
                if missing:
                    raise DataError(
                        where, f"{split} example {ex.id!r}",
                        f"gold passage id {missing[0]!r} is not in the corpus",
                    )
        return self


def _no_duplicates(ids: Iterable[str], source: object, what: str) -> None:
    counts = Counter(ids)
    dupes = [i for i, n in counts.items() if n > 1]
    if dupes:
        shown = ", ".join(repr(d) for d in dupes[:5])
        raise DataError(source, None, f"duplicate {what}s ({len(dupes)}): {shown}")
