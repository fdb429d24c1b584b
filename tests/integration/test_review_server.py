"""The review page's HTTP API on a real uvicorn server, and the `metarag review` command."""

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from helpers import LiveServer, review_record, write_review_runs, write_run
from metarag.cli import app as cli
from metarag.errors import DataError
from metarag.review.app import create_app
from metarag.review.db import ReviewDB
from metarag.review.runs import load_items

runner = CliRunner()
SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
def review(tmp_path):
    run_a, run_b, items = load_items(*write_review_runs(tmp_path / "runs"), "maml", "multitask")
    db = ReviewDB(tmp_path / "review.db")
    return db, db.add_comparison(run_a.name, run_b.name, items), items


def _system_of(item, answer_text):
    return {item.answer_a: "a", item.answer_b: "b"}[answer_text]


def test_page_and_items_hide_the_system_names(review):
    db, comparison, items = review
    with LiveServer(create_app(db, comparison)) as live, httpx.Client(base_url=live.url) as http:
        page = http.get("/")
        assert page.status_code == 200 and "A better" in page.text and "<kbd>w</kbd>" in page.text
        assert http.get("/static/review.js").headers["content-type"].startswith("text/javascript")
        assert http.get("/static/secret.py").status_code == 404
        assert http.get("/api/config").json() == {"rater": None, "total": 5}
        item = http.get("/api/next", params={"rater": "ann"}).json()
    assert item["key"] == items[0].key and item["position"] == 1
    assert (item["judged"], item["total"]) == (0, 5)
    assert [a["label"] for a in item["answers"]] == ["A", "B"]
    assert {a["text"] for a in item["answers"]} == {items[0].answer_a, items[0].answer_b}
    assert item["passages"] == items[0].passages_a  # both retrieved the same: shown once
    for text in (page.text, json.dumps(item)):
        assert "maml" not in text.replace("maml answers", "") and "multitask" not in \
            text.replace("multitask answers", "")


def test_judging_maps_the_shown_order_to_systems_and_resumes(review):
    db, comparison, items = review
    with LiveServer(create_app(db, comparison)) as live, httpx.Client(base_url=live.url) as http:
        first = http.get("/api/next", params={"rater": "ann"}).json()
        again = http.get("/api/next", params={"rater": "ann"}).json()  # a reload
        assert again == first
        reply = http.post("/api/judgements", json={"rater": "ann", "key": first["key"],
                                                   "choice": "A", "comment": " clear "})
        assert reply.status_code == 200, reply.text
        assert reply.json() == {"saved": True, "key": first["key"], "judged": 1, "total": 5}
        second = http.get("/api/next", params={"rater": "ann"}).json()
        assert second["key"] == items[1].key and second["judged"] == 1
        # another rater starts at the beginning, with an order of their own (stored)
        assert http.get("/api/next", params={"rater": "bob"}).json()["key"] == items[0].key
    [row] = db.judgements(comparison.id)
    assert row.verdict == _system_of(items[0], first["answers"][0]["text"])
    assert row.shown_first == row.verdict and row.comment == "clear"

    # A restarted server (a new app on the same file) resumes where ann stopped,
    # with the same answer order on the item she had open.
    with LiveServer(create_app(ReviewDB(db.path), comparison)) as live, \
            httpx.Client(base_url=live.url) as http:
        resumed = http.get("/api/next", params={"rater": "ann"}).json()
        assert resumed == second
        for choice in ("B", "tie", "both_wrong", "B"):
            key = http.get("/api/next", params={"rater": "ann"}).json()["key"]
            assert http.post("/api/judgements", json={"rater": "ann", "key": key,
                                                      "choice": choice}).status_code == 200
        done = http.get("/api/next", params={"rater": "ann"}).json()
        assert done == {"done": True, "judged": 5, "total": 5}
    verdicts = [j.verdict for j in db.judgements(comparison.id)]
    shown = second["answers"][1]["text"]  # ann chose B on the second item
    assert verdicts[1] == _system_of(items[1], shown)
    assert verdicts[2:4] == ["tie", "both_wrong"]


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"rater": "ann", "key": "bank/q1"}, 422, "choice: Field required"),
    ({"rater": "ann", "key": "bank/q1", "choice": "left"}, 422, "choice: Input should be"),
    ({"rater": "  ", "key": "bank/q1", "choice": "A"}, 422, "rater: Value error, give a rater"),
    ({"rater": "ann", "key": "no/such", "choice": "A"}, 404, "key: no item 'no/such'"),
    ({"rater": "ann", "key": "bank/q1", "choice": "A", "comment": "x" * 4001}, 422, "comment:"),
    ({"rater": "ann", "key": "bank/q1", "choice": "A", "score": 3}, 422, "score: Extra inputs"),
    ({"rater": "ann", "key": "bank/q1", "choice": "A", "comment": None}, 422, "comment:"),
    ([1, 2], 422, "body: Input should be a valid dictionary"),
])
def test_bad_judgements_get_4xx_naming_the_field(review, body, status, message):
    db, comparison, _ = review
    with LiveServer(create_app(db, comparison)) as live, httpx.Client(base_url=live.url) as http:
        reply = http.post("/api/judgements", json=body)
    assert reply.status_code == status, reply.text
    assert message in reply.json()["detail"]
    assert db.judgements() == []


