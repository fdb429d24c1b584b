"""`metarag evaluate` and `metarag ask` on a tiny checkpoint and a user-format task folder."""

import json
from dataclasses import asdict

import pytest
from typer.testing import CliRunner

from helpers import TINY_KINDS, tiny_model
from metarag.checkpoint import save_checkpoint
from metarag.cli import app
from metarag.config import from_dict
from metarag.errors import IndexMismatchError
from metarag.rag.build import ModelConfig, build_model, model_weights
from metarag.rag.model import RAGConfig

runner = CliRunner()

PASSAGES = [
    {"id": "p1", "title": "Velazine", "text": "The standard adult dose of Velazine is 250 mg."},
    {"id": "p2", "title": "Dunmore lease", "text": "Clause 14.3 ends the Dunmore lease early."},
    {"id": "p3", "title": "Barley", "text": "The farm planted 40 hectares of barley in spring."},
    {"id": "p4", "title": "Norvell Bank", "text": "Ada Brook chairs the audit committee."},
]
QA = [
    ("q1", "What is the adult dose of Velazine?", "250 mg", "p1"),
    ("q2", "Which clause ends the Dunmore lease?", "Clause 14.3", "p2"),
    ("q3", "How many hectares of barley were planted?", "40 hectares", "p3"),
    ("q4", "Who chairs the audit committee?", "Ada Brook", "p4"),
]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module", params=TINY_KINDS)
def setup(tmp_path_factory, tiny_encoder_dir, request):
    root = tmp_path_factory.mktemp("qa_cli")
    task = root / "bank"
    task.mkdir()
    _jsonl(task / "corpus.jsonl", PASSAGES)
    _jsonl(task / "qa.jsonl", [{"id": i, "question": q, "answer": a, "gold_passage_ids": [g],
                                "split": "test" if i in ("q3", "q4") else "train"}
                               for i, q, a, g in QA])
    model = tiny_model(request.param, max_source_length=48, max_target_length=12)
    config = from_dict(ModelConfig, {"encoder": str(tiny_encoder_dir), **model})
    config.rag = RAGConfig(k=2, max_new_tokens=3)
    checkpoint = save_checkpoint(root / "run", 5, model=model_weights(build_model(config).model),
                                 state={"model_config": asdict(config)})
    index = root / "index"
    result = runner.invoke(app, ["index", "build", str(task), "--out", str(index),
                                 "--encoder", str(tiny_encoder_dir)])
    assert result.exit_code == 0, result.output
    return {"root": root, "task": task, "checkpoint": checkpoint, "index": index}


def test_evaluate_writes_metrics_table_and_predictions(setup):
    out = setup["root"] / "eval"
    result = runner.invoke(app, ["evaluate", "--checkpoint", str(setup["root"] / "run"),
                                 "--data", str(setup["task"]), "--out", str(out), "-k", "1",
                                 "-k", "2"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "metrics.json").read_text())
    assert report["settings"]["step"] == 5 and report["settings"]["ks"] == [1, 2]
    [row] = report["results"]
    assert (row["task"], row["split"], row["n"]) == ("bank", "test", 2)
    assert {"exact_match", "f1", "bleu", "rouge1", "rouge2", "rougeL", "meteor",
            "recall@1", "recall@2", "mrr"} == set(row["metrics"])
    assert all(0 <= v <= 100 for v in row["metrics"].values())
    md = (out / "metrics.md").read_text()
    assert md.startswith("| task | split | n | EM |") and len(md.splitlines()) == 3
    assert md.splitlines()[0] in result.stdout
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert sorted(p["id"] for p in preds) == ["q3", "q4"]
    assert all(len(p["cited_passage_ids"]) == 2 and p["references"] for p in preds)
    known = {p["id"]: p["text"] for p in PASSAGES}
    for p in preds:  # the cited passages' text is saved too (metarag review shows it)
        assert [c["id"] for c in p["passages"]] == p["cited_passage_ids"]
        assert all(c["text"] == known[c["id"]] for c in p["passages"])
    # what `metarag review` reads of a run
    from metarag.review.runs import load_run

    run = load_run(out)
    assert [r.key for r in run.predictions] == [f"bank/{p['id']}" for p in preds]
    assert all(r.passages[0]["text"] == known[r.passages[0]["id"]] for r in run.predictions)


