"""Users' own QA data: a folder with a passage corpus and QA pairs, as JSONL or CSV.

The format (full description with examples in docs/DATA_FORMAT.md)::

    my_task/
      corpus.jsonl | corpus.csv   one passage per record: id, text, title (optional)
      qa.jsonl     | qa.csv       id, question, answers | answer, gold_passage_ids (optional),
                                  split (optional: train/dev/test), language (optional)
      task.json                   optional: {"name", "domain", "language"}

In CSV, a cell holding several answers separates them with " || " and a cell
holding several gold passage ids separates them with "|"; an empty cell means
the field is absent. Any other QA field or column is kept in the example's
metadata.

Gold passages: when a QA gives none, they are derived as the passages whose
text contains one of its answers (case-insensitive). A QA whose answers occur
nowhere is kept with no gold ids (generation can still be scored, retrieval
recall cannot) and counted in ``Task.notes`` under `NO_GOLD_REASON`, so the
gap is visible in ``Task.summary()``. Each example's ``metadata["gold"]`` says
"given", "derived" or "none".

Splits: a QA with a "split" keeps it; the others are split by `make_splits`
(they give dev, and test too unless some QA is marked "test").
"""

from __future__ import annotations

import bisect
import csv
import io
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from metarag.data.io import read_json, read_jsonl, read_text
from metarag.data.schema import SPLITS, Passage, QAExample, Task
from metarag.data.splits import make_splits
from metarag.errors import DataError

NO_GOLD_REASON = "answer found in no passage (kept without gold ids)"
ANSWER_SEP = "||"  # CSV: "a || b" -> ["a", "b"]
GOLD_SEP = "|"  # CSV: "p1|p2" -> ["p1", "p2"]

# ISO 639-1: every two-letter language code.
ISO_639_1 = frozenset("""
aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs cu cv cy da
de dv dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu hy hz
ia id ie ig ii ik io is it iu ja jv ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb lg li ln
lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb nd ne ng nl nn no nr nv ny oc oj om or os pa pi
pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl sm sn so sq sr ss st su sv sw ta te tg th ti
tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo za zh zu
""".split())

_QA_FIELDS = ("id", "question", "answers", "answer", "gold_passage_ids", "split", "language")
_TASK_FIELDS = ("name", "domain", "language")
_REQUIRED_CELLS = ("id", "question", "text", "answer", "answers")


def check_language(code: object, source: object, where: str | None) -> str:
    """Return a valid ISO 639-1 code, or raise DataError saying what to write instead.

    Accepts any letter case ("EN" -> "en"); a regional tag such as "en-US" is
    refused with a hint to drop the region.
    """
    if not isinstance(code, str):
        raise DataError(source, where, f"language must be a string, got {type(code).__name__}")
    norm = code.strip().lower()
    if norm in ISO_639_1:
        return norm
    hint = ""
    if re.fullmatch(r"[a-z]{2}[-_][a-z0-9]+", norm) and norm[:2] in ISO_639_1:
        hint = f"; drop the region: use {norm[:2]!r}"
    raise DataError(source, where,
                    f"unknown language code {code!r}: expected a two-letter ISO 639-1 code "
                    f"such as 'en' or 'zh'{hint}")


def load_user_task(path: Path, *, seed: int = 0) -> Task:
    """Load a task from a folder in the user format (see the module docstring).

    Args:
        path: The folder holding corpus.jsonl/.csv, qa.jsonl/.csv and optionally task.json.
        seed: Seeds the split of QAs that carry no "split".

    Returns:
        A validated Task. Name defaults to the folder name, domain to "unknown",
        language to the most common QA language (or "en").

    Raises:
        DataError: Naming the file, the line (JSONL) or row (CSV, header = row 1)
            and the field that is wrong.
    """
    path = Path(path)
    if not path.is_dir():
        raise DataError(path, None, "not a folder: expected a folder holding corpus.jsonl "
                        "(or corpus.csv) and qa.jsonl (or qa.csv)")
    corpus_file, qa_file = _find(path, "corpus"), _find(path, "qa")
    meta = _read_task_json(path / "task.json") if (path / "task.json").exists() else {}

    corpus = _read_corpus(corpus_file)
    examples, fixed_splits, gold_given = _read_qa(corpus_file, qa_file, corpus)
    row_languages = Counter(e.language for e in examples if e.language)
    language = meta.get("language") or (row_languages.most_common(1)[0][0]
                                        if row_languages else "en")
    examples = [e if e.language else replace(e, language=language) for e in examples]

    examples, n_without_gold = _derive_gold(examples, gold_given, corpus)
    by_split: dict[str, list[QAExample]] = {s: [] for s in (*SPLITS, "")}
    for ex in examples:
        by_split[fixed_splits[ex.id]].append(ex)
    train, dev, test = make_splits(by_split[""], by_split["test"], seed=seed)
    task = Task(
        name=meta.get("name") or path.name,
        domain=meta.get("domain") or "unknown",
        language=language,
        corpus=corpus,
        train=by_split["train"] + train,
        dev=by_split["dev"] + dev,
        test=test,
        notes={NO_GOLD_REASON: n_without_gold} if n_without_gold else {},
    )
    return task.validate(source=path)


