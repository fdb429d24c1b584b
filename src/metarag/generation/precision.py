"""The precision a generator computes in: float32, or bfloat16 matrix products.

``"bfloat16"`` runs the generator's matrix products under ``torch.autocast``: the
weights stay float32 (LoRA and soft prompts train in float32, checkpoints hold
float32), each product casts its inputs to bfloat16, and losses are taken in
float32 (`metarag.generation.likelihood`). On a CPU with native bfloat16 (AMX or
AVX512-BF16), or a CUDA GPU, its matrix products run several times faster than
float32's (Gemma 3 270M here: batched answers 1.9x, docs/BENCHMARKS.md; one answer
at a time is memory-bound and gains nothing); on other CPUs bfloat16 is emulated
and slower, which is why ``"auto"`` looks first.
"""

from __future__ import annotations

import contextlib
import functools
import platform
from pathlib import Path

import torch

PRECISIONS = ("auto", "float32", "bfloat16")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of "
                         f"{', '.join(PRECISIONS)}")
    return precision


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (Linux: ``/proc/cpuinfo`` flags)."""
    if platform.system() != "Linux":
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("amx_bf16", "avx512_bf16"))


def cpu_name() -> str:
    """This CPU's model name (what decides ``"auto"``, recorded with measurements)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def resolve_dtype(precision: str, device: torch.device, *, auto_bf16: bool) -> torch.dtype:
    """The dtype of matrix products for ``precision`` on ``device``.

    Args:
        precision: One of :data:`PRECISIONS`.
        device: Where the model runs.
        auto_bf16: Whether ``"auto"`` may pick bfloat16 for this model (a pretrained
            LM made for it, such as Gemma; not tiny test models or BERT warm starts).
    """
    check_precision(precision)
    if precision != "auto":
        return _DTYPES[precision]
    if not auto_bf16:
        return torch.float32
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else torch.float32


def autocast(dtype: torch.dtype, device: torch.device) -> contextlib.AbstractContextManager:
    """Matrix products in ``dtype`` inside the block (nothing changes for float32)."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
