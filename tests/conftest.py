"""Shared fixtures: tiny real models built from configs, and the shared datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("METARAG_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> None:
    """Tests run torch on one thread.

    Tiny models do thousands of very small ops; on a shared 2-core machine each op
    can wait for the second OpenMP thread to be scheduled (~8 ms measured), making
    a test up to 100x slower than on one thread.
    """
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The 8 real datasets; tests that need them skip with the reason when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared datasets not found at {SHARED_DATA} (set METARAG_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide BERT with random weights and MiniLM's real tokenizer.

    Built once per session from a config (no downloads); real enough that
    tokenisation, pooling, FAISS and save/load run exactly as with MiniLM.
    """
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from metarag.retrieval.encoder import default_encoder_path

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny_encoder")
    tokenizer = AutoTokenizer.from_pretrained(default_encoder_path())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out

