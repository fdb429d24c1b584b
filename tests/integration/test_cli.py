"""CLI smoke tests: real commands, real (tiny) models, and the files they write."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from metarag.cli import app

runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    return result


def test_help_lists_every_command():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("tasks", "index", "retrieve", "eval-retrieval", "train", "evaluate", "ask"):
        assert command in result.output


@pytest.mark.parametrize("command", [["tasks"], ["index", "build"], ["retrieve"],
                                     ["eval-retrieval"], ["train"], ["evaluate"], ["ask"]])
def test_every_command_has_help(command):
    result = invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_python_dash_m_works():
    proc = subprocess.run([sys.executable, "-m", "metarag", "--version"],
                          capture_output=True, text=True, check=True)
    assert proc.stdout.startswith("metarag ")


def test_tasks_lists_the_synthetic_suite():
    result = invoke("tasks", "--json")
    assert result.exit_code == 0, result.output
    summaries = json.loads(result.output)
    assert len(summaries) >= 6
    assert all(s["task"].startswith("synthetic/") and s["passages"] > 0 for s in summaries)
    assert all(s["train"] > 0 and s["dev"] > 0 and s["test"] > 0 for s in summaries)


def test_tasks_on_a_missing_folder_fails_clearly(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "metarag", "tasks", "--data",
                           str(tmp_path / "nowhere")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "nowhere" in proc.stderr and "not found" in proc.stderr


def test_index_build_then_retrieve(tmp_path, tiny_encoder_dir):
    out = tmp_path / "index"
    result = invoke("index", "build", "synthetic/pharmacy", "--out", str(out),
                    "--encoder", str(tiny_encoder_dir))
    assert result.exit_code == 0, result.output
    assert (out / "index.faiss").is_file() and (out / "index.json").is_file()
    assert (out / "bm25" / "bm25.json").is_file()

    result = invoke("retrieve", "--index", str(out), "-k", "3", "--json",
                    "What dose is used for adults?")
    assert result.exit_code == 0, result.output
    hits = json.loads(result.output)
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]

    result = invoke("retrieve", "--index", str(out), "--method", "hybrid", "-k", "2", "dose")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("1. ")


def test_retrieve_refuses_an_empty_question(tmp_path, tiny_encoder_dir):
    out = tmp_path / "index"
    invoke("index", "build", "synthetic/legal", "--out", str(out),
           "--encoder", str(tiny_encoder_dir))
    result = invoke("retrieve", "--index", str(out), "   ")
    assert result.exit_code != 0
    assert "empty" in result.output


def test_eval_retrieval_writes_json_and_markdown(tmp_path):
    """With the real MiniLM, dense retrieval on a synthetic domain must beat chance by far."""
    out = tmp_path / "eval"
    result = invoke("eval-retrieval", "--task", "pharmacy", "--task", "finance", "--out", str(out))
    assert result.exit_code == 0, result.output
    report = json.loads((out / "retrieval.json").read_text())
    rows = report["results"]
    assert {(r["task"], r["method"]) for r in rows} == {
        (t, m) for t in ("synthetic/pharmacy", "synthetic/finance")
        for m in ("dense", "bm25", "hybrid")}
    md = (out / "retrieval.md").read_text()
    assert md.startswith("| task | method |") and len(md.splitlines()) == 2 + len(rows)
    for r in rows:
        # recall is monotone in k, and far above chance (20 / passages) for every method
        assert r["recall"]["@1"] <= r["recall"]["@5"] <= r["recall"]["@20"]
        assert r["recall"]["@20"] > 0.5, r
