"""Loading and pairing `metarag evaluate` runs: formats old and new, and every malformed case."""

import json

import pytest

from helpers import REVIEW_QUESTIONS, review_record, write_review_runs, write_run
from metarag.errors import DataError
from metarag.review.runs import default_name, load_items, load_run, pair_runs


def test_pairs_by_task_and_id_in_run_a_order(tmp_path):
    a, b = write_review_runs(tmp_path)
    # B answers in another order, lacks one question and has one A lacks.
    records = [review_record(*q, "multitask") for q in reversed(REVIEW_QUESTIONS[1:])]
    records.append(review_record("bank", "q9", "Only B has this?", "multitask"))
    write_run(b, records)
    run_a, run_b, items = load_items(a, b)
    assert (run_a.name, run_b.name) == (str(a), str(b))
    assert [i.key for i in items] == ["bank/q2", "pharmacy/q1", "pharmacy/q2", "lease/q7"]
    first = items[0]
    assert first.question == "When was Norvell Bank founded?"
    assert (first.answer_a, first.answer_b) == ("maml answers bank/q2",
                                                "multitask answers bank/q2")
    assert first.references == ["gold q2"]
    assert first.passages_a == [{"id": "bank-p1", "title": "Bank",
                                 "text": "Passage on When was Norvell Bank founded?"}]
    assert first.passages_a == first.passages_b


def test_same_id_in_two_tasks_are_different_questions(tmp_path):
    run = load_run(write_review_runs(tmp_path)[0])
    keys = [p.key for p in run.predictions]
    assert "bank/q1" in keys and "pharmacy/q1" in keys and len(set(keys)) == 5


def test_older_files_without_passages_show_ids_only(tmp_path):
    record = review_record("bank", "q1", "Who?", "old")
    del record["passages"]
    run = load_run(write_run(tmp_path / "old", [record]) / "predictions.jsonl")
    assert run.predictions[0].passages == [{"id": "bank-p1", "title": "", "text": ""}]
    assert run.name == str(tmp_path / "old")  # named by its folder, also given the file


def test_records_without_ids_pair_by_question_text(tmp_path):
    records = [{"question": "Who signs?", "prediction": x, "references": []} for x in "xy"]
    a, b = write_run(tmp_path / "a", records[:1]), write_run(tmp_path / "b", records[1:])
    [item] = load_items(a, b)[2]
    assert item.key == "/?Who signs?" and (item.answer_a, item.answer_b) == ("x", "y")


def test_default_name_is_relative_inside_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_review_runs(tmp_path / "runs")
    assert default_name("runs/maml") == "runs/maml"
    assert default_name(tmp_path / "runs" / "maml" / "predictions.jsonl") == "runs/maml"


@pytest.mark.parametrize(("line", "message"), [
    ("{not json", "line 2: not valid JSON"),
    ("[1, 2]", "line 2: expected a JSON object"),
    (json.dumps({"question": "Q?", "references": []}), "line 2: missing field 'prediction'"),
    (json.dumps({"question": "Q?", "prediction": 3, "references": []}),
     "line 2, field 'prediction': expected str, got int"),
    (json.dumps({"question": "Q?", "prediction": "x", "references": "gold"}),
     "line 2, field 'references': expected list"),
    (json.dumps({"id": "q1", "task": "bank", "question": "Q?", "prediction": "x",
                 "references": []}), "line 2: question 'bank/q1' appears twice"),
    (json.dumps({"id": "q5", "question": "Q?", "prediction": "x", "references": [],
                 "passages": [{"id": "p"}]}), "field 'passages[0]'"),
])
def test_malformed_records_name_the_file_line_and_field(tmp_path, line, message):
    path = tmp_path / "run" / "predictions.jsonl"
    path.parent.mkdir()
    path.write_text(json.dumps(review_record("bank", "q1", "Q?", "s")) + "\n" + line + "\n")
    with pytest.raises(DataError) as err:
        load_run(path.parent)
    assert str(path) in str(err.value) and message in str(err.value)


def test_missing_and_empty_runs(tmp_path):
    with pytest.raises(DataError, match="no such file.*metarag evaluate"):
        load_run(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "predictions.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no predictions"):
        load_run(tmp_path / "empty")


def test_runs_sharing_no_question_or_disagreeing_on_one(tmp_path):
    a = write_run(tmp_path / "a", [review_record("bank", "q1", "Q1?", "a")])
    b = write_run(tmp_path / "b", [review_record("bank", "q2", "Q2?", "b")])
    with pytest.raises(DataError, match="share no question"):
        load_items(a, b)
    write_run(b, [review_record("bank", "q1", "Another question?", "b")])
    with pytest.raises(DataError, match="question 'bank/q1'.*text differs"):
        load_items(a, b)
    with pytest.raises(DataError, match="both runs are named 'x'"):
        pair_runs(load_run(a, "x"), load_run(b, "x"))
