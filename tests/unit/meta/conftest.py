"""Tiny RAG models (BERT2BERT, Gemma 3 + LoRA) and two QA episodes, for the meta-learning tests.

The model is built once per session; tests must leave it as they found it, which
is also what they check (meta-learning never mutates the module).
"""

from __future__ import annotations

import pytest

PASSAGES = [
    ("p0", "Zorblat tablets are taken at 250 mg twice daily.", "Zorblat"),
    ("p1", "The Quillon bridge opened on 3 May 1911.", "Quillon bridge"),
    ("p2", "Marvex Holdings reported revenue of 4.2 million euros.", "Marvex"),
]
QA = [
    ("Zorblat dose?", "250 mg twice daily"),
    ("When did the Quillon bridge open?", "3 May 1911"),
    ("Marvex revenue?", "4.2 million euros"),
    ("How often is Zorblat taken?", "twice daily"),
]


def _tiny_rag(encoder_dir, kind):
    from metarag.data.schema import Passage
    from metarag.generation.adapters import LoRAConfig
    from metarag.rag.build import ModelConfig, build_model
    from metarag.rag.model import RAGConfig

    built = build_model(ModelConfig(encoder=str(encoder_dir), generator="tiny",
                                    generator_kind=kind,
                                    lora=LoRAConfig(r=2) if kind == "causal" else None,
                                    max_source_length=64, max_target_length=12,
                                    rag=RAGConfig(k=2)))
    built.use_corpus([Passage(*p) for p in PASSAGES])
    built.model.eval()  # no dropout: repeated calls give the same loss
    return built.model


@pytest.fixture(scope="session")
def tiny_rag(tiny_encoder_dir):
    """RAGModel: 2-layer, 32-wide query encoder and BERT2BERT generator, k=2, in eval mode.

    For what is BERT2BERT's own (its encoder's caches, the encoder-decoder presets).
    """
    return _tiny_rag(tiny_encoder_dir, "bert2bert")


@pytest.fixture(scope="session")
def tiny_gemma_rag(tiny_encoder_dir):
    """The same with a tiny Gemma 3 generator carrying LoRA (r=2), the default's shape."""
    return _tiny_rag(tiny_encoder_dir, "causal")


@pytest.fixture(params=["bert2bert", "causal"])
def any_tiny_rag(request):
    """Each tiny RAG model in turn: ``(kind, model)``."""
    name = "tiny_rag" if request.param == "bert2bert" else "tiny_gemma_rag"
    return request.param, request.getfixturevalue(name)


@pytest.fixture(scope="session")
def rag_episodes():
    """Two 2-shot / 2-query episodes over the same corpus."""
    from metarag.data.episodes import Episode
    from metarag.data.schema import QAExample

    examples = [QAExample(f"q{i}", q, (a,)) for i, (q, a) in enumerate(QA)]
    return [Episode(examples[:2], examples[2:], "toy-a"), Episode(examples[2:], examples[:2],
                                                                  "toy-b")]
