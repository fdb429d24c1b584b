"""TAT-QA: hybrid tables and text from annual reports.

Each item holds one table, its paragraphs and questions about them. Passages:
- the table, rendered as text: a ``Table:`` line, then one line per non-empty
  row with its cells joined by `` | ``; one passage, never chunked (a chunk
  would lose the header row; the longest table has 225 words), id = table uid;
- each paragraph, id = its uid (chunked when long, ``uid#i``).
All of an item's passages have ``source`` = its table uid.

Answers become one reference string:
- a span list of one string: that string; a multi-span list: its parts joined
  with ", " (the parts are all needed, not alternatives);
- a number: no trailing ".0" on whole numbers, other floats as Python writes
  them; the scale is appended as the reports write it: ``"12.5%"`` for
  percent, ``"2.9 million"`` / ``"450 thousand"`` / ``"1.2 billion"``
  otherwise. Spans are kept verbatim (their scale is in the metadata only).
Gold passages follow ``answer_from``: ``text`` -> the paragraphs in
``rel_paragraphs`` (paragraph ``order`` numbers), ``table`` -> the table,
``table-text`` -> both.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from metarag.data.chunking import chunk_document
from metarag.data.io import read_json, require
from metarag.data.schema import Passage, QAExample, Task
from metarag.data.splits import make_splits
from metarag.errors import DataError

POOL_FILES = ("tatqa_dataset_train.json", "tatqa_dataset_dev.json")
TEST_FILES = ("tatqa_dataset_test_gold.json",)
ANSWER_FROM = ("text", "table", "table-text")
SKIP_EMPTY_ANSWER = "empty answer"
SKIP_NO_PARAGRAPH = "text answer without rel_paragraphs"


def load_tatqa(
    path: Path,
    *,
    seed: int = 0,
    max_tokens: int = 150,
    overlap: int = 30,
    name: str = "tatqa",
    domain: str = "finance (tables + text)",
) -> Task:
    """Load TAT-QA from its folder.

    The pool is ``tatqa_dataset_dev.json`` (and ``tatqa_dataset_train.json``
    when present); the test split is ``tatqa_dataset_test_gold.json`` when
    present, otherwise it is cut from the pool.

    Args:
        path: The folder.
        seed: Split seed for the pool.
        max_tokens, overlap: Chunking of long paragraphs.
        name, domain: Task labels.
    """
    path = Path(path)
    pool = [path / f for f in POOL_FILES if (path / f).is_file()]
    if not pool:
        raise DataError(path, None, f"no TAT-QA file: expected {' or '.join(POOL_FILES)}")
    test = [path / f for f in TEST_FILES if (path / f).is_file()]
    return load_tatqa_files(pool, test, name=name, domain=domain, seed=seed,
                            max_tokens=max_tokens, overlap=overlap)


def load_tatqa_files(
    pool_files: Sequence[Path],
    test_files: Sequence[Path] = (),
    *,
    name: str = "tatqa",
    domain: str = "finance (tables + text)",
    seed: int = 0,
    max_tokens: int = 150,
    overlap: int = 30,
) -> Task:
    """Load TAT-QA JSON files: ``pool_files`` are split with ``seed``, ``test_files`` are test.

    Raises:
        DataError: A missing or mistyped field (with its JSON path), a uid
            used twice for different content, a ``rel_paragraphs`` entry that
            names no paragraph, or an unknown ``answer_from``.
    """
    reader = _Reader(max_tokens, overlap)
    pool = [ex for f in pool_files for ex in reader.read(Path(f))]
    test = [ex for f in test_files for ex in reader.read(Path(f))]
    where = ", ".join(str(f) for f in (*pool_files, *test_files))
    if not reader.corpus:
        raise DataError(where, None, "no tables or paragraphs: the corpus would be empty")
    train, dev, test = make_splits(pool, test, seed=seed)
    task = Task(name, domain, "en", reader.corpus, train, dev, test, dict(reader.skipped))
    return task.validate(source=where)


def format_number(value: int | float) -> str:
    """``1234`` and ``1234.0`` -> ``"1234"``; ``2.35`` -> ``"2.35"``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def render_answer(answer: str | int | float | list[Any], scale: str = "") -> str:
    """One reference string for a TAT-QA answer (rules in the module docstring)."""
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        number = format_number(answer)
        if not scale:
            return number
        return f"{number}%" if scale == "percent" else f"{number} {scale}"
    if isinstance(answer, list):
        parts = [format_number(a) if isinstance(a, (int, float)) else str(a).strip()
                 for a in answer]
        return ", ".join(p for p in parts if p)
    return str(answer).strip()


