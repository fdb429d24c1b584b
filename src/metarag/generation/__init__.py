"""Generation: the generator wrapper (``Generator``) and prompt formatting.

Names are imported on first use (PEP 562 ``__getattr__``), so ``import
metarag.generation`` does not pull in torch or transformers.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from metarag.generation.generator import (
        KINDS,
        Generator,
        sequence_log_likelihood,
        token_nll,
    )
    from metarag.generation.prompt import format_source, format_sources_per_passage

_EXPORTS = {
    "KINDS": "metarag.generation.generator",
    "Generator": "metarag.generation.generator",
    "sequence_log_likelihood": "metarag.generation.generator",
    "token_nll": "metarag.generation.generator",
    "format_source": "metarag.generation.prompt",
    "format_sources_per_passage": "metarag.generation.prompt",
}

__all__ = [
    "KINDS",
    "Generator",
    "format_source",
    "format_sources_per_passage",
    "sequence_log_likelihood",
    "token_nll",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'metarag.generation' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
