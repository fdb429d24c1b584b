"""User folders (JSONL / CSV): round trips, gold derivation, splits, and errors that point home."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from metarag.data.loaders.user import NO_GOLD_REASON, check_language, load_user_task
from metarag.data.schema import Task
from metarag.data.synthetic import synthetic_suite
from metarag.errors import DataError

CORPUS = [
    {"id": "p1", "title": "Velazine", "text": "Velazine is dosed at 250 mg twice daily."},
    {"id": "p2", "text": "The Dunmore lease ends under clause 14.3."},
    {"id": "p3", "text": "Clause 14.3 also appears here, in another contract."},
]
QA = [
    {"id": "q1", "question": "Dose of Velazine?", "answers": ["250 mg twice daily"],
     "gold_passage_ids": ["p1"], "split": "train", "source_page": 4},
    {"id": "q2", "question": "Which clause ends the lease?", "answer": "clause 14.3"},
    {"id": "q3", "question": "Unanswerable?", "answers": ["not in any passage"], "split": "test"},
    {"id": "q4", "question": "Another?", "answers": ["VELAZINE"], "split": "dev"},
]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in columns})


def _folder(tmp_path: Path, corpus=CORPUS, qa=QA, task: dict | None = None) -> Path:
    folder = tmp_path / "my_task"
    folder.mkdir(exist_ok=True)
    _write_jsonl(folder / "corpus.jsonl", corpus)
    _write_jsonl(folder / "qa.jsonl", qa)
    if task is not None:
        (folder / "task.json").write_text(json.dumps(task), encoding="utf-8")
    return folder


def _by_id(task: Task) -> dict:
    return {e.id: e for e in task.examples}


def test_jsonl_folder_loads_with_gold_derivation_and_fixed_splits(tmp_path: Path) -> None:
    task = load_user_task(_folder(tmp_path, task={"name": "contracts", "domain": "legal"}))
    assert (task.name, task.domain, task.language) == ("contracts", "legal", "en")
    assert [p.id for p in task.corpus] == ["p1", "p2", "p3"]
    assert task.corpus[0].title == "Velazine" and task.corpus[1].title == ""
    ex = _by_id(task)
    assert ex["q1"].gold_passage_ids == ("p1",) and ex["q1"].metadata["gold"] == "given"
    assert ex["q1"].metadata["source_page"] == 4  # unknown fields are kept as metadata
    # Derived, case-insensitively: "clause 14.3" is in p2 and ("Clause 14.3") in p3.
    assert ex["q2"].answers == ("clause 14.3",)
    assert ex["q2"].gold_passage_ids == ("p2", "p3") and ex["q2"].metadata["gold"] == "derived"
    assert ex["q4"].gold_passage_ids == ("p1",)
    # Kept without gold ids, and counted.
    assert ex["q3"].gold_passage_ids == () and ex["q3"].metadata["gold"] == "none"
    assert task.notes == {NO_GOLD_REASON: 1}
    # Fixed splits are kept; marked test rows are the whole test split.
    assert [e.id for e in task.test] == ["q3"]
    assert "q1" in {e.id for e in task.train} and "q4" in {e.id for e in task.dev}


def test_unsplit_rows_go_through_make_splits(tmp_path: Path) -> None:
    qa = [{"id": f"q{i}", "question": f"Question {i}?", "answer": "250 mg"} for i in range(20)]
    task = load_user_task(_folder(tmp_path, qa=qa), seed=0)
    assert (len(task.train), len(task.dev), len(task.test)) == (14, 2, 4)
    again = load_user_task(_folder(tmp_path, qa=qa), seed=0)
    assert [e.id for e in again.test] == [e.id for e in task.test]
    assert task.name == "my_task" and task.domain == "unknown"


def test_language_comes_from_task_json_or_rows(tmp_path: Path) -> None:
    qa = [{**QA[0], "language": "ZH"}, {**QA[1], "language": "zh"}]
    task = load_user_task(_folder(tmp_path, qa=qa))
    assert task.language == "zh" and {e.language for e in task.examples} == {"zh"}
    task = load_user_task(_folder(tmp_path, qa=QA[:2], task={"language": "de"}))
    assert task.language == "de" and {e.language for e in task.examples} == {"de"}


def _to_jsonl(task: Task, folder: Path) -> None:
    folder.mkdir()
    _write_jsonl(folder / "corpus.jsonl",
                 [{"id": p.id, "text": p.text, "title": p.title} for p in task.corpus])
    _write_jsonl(folder / "qa.jsonl", [
        {"id": e.id, "question": e.question, "answers": list(e.answers),
         "gold_passage_ids": list(e.gold_passage_ids), "split": split}
        for split in ("train", "dev", "test") for e in task.split(split)])
    (folder / "task.json").write_text(json.dumps(
        {"name": task.name, "domain": task.domain, "language": task.language}))


def _to_csv(task: Task, folder: Path) -> None:
    folder.mkdir()
    _write_csv(folder / "corpus.csv",
               [{"id": p.id, "text": p.text, "title": p.title} for p in task.corpus],
               ["id", "title", "text"])
    _write_csv(folder / "qa.csv", [
        {"id": e.id, "question": e.question, "answers": " || ".join(e.answers),
         "gold_passage_ids": "|".join(e.gold_passage_ids), "split": split}
        for split in ("train", "dev", "test") for e in task.split(split)],
        ["id", "question", "answers", "gold_passage_ids", "split"])
    (folder / "task.json").write_text(json.dumps(
        {"name": task.name, "domain": task.domain, "language": task.language}))


@pytest.mark.parametrize("writer", [_to_jsonl, _to_csv])
def test_round_trip_keeps_the_task(tmp_path: Path, writer) -> None:
    (original,) = synthetic_suite(seed=2, n_entities=8, domains=["finance"])
    writer(original, tmp_path / "t")
    loaded = load_user_task(tmp_path / "t")
    assert [(p.id, p.text, p.title) for p in loaded.corpus] == [
        (p.id, p.text, p.title) for p in original.corpus]
    assert (loaded.name, loaded.domain, loaded.language) == (
        original.name, original.domain, original.language)
    for split in ("train", "dev", "test"):
        got = [(e.id, e.question, e.answers, e.gold_passage_ids) for e in loaded.split(split)]
        want = [(e.id, e.question, e.answers, e.gold_passage_ids) for e in original.split(split)]
        assert got == want


def test_csv_separators_quoting_and_multiline_cells(tmp_path: Path) -> None:
    folder = tmp_path / "csv_task"
    folder.mkdir()
    _write_csv(folder / "corpus.csv", [
        {"id": "p1", "text": "Line one.\nLine two mentions €4.2 million."},
        {"id": "p2", "text": 'A "quoted", comma text about clause 2.1.'}], ["id", "text"])
    _write_csv(folder / "qa.csv", [
        {"id": "q1", "question": "How much?", "answers": "€4.2 million || 4.2 million euros",
         "gold_passage_ids": "p1 | p2", "split": "TEST"},
        {"id": "q2", "question": "Which clause?", "answers": "clause 2.1", "note": "x"}],
        ["id", "question", "answers", "gold_passage_ids", "split", "note"])
    task = load_user_task(folder)
    ex = _by_id(task)
    assert ex["q1"].answers == ("€4.2 million", "4.2 million euros")
    assert ex["q1"].gold_passage_ids == ("p1", "p2")
    assert [e.id for e in task.test] == ["q1"]
    assert ex["q2"].gold_passage_ids == ("p2",) and ex["q2"].metadata["note"] == "x"
    assert task.corpus[0].text.startswith("Line one.\nLine two")


# --- errors: each names the file, the line or row, and the field -------------------------

BAD_QA = [
    ({"id": "q9", "answers": ["a"]}, "missing field 'question'"),
    ({"id": "q9", "question": "   ", "answers": ["a"]}, "field 'question': empty question"),
    ({"id": "q9", "question": "Q?", "answers": []}, "field 'answers': empty answers"),
    ({"id": "q9", "question": "Q?", "answers": ["ok", " "]}, "field 'answers'"),
    ({"id": "q9", "question": "Q?"}, "missing field 'answers' (or 'answer')"),
    ({"id": "q9", "question": "Q?", "answer": "a", "answers": ["a"]}, "not both"),
    ({"id": "q9", "question": "Q?", "answers": "a"}, "field 'answers': expected a list"),
    ({"id": "q1", "question": "Q?", "answer": "a"}, "duplicate QA id 'q1' (first at line 1)"),
    ({"id": "q9", "question": "Q?", "answer": "a", "split": "validation"},
     "field 'split': unknown split 'validation'"),
    ({"id": "q9", "question": "Q?", "answer": "a", "gold_passage_ids": ["p7"]},
     "field 'gold_passage_ids': passage id 'p7' is not in corpus.jsonl"),
    ({"id": "q9", "question": "Q?", "answer": "a", "language": "english"},
     "field 'language': unknown language code 'english'"),
    ({"id": "q9", "question": "Q?", "answer": "a", "language": "en-US"}, "use 'en'"),
    ({"id": None, "question": "Q?", "answer": "a"}, "field 'id': expected str or int"),
    ({"id": " ", "question": "Q?", "answer": "a"}, "field 'id': empty id"),
]


@pytest.mark.parametrize("row, message", BAD_QA)
def test_bad_qa_row_names_file_line_and_field(tmp_path: Path, row: dict, message: str) -> None:
    qa = [QA[0], {"id": "q2", "question": "ok?", "answer": "x"}, row]
    folder = _folder(tmp_path, qa=qa)
    with pytest.raises(DataError) as err:
        load_user_task(folder)
    msg = str(err.value)
    assert str(folder / "qa.jsonl") in msg and "line 3" in msg and message in msg, msg


@pytest.mark.parametrize("row, message", [
    ({"id": "p1", "text": "again"}, "field 'id': duplicate passage id 'p1' (first at line 1)"),
    ({"id": "p9", "text": ""}, "field 'text': empty text"),
    ({"id": "p9"}, "missing field 'text'"),
    ({"id": "p9", "text": "t", "title": 3}, "field 'title'"),
])
def test_bad_corpus_row_names_file_line_and_field(tmp_path: Path, row, message) -> None:
    folder = _folder(tmp_path, corpus=[CORPUS[0], CORPUS[1], row])
    with pytest.raises(DataError) as err:
        load_user_task(folder)
    msg = str(err.value)
    assert str(folder / "corpus.jsonl") in msg and "line 3" in msg and message in msg, msg


def test_malformed_json_and_blank_lines_keep_true_line_numbers(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    (folder / "qa.jsonl").write_text(
        json.dumps(QA[0]) + "\n\n" + '{"id": "q2", "question": }\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"qa\.jsonl at line 3, column \d+: malformed JSON"):
        load_user_task(folder)
    (folder / "qa.jsonl").write_text(
        json.dumps(QA[0]) + "\n\n" + json.dumps({"id": "q2", "question": "Q?"}) + "\n")
    with pytest.raises(DataError, match=r"qa\.jsonl at line 3: missing field 'answers'"):
        load_user_task(folder)


def test_non_utf8_names_file_and_line(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    (folder / "corpus.jsonl").write_bytes(
        json.dumps(CORPUS[0]).encode() + b'\n{"id": "p2", "text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"corpus\.jsonl at line 2, column \d+.*not valid UTF-8"):
        load_user_task(folder)


def test_empty_corpus(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    (folder / "corpus.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match=r"corpus\.jsonl.*(empty|no records)"):
        load_user_task(folder)
    (folder / "corpus.jsonl").unlink()
    (folder / "corpus.csv").write_text("id,text\n")
    with pytest.raises(DataError, match=r"corpus\.csv: the file has a header but no rows"):
        load_user_task(folder)
    (folder / "corpus.csv").write_text("")
    with pytest.raises(DataError, match=r"corpus\.csv: the file is empty"):
        load_user_task(folder)


@pytest.mark.parametrize("cells, message", [
    ("q9,,a", "field 'question': empty question"),
    ("q9,Q?,", "field 'answers': empty answers"),
    ("q9,Q?,a || ", "field 'answers': an answer is empty"),
    (",Q?,a", "field 'id'"),
    ("q1,Q?,a", "duplicate QA id 'q1' (first at row 2)"),
    ("q9,Q?,a,extra", "more cells than the 3 header columns"),
])
def test_csv_errors_name_the_row(tmp_path: Path, cells: str, message: str) -> None:
    folder = _folder(tmp_path)
    (folder / "qa.jsonl").unlink()
    # Row 3 spans two lines, so the bad record is row 4 in a spreadsheet but line 5 in a file.
    (folder / "qa.csv").write_text(
        f'id,question,answers\nq1,Dose?,250 mg twice daily\nq2,"Two\nlines?",x\n{cells}\n',
        encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_user_task(folder)
    msg = str(err.value)
    assert str(folder / "qa.csv") in msg and "row 4 (line 5)" in msg and message in msg, msg


def test_csv_blank_rows_are_skipped_but_counted(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    (folder / "qa.jsonl").unlink()
    (folder / "qa.csv").write_text("id,question,answer\nq1,Q?,a\n\n,,\nq2,,b\n")
    with pytest.raises(DataError, match=r"qa\.csv at row 5, field 'question': empty question"):
        load_user_task(folder)


def test_csv_missing_column_is_named(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    (folder / "corpus.jsonl").unlink()
    (folder / "corpus.csv").write_text("id,body\np1,text\n")
    with pytest.raises(DataError, match=r"corpus\.csv at row 2: missing field 'text'"):
        load_user_task(folder)


@pytest.mark.parametrize("meta, message", [
    ({"language": "xx"}, "unknown language code 'xx'"),
    ({"langauge": "en"}, "unknown field(s) ['langauge']"),
    ({"name": 3}, "field 'name': expected str"),
])
def test_bad_task_json(tmp_path: Path, meta: dict, message: str) -> None:
    folder = _folder(tmp_path, task=meta)
    with pytest.raises(DataError) as err:
        load_user_task(folder)
    assert "task.json" in str(err.value) and message in str(err.value)


def test_folder_problems(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a folder"):
        load_user_task(tmp_path / "nope")
    folder = _folder(tmp_path)
    (folder / "qa.jsonl").unlink()
    with pytest.raises(DataError, match=r"missing qa\.jsonl \(or qa\.csv\)"):
        load_user_task(folder)
    _write_jsonl(folder / "qa.jsonl", QA)
    (folder / "qa.csv").write_text("id,question,answer\nq1,Q?,a\n")
    with pytest.raises(DataError, match="keep only one"):
        load_user_task(folder)


def test_check_language() -> None:
    assert check_language(" EN ", "f", None) == "en"
    with pytest.raises(DataError, match="ISO 639-1"):
        check_language("eng", "f", None)
    with pytest.raises(DataError, match="must be a string"):
        check_language(1, "f", None)
