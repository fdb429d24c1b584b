"""The format loaders on small files written here, good and bad."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from metarag.data.loaders.medquad import load_medquad
from metarag.data.loaders.pubmedqa import load_pubmedqa
from metarag.data.loaders.shared import SHARED_DATASETS, load_shared
from metarag.data.loaders.squad import AnswerSpan, load_squad, locate_answer
from metarag.data.loaders.tatqa import load_tatqa, render_answer, render_table
from metarag.errors import DataError

# ---------------------------------------------------------------- SQuAD-style

CONTEXT = "Paris is the capital of France. The Seine flows through Paris."
LONG_CONTEXT = " ".join(f"w{i}" for i in range(60)) + " The answer is 42 here."


def _qa(qid: Any, question: str, *answers: tuple[str, int], **extra: Any) -> dict[str, Any]:
    return {"id": qid, "question": question,
            "answers": [{"text": t, "answer_start": s} for t, s in answers], **extra}


def _squad_file(path: Path, paragraphs: list[dict[str, Any]], title: str = "T") -> Path:
    path.write_text(json.dumps({"version": "1", "data": [
        {"title": title, "paragraphs": paragraphs}]}), encoding="utf-8")
    return path


def _good_squad(tmp_path: Path) -> Path:
    return _squad_file(tmp_path / "dev.json", [
        {"context": CONTEXT, "qas": [
            _qa("q1", "Capital of France?", ("Paris", 0)),
            # Offset 5 is wrong: the nearest "Paris" (the second, at 56) is taken.
            _qa("q2", "Which city does the Seine cross?", ("Paris", 50)),
            _qa("q3", "What is not here?", ("Berlin", 3)),
            _qa("q4", "Impossible?", is_impossible=True),
            _qa("q5", "Unanswered?"),
            # Three references, one repeated; the first is not in the context.
            _qa("q6", "River?", ("the river Seine", 0), ("Seine", 35), ("Seine", 35)),
        ]},
        # The same context again: its passages are shared, not duplicated.
        {"context": CONTEXT, "qas": [_qa(7, "Country?", ("France", 24))]},
        {"context": LONG_CONTEXT, "qas": [_qa("q8", "The answer?", ("42", 75))]},
    ])


def test_squad_loads_repairs_and_counts(tmp_path: Path) -> None:
    task = load_squad([_good_squad(tmp_path)], name="toy", domain="toy", seed=0,
                      max_tokens=20, overlap=5)
    by_id = {e.id: e for e in task.examples}
    assert sorted(by_id) == ["7", "q1", "q2", "q6", "q8"]
    assert task.skipped == {"answer text not found in its context": 1,
                            "marked is_impossible": 1, "no reference answer": 1}
    # One passage for the repeated context, 4 chunks of 20 tokens / stride 15 for the long one.
    assert [p.id for p in task.corpus] == ["dev:0:0", "dev:0:2#0", "dev:0:2#1",
                                           "dev:0:2#2", "dev:0:2#3"]
    assert task.corpus[0].title == "T"
    assert by_id["q1"].gold_passage_ids == ("dev:0:0",)
    assert by_id["7"].gold_passage_ids == ("dev:0:0",)
    assert by_id["q2"].metadata["answer_start_repaired"] is True
    assert "answer_start_repaired" not in by_id["q1"].metadata
    assert by_id["q6"].answers == ("the river Seine", "Seine")
    lookup = task.passage_lookup()
    assert by_id["q8"].gold_passage_ids
    assert all("42" in lookup[g].text for g in by_id["q8"].gold_passage_ids)
    assert len(task.train) + len(task.dev) + len(task.test) == 5


def test_locate_answer_prefers_the_nearest_occurrence() -> None:
    text = "a x b x c x"
    assert locate_answer(text, "x", 2) == AnswerSpan(2, 3, repaired=False)
    assert locate_answer(text, "x", 3) == AnswerSpan(2, 3, repaired=True)
    span = locate_answer(text, "x", 9)
    assert (span.start, span.repaired) == (10, True)
    assert locate_answer(text, " x ", 1).start == 2  # surrounding space ignored
    assert locate_answer(text, "y", 0) is None
    assert locate_answer(text, "  ", 0) is None


def test_squad_test_file_is_the_test_split_and_repeated_ids_are_renamed(tmp_path: Path) -> None:
    dev = _squad_file(tmp_path / "dev.json", [{"context": CONTEXT, "qas": [
        _qa("q1", "Capital?", ("Paris", 0)), _qa("q2", "Country?", ("France", 24))]}])
    test = _squad_file(tmp_path / "test.json", [{"context": CONTEXT, "qas": [
        _qa("q1", "Capital again?", ("Paris", 0))]}])
    task = load_squad([dev], [test], name="toy", domain="toy")
    assert [e.id for e in task.test] == ["q1~2"]
    assert task.test[0].metadata["original_id"] == "q1"
    assert sorted(e.id for e in task.train + task.dev) == ["q1", "q2"]
    assert len(task.corpus) == 1  # same context in both files


def test_squad_chinese_is_chunked_by_characters(tmp_path: Path) -> None:
    context = "北京是中华人民共和国的首都，也是全国的政治中心和文化中心。"
    f = _squad_file(tmp_path / "zh.json", [{"context": context, "qas": [
        _qa("z1", "首都?", ("北京", 0)), _qa("z2", "什么中心?", ("文化中心", 24))]}])
    task = load_squad([f], name="zh", domain="zh", language="zh", max_tokens=10, overlap=2)
    assert len(task.corpus) == 4
    by_id = {e.id: e for e in task.examples}
    assert by_id["z1"].gold_passage_ids == ("zh:0:0#0",)
    assert by_id["z2"].language == "zh"
    lookup = task.passage_lookup()
    assert all("文化中心" in lookup[g].text for g in by_id["z2"].gold_passage_ids)


@pytest.mark.parametrize(("content", "place", "problem"), [
    ('{"data": [', "line 1, column 11", "malformed JSON"),
    ('{"version": 1}', "the top level", "missing field 'data'"),
    ('{"data": [{"paragraphs": [{"qas": []}]}]}', "data[0].paragraphs[0]",
     "missing field 'context'"),
    ('{"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "a", "question": "q"}]}]}]}',
     "data[0].paragraphs[0].qas[0]", "missing field 'answers'"),
    ('{"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "a", "question": "q", '
     '"answers": [{"text": "c", "answer_start": "0"}]}]}]}]}',
     "data[0].paragraphs[0].qas[0].answers[0].answer_start", "expected int"),
    ('{"data": [{"paragraphs": [{"context": " ", "qas": []}]}]}',
     "data[*].paragraphs[*].context", "corpus would be empty"),
    ("", None, "the file is empty"),
])
def test_squad_bad_input_names_file_and_place(
    tmp_path: Path, content: str, place: str | None, problem: str
) -> None:
    f = tmp_path / "bad.json"
    f.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_squad([f], name="bad", domain="bad")
    message = str(info.value)
    assert str(f) in message and problem in message
    if place:
        assert f"at {place}:" in message


def test_squad_non_utf8_bytes(tmp_path: Path) -> None:
    f = tmp_path / "latin1.json"
    f.write_bytes('{"data": []}\n"café"'.encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.json at line 2, column 5.*not valid UTF-8"):
        load_squad([f], name="bad", domain="bad")


# ------------------------------------------------------------------ PubMedQA

def _pubmed_record(question: str, decision: str = "yes", **extra: Any) -> dict[str, Any]:
    return {"QUESTION": question, "CONTEXTS": ["We looked.", "We found it."],
            "LABELS": ["BACKGROUND", "RESULTS"], "MESHES": ["Humans"], "YEAR": "2001",
            "final_decision": decision, "LONG_ANSWER": "It was found.", **extra}


def _pubmed_folder(tmp_path: Path, records: dict[str, Any], test: dict[str, str]) -> Path:
    (tmp_path / "ori_pqal.json").write_text(json.dumps(records), encoding="utf-8")
    (tmp_path / "test_ground_truth.json").write_text(json.dumps(test), encoding="utf-8")
    return tmp_path


def test_pubmedqa(tmp_path: Path) -> None:
    records = {str(i): _pubmed_record(f"Q{i}?", "no" if i % 2 else "yes") for i in range(10)}
    records["99"] = _pubmed_record("Long?", CONTEXTS=["word " * 40, "more " * 40])
    records["99"]["LABELS"] = ["METHODS", "RESULTS"]
    folder = _pubmed_folder(tmp_path, records, {"3": "no", "99": "yes"})
    task = load_pubmedqa(folder, max_tokens=50, overlap=10)
    assert [e.id for e in task.test] == ["3", "99"]
    assert len(task.train) + len(task.dev) == 9
    lookup = task.passage_lookup()
    assert lookup["0"].text == "BACKGROUND: We looked.\nRESULTS: We found it."
    long = task.test[1]
    assert long.gold_passage_ids == ("99#0", "99#1")
    assert long.answers == ("It was found.",)
    assert long.metadata == {"final_decision": "yes", "year": "2001", "meshes": ["Humans"]}


@pytest.mark.parametrize(("mutate", "file", "place", "problem"), [
    (lambda r, t: r["1"].pop("LONG_ANSWER"), "ori_pqal.json", "['1']",
     "missing field 'LONG_ANSWER'"),
    (lambda r, t: r["1"].update(final_decision="perhaps"), "ori_pqal.json",
     "['1'].final_decision", "expected one of yes, no, maybe"),
    (lambda r, t: r["1"]["LABELS"].pop(), "ori_pqal.json", "['1'].LABELS", "1 labels for 2"),
    (lambda r, t: t.update({"404": "yes"}), "test_ground_truth.json", "['404']",
     "not in ori_pqal.json"),
    (lambda r, t: r.clear(), "ori_pqal.json", "the top level", "corpus would be empty"),
])
def test_pubmedqa_bad_input(tmp_path: Path, mutate, file: str, place: str, problem: str) -> None:
    records = {str(i): _pubmed_record(f"Q{i}?") for i in range(3)}
    test = {"0": "yes"}
    mutate(records, test)
    folder = _pubmed_folder(tmp_path, records, test)
    with pytest.raises(DataError) as info:
        load_pubmedqa(folder)
    assert f"{tmp_path / file} at {place}: " in str(info.value)
    assert problem in str(info.value)


# ------------------------------------------------------------------- MedQuAD

def _medquad_xml(pairs: list[tuple[str, str, str]], focus: str = "Flu") -> str:
    body = "".join(
        f'<QAPair pid="{pid}"><Question qid="x-{pid}" qtype="information">{q}</Question>'
        f"<Answer>{a}</Answer></QAPair>" for pid, q, a in pairs)
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Document id="1" source="GARD" url="u">'
            f"<Focus>{focus}</Focus><QAPairs>{body}</QAPairs></Document>")


def test_medquad(tmp_path: Path) -> None:
    (tmp_path / "1_A").mkdir()
    (tmp_path / "2_B").mkdir()
    (tmp_path / "1_A" / "0001.xml").write_text(_medquad_xml([
        ("1", "What is flu?", "Flu is an infection. " * 30),
        ("2", "Is it rare?", ""),
    ]), encoding="utf-8")
    # Same file name in another folder (document ids repeat in MedQuAD), and
    # the older lower-case layout some NINDS files use.
    (tmp_path / "2_B" / "0001.xml").write_text(
        '<doc docid="1" corpus="NINDS"><doctitle-focus>Cold</doctitle-focus><qaPairs>'
        '<pair pid="1"><question qid="1-1" qtype="treatment">How to treat a cold?</question>'
        "<answer>Rest.</answer></pair></qaPairs></doc>", encoding="utf-8")
    task = load_medquad(tmp_path, max_tokens=50, overlap=10)
    by_id = {e.id: e for e in task.examples}
    assert sorted(by_id) == ["1_A/0001/1", "2_B/0001/1"]
    assert task.skipped == {"empty answer": 1}
    flu = by_id["1_A/0001/1"]
    assert flu.gold_passage_ids == ("1_A/0001/1#0", "1_A/0001/1#1", "1_A/0001/1#2")
    assert flu.answers[0].startswith("Flu is an infection.")
    assert flu.metadata["qtype"] == "information"
    lookup = task.passage_lookup()
    assert lookup["1_A/0001/1#0"].title == "Flu"
    assert lookup["1_A/0001/1#0"].source == "1_A/0001"
    assert lookup["2_B/0001/1"].text == "Rest." and lookup["2_B/0001/1"].title == "Cold"


@pytest.mark.parametrize(("content", "place", "problem"), [
    ('<Document><QAPairs><QAPair pid="1"><Question>q</Question>\n<Answer>a</QAPair>',
     "line 2, column 12", "malformed XML: mismatched tag"),
    ('<Document><QAPairs><QAPair pid="1"><Question>q</Question></QAPair></QAPairs></Document>',
     "<QAPair pid='1'> (pair 1 of 1)", "missing <answer> element"),
    (_medquad_xml([("1", "q", "a"), ("1", "q2", "a2")]), "<QAPair pid='1'> (pair 2 of 2)",
     "repeated pid"),
])
def test_medquad_bad_input(tmp_path: Path, content: str, place: str, problem: str) -> None:
    (tmp_path / "1_A").mkdir()
    f = tmp_path / "1_A" / "0001.xml"
    f.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_medquad(tmp_path)
    assert f"{f} at {place}: {problem}" in str(info.value)


def test_medquad_bad_bytes_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no \\*.xml files"):
        load_medquad(tmp_path)
    f = tmp_path / "0001.xml"
    f.write_bytes(_medquad_xml([("1", "q", "café")]).encode("latin-1"))
    with pytest.raises(DataError, match=r"0001\.xml at line 2, column \d+.*not valid UTF-8"):
        load_medquad(tmp_path)


# -------------------------------------------------------------------- TAT-QA

def _tatqa_item(n: int, questions: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "table": {"uid": f"t{n}", "table": [["", "2019", "2018"], ["Sales", "$1,496.5", "1,202.9"],
                                            ["", "", ""]]},
        "paragraphs": [{"uid": f"p{n}a", "order": 1, "text": "Sales rose because of pricing."},
                       {"uid": f"p{n}b", "order": 2, "text": "Costs fell."}],
        "questions": questions,
    }


def _tq(uid: str, answer: Any, answer_from: str, rel: list[str], **extra: Any) -> dict[str, Any]:
    return {"uid": uid, "order": 1, "question": f"Question {uid}?", "answer": answer,
            "derivation": "", "answer_type": "span", "answer_from": answer_from,
            "rel_paragraphs": rel, "req_comparison": False, "scale": "", **extra}


def test_tatqa(tmp_path: Path) -> None:
    dev = [_tatqa_item(0, [
        _tq("a", ["pricing"], "text", ["1"]),
        _tq("b", 293.6, "table", [], answer_type="arithmetic", scale="million",
            derivation="1,496.5 - 1,202.9"),
        _tq("c", ["$1,496.5", "1,202.9"], "table-text", ["2"], answer_type="multi-span"),
        _tq("d", [], "table", []),
    ])]
    test = [_tatqa_item(1, [_tq("e", 24.0, "table", [], answer_type="arithmetic",
                                scale="percent")])]
    (tmp_path / "tatqa_dataset_dev.json").write_text(json.dumps(dev), encoding="utf-8")
    (tmp_path / "tatqa_dataset_test_gold.json").write_text(json.dumps(test), encoding="utf-8")
    task = load_tatqa(tmp_path)
    by_id = {e.id: e for e in task.examples}
    assert [e.id for e in task.test] == ["e"]
    assert task.skipped == {"empty answer": 1}
    assert by_id["a"].answers == ("pricing",) and by_id["a"].gold_passage_ids == ("p0a",)
    assert by_id["b"].answers == ("293.6 million",) and by_id["b"].gold_passage_ids == ("t0",)
    assert by_id["b"].metadata == {"answer_type": "arithmetic", "answer_from": "table",
                                   "scale": "million", "derivation": "1,496.5 - 1,202.9"}
    assert by_id["c"].answers == ("$1,496.5, 1,202.9",)
    assert by_id["c"].gold_passage_ids == ("t0", "p0b")
    assert by_id["e"].answers == ("24%",)
    assert task.passage_lookup()["t0"].text == "Table:\n | 2019 | 2018\nSales | $1,496.5 | 1,202.9"
    assert len(task.corpus) == 6


def test_tatqa_answer_rendering() -> None:
    assert render_answer(1234.0) == "1234"
    assert render_answer(1234) == "1234"
    assert render_answer(-0.25, "percent") == "-0.25%"
    assert render_answer(2.9, "million") == "2.9 million"
    assert render_answer(7, "thousand") == "7 thousand"
    assert render_answer(["a ", 3.0]) == "a, 3"
    assert render_answer("4") == "4"
    assert render_table([["a", "b"], [" ", ""]]) == "Table:\na | b"


@pytest.mark.parametrize(("mutate", "place", "problem"), [
    (lambda items: items[0]["questions"][0].pop("answer"), "[0].questions[0]",
     "missing field 'answer'"),
    (lambda items: items[0]["questions"][0].update(answer_from="chart"),
     "[0].questions[0].answer_from", "expected one of text, table, table-text"),
    (lambda items: items[0]["questions"][0].update(rel_paragraphs=["9"]),
     "[0].questions[0].rel_paragraphs[0]", "no paragraph of this item has order '9'"),
    (lambda items: items[0]["paragraphs"][1].update(uid="p0a"), "[0].paragraphs[1].uid",
     "uid 'p0a' is already used for a different text"),
    (lambda items: items[0]["questions"].append(_tq("a", ["x"], "table", [])),
     "[0].questions[1].uid", "question uid 'a' is used twice"),
    (lambda items: items[0].pop("table"), "[0]", "missing field 'table'"),
])
def test_tatqa_bad_input(tmp_path: Path, mutate, place: str, problem: str) -> None:
    items = [_tatqa_item(0, [_tq("a", ["pricing"], "text", ["1"])])]
    mutate(items)
    f = tmp_path / "tatqa_dataset_dev.json"
    f.write_text(json.dumps(items), encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_tatqa(tmp_path)
    assert f"{f} at {place}: {problem}" in str(info.value)


# ------------------------------------------------------------------ registry

def test_registry_labels() -> None:
    assert sorted(SHARED_DATASETS) == sorted(
        ["xquad", "covid_qa", "pubmedqa", "medquad", "tatqa", "policyqa", "cmrc2018", "agxqa"])
    assert {d.language for d in SHARED_DATASETS.values()} == {"en", "zh"}
    assert SHARED_DATASETS["cmrc2018"].language == "zh"
    assert all(d.folder == d.name for d in SHARED_DATASETS.values())


def test_load_shared_on_a_small_copy(tmp_path: Path) -> None:
    (tmp_path / "policyqa").mkdir()
    _squad_file(tmp_path / "policyqa" / "dev.json", [{"context": CONTEXT, "qas": [
        _qa("q1", "Capital?", ("Paris", 0))]}])
    _squad_file(tmp_path / "policyqa" / "test.json", [{"context": CONTEXT, "qas": [
        _qa("q2", "Country?", ("France", 24))]}])
    task = load_shared("policyqa", tmp_path)
    assert (task.name, task.domain, task.language) == ("policyqa", "legal (privacy policies)", "en")
    assert [e.id for e in task.test] == ["q2"]


def test_load_shared_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a shared dataset; known: xquad"):
        load_shared("nope", tmp_path)
    with pytest.raises(DataError, match="folder of shared dataset 'xquad' not found"):
        load_shared("xquad", tmp_path)
    (tmp_path / "xquad").mkdir()
    with pytest.raises(DataError, match=r"xquad\.en\.json: file not found"):
        load_shared("xquad", tmp_path)
