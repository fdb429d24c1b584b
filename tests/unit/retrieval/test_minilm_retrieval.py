"""The real all-MiniLM-L6-v2: known answers by meaning, and parity with sentence-transformers."""

from __future__ import annotations

import numpy as np
import pytest

from metarag.data.schema import Passage
from metarag.retrieval.encoder import DEFAULT_ENCODER, DenseEncoder, default_encoder_path
from metarag.retrieval.hybrid import Retriever


def test_dense_retrieval_finds_answers_by_meaning(minilm: DenseEncoder,
                                                  corpus: list[Passage]) -> None:
    retriever = Retriever.build(corpus, minilm, bm25=False)
    # Paraphrases that share (almost) no words with their passage.
    questions = {
        "Which Paris landmark was put up for an exhibition in the nineteenth century?": "eiffel",
        "How do green leaves make sugar from light?": "photo",
        "Which ancient fortification spans a large part of a Chinese border?": "wall",
        "What organelle powers the cell?": "mito",
        "What comes out when a mountain explodes?": "volcano",
        "Who decides how expensive it is to borrow money?": "bank",
    }
    hits = retriever.retrieve(list(questions), k=3, method="dense")
    assert [ids[0] for ids in hits.ids] == list(questions.values())
    assert all(0.0 < s[0] <= 1.0 + 1e-6 for s in hits.scores)


def test_hybrid_with_minilm(minilm: DenseEncoder, corpus: list[Passage]) -> None:
    retriever = Retriever.build(corpus, minilm)
    hits = retriever.retrieve(["What organelle makes ATP?"], k=2)
    assert hits.method == "rrf(dense+bm25)" and hits.ids[0][0] == "mito"


def test_same_vectors_as_sentence_transformers(minilm: DenseEncoder, corpus: list[Passage]) -> None:
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(default_encoder_path(), device="cpu")
    texts = [p.text for p in corpus] + ["word " * 400]  # the last one is truncated by both
    reference = model.encode(texts, batch_size=4, normalize_embeddings=True)
    assert model.max_seq_length == minilm.max_length == 256
    np.testing.assert_allclose(minilm.encode(texts, batch_size=4), reference, atol=1e-5)


def test_default_encoder_records_its_portable_hub_name(minilm: DenseEncoder) -> None:
    # An index built on one machine must reload on another, where the bundled
    # copy lives under a different site-packages path.
    assert minilm.identity()["name_or_path"] == DEFAULT_ENCODER
    assert minilm.identity()["dim"] == 384
