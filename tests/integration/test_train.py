"""Training runs end to end on tiny real models: files, exact resume, non-finite losses."""

import json

import pytest
import torch

from helpers import ADAPTED, TINY_KINDS, tiny_model
from metarag.checkpoint import latest_checkpoint, load_checkpoint
from metarag.data.synthetic import synthetic_suite
from metarag.rag.build import ModelConfig
from metarag.rag.model import RAGConfig
from metarag.train import DataConfig, OptimConfig, TrainConfig, TrainingError, lr_factor, train

kinds = pytest.mark.parametrize("kind", TINY_KINDS)


@pytest.fixture(scope="module")
def tasks():
    return synthetic_suite(seed=0, n_entities=8, questions_per_entity=2,
                           domains=["pharmacy", "legal"])


def _config(out, encoder_dir, kind="causal", params=None, **optim) -> TrainConfig:
    from metarag.config import from_dict

    model = from_dict(ModelConfig, tiny_model(kind, encoder=str(encoder_dir),
                                              max_source_length=48, max_target_length=12))
    model.rag = RAGConfig(k=2)
    return TrainConfig(
        out=str(out), seed=0, eval_every=2, checkpoint_every=2, log_every=1,
        cache_dir=str(out.parent / "cache"),
        data=DataConfig(dev_examples=2), model=model, params=params or ADAPTED[kind],
        optim=OptimConfig(**{"steps": 4, "batch_size": 2, "lr": 1e-3, "warmup_steps": 1,
                             **optim}))


@kinds
def test_a_run_writes_its_folder(kind, tmp_path, tiny_encoder_dir, tasks):
    result = train(_config(tmp_path / "run", tiny_encoder_dir, kind), tasks=tasks,
                   show_progress=False)
    run = tmp_path / "run"
    assert result.step == 4 and torch.isfinite(torch.tensor(result.last_loss))
    assert (run / "config.yaml").is_file() and list((run / "tensorboard").iterdir())
    assert latest_checkpoint(run).name == "step-000004"
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4]
    assert set(result.dev_loss) == {"synthetic/pharmacy", "synthetic/legal"}
    state = load_checkpoint(run).state
    assert state["model_config"]["rag"]["k"] == 2 and "optimizer" in state

    with pytest.raises(TrainingError, match="already holds a run"):
        train(_config(run, tiny_encoder_dir), tasks=tasks, show_progress=False)


