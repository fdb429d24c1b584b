import numpy as np

from metarag.data.schema import Passage
from metarag.retrieval import DenseEncoder
from metarag.retrieval.cache import cached_embeddings, corpus_fingerprint

PASSAGES = [Passage("a", "first passage"), Passage("b", "second passage", "Title")]


def test_cache_reuses_and_keys_on_corpus(tmp_path, tiny_encoder_dir):
    encoder = DenseEncoder.from_pretrained(tiny_encoder_dir)
    first = cached_embeddings(encoder, PASSAGES, tmp_path)
    assert len(list(tmp_path.glob("*.npy"))) == 1
    np.testing.assert_array_equal(cached_embeddings(encoder, PASSAGES, tmp_path), first)
    np.testing.assert_allclose(first, encoder.encode(["first passage", "Title: second passage"]),
                               atol=1e-6)
    changed = [PASSAGES[0], Passage("b", "another text")]
    assert corpus_fingerprint(changed) != corpus_fingerprint(PASSAGES)
    cached_embeddings(encoder, changed, tmp_path)
    assert len(list(tmp_path.glob("*.npy"))) == 2
