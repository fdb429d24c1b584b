"""SQuAD-style JSON: ``{"data": [{"title", "paragraphs": [{"context", "qas": [...]}]}]}``.

Used for xquad, covid_qa, policyqa, cmrc2018 and agxqa (see
``../shared/data/SOURCES.md``). Contexts are chunked (covid_qa's are whole
papers), identical contexts become one set of passages, and each question's
gold passages are the chunks that hold its answer span.

Sources are noisy, and nothing is dropped silently:
- a wrong ``answer_start`` (234 in covid_qa, a few in cmrc2018) is repaired by
  searching the context for the answer, taking the occurrence nearest the given
  offset; the example gets ``metadata["answer_start_repaired"] = True``;
- a question whose answers are all absent from its context, that is marked
  ``is_impossible`` or that has no answer is skipped and counted in
  ``Task.skipped`` by reason;
- an id seen before (e.g. repeated across a source's dev and test files) gets
  a ``~2``, ``~3``, ... suffix, in file order; the original is kept in
  ``metadata["original_id"]``.
Repairs and renames are also logged.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metarag.data.chunking import PassageChunk, chunk_document_spans, gold_passage_ids
from metarag.data.io import read_json, require
from metarag.data.schema import Passage, QAExample, Task
from metarag.data.splits import make_splits
from metarag.errors import DataError

logger = logging.getLogger(__name__)

SKIP_IMPOSSIBLE = "marked is_impossible"
SKIP_NO_ANSWER = "no reference answer"
SKIP_NOT_IN_CONTEXT = "answer text not found in its context"
SKIP_EMPTY_QUESTION = "empty question"


@dataclass(frozen=True)
class AnswerSpan:
    """Where an answer sits in its context; ``repaired`` if the given offset was wrong."""

    start: int
    end: int
    repaired: bool


def locate_answer(context: str, text: str, answer_start: int) -> AnswerSpan | None:
    """Find ``text`` in ``context``, trusting ``answer_start`` only when it is right.

    Surrounding whitespace of the answer is ignored. When the text is not at
    the given offset, the occurrence nearest to it is taken.

    Returns:
        The span of the stripped answer, or None if it does not occur at all.
    """
    core = text.strip()
    if not core:
        return None
    start = answer_start + len(text) - len(text.lstrip())
    if start >= 0 and context.startswith(core, start):
        return AnswerSpan(start, start + len(core), repaired=False)
    best = -1
    hit = context.find(core)
    while hit != -1:
        if best == -1 or abs(hit - start) < abs(best - start):
            best = hit
        hit = context.find(core, hit + 1)
    if best == -1:
        return None
    return AnswerSpan(best, best + len(core), repaired=True)


def load_squad(
    pool_files: Sequence[Path],
    test_files: Sequence[Path] = (),
    *,
    name: str,
    domain: str,
    language: str = "en",
    seed: int = 0,
    max_tokens: int = 150,
    overlap: int = 30,
) -> Task:
    """Load SQuAD-style files into one task.

    Args:
        pool_files: Files whose questions are split into train/dev (and test,
            when ``test_files`` is empty) with ``seed``.
        test_files: Files the source designates as test.
        name, domain, language: Task labels; ``language`` also picks how
            contexts are chunked (characters for "zh"/"ja").
        seed: Split seed.
        max_tokens, overlap: Chunking, see `metarag.data.chunking.chunk_text`.

    Returns:
        A validated Task whose corpus is shared by all files.

    Raises:
        DataError: A file is missing, not UTF-8 or not JSON; a field is missing
            or of the wrong type (the message gives the JSON path); or no
            file has any non-empty context.
    """
    files = [Path(f) for f in (*pool_files, *test_files)]
    if not files:
        raise ValueError("load_squad needs at least one file")
    reader = _Reader(language, max_tokens, overlap, _file_labels(files))
    pool = [ex for f in pool_files for ex in reader.read(Path(f))]
    test = [ex for f in test_files for ex in reader.read(Path(f))]
    where = ", ".join(str(f) for f in files)
    if not reader.corpus:
        raise DataError(where, "data[*].paragraphs[*].context",
                        "no non-empty context: the corpus would be empty")
    reader.log(name)
    train, dev, test = make_splits(pool, test, seed=seed)
    notes = {"answer_start repaired by string search": reader.repaired,
             "repeated question id renamed (~N)": reader.renamed}
    task = Task(name, domain, language, reader.corpus, train, dev, test, dict(reader.skipped),
                notes={k: v for k, v in notes.items() if v})
    return task.validate(source=where)


def _file_labels(files: list[Path]) -> dict[Path, str]:
    """Short labels for passage ids: the file stem, numbered if stems repeat."""
    stems = [f.stem for f in files]
    if len(set(stems)) == len(stems):
        return dict(zip(files, stems, strict=True))
    return {f: f"{i}-{f.stem}" for i, f in enumerate(files)}


class _Reader:
    """Reads files one by one into a shared, deduplicated corpus."""

    def __init__(self, language: str, max_tokens: int, overlap: int,
                 labels: dict[Path, str]) -> None:
        self.language = language
        self.max_tokens = max_tokens
        self.overlap = overlap
        self.labels = labels
        self.corpus: list[Passage] = []
        self.skipped: Counter[str] = Counter()
        self.repaired = 0
        self.renamed = 0
        self._pieces: dict[str, list[PassageChunk]] = {}  # context -> its chunks
        self._ids: set[str] = set()

    def read(self, path: Path) -> list[QAExample]:
        data = read_json(path)
        articles = require(data, "data", path, "the top level", list)
        examples = []
        for ai, article in enumerate(articles):
            at = f"data[{ai}]"
            paragraphs = require(article, "paragraphs", path, at, list)
            title = _optional_str(article, "title", path, at)
            for pi, paragraph in enumerate(paragraphs):
                pat = f"{at}.paragraphs[{pi}]"
                context = require(paragraph, "context", path, pat, str)
                qas = require(paragraph, "qas", path, pat, list)
                doc_id = f"{self.labels[path]}:{ai}:{pi}"
                source = paragraph.get("document_id", paragraph.get("id", doc_id))
                pieces = self._chunks(context, doc_id, title, str(source))
                for qi, qa in enumerate(qas):
                    example = self._example(qa, context, pieces, path, f"{pat}.qas[{qi}]")
                    if example is not None:
                        examples.append(example)
        return examples

    def _chunks(self, context: str, doc_id: str, title: str, source: str) -> list[PassageChunk]:
        if context not in self._pieces:
            pieces = chunk_document_spans(
                doc_id, context, title=title, source=source,
                max_tokens=self.max_tokens, overlap=self.overlap, language=self.language)
            self._pieces[context] = pieces
            self.corpus.extend(p.passage for p in pieces)
        return self._pieces[context]

    def _example(self, qa: Any, context: str, pieces: list[PassageChunk],
                 path: Path, at: str) -> QAExample | None:
        raw_id = str(require(qa, "id", path, at, (str, int)))
        question = require(qa, "question", path, at, str).strip()
        answers = require(qa, "answers", path, at, list)
        impossible = qa.get("is_impossible", False)
        if impossible is True:
            self.skipped[SKIP_IMPOSSIBLE] += 1
            return None
        if not question:
            self.skipped[SKIP_EMPTY_QUESTION] += 1
            return None
        texts: list[str] = []
        span = None
        for ai, answer in enumerate(answers):
            aat = f"{at}.answers[{ai}]"
            text = require(answer, "text", path, aat, str)
            if text.strip() and text.strip() not in texts:
                texts.append(text.strip())
            if span is None and text.strip():
                span = locate_answer(context, text, require(answer, "answer_start", path, aat, int))
        if not texts:
            self.skipped[SKIP_NO_ANSWER] += 1
            return None
        if span is None:
            self.skipped[SKIP_NOT_IN_CONTEXT] += 1
            return None
        metadata: dict[str, Any] = {"file": path.name}
        if span.repaired:
            self.repaired += 1
            metadata["answer_start_repaired"] = True
        example_id = raw_id
        suffix = 1
        while example_id in self._ids:
            suffix += 1
            example_id = f"{raw_id}~{suffix}"
        if example_id != raw_id:
            self.renamed += 1
            metadata["original_id"] = raw_id
        self._ids.add(example_id)
        return QAExample(
            id=example_id, question=question, answers=tuple(texts),
            gold_passage_ids=gold_passage_ids(pieces, span.start, span.end),
            language=self.language, metadata=metadata,
        )

    def log(self, name: str) -> None:
        if self.repaired:
            logger.info("%s: repaired %d wrong answer_start offsets by string search",
                        name, self.repaired)
        if self.renamed:
            logger.warning("%s: renamed %d repeated question ids (suffix ~N)", name, self.renamed)
        if self.skipped:
            logger.info("%s: skipped %s", name, dict(self.skipped))


def _optional_str(record: dict[str, Any], key: str, path: Path, at: str) -> str:
    if key not in record:
        return ""
    return require(record, key, path, at, str)
