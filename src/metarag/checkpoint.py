"""Checkpoints: safetensors weights + JSON state, written atomically, never unpickled.

A checkpoint is a folder::

    step-000120/
      model.safetensors       trainable weights (name -> tensor)
      optimizer.safetensors   optimizer tensors (e.g. AdamW moments), if any
      rng.safetensors         torch RNG state
      state.json              step, config, optimizer hyper-parameters, Python/NumPy
                              RNG, sampler state, anything JSON-able

It is written into a temporary sibling folder and renamed into place, so a run
killed mid-write leaves either the old checkpoint or the new one, never half of
one. ``latest.json`` in the run folder names the newest complete checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metarag.errors import MetaRAGError

LATEST = "latest.json"
FORMAT_VERSION = 1


class CheckpointError(MetaRAGError, ValueError):
    """A checkpoint is missing, incomplete, or does not fit the model it is loaded into."""


@dataclass
class Checkpoint:
    """What `load_checkpoint` returns."""

    path: Path
    model: dict[str, torch.Tensor]
    optimizer: dict[str, torch.Tensor]
    state: dict[str, Any]


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    *,
    model: dict[str, torch.Tensor],
    state: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
    param_names: list[str] | None = None,
    keep: int | None = 3,
) -> Path:
    """Write ``run_dir/step-XXXXXX`` atomically and point ``latest.json`` at it.

    Args:
        run_dir: The run's output folder.
        step: Training step the checkpoint holds (named in the folder).
        model: Weights to save, name -> tensor (contiguous copies are made).
        state: JSON-able extras: config, sampler state, metrics...
        optimizer: Saved with its tensors in safetensors and the rest in JSON.
        param_names: Names of the optimizer's parameters, in its order (required
            with ``optimizer``), so its state is keyed by name, not position.
        keep: Keep only the newest ``keep`` checkpoints (None keeps all).

    Returns:
        The checkpoint folder.
    """
    from safetensors.torch import save_file

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    final = run_dir / f"step-{step:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=run_dir))
    try:
        save_file(_contiguous(model), tmp / "model.safetensors")
        full_state = {"format": FORMAT_VERSION, "step": step, **state,
                      "rng": _rng_state_json()}
        save_file({"torch": torch.get_rng_state()}, tmp / "rng.safetensors")
        if optimizer is not None:
            if param_names is None:
                raise ValueError("param_names is required to save an optimizer")
            tensors, opt_json = _optimizer_state(optimizer, param_names)
            save_file(tensors, tmp / "optimizer.safetensors")
            full_state["optimizer"] = opt_json
        (tmp / "state.json").write_text(json.dumps(full_state, indent=2, default=_json_default))
        if final.exists():  # re-saving the same step (e.g. after a resume): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _write_atomic(run_dir / LATEST, json.dumps({"checkpoint": final.name, "step": step}))
    if keep is not None:
        for old in sorted(run_dir.glob("step-*"))[:-keep]:
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint in a run folder, or None when there is none."""
    run_dir = Path(run_dir)
    pointer = run_dir / LATEST
    if not pointer.is_file():
        return None
    try:
        name = json.loads(pointer.read_text())["checkpoint"]
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"{pointer}: unreadable ({err}); delete it to start over") from None
    path = run_dir / name
    if not (path / "state.json").is_file():
        raise CheckpointError(f"{pointer} names {name}, which is missing or incomplete")
    return path


def read_state(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """A checkpoint's folder and its state.json, without reading the weights.

    ``path`` is a checkpoint folder, or a run folder (meaning its latest checkpoint).
    """
    path = Path(path)
    if (path / LATEST).is_file():
        path = latest_checkpoint(path)  # type: ignore[assignment]
    state_file = path / "state.json"
    for needed in (state_file, path / "model.safetensors"):
        if not needed.is_file():
            raise CheckpointError(f"{path}: not a checkpoint ({needed.name} is missing)")
    try:
        return path, json.loads(state_file.read_text())
    except ValueError as err:
        raise CheckpointError(f"{state_file}: malformed JSON: {err}") from None


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint folder (or a run folder, meaning its latest checkpoint)."""
    from safetensors.torch import load_file

    path, state = read_state(path)
    optimizer_file = path / "optimizer.safetensors"
    return Checkpoint(
        path=path,
        model=load_file(path / "model.safetensors"),
        optimizer=load_file(optimizer_file) if optimizer_file.is_file() else {},
        state=state,
    )


def restore_rng(checkpoint: Checkpoint) -> None:
    """Put Python's, NumPy's and torch's RNGs back where the checkpoint left them."""
    from safetensors.torch import load_file

    rng = checkpoint.state["rng"]
    random.setstate((rng["python"][0], tuple(rng["python"][1]), rng["python"][2]))
    np_state = rng["numpy"]
    np.random.set_state((np_state[0], np.array(np_state[1], dtype=np.uint32), *np_state[2:]))
    torch.set_rng_state(load_file(checkpoint.path / "rng.safetensors")["torch"])


def restore_optimizer(optimizer: torch.optim.Optimizer, checkpoint: Checkpoint,
                      param_names: list[str]) -> None:
    """Load optimizer state saved by `save_checkpoint` into a freshly built optimizer."""
    saved = checkpoint.state.get("optimizer")
    if saved is None:
        raise CheckpointError(f"{checkpoint.path}: holds no optimizer state")
    if saved["param_names"] != param_names:
        raise CheckpointError(
            f"{checkpoint.path}: optimizer was saved for other parameters "
            f"({len(saved['param_names'])} saved, {len(param_names)} now); "
            "resume with the same config")
    by_name = {}
    for name in param_names:
        entry = dict(saved["scalars"].get(name, {}))
        for key in saved["tensor_keys"].get(name, []):
            entry[key] = checkpoint.optimizer[f"{name}/{key}"]
        by_name[name] = entry
    index = {name: i for i, name in enumerate(param_names)}
    optimizer.load_state_dict({
        "state": {index[n]: s for n, s in by_name.items() if s},
        "param_groups": saved["param_groups"],
    })


def _optimizer_state(optimizer: torch.optim.Optimizer,
                     param_names: list[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    tensor_keys: dict[str, list[str]] = {}
    for i, per_param in sd["state"].items():
        name = param_names[i]
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{name}/{key}"] = value.detach().contiguous().clone()
                tensor_keys.setdefault(name, []).append(key)
            else:
                scalars.setdefault(name, {})[key] = value
    return tensors, {"param_names": param_names, "param_groups": sd["param_groups"],
                     "scalars": scalars, "tensor_keys": tensor_keys}


def _rng_state_json() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": [version, list(internal), gauss],
            "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]}


def _contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared or non-contiguous storage (e.g. tied embeddings).
    return {k: v.detach().contiguous().clone() for k, v in tensors.items()}


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable in a checkpoint state")
