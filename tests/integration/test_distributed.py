"""`torchrun --nproc-per-node 2 -m metarag meta-train` on tiny real models (gloo on CPU):
the same meta-parameters as one process with the same seed, files from rank 0 only, and a
2-process resume that continues the run."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import yaml
from typer.testing import CliRunner

from helpers import ADAPTED, tiny_model
from metarag.checkpoint import load_checkpoint
from metarag.cli import app
from metarag.meta.train import LEARNED_LR_PREFIX

# Not bit for bit: the tasks' gradients are summed in another order. Adam divides each
# gradient entry by its own size, so an entry that is rounding noise (~1e-10, where
# large terms cancel) still moves its weight by up to outer_lr * |g| / eps: measured up
# to 1.2e-5 (1.2% of one step of outer_lr 1e-3; 1.3e-6 without Meta-SGD's rates). A
# reduction weighting the ranks' means equally instead of by task count (2 + 1 tasks)
# is off by 5e-3.
OUTER_LR = 1e-3
ATOL = 0.02 * OUTER_LR


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_config(root, encoder_dir, algorithm, kind):
    config = {
        "out": str(root / "single"), "seed": 0, "cache_dir": str(root / "cache"),
        "tensorboard": True, "eval_every": 2, "checkpoint_every": 2, "log_every": 1,
        "data": {"data": None, "tasks": ["synthetic/pharmacy", "synthetic/legal",
                                         "synthetic/finance"]},
        "model": {"encoder": str(encoder_dir),
                  **tiny_model(kind, max_source_length=48, max_target_length=12,
                               rag={"k": 2, "max_new_tokens": 3})},
        "inner": {"steps": 1, "lr": 0.01, "params": ADAPTED[kind], "batch_size": None},
        # 3 tasks on 2 processes: slices of 2 and 1, weighted by their task counts.
        "meta": {"algorithm": algorithm, "steps": 4, "meta_batch": 3, "n_shot": 2,
                 "n_query": 2, "outer_lr": OUTER_LR, "warmup_steps": 1},
    }
    path = root / "meta.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _single(config, out):
    result = CliRunner().invoke(app, ["meta-train", "-c", str(config), "--set", f"out={out}"])
    assert result.exit_code == 0, result.output


def _torchrun(config, out, *args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
         "-m", "metarag", "meta-train", "-c", str(config), "--set", f"out={out}", *args],
        capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _assert_same_checkpoint(single, dist):
    a, b = load_checkpoint(single), load_checkpoint(dist)
    assert a.model.keys() == b.model.keys() and a.optimizer.keys() == b.optimizer.keys()
    for name, weight in a.model.items():
        torch.testing.assert_close(b.model[name], weight, rtol=0, atol=ATOL,
                                   msg=lambda m, name=name: f"{name}: {m}")
    for name, moment in a.optimizer.items():
        torch.testing.assert_close(b.optimizer[name], moment, rtol=1e-3, atol=1e-9,
                                   msg=lambda m, name=name: f"{name}: {m}")
    # Every rank drew the whole meta-batch: the sampler and every RNG are where one
    # process leaves them.
    assert a.state["sampler"] == b.state["sampler"]
    assert a.state["rng"] == b.state["rng"]
    from safetensors.torch import load_file
    assert torch.equal(load_file(a.path / "rng.safetensors")["torch"],
                       load_file(b.path / "rng.safetensors")["torch"])


def _log(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.mark.distributed
def test_two_processes_equal_one_and_resume(tmp_path, tiny_encoder_dir):
    """Meta-SGD (second order, learned rates all-reduced too), stopped after 2 steps on 2
    processes and resumed on 2, against one uninterrupted process."""
    config = _write_config(tmp_path, tiny_encoder_dir, "meta_sgd", "bert2bert")
    single, dist = tmp_path / "single", tmp_path / "dist"
    _single(config, single)

    first = _torchrun(config, dist, "--stop-after", "2")
    assert first.stdout.count("meta-step 2:") == 1  # rank 0 alone reports
    assert sorted(p.name for p in dist.iterdir()) == [
        "config.yaml", "latest.json", "log.jsonl", "step-000002", "tensorboard"]
    _assert_same_checkpoint(single / "step-000002", dist / "step-000002")

    resumed = _torchrun(config, dist, "--resume")
    assert resumed.stdout.count("meta-step 4:") == 1
    _assert_same_checkpoint(single / "step-000004", dist / "step-000004")
    assert any(k.startswith(LEARNED_LR_PREFIX) for k in load_checkpoint(dist).model)

    # Rank 0 alone wrote: the same files as one process, each step logged once, one
    # TensorBoard file per launch, nothing half-written left behind.
    assert sorted(p.name for p in dist.iterdir()) == sorted(p.name for p in single.iterdir())
    assert len(list((dist / "tensorboard").iterdir())) == 2
    assert len(list((single / "tensorboard").iterdir())) == 1
    steps = [r for r in _log(dist) if "query_loss" in r]
    expected = [r for r in _log(single) if "query_loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    for got, want in zip(steps, expected, strict=True):
        assert got["tasks"] == want["tasks"] and len(got["tasks"]) == 3
        assert got["query_loss"] == pytest.approx(want["query_loss"], rel=1e-5)
        assert got["support_loss"] == pytest.approx(want["support_loss"], rel=1e-5)
    val = [r for r in _log(dist) if "val/loss_after" in r]
    assert [r["step"] for r in val] == [2, 4]
    assert val[-1]["val/loss_after"] == pytest.approx(_log(single)[-1]["val/loss_after"],
                                                      rel=1e-5)


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize(("algorithm", "kind"), [("maml", "causal"), ("fomaml", "bert2bert"),
                                                  ("reptile", "causal")])
def test_two_processes_equal_one_for_each_algorithm(tmp_path, tiny_encoder_dir, algorithm,
                                                    kind):
    config = _write_config(tmp_path, tiny_encoder_dir, algorithm, kind)
    _single(config, tmp_path / "single")
    _torchrun(config, tmp_path / "dist")
    _assert_same_checkpoint(tmp_path / "single" / "step-000004",
                            tmp_path / "dist" / "step-000004")


@pytest.mark.slow
@pytest.mark.distributed
def test_non_finite_losses_stop_every_process_and_rank_0_logs_them(tmp_path, tiny_encoder_dir):
    config = _write_config(tmp_path, tiny_encoder_dir, "fomaml", "bert2bert")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
         "-m", "metarag", "meta-train", "-c", str(config), "--set", f"out={tmp_path / 'nan'}",
         "--set", "inner.lr=1e38", "--set", "max_bad_steps=2"],
        capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode != 0
    assert proc.stderr.count("for 2 steps in a row") == 2  # each rank stops, saying why
    log = _log(tmp_path / "nan")
    assert [r["event"] for r in log] == ["skipped", "skipped"]  # written once, by rank 0
    assert all(r["reason"].startswith("rank 0: task 1 of 2") for r in log)