def render_table(rows: list[list[str]]) -> str:
    """``Table:`` then one line per non-empty row, cells joined by `` | ``."""
    lines = [" | ".join(cell.strip() for cell in row) for row in rows
             if any(cell.strip() for cell in row)]
    return "\n".join(["Table:", *lines])


class _Reader:
    """Reads files into one corpus, checking that uids are not reused."""

    def __init__(self, max_tokens: int, overlap: int) -> None:
        self.max_tokens = max_tokens
        self.overlap = overlap
        self.corpus: list[Passage] = []
        self.skipped: Counter[str] = Counter()
        # uid -> (text, passage ids): a table or paragraph met again is reused,
        # a uid reused for other text is an error.
        self._known: dict[str, tuple[str, tuple[str, ...]]] = {}
        self._ids: set[str] = set()

    def read(self, path: Path) -> list[QAExample]:
        items = read_json(path)
        if not isinstance(items, list):
            raise DataError(path, "the top level",
                            f"expected a list of items, got {type(items).__name__}")
        examples = []
        for i, item in enumerate(items):
            at = f"[{i}]"
            table = require(item, "table", path, at, dict)
            table_id = require(table, "uid", path, f"{at}.table", str)
            rows = require(table, "table", path, f"{at}.table", list)
            if not all(isinstance(r, list) and all(isinstance(c, str) for c in r) for r in rows):
                raise DataError(path, f"{at}.table.table", "expected a list of rows of strings")
            self._add(path, f"{at}.table", table_id, render_table(rows), chunk=False,
                      source=table_id)
            paragraph_ids: dict[str, tuple[str, ...]] = {}  # order -> passage ids
            for j, paragraph in enumerate(require(item, "paragraphs", path, at, list)):
                pat = f"{at}.paragraphs[{j}]"
                uid = require(paragraph, "uid", path, pat, str)
                order = str(require(paragraph, "order", path, pat, (int, str)))
                text = require(paragraph, "text", path, pat, str)
                paragraph_ids[order] = self._add(path, pat, uid, text, chunk=True,
                                                 source=table_id)
            for j, question in enumerate(require(item, "questions", path, at, list)):
                example = self._example(question, table_id, paragraph_ids, path,
                                        f"{at}.questions[{j}]")
                if example is not None:
                    examples.append(example)
        return examples

    def _add(self, path: Path, at: str, uid: str, text: str, *, chunk: bool,
             source: str) -> tuple[str, ...]:
        """Add a table or paragraph once; return its passage ids."""
        if uid in self._known:
            known_text, ids = self._known[uid]
            if known_text != text:
                raise DataError(path, f"{at}.uid",
                                f"uid {uid!r} is already used for a different text")
            return ids
        if chunk:
            passages = chunk_document(uid, text, source=source,
                                      max_tokens=self.max_tokens, overlap=self.overlap)
        else:
            passages = [Passage(uid, text, source=source)]
        self.corpus.extend(passages)
        ids = tuple(p.id for p in passages)
        self._known[uid] = (text, ids)
        return ids

    def _example(self, q: Any, table_id: str, paragraph_ids: dict[str, tuple[str, ...]],
                 path: Path, at: str) -> QAExample | None:
        uid = require(q, "uid", path, at, str)
        if uid in self._ids:
            raise DataError(path, f"{at}.uid", f"question uid {uid!r} is used twice")
        self._ids.add(uid)
        answer = require(q, "answer", path, at, (str, int, float, list))
        answer_from = require(q, "answer_from", path, at, str)
        scale = q.get("scale") or ""
        if answer_from not in ANSWER_FROM:
            raise DataError(path, f"{at}.answer_from",
                            f"expected one of {', '.join(ANSWER_FROM)}, got {answer_from!r}")
        rendered = render_answer(answer, scale)
        if not rendered:
            self.skipped[SKIP_EMPTY_ANSWER] += 1
            return None
        gold: list[str] = [table_id] if answer_from != "text" else []
        if answer_from != "table":
            rel = require(q, "rel_paragraphs", path, at, list)
            if not rel and answer_from == "text":
                self.skipped[SKIP_NO_PARAGRAPH] += 1
                return None
            for k, order in enumerate(rel):
                if str(order) not in paragraph_ids:
                    raise DataError(path, f"{at}.rel_paragraphs[{k}]",
                                    f"no paragraph of this item has order {order!r}")
                gold.extend(paragraph_ids[str(order)])
        return QAExample(
            id=uid,
            question=require(q, "question", path, at, str),
            answers=(rendered,),
            gold_passage_ids=tuple(dict.fromkeys(gold)),
            metadata={"answer_type": q.get("answer_type", ""), "answer_from": answer_from,
                      "scale": scale, "derivation": q.get("derivation", "")},
        )