@kinds
def test_resumed_run_equals_uninterrupted_run(kind, tmp_path, tiny_encoder_dir, tasks):
    train(_config(tmp_path / "straight", tiny_encoder_dir, kind), tasks=tasks, show_progress=False)
    cfg = _config(tmp_path / "killed", tiny_encoder_dir, kind)
    train(cfg, tasks=tasks, stop_after=2, show_progress=False)   # "killed" after step 2
    assert latest_checkpoint(tmp_path / "killed").name == "step-000002"
    train(cfg, tasks=tasks, resume=True, show_progress=False)
    straight = load_checkpoint(tmp_path / "straight").model
    resumed = load_checkpoint(tmp_path / "killed").model
    for name, weight in straight.items():
        torch.testing.assert_close(resumed[name], weight, rtol=0, atol=0, msg=name)
    steps = [json.loads(line)["step"] for line in
             (tmp_path / "killed" / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)  # the log was not duplicated by the resume


def test_resume_without_a_checkpoint_is_refused(tmp_path, tiny_encoder_dir, tasks):
    with pytest.raises(TrainingError, match="no checkpoint"):
        train(_config(tmp_path / "none", tiny_encoder_dir), tasks=tasks, resume=True,
              show_progress=False)


@kinds
def test_non_finite_losses_stop_the_run_and_keep_the_last_good_checkpoint(kind, 
        tmp_path, tiny_encoder_dir, tasks):
    # An absurd learning rate blows the weights up after the first step.
    cfg = _config(tmp_path / "nan", tiny_encoder_dir, kind, lr=1e30, warmup_steps=0, steps=8)
    cfg.checkpoint_every = 1
    cfg.max_bad_steps = 2
    with pytest.raises(TrainingError, match=r"not finite for 2 steps in a row.*step-000001"):
        train(cfg, tasks=tasks, show_progress=False)
    assert latest_checkpoint(tmp_path / "nan").name == "step-000001"
    log = [json.loads(line) for line in (tmp_path / "nan" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r.get("event") == "skipped"] == [1, 2]


def test_lr_schedule():
    assert [lr_factor(s, 2, 6) for s in range(6)] == [0.5, 1.0, 1.0, 0.75, 0.5, 0.25]


def test_train_command_with_yaml_and_overrides(tmp_path, tiny_encoder_dir):
    from typer.testing import CliRunner

    from metarag.cli import app

    config = tmp_path / "run.yaml"
    config.write_text(
        f"out: {tmp_path / 'cli-run'}\ncache_dir: {tmp_path / 'cache'}\n"
        "data:\n  tasks: [pharmacy]\n  dev_examples: 2\n"
        f"model:\n  encoder: {tiny_encoder_dir}\n  generator: tiny\n  max_source_length: 48\n"
        "  max_target_length: 12\n  rag:\n    k: 2\n"
        "optim:\n  steps: 50\n  batch_size: 2\n")
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--config", str(config), "--set", "optim.steps=2",
                                 "--set", "checkpoint_every=1"])
    assert result.exit_code == 0, result.output
    assert "step 2: loss" in result.stdout
    assert latest_checkpoint(tmp_path / "cli-run").name == "step-000002"
    assert "steps: 2" in (tmp_path / "cli-run" / "config.yaml").read_text()

    result = runner.invoke(app, ["train", "--config", str(config), "--set", "optim.lrr=1"])
    assert result.exit_code != 0
    assert "unknown key optim.lrr" in str(result.exception)


@kinds
def test_retriever_lr_zero_leaves_the_query_encoder_alone(kind, tmp_path, tiny_encoder_dir, tasks):
    from metarag.rag.build import build_model

    cfg = _config(tmp_path / "frozen-retriever", tiny_encoder_dir, kind,
                  params=[*ADAPTED[kind], "query_encoder"], retriever_lr=0.0)
    train(cfg, tasks=tasks, show_progress=False)
    trained = load_checkpoint(tmp_path / "frozen-retriever").model
    initial = build_model(cfg.model).model.state_dict()
    query = [k for k in trained if k.startswith("query_model.")]
    generator = [k for k in trained if k.startswith("generator.")]
    assert query and generator
    # weight decay is decoupled and scaled by the lr, so a zero rate moves nothing
    assert all(torch.equal(trained[k], initial[k]) for k in query)
    assert any(not torch.equal(trained[k], initial[k]) for k in generator)


def test_resume_accepts_configs_saved_before_a_field_existed(tmp_path):
    """A checkpoint whose model config lacks a newer field (at its default) resumes;
    one with another value is refused."""
    from dataclasses import asdict

    from metarag.checkpoint import save_checkpoint
    from metarag.train import checkpoint_to_resume

    config = ModelConfig(rag=RAGConfig(k=2))
    older = asdict(config)
    del older["lora"]  # written before ModelConfig.lora existed
    save_checkpoint(tmp_path / "old", 1, model={"w": torch.zeros(1)},
                    state={"model_config": older, "step": 1})
    assert checkpoint_to_resume(tmp_path / "old", config, resume=True).state["step"] == 1
    with pytest.raises(TrainingError, match="another model config"):
        checkpoint_to_resume(tmp_path / "old", ModelConfig(rag=RAGConfig(k=3)), resume=True)
    with pytest.raises(TrainingError, match="already holds a run"):
        checkpoint_to_resume(tmp_path / "old", config, resume=False)
    assert checkpoint_to_resume(tmp_path / "empty", config, resume=False) is None
