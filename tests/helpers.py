"""Helpers shared by tests (importable: pytest puts tests/ on sys.path, see pyproject)."""

from __future__ import annotations

# The two tiny generators every RAG, meta-learning and CLI test runs on: BERT2BERT
# (encoder-decoder, the small option) and Gemma 3 (decoder-only, the default's
# architecture, with its default adapted set: LoRA).
TINY_KINDS = ("bert2bert", "causal")
ADAPTED = {"bert2bert": ["decoder"], "causal": ["lora"]}


def tiny_model(kind: str, **overrides: object) -> dict:
    """A ``model:`` config section for a tiny generator of ``kind`` (see TINY_KINDS)."""
    section = {"generator": "tiny", "generator_kind": kind,
               "lora": {"r": 2} if kind == "causal" else None}
    section.update(overrides)
    return section