def test_zero_shot_evaluates_the_untrained_model_of_a_config(setup, tiny_encoder_dir):
    config = setup["root"] / "zero.yaml"
    config.write_text(f"model:\n  encoder: {tiny_encoder_dir}\n  generator: tiny\n"
                      "  max_source_length: 48\n  max_target_length: 12\n"
                      "  rag:\n    k: 2\n    max_new_tokens: 3\n")
    out = setup["root"] / "zero"
    result = runner.invoke(app, ["evaluate", "--zero-shot", str(config), "--data",
                                 str(setup["task"]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "metrics.json").read_text())
    assert report["settings"]["step"] == 0
    assert report["settings"]["checkpoint"].startswith("zero-shot")
    assert report["results"][0]["n"] == 2

    both = runner.invoke(app, ["evaluate", "--zero-shot", str(config), "--checkpoint",
                               str(setup["root"] / "run"), "--data", str(setup["task"])])
    assert both.exit_code != 0 and "exactly one" in both.output


def test_ask_prints_the_answer_and_its_citations(setup):
    args = ["ask", "--checkpoint", str(setup["checkpoint"]), "--index", str(setup["index"])]
    result = runner.invoke(app, [*args, "-k", "3", "--json", "Who chairs the audit committee?"])
    assert result.exit_code == 0, result.output
    reply = json.loads(result.stdout)
    assert reply["question"] == "Who chairs the audit committee?"
    assert isinstance(reply["answer"], str)
    assert len(reply["citations"]) == 3
    weights = [c["weight"] for c in reply["citations"]]
    assert weights == sorted(weights, reverse=True) and sum(weights) == pytest.approx(1, abs=1e-4)
    known = {p["id"]: p for p in PASSAGES}
    assert all(c["text"] == known[c["id"]]["text"] for c in reply["citations"])

    result = runner.invoke(app, [*args, "What is the adult dose of Velazine?"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Answer: ") and "Cited passages:" in result.stdout
    assert "1. p" in result.stdout and "weight=" in result.stdout


def test_ask_refuses_an_empty_question(setup):
    result = runner.invoke(app, ["ask", "--checkpoint", str(setup["checkpoint"]),
                                 "--index", str(setup["index"]), "  "])
    assert result.exit_code != 0
    assert "empty" in result.output


def test_ask_refuses_an_index_from_another_encoder(setup, tmp_path, tiny_encoder_dir):
    # Same architecture and width, other weights: only the fingerprint tells them apart.
    import torch
    from transformers import AutoTokenizer, BertModel

    encoder = BertModel.from_pretrained(tiny_encoder_dir)
    with torch.no_grad():
        encoder.embeddings.word_embeddings.weight.add_(0.01)
    encoder.save_pretrained(tmp_path / "other_encoder")
    AutoTokenizer.from_pretrained(tiny_encoder_dir).save_pretrained(tmp_path / "other_encoder")
    other = tmp_path / "other_index"
    result = runner.invoke(app, ["index", "build", str(setup["task"]), "--out", str(other),
                                 "--encoder", str(tmp_path / "other_encoder")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["ask", "--checkpoint", str(setup["checkpoint"]),
                                 "--index", str(other), "Who chairs the audit committee?"])
    assert result.exit_code != 0
    assert isinstance(result.exception, IndexMismatchError)
    message = str(result.exception)
    assert "Rebuild the index with the model's encoder" in message
    assert "metarag index build" in message


def test_no_repeat_ngram_is_recorded_and_applied(setup):
    out = setup["root"] / "no_repeat"
    result = runner.invoke(app, ["evaluate", "--checkpoint", str(setup["root"] / "run"),
                                 "--data", str(setup["task"]), "--out", str(out),
                                 "--no-repeat-ngram", "1"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metrics.json").read_text())["settings"]["no_repeat_ngram"] == 1
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    for p in preds:
        words = p["prediction"].split()
        assert len(set(words)) == len(words), p["prediction"]
    bad = runner.invoke(app, ["ask", "--checkpoint", str(setup["checkpoint"]), "--index",
                              str(setup["index"]), "--no-repeat-ngram", "-1", "Who?"])
    assert bad.exit_code != 0 and "no-repeat-ngram" in bad.output
