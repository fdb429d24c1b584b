"""The meta-learning commands end to end on tiny real models: meta-train -> adapt ->
evaluate/ask, and the leave-one-domain-out benchmark with its report and plots."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from helpers import ADAPTED, TINY_KINDS, tiny_model
from metarag.checkpoint import latest_checkpoint, load_checkpoint
from metarag.cli import app

runner = CliRunner()


@pytest.fixture(scope="module", params=TINY_KINDS)
def kind(request):
    return request.param


def _meta_config(encoder_dir, out, kind, steps=2):
    return {
        "out": str(out), "cache_dir": None, "tensorboard": False, "eval_every": steps,
        "checkpoint_every": steps,
        "data": {"data": None, "tasks": ["synthetic/pharmacy", "synthetic/legal",
                                         "synthetic/finance"]},
        "model": {"encoder": str(encoder_dir),
                  **tiny_model(kind, max_source_length=64, max_target_length=12,
                               rag={"k": 2, "max_new_tokens": 3})},
        "inner": {"steps": 1, "lr": 0.01, "params": ADAPTED[kind], "batch_size": None},
        "meta": {"algorithm": "fomaml", "steps": steps, "meta_batch": 2, "n_shot": 2,
                 "n_query": 2},
    }


@pytest.fixture(scope="module")
def meta_run(tmp_path_factory, tiny_encoder_dir, kind):
    root = tmp_path_factory.mktemp("meta_cli")
    config = root / "meta.yaml"
    config.write_text(yaml.safe_dump(_meta_config(tiny_encoder_dir, root / "run", kind)))
    result = runner.invoke(app, ["meta-train", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "meta-step 2" in result.output and "after adaptation" in result.output
    return root


def test_adapt_saves_a_model_that_evaluate_and_ask_accept(meta_run, kind):
    out = meta_run / "adapted"
    result = runner.invoke(app, ["adapt", "--checkpoint", str(meta_run / "run"), "--task-file",
                                 "synthetic/agriculture", "--shots", "4", "--steps", "2",
                                 "--out", str(out), "--cache-dir", "none"])
    assert result.exit_code == 0, result.output
    state = load_checkpoint(out).state
    assert state["kind"] == "adapted" and state["shots"] == 4 and len(state["support_ids"]) == 4
    assert state["adapt"]["params"] == ADAPTED[kind]  # the meta-training run's inner settings
    start = load_checkpoint(meta_run / "run").model
    adapted = load_checkpoint(out).model
    part = ".decoder." if kind == "bert2bert" else ".lora_"
    assert any(not (adapted[k] == start[k]).all() for k in start if part in k)

    result = runner.invoke(app, ["evaluate", "--checkpoint", str(out), "--task",
                                 "synthetic/agriculture", "-n", "2", "--out",
                                 str(meta_run / "eval"), "--cache-dir", "none"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["ask", "--checkpoint", str(out), "--index", str(out / "index"),
                                 "How many tonnes per hectare does Amberlight yield?"])
    assert result.exit_code == 0, result.output
    assert "agriculture-p" in result.output  # it cites passages of the new domain
    # In-context: the support set the checkpoint was adapted on goes into the prompt.
    result = runner.invoke(app, ["ask", "--checkpoint", str(out), "--index", str(out / "index"),
                                 "--in-context", "2", "--json", "Who grows Amberlight?"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["answer"] is not None
    # Adapted with its support set in the prompts: asked with it by default, served so too.
    from metarag.meta.adapt import in_context_default

    result = runner.invoke(app, ["adapt", "--checkpoint", str(meta_run / "run"), "--task-file",
                                 "synthetic/agriculture", "--shots", "4", "--steps", "1",
                                 "--in-context", "--out", str(out) + "-icl", "--cache-dir", "none"])
    assert result.exit_code == 0, result.output
    state = load_checkpoint(str(out) + "-icl").state
    assert state["adapt"]["in_context"] is True and in_context_default(state) == 4
    assert in_context_default(load_checkpoint(out).state) == 0
    result = runner.invoke(app, ["evaluate", "--checkpoint", str(out), "--task",
                                 "synthetic/agriculture", "-n", "2", "--in-context", "2",
                                 "--out", str(meta_run / "eval-icl"), "--cache-dir", "none"])
    assert result.exit_code == 0, result.output
    settings = json.loads((meta_run / "eval-icl" / "metrics.json").read_text())["settings"]
    assert settings["in_context"] == 2
    for checkpoint, shown in ((str(out) + "-icl", 4), (str(out), 0)):  # the default
        result = runner.invoke(app, ["evaluate", "--checkpoint", checkpoint, "--task",
                                     "synthetic/agriculture", "-n", "2", "--out",
                                     str(meta_run / "eval-own"), "--cache-dir", "none"])
        assert result.exit_code == 0, result.output
        settings = json.loads((meta_run / "eval-own" / "metrics.json").read_text())["settings"]
        assert settings["in_context"] == shown


def test_adapt_refuses_more_shots_than_examples(meta_run):
    result = runner.invoke(app, ["adapt", "--checkpoint", str(meta_run / "run"), "--task-file",
                                 "synthetic/legal", "--shots", "100000", "--out",
                                 str(meta_run / "x"), "--cache-dir", "none"])
    assert result.exit_code != 0 and "train examples" in result.output


def test_benchmark_writes_results_report_and_plots(tmp_path, tiny_encoder_dir, kind):
    meta = _meta_config(tiny_encoder_dir, tmp_path / "unused", kind)
    config = {
        "out": str(tmp_path / "bench"), "held_out": ["synthetic/legal"], "shots": [0, 2, 4],
        "seeds": [0, 1], "lr_grid": [0.01, 0.03], "curve_shots": 4, "curve_steps": [0, 1],
        "test_examples": 2, "dev_examples": 2,
        "adapt": {"steps": 2, "params": ADAPTED[kind], "batch_size": 2},
        "multitask": {"batch_size": 2, "warmup_steps": 1}, "meta": meta,
    }
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    result = runner.invoke(app, ["benchmark", "--config", str(path)])
    assert result.exit_code == 0, result.output
    bench = tmp_path / "bench"
    results = json.loads((bench / "results.json").read_text())
    records = results["records"]
    main = [r for r in records if not r.get("curve")]
    count = {m: sum(r["method"] == m for r in main) for m in results["methods"]}
    # Adapted methods and MetaICL: 2 shots x 2 seeds + 1 unadapted; their +in_context
    # variants, in-context and MetaICL + fine-tune: 2 shots x 2 seeds (0 shots is another
    # method's cell); zero-shot once.
    assert count == {"meta": 5, "meta+in_context": 4, "meta_in_context": 5, "metaicl": 5,
                     "metaicl_finetune": 4, "multitask_finetune": 5,
                     "multitask_finetune+in_context": 4, "finetune": 5,
                     "finetune+in_context": 4, "in_context": 4, "zero_shot": 1}
    assert {r["shots"] for r in main if r["method"] == "in_context"} == {2, 4}
    curve = [r for r in records if r.get("curve")]
    assert {(r["method"], r["shots"], r["steps"]) for r in curve} == {
        (m, 4, s) for m in ("meta", "meta_in_context", "metaicl_finetune", "multitask_finetune",
                            "finetune") for s in (0, 1)}
    # Before its first step, MetaICL + fine-tune is MetaICL: the support set in the prompt.
    scores = {(r["method"], r["seed"]): r["scores"] for r in records
              if r["shots"] == 4 and (r["method"] == "metaicl" or r.get("steps") == 0)}
    assert all(scores[("metaicl_finetune", seed)] == scores[("metaicl", seed)]
               for seed in (0, 1))
    adapted = [r for r in main if r["shots"] > 0 and r["lr"] is not None]
    assert all(r["lr"] in (0.01, 0.03) and r["lr_at_edge"] for r in adapted)  # 2-rate grid
    # X+in_context scores X's adapted weights: the same rate as X's cell.
    lr = {(r["method"], r["shots"], r["seed"]): r["lr"] for r in main}
    assert all(lr[("meta+in_context", s, seed)] == lr[("meta", s, seed)]
               for s in (2, 4) for seed in (0, 1))
    assert set(results["stages"]) == {f"synthetic/legal/train {m}" for m in (
        "meta", "meta_in_context", "multitask_finetune", "metaicl")}
    assert all(0 <= r["scores"]["rougeL"] <= 100 for r in records)
    assert "ROUGE-L" in result.output and "meta" in result.output
    for name in ("report.md", "score_vs_shots.png", "score_vs_steps.png"):
        assert (bench / name).stat().st_size > 0
    # The starting points were trained at matched budgets and are kept for reuse.
    assert load_checkpoint(bench / "synthetic_legal" / "meta").state["step"] == 2
    multitask = load_checkpoint(bench / "synthetic_legal" / "multitask").state
    # meta steps x meta batch x (inner steps x n_shot + n_query) / batch size
    assert multitask["step"] == 2 * 2 * (1 * 2 + 2) / 2
    metaicl = load_checkpoint(bench / "synthetic_legal" / "metaicl").state
    assert metaicl["step"] == multitask["step"] and metaicl["config"]["demos"] == 4
    if kind == "causal":  # (adapt's default weights are LoRA's)
        # A model trained to read demos adapts (and is then asked) with them by default.
        result = runner.invoke(app, ["adapt", "--checkpoint", str(bench / "synthetic_legal" /
                                     "metaicl"), "--task-file", "synthetic/legal", "--shots",
                                     "2", "--steps", "1", "--out", str(tmp_path / "icl"),
                                     "--cache-dir", "none"])
        assert result.exit_code == 0, result.output
        assert load_checkpoint(tmp_path / "icl").state["adapt"]["in_context"] is True
    meta_icl = load_checkpoint(bench / "synthetic_legal" / "meta_in_context").state
    assert meta_icl["step"] == 2 and meta_icl["config"]["inner"]["in_context"] is True
    before = latest_checkpoint(bench / "synthetic_legal" / "meta")
    cells = (bench / "cells.jsonl").read_text().splitlines()
    assert len(cells) == sum(count.values())
    # Scored shots by shots, every method: 0, then curve_shots (4), then the rest (2).
    assert all(json.loads(c)["compute_dtype"] == "torch.float32" for c in cells)  # tiny: fp32
    shots = [json.loads(c)["key"][2] for c in cells]
    assert shots == sorted(shots, key=[0, 4, 2].index)
    result = runner.invoke(app, ["benchmark", "--config", str(path), "--set", "seeds=[0]"])
    assert result.exit_code == 0, result.output
    assert latest_checkpoint(bench / "synthetic_legal" / "meta") == before  # reused
    assert (bench / "cells.jsonl").read_text().splitlines() == cells  # nothing recomputed
    assert {r["seed"] for r in json.loads((bench / "results.json").read_text())["records"]
            if r["shots"] > 0} == {0}
    # Another first seed: the 0-shot cells (which no seed changes) are not redone.
    result = runner.invoke(app, ["benchmark", "--config", str(path), "--set", "seeds=[1]"])
    assert result.exit_code == 0, result.output
    assert (bench / "cells.jsonl").read_text().splitlines() == cells
    zero = [r for r in json.loads((bench / "results.json").read_text())["records"]
            if r["shots"] == 0]
    assert len(zero) == 6  # meta, meta_in_context, metaicl, multitask_finetune, finetune, zero_shot
    # --report-only rebuilds the view from the cells, computing nothing, beside a running run.
    from metarag.benchmark import BenchmarkConfig, CellStore

    running = CellStore(bench, BenchmarkConfig(out=str(bench)))  # holds the folder's lock
    (bench / "report.md").unlink()
    result = runner.invoke(app, ["benchmark", "--config", str(path), "--report-only",
                                 "--set", "seeds=[0]"])
    running.close()
    assert result.exit_code == 0, result.output
    assert (bench / "cells.jsonl").read_text().splitlines() == cells
    assert (bench / "report.md").stat().st_size > 0
    assert {r["seed"] for r in json.loads((bench / "results.json").read_text())["records"]
            if r["shots"] > 0} == {0}
    result = runner.invoke(app, ["benchmark", "--config", str(path), "--report-only",
                                 "--set", f"out={tmp_path / 'nothing'}"])
    assert result.exit_code != 0 and "no cells to report" in str(result.exception)
    # A run killed mid-cell: the cut line and the cells after it are redone, the rest kept.
    (bench / "cells.jsonl").write_text("\n".join(cells[:10]) + "\n" + cells[10][:25])
    result = runner.invoke(app, ["benchmark", "--config", str(path)])
    assert result.exit_code == 0, result.output
    lines = (bench / "cells.jsonl").read_text().splitlines()
    assert lines[:10] == cells[:10] and len(lines) == len(cells)  # the cut line is gone
    redone = json.loads((bench / "results.json").read_text())["records"]
    assert len([r for r in redone if not r.get("curve")]) == len(main)
    # A starting point trained with other settings is refused, not silently reused.
    result = runner.invoke(app, ["benchmark", "--config", str(path), "--set",
                                 "meta.meta.steps=1"])
    assert result.exit_code != 0  # `metarag` prints the message (cli.main); the runner keeps it
    assert "other settings (meta.steps differ" in str(result.exception)


def test_benchmark_screens_other_meta_algorithms(tmp_path, tiny_encoder_dir):
    """Reptile, second-order MAML and Meta-SGD over in-context episodes: each trained with
    its algorithm at meta_in_context's budget, scored like it; Meta-SGD keeps its rates."""
    from metarag.benchmark import ALGORITHM_VARIANTS, BenchmarkConfig, _learned_rates
    from metarag.config import load_config

    variants = list(ALGORITHM_VARIANTS)
    config = {
        "out": str(tmp_path / "bench"), "held_out": ["synthetic/legal"], "shots": [0, 2],
        "seeds": [0], "lr_grid": [0.01, 0.03], "curve_shots": 2, "curve_steps": [],
        "test_examples": 2, "dev_examples": 2,
        "adapt": {"steps": 1, "params": ADAPTED["causal"], "batch_size": 2},
        "meta": _meta_config(tiny_encoder_dir, tmp_path / "unused", "causal"),
        "methods": ["in_context"], "screen_methods": variants,
    }
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    result = runner.invoke(app, ["benchmark", "--config", str(path)])
    assert result.exit_code == 0, result.output
    records = json.loads((tmp_path / "bench" / "results.json").read_text())["records"]
    assert {(r["method"], r["shots"]) for r in records} == {
        *((m, s) for m in variants for s in (0, 2)), ("in_context", 2)}
    root = tmp_path / "bench" / "synthetic_legal"
    for method, algorithm in ALGORITHM_VARIANTS.items():
        trained = load_checkpoint(root / method).state
        assert trained["step"] == 2 and trained["config"]["meta"]["algorithm"] == algorithm
        assert trained["config"]["inner"]["in_context"] is True
    loaded = load_config(BenchmarkConfig, path)
    rates = _learned_rates(loaded, "synthetic/legal", "meta_sgd_in_context")
    weights = load_checkpoint(root / "meta_sgd_in_context").model  # one rate per weight
    assert rates and all(weights[k].shape == v.shape for k, v in rates.items())
    assert _learned_rates(loaded, "synthetic/legal", "reptile_in_context") == {}
    # The report counts the screened algorithms among the meta-learned candidates.
    report = (tmp_path / "bench" / "report.md").read_text()
    assert "meta_sgd_in_context (synthetic/legal)" in report
