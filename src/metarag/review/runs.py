"""Load two `metarag evaluate` runs and pair their predictions question by question.

A run is the folder `metarag evaluate --out` writes (or its ``predictions.jsonl``
itself): one JSON object per line with ``task``, ``id``, ``question``,
``prediction``, ``references`` and, since the review page, ``passages`` (the cited
passages, ``{"id", "title", "text"}``). Older files carry only
``cited_passage_ids``; their passages are shown by id alone.

Items pair by (task, question id); a record without an id pairs by its question
text. Errors name the file, the line and the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metarag.errors import DataError

PREDICTIONS_FILE = "predictions.jsonl"  # as metarag.evaluation.qa writes it


@dataclass(frozen=True)
class Prediction:
    """One answered question of one run."""

    key: str               # what pairs it with the other run: "task/id" or "task/?question"
    task: str
    question_id: str
    question: str
    answer: str
    references: list[str]
    passages: list[dict[str, str]]  # {"id", "title", "text"}; text "" when not saved


@dataclass(frozen=True)
class Run:
    """A run's predictions in file order, and the name it gets in the summary."""

    name: str
    path: Path
    predictions: list[Prediction]


@dataclass(frozen=True)
class Item:
    """One question both runs answered: what a rater judges."""

    key: str
    task: str
    question_id: str
    question: str
    references: list[str]
    answer_a: str
    answer_b: str
    passages_a: list[dict[str, str]] = field(default_factory=list)
    passages_b: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (stored in the review database)."""
        return {"key": self.key, "task": self.task, "question_id": self.question_id,
                "question": self.question, "references": self.references,
                "answer_a": self.answer_a, "answer_b": self.answer_b,
                "passages_a": self.passages_a, "passages_b": self.passages_b}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Item:
        """The inverse of `to_dict`."""
        return cls(**d)


def predictions_path(run: str | Path) -> Path:
    """The predictions file of a run folder, or the file itself.

    Raises:
        DataError: Neither a folder holding predictions.jsonl nor a file.
    """
    path = Path(run)
    if path.is_dir():
        path = path / PREDICTIONS_FILE
    if not path.is_file():
        raise DataError(path, None, "no such file; give a folder written by `metarag evaluate "
                        f"--out` (it holds {PREDICTIONS_FILE}) or the file itself")
    return path


def default_name(run: str | Path) -> str:
    """A run's name in the summary: its folder, relative to the working directory if inside."""
    path = Path(run).resolve()
    if path.is_file():
        path = path.parent
    try:
        return str(path.relative_to(Path.cwd().resolve())) or "."
    except ValueError:
        return str(path)


def _field(record: dict, name: str, kind: type, source: Path, where: str) -> Any:
    if name not in record:
        raise DataError(source, where, f"missing field {name!r}")
    value = record[name]
    if not isinstance(value, kind):
        raise DataError(source, f"{where}, field {name!r}",
                        f"expected {kind.__name__}, got {type(value).__name__}")
    return value


def _passages(record: dict, source: Path, where: str) -> list[dict[str, str]]:
    """The saved passages, or (older files) the cited ids with no text."""
    if "passages" in record:
        raw = _field(record, "passages", list, source, where)
        out = []
        for j, p in enumerate(raw):
            at = f"{where}, field 'passages[{j}]'"
            if not isinstance(p, dict) or not isinstance(p.get("text"), str):
                raise DataError(source, at, "expected an object with a string 'text'")
            out.append({"id": str(p.get("id", "")), "title": str(p.get("title") or ""),
                        "text": p["text"]})
        return out
    ids = record.get("cited_passage_ids", [])
    if not isinstance(ids, list):
        raise DataError(source, f"{where}, field 'cited_passage_ids'", "expected a list")
    return [{"id": str(i), "title": "", "text": ""} for i in ids]


def load_run(run: str | Path, name: str | None = None) -> Run:
    """Read a run's predictions.

    Args:
        run: A `metarag evaluate` output folder, or its predictions.jsonl.
        name: The run's name in the summary; default `default_name`.

    Raises:
        DataError: Missing file, bad JSON, a missing or mistyped field, a question
            that appears twice, or no predictions at all (file and line named).
    """
    path = predictions_path(run)
    predictions: list[Prediction] = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8-sig") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"line {n}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(path, where, f"not valid JSON ({err.msg})") from None
            if not isinstance(record, dict):
                raise DataError(path, where, "expected a JSON object")
            question = _field(record, "question", str, path, where)
            answer = _field(record, "prediction", str, path, where)
            references = _field(record, "references", list, path, where)
            task = str(record.get("task", ""))
            qid = record.get("id")
            if qid is not None and not isinstance(qid, (str, int)):
                raise DataError(path, f"{where}, field 'id'", "expected a string")
            qid = "" if qid is None else str(qid)
            key = f"{task}/{qid}" if qid else f"{task}/?{question.strip()}"
            if key in seen:
                raise DataError(path, where, f"question {key!r} appears twice (first at line "
                                f"{seen[key]}); a run answers each question once")
            seen[key] = n
            predictions.append(Prediction(key, task, qid, question, answer,
                                          [str(r) for r in references],
                                          _passages(record, path, where)))
    if not predictions:
        raise DataError(path, None, "no predictions in the file")
    return Run(name or default_name(run), path, predictions)


def pair_runs(a: Run, b: Run) -> list[Item]:
    """The questions both runs answered, in run A's order.

    Raises:
        DataError: The runs share no question, or a shared id holds different questions.
    """
    if a.name == b.name:
        raise DataError(b.path, None, f"both runs are named {a.name!r}; name them apart")
    by_key = {p.key: p for p in b.predictions}
    items = []
    for pa in a.predictions:
        pb = by_key.get(pa.key)
        if pb is None:
            continue
        if pa.question.strip() != pb.question.strip():
            raise DataError(b.path, f"question {pa.key!r}",
                            f"its text differs from {a.path} ({pb.question!r} vs "
                            f"{pa.question!r}); were the runs made on the same split and seed?")
        items.append(Item(pa.key, pa.task, pa.question_id, pa.question, pa.references,
                          pa.answer, pb.answer, pa.passages, pb.passages))
    if not items:
        raise DataError(f"{a.path} and {b.path}", None,
                        "the runs share no question (paired by task and question id); "
                        "evaluate both on the same tasks and split")
    return items


def load_items(a: str | Path, b: str | Path, name_a: str | None = None,
               name_b: str | None = None) -> tuple[Run, Run, list[Item]]:
    """`load_run` both runs and `pair_runs` them."""
    run_a, run_b = load_run(a, name_a), load_run(b, name_b)
    return run_a, run_b, pair_runs(run_a, run_b)
