"""Encoders and a small corpus shared by the retrieval tests (built once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from metarag.data.schema import Passage


@pytest.fixture(scope="session")
def tiny_encoder(tiny_encoder_dir: Path):
    """The random 2-layer BERT from tests/conftest.py as a DenseEncoder (32-d)."""
    from metarag.retrieval.encoder import DenseEncoder

    return DenseEncoder.from_pretrained(tiny_encoder_dir, max_length=64)


@pytest.fixture(scope="session")
def other_tiny_encoder_dir(tmp_path_factory: pytest.TempPathFactory,
                           tiny_encoder_dir: Path) -> Path:
    """Same architecture as tiny_encoder_dir, different random weights."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(1)
    out = tmp_path_factory.mktemp("other_tiny_encoder")
    config = BertConfig.from_pretrained(tiny_encoder_dir)
    BertModel(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_encoder_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def minilm():
    """The real all-MiniLM-L6-v2 (bundled, offline); loads in a second or two."""
    from metarag.retrieval.encoder import DenseEncoder

    return DenseEncoder.from_pretrained()


@pytest.fixture()
def corpus() -> list[Passage]:
    """Six passages on unrelated topics, two with titles."""
    return [
        Passage("eiffel", "The wrought-iron lattice tower was finished in 1889 for the "
                "World's Fair.", title="Eiffel Tower"),
        Passage("photo", "Photosynthesis lets plants turn sunlight, water and carbon dioxide into "
                "glucose and oxygen."),
        Passage("wall", "Built over many centuries, it stretches thousands of kilometres across "
                "northern China.", title="Great Wall"),
        Passage("mito", "Mitochondria produce most of the cell's supply of ATP, its chemical "
                "energy."),
        Passage("volcano", "Magma rising through the crust erupts as lava, ash and volcanic "
                "gases."),
        Passage("bank", "A central bank sets interest rates to keep inflation near its target."),
    ]
