import json
import random

import numpy as np
import pytest
import torch

from metarag.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    restore_optimizer,
    restore_rng,
    save_checkpoint,
)


def _model_and_optimizer():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    return model, optimizer


def _step(model, optimizer):
    loss = model(torch.randn(5, 4)).pow(2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def test_resume_continues_exactly(tmp_path):
    """Two steps, checkpoint, two more == restore then two more (weights, Adam, RNG)."""
    model, optimizer = _model_and_optimizer()
    names = [n for n, _ in model.named_parameters()]
    for _ in range(2):
        _step(model, optimizer)
    save_checkpoint(tmp_path, 2, model=dict(model.state_dict()), state={"note": "x"},
                    optimizer=optimizer, param_names=names)
    for _ in range(2):
        _step(model, optimizer)
    expected = {k: v.clone() for k, v in model.state_dict().items()}

    fresh, fresh_opt = _model_and_optimizer()
    ckpt = load_checkpoint(tmp_path)  # a run folder means its latest checkpoint
    fresh.load_state_dict(ckpt.model)
    restore_optimizer(fresh_opt, ckpt, names)
    restore_rng(ckpt)
    for _ in range(2):
        _step(fresh, fresh_opt)
    for k, v in fresh.state_dict().items():
        torch.testing.assert_close(v, expected[k], rtol=0, atol=0)
    assert ckpt.state["step"] == 2 and ckpt.state["note"] == "x"


def test_rng_round_trip(tmp_path):
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    save_checkpoint(tmp_path, 0, model={"w": torch.zeros(1)}, state={})
    draws = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_rng(load_checkpoint(tmp_path))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == draws


def test_latest_pointer_and_pruning(tmp_path):
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, step, model={"w": torch.full((2,), float(step))}, state={},
                        keep=2)
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-000003", "step-000004"]
    assert latest_checkpoint(tmp_path).name == "step-000004"
    assert load_checkpoint(tmp_path).model["w"].tolist() == [4.0, 4.0]
    assert not list(tmp_path.glob(".step-*"))  # no temporary folders left behind


def test_missing_and_broken_checkpoints_are_named(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(tmp_path)
    (tmp_path / "latest.json").write_text(json.dumps({"checkpoint": "step-000009"}))
    with pytest.raises(CheckpointError, match="step-000009, which is missing"):
        latest_checkpoint(tmp_path)


def test_optimizer_for_other_parameters_is_refused(tmp_path):
    model, optimizer = _model_and_optimizer()
    names = [n for n, _ in model.named_parameters()]
    _step(model, optimizer)
    save_checkpoint(tmp_path, 1, model=dict(model.state_dict()), state={},
                    optimizer=optimizer, param_names=names)
    other = torch.optim.AdamW(torch.nn.Linear(4, 3).parameters())
    with pytest.raises(CheckpointError, match="other parameters"):
        restore_optimizer(other, load_checkpoint(tmp_path), names[:2])


def test_state_must_be_json(tmp_path):
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        save_checkpoint(tmp_path, 1, model={"w": torch.zeros(1)}, state={"bad": object()})
    assert latest_checkpoint(tmp_path) is None and not list(tmp_path.glob("*step-*"))