def test_malformed_json_missing_rater_and_a_fixed_rater(review):
    db, comparison, items = review
    with LiveServer(create_app(db, comparison, rater="ann")) as live, \
            httpx.Client(base_url=live.url) as http:
        reply = http.post("/api/judgements", content=b"{not json",
                          headers={"content-type": "application/json"})
        assert reply.status_code == 422
        assert reply.json()["detail"].startswith("body: not valid JSON (")
        reply = http.get("/api/next")
        assert reply.status_code == 422 and reply.json()["detail"] == "rater: Field required"
        assert http.get("/api/config").json()["rater"] == "ann"
        reply = http.post("/api/judgements", json={"rater": "bob", "key": items[0].key,
                                                   "choice": "A"})
        assert reply.status_code == 403 and "'ann' only" in reply.json()["detail"]
        assert http.get("/api/next", params={"rater": "bob"}).status_code == 403
    assert db.judgements() == []


def _records(run):
    return [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]


def _free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_command_serves_and_a_killed_server_loses_nothing(tmp_path):
    a, b = write_review_runs(tmp_path / "runs")
    # each run has one question the other lacks: 4 shared, 2 left out
    write_run(a, [*_records(a)[:4], review_record("bank", "qa", "Only in A?", "maml")])
    write_run(b, [*_records(b)[:4], review_record("bank", "qb", "Only in B?", "multitask")])
    db_path, port = tmp_path / "review.db", _free_port()
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-m", "metarag", "review", "--a", str(a), "--b",
                             str(b), "--db", str(db_path), "--port", str(port)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(url + "/api/config", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        item = httpx.get(url + "/api/next", params={"rater": "ann"}).json()
        reply = httpx.post(url + "/api/judgements",
                           json={"rater": "ann", "key": item["key"], "choice": "tie"})
        assert reply.status_code == 200
    finally:
        proc.send_signal(signal.SIGKILL)  # no shutdown, no chance to flush anything
        out = proc.communicate(timeout=10)[0]
    assert "4 questions both runs answered (2 answered by one run only" in out
    assert f"{url}/" in out
    with closing(sqlite3.connect(db_path)) as raw:
        assert raw.execute("SELECT key, rater, verdict FROM judgements").fetchall() == [
            (item["key"], "ann", "tie")]


def test_summary_command_and_argument_errors(review, tmp_path):
    db, comparison, items = review
    db.judge(comparison.id, items[0].key, "ann", "a", "a")
    db.judge(comparison.id, items[1].key, "ann", "tie", "b")
    result = runner.invoke(cli, ["review", "--summary", str(db.path), "--markdown"])
    assert result.exit_code == 0, result.output
    assert "| maml | multitask | 2/5 | 2 | 1 | 0 | 1 | 0 | 75.0% |" in result.stdout
    plain = runner.invoke(cli, ["review", "--summary", str(db.path)])
    assert plain.exit_code == 0 and "75.0%" in plain.stdout and "|" not in plain.stdout

    both = runner.invoke(cli, ["review", "--summary", str(db.path), "--a", "x"])
    assert both.exit_code != 0 and "not both" in both.output
    neither = runner.invoke(cli, ["review", "--a", "x"])
    assert neither.exit_code != 0 and "--b RUN_B" in neither.output
    a = write_run(tmp_path / "lone", [{"id": "z", "question": "Z?", "prediction": "z",
                                       "references": []}])
    result = runner.invoke(cli, ["review", "--a", str(a), "--b", str(tmp_path / "runs" / "maml"),
                                 "--db", str(tmp_path / "other.db")])
    assert isinstance(result.exception, DataError) and "share no question" in str(
        result.exception)


def test_a_loopback_review_server_refuses_other_host_names(review):
    db, comparison, _ = review
    with LiveServer(create_app(db, comparison)) as live, httpx.Client(base_url=live.url) as http:
        assert http.get("/").status_code == 200
        # A page that rebinds its own name to 127.0.0.1 sends that name as Host.
        assert http.get("/", headers={"Host": "attacker.example"}).status_code == 400
