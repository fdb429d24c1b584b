"""A tiny BERT2BERT RAG model and two QA episodes, shared by the meta-learning tests.

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


@pytest.fixture(scope="session")
def tiny_rag(tiny_encoder_dir):
    """RAGModel: 2-layer, 32-wide query encoder and BERT2BERT generator, k=2, in eval mode."""
    from metarag.data.schema import Passage
    from metarag.rag.build import ModelConfig, build_model
    from metarag.rag.model import RAGConfig

    built = build_model(ModelConfig(encoder=str(tiny_encoder_dir), generator="tiny",
                                    max_source_length=48, max_target_length=12,
                                    rag=RAGConfig(k=2)))
    built.use_corpus([Passage(*p) for p in PASSAGES])
    built.model.eval()  # no dropout: repeated calls give the same loss
    return built.model


@pytest.fixture(scope="session")
def rag_episodes():
    """Two 2-shot / 2-query episodes over the same corpus."""
    from metarag.data.episodes import Episode
    from metarag.data.schema import QAExample

    examples = [QAExample(f"q{i}", q, (a,)) for i, (q, a) in enumerate(QA)]
    return [Episode(examples[:2], examples[2:], "toy-a"), Episode(examples[2:], examples[:2],
                                                                  "toy-b")]