def _find(folder: Path, stem: str) -> Path:
    found = [f for f in (folder / f"{stem}.jsonl", folder / f"{stem}.csv") if f.is_file()]
    if not found:
        raise DataError(folder, None, f"missing {stem}.jsonl (or {stem}.csv)")
    if len(found) > 1:
        raise DataError(folder, None, f"both {stem}.jsonl and {stem}.csv exist; keep only one")
    return found[0]


def _read_task_json(file: Path) -> dict[str, str]:
    meta = read_json(file)
    if not isinstance(meta, dict):
        raise DataError(file, None, f"expected a JSON object, got {type(meta).__name__}")
    unknown = sorted(set(meta) - set(_TASK_FIELDS))
    if unknown:
        raise DataError(file, None, f"unknown field(s) {unknown}; allowed: {list(_TASK_FIELDS)}")
    for key in _TASK_FIELDS:
        if key in meta:
            _field(meta, key, file, None, str)
    if "language" in meta:
        meta["language"] = check_language(meta["language"], file, "field 'language'")
    return meta


def _records(file: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (place, record) pairs; place is "line N" (JSONL) or "row N" (CSV, header = row 1).

    CSV cells are turned into the JSONL shapes: empty optional cells are
    dropped, "answers" is split on " || " and "gold_passage_ids" on "|".
    """
    if file.suffix == ".jsonl":
        # read_jsonl skips blank lines; the same test recovers each record's line number.
        rows = read_jsonl(file)
        lines = [n for n, line in enumerate(read_text(file).splitlines(), start=1) if line.strip()]
        for lineno, row in zip(lines, rows, strict=True):
            yield f"line {lineno}", row
        return
    reader = csv.reader(io.StringIO(read_text(file), newline=""))
    try:
        header = [h.strip() for h in next(reader, [])]
        if not header:
            raise DataError(file, None, "the file is empty: expected a header row")
        dupes = sorted({h for h in header if header.count(h) > 1})
        if dupes:
            raise DataError(file, "row 1", f"repeated column name(s) {dupes}")
        row_no, end, n_rows = 1, reader.line_num, 0
        for cells in reader:
            # A quoted cell may span lines: name the spreadsheet row (header = row 1)
            # and, where it differs, the line a text editor shows.
            row_no, start, end = row_no + 1, end + 1, reader.line_num
            if not any(c.strip() for c in cells):  # blank line or ",,," from a spreadsheet
                continue
            n_rows += 1
            where = f"row {row_no}" + (f" (line {start})" if start != row_no else "")
            if len(cells) > len(header):
                raise DataError(file, where, f"more cells than the {len(header)} header columns")
            cells += [""] * (len(header) - len(cells))
            record: dict[str, Any] = {h: c.strip() for h, c in zip(header, cells, strict=True)}
            # An empty cell means "absent", except where absence would hide an error
            # (an empty question should say so, not "missing field").
            for key in [k for k, v in record.items() if not v and k not in _REQUIRED_CELLS]:
                del record[key]
            if "answer" in record and "answers" in record:  # both columns: use the filled one
                del record["answers" if not record["answers"] else "answer"]
            if "answers" in record:
                record["answers"] = ([a.strip() for a in record["answers"].split(ANSWER_SEP)]
                                     if record["answers"] else [])
            if "gold_passage_ids" in record:
                record["gold_passage_ids"] = [g.strip() for g in
                                              record["gold_passage_ids"].split(GOLD_SEP)]
            yield where, record
    except csv.Error as err:
        raise DataError(file, f"row {reader.line_num}", f"malformed CSV: {err}") from None
    if n_rows == 0:
        raise DataError(file, None, "the file has a header but no rows")


def _field(record: dict[str, Any], key: str, file: Path, where: str | None,
           kind: type | tuple[type, ...]) -> Any:
    """``record[key]``, or a DataError naming the file, the place and the field."""
    if key not in record:
        raise DataError(file, where, f"missing field {key!r}")
    value = record[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DataError(file, f"{where}, field {key!r}" if where else f"field {key!r}",
                        f"expected {names}, got {type(value).__name__}")
    return value


def _id(record: dict[str, Any], file: Path, where: str) -> str:
    value = str(_field(record, "id", file, where, (str, int))).strip()
    if not value:
        raise DataError(file, f"{where}, field 'id'", "empty id")
    return value


def _text(record: dict[str, Any], key: str, file: Path, where: str) -> str:
    value = _field(record, key, file, where, str)
    if not value.strip():
        raise DataError(file, f"{where}, field {key!r}", f"empty {key}")
    return value.strip()


def _read_corpus(file: Path) -> list[Passage]:
    passages: list[Passage] = []
    first_seen: dict[str, str] = {}
    for where, record in _records(file):
        pid = _id(record, file, where)
        if pid in first_seen:
            raise DataError(file, f"{where}, field 'id'",
                            f"duplicate passage id {pid!r} (first at {first_seen[pid]})")
        first_seen[pid] = where
        title = record.get("title", "")
        if not isinstance(title, str):
            raise DataError(file, f"{where}, field 'title'",
                            f"expected a string, got {type(title).__name__}")
        passages.append(Passage(id=pid, text=_text(record, "text", file, where), title=title,
                                source=str(record.get("source", ""))))
    return passages


def _read_qa(corpus_file: Path, file: Path, corpus: list[Passage],
             ) -> tuple[list[QAExample], dict[str, str], set[str]]:
    """Parse QA records; return the examples, each id's fixed split ("" if none), and
    the ids whose gold passages were given."""
    passage_ids = {p.id for p in corpus}
    examples: list[QAExample] = []
    splits: dict[str, str] = {}
    gold_given: set[str] = set()
    first_seen: dict[str, str] = {}
    for where, record in _records(file):
        qid = _id(record, file, where)
        if qid in first_seen:
            raise DataError(file, f"{where}, field 'id'",
                            f"duplicate QA id {qid!r} (first at {first_seen[qid]})")
        first_seen[qid] = where
        question = _text(record, "question", file, where)
        answers = _answers(record, file, where)

        gold = record.get("gold_passage_ids")
        gold_ids: tuple[str, ...] = ()
        if gold is not None:
            if not isinstance(gold, list) or not all(isinstance(g, str | int) for g in gold):
                raise DataError(file, f"{where}, field 'gold_passage_ids'",
                                "expected a list of passage ids")
            gold_ids = tuple(str(g) for g in gold)
            for g in gold_ids:
                if g not in passage_ids:
                    raise DataError(file, f"{where}, field 'gold_passage_ids'",
                                    f"passage id {g!r} is not in {corpus_file.name}")
            if gold_ids:  # an empty list means "not given": derive them
                gold_given.add(qid)

        split = record.get("split") or ""  # null means absent, as in CSV
        split = split.strip().lower() if isinstance(split, str) else split
        if split not in ("", *SPLITS):
            raise DataError(file, f"{where}, field 'split'",
                            f"unknown split {split!r}: use train, dev or test "
                            "(dev is the validation set), or leave it out")
        splits[qid] = split
        language = record.get("language") or ""
        if language:
            language = check_language(language, file, f"{where}, field 'language'")
        extra = {k: v for k, v in record.items() if k not in _QA_FIELDS}
        examples.append(QAExample(id=qid, question=question, answers=answers,
                                  gold_passage_ids=gold_ids, language=language, metadata=extra))
    return examples, splits, gold_given


def _answers(record: dict[str, Any], file: Path, where: str) -> tuple[str, ...]:
    if "answers" in record and "answer" in record:
        raise DataError(file, where, "give either 'answers' (a list) or 'answer', not both")
    if "answer" in record:
        return (_text(record, "answer", file, where),)
    if "answers" not in record:
        raise DataError(file, where, "missing field 'answers' (or 'answer')")
    answers = record["answers"]
    place = f"{where}, field 'answers'"
    if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
        raise DataError(file, place, "expected a list of strings")
    if not answers:
        raise DataError(file, place, "empty answers: give at least one reference answer")
    if any(not a.strip() for a in answers):
        raise DataError(file, place, "an answer is empty")
    return tuple(a.strip() for a in answers)


def _derive_gold(examples: list[QAExample], given: set[str], corpus: list[Passage],
                 ) -> tuple[list[QAExample], int]:
    """Fill in gold ids from answer matches; return the examples and how many found none."""
    # One lower-cased string of the whole corpus, searched with str.find (C speed);
    # "\0" keeps a match from spanning two passages, and bisect maps offsets back.
    texts = [p.text.lower() for p in corpus]
    starts, offset = [], 0
    for t in texts:
        starts.append(offset)
        offset += len(t) + 1
    haystack = "\0".join(texts)
    out, n_none = [], 0
    for ex in examples:
        if ex.id in given:
            out.append(replace(ex, metadata={**ex.metadata, "gold": "given"}))
            continue
        hits: set[int] = set()
        for answer in ex.answers:
            needle = answer.lower()
            pos = haystack.find(needle)
            while pos != -1:
                hits.add(bisect.bisect_right(starts, pos) - 1)
                pos = haystack.find(needle, pos + 1)
        ids = tuple(corpus[i].id for i in sorted(hits))
        n_none += not ids
        out.append(replace(ex, gold_passage_ids=ids,
                            metadata={**ex.metadata, "gold": "derived" if ids else "none"}))
    return out, n_none


