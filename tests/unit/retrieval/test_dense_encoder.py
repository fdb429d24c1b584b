"""DenseEncoder: shapes, unit norm, order, padding invariance, truncation, identity, gradients."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from metarag.retrieval.encoder import DenseEncoder

TEXTS = [
    "short",
    "a somewhat longer sentence about retrieval augmented generation",
    "",
    "medium length text here",
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen",
    "x",
]


def test_encode_shape_dtype_and_unit_norm(tiny_encoder: DenseEncoder) -> None:
    emb = tiny_encoder.encode(TEXTS, batch_size=4)
    assert emb.shape == (len(TEXTS), tiny_encoder.dim) == (6, 32)
    assert emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_empty_input_gives_empty_matrix(tiny_encoder: DenseEncoder) -> None:
    assert tiny_encoder.encode([]).shape == (0, 32)


def test_single_string_is_refused(tiny_encoder: DenseEncoder) -> None:
    with pytest.raises(TypeError, match="wrap it"):
        tiny_encoder.encode("not a list")  # type: ignore[arg-type]


def test_length_sorting_restores_input_order(tiny_encoder: DenseEncoder) -> None:
    # One at a time (no padding, no sorting) is the reference for every row.
    naive = np.stack([tiny_encoder.encode([t], batch_size=1)[0] for t in TEXTS])
    batched = tiny_encoder.encode(TEXTS, batch_size=4)
    np.testing.assert_allclose(batched, naive, atol=1e-5)
    reversed_ = tiny_encoder.encode(TEXTS[::-1], batch_size=4)
    np.testing.assert_allclose(reversed_[::-1], batched, atol=1e-5)


def test_encode_matches_unsorted_padded_embed(tiny_encoder: DenseEncoder) -> None:
    # The differentiable path on one unsorted, fully padded batch gives the same vectors.
    batch = tiny_encoder.tokenize(TEXTS)
    with torch.no_grad():
        reference = tiny_encoder.embed(**batch).numpy()
    np.testing.assert_allclose(tiny_encoder.encode(TEXTS, batch_size=2), reference, atol=1e-5)


def test_over_long_text_is_truncated(tiny_encoder: DenseEncoder) -> None:
    long = " ".join(f"word{i}" for i in range(5000))
    a, b = tiny_encoder.encode([long, long + " and a different ending"])
    # Both are cut at max_length tokens, so the tail cannot change the embedding.
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert tiny_encoder.tokenize([long])["input_ids"].shape == (1, tiny_encoder.max_length)


def test_max_length_is_capped_by_position_embeddings(tiny_encoder_dir: Path) -> None:
    enc = DenseEncoder.from_pretrained(tiny_encoder_dir, max_length=10_000)
    assert enc.max_length == 128  # the tiny BERT's max_position_embeddings
    enc.encode(["word " * 1000])  # would index past the position table if not capped


def test_identity_and_fingerprint(tiny_encoder: DenseEncoder, tiny_encoder_dir: Path,
                                  other_tiny_encoder_dir: Path) -> None:
    same = DenseEncoder.from_pretrained(tiny_encoder_dir, max_length=64)
    other = DenseEncoder.from_pretrained(other_tiny_encoder_dir, max_length=64)
    ident = tiny_encoder.identity()
    assert ident == {"name_or_path": str(tiny_encoder_dir), "dim": 32, "max_length": 64,
                     "fingerprint": ident["fingerprint"]}
    assert len(ident["fingerprint"]) == 64
    assert same.fingerprint() == ident["fingerprint"]
    assert other.fingerprint() != ident["fingerprint"]


def test_fingerprint_follows_in_place_updates(other_tiny_encoder_dir: Path) -> None:
    enc = DenseEncoder.from_pretrained(other_tiny_encoder_dir, max_length=64)
    before = enc.fingerprint()
    with torch.no_grad():
        next(enc.model.parameters()).add_(1.0)  # what an optimiser step does
    assert enc.fingerprint() != before


def test_embed_is_differentiable(tiny_encoder: DenseEncoder) -> None:
    batch = tiny_encoder.tokenize(["a query", "another longer query text"])
    out = tiny_encoder.embed(**batch)  # (2, 32)
    assert out.shape == (2, 32) and out.requires_grad
    grads = torch.autograd.grad(out[:, 0].sum(), list(tiny_encoder.model.parameters()),
                                allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_missing_model_names_it(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="could not load encoder"):
        DenseEncoder.from_pretrained(tmp_path / "nope")


def test_encode_runs_in_eval_mode_and_restores_train_mode(tiny_encoder_dir: Path) -> None:
    enc = DenseEncoder.from_pretrained(tiny_encoder_dir, max_length=64)
    enc.model.train()  # BERT's dropout (p=0.1) is now active
    a, b = enc.encode(TEXTS), enc.encode(TEXTS)
    np.testing.assert_array_equal(a, b)  # no dropout noise
    assert enc.model.training


def test_loading_draws_no_progress_bar(tiny_encoder_dir: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from transformers.utils import logging as hf_logging

    DenseEncoder.from_pretrained(tiny_encoder_dir, max_length=64)
    assert "Loading weights" not in capsys.readouterr().err
    assert hf_logging.is_progress_bar_enabled()  # the global switch is put back
