"""The forward cache behind rag_loss_fn: same losses and gradients as uncached calls.

The cache reuses tokenisation, the generator's inputs (while the top-k stays)
and the generator encoder's outputs (while that encoder is frozen, in eval mode
and unmodified). Every test compares against the uncached path on the same
tiny BERT2BERT RAG model.
"""

from __future__ import annotations

import pytest
import torch

from metarag.meta.algorithms import maml_step
from metarag.meta.inner import Batch, inner_loop, rag_loss_fn
from metarag.meta.params import call_with, select_params, split_params
from metarag.rag.model import ForwardCache

# Same op sequence on the same inputs: equal up to float32 rounding (in practice bit for bit).
CLOSE = {"rtol": 1e-6, "atol": 1e-8}


@pytest.fixture()
def decoder_split(tiny_rag):
    """Decoder + query encoder adapt (the generator's encoder stays frozen)."""
    names = select_params(tiny_rag, ["decoder", "query_encoder"])
    return split_params(tiny_rag, names)


def support(rag_episodes) -> Batch:
    return Batch.from_examples(rag_episodes[0].support)


def test_frozen_encoder_runs_once_across_calls_and_the_loss_is_unchanged(tiny_rag, decoder_split,
                                                                         rag_episodes):
    adapted, frozen = decoder_split
    batch = support(rag_episodes)
    plain = call_with(tiny_rag, adapted, frozen, batch.questions, batch.answers).loss
    cache = ForwardCache()
    losses = [call_with(tiny_rag, adapted, frozen, batch.questions, batch.answers,
                        cache=cache).loss for _ in range(3)]
    assert (cache.misses, cache.hits) == (1, 2)
    for loss in losses:
        torch.testing.assert_close(loss, plain, **CLOSE)


@pytest.mark.parametrize("first_order", [False, True])
def test_inner_loop_and_maml_gradients_match_the_uncached_path(tiny_rag, decoder_split,
                                                               rag_episodes, first_order):
    """Adapted weights after 3 steps and MAML meta-gradients: cached == uncached.

    The rate is large enough that an inner step changes the top-k of the query
    encoder, so the rebuild path is exercised too.
    """
    adapted, frozen = decoder_split
    batch = support(rag_episodes)
    cached_fn = rag_loss_fn(tiny_rag, frozen)
    plain_fn = rag_loss_fn(tiny_rag, frozen, cache_size=0)
    for name, fn in (("cached", cached_fn), ("plain", plain_fn)):
        out = inner_loop(fn, adapted, batch, steps=3, lr=0.5, first_order=first_order)
        if name == "cached":
            cached_weights = out
        else:
            for k, v in out.items():
                torch.testing.assert_close(cached_weights[k], v, **CLOSE)
    (cache,) = [c for key, c in cached_fn.caches.items() if key[0] == tuple(batch.questions)]
    # At this large rate a step can move the retrieved passages, which forces a rebuild.
    assert cache.misses + cache.hits == 3 and cache.misses >= 1
    cached_fn.clear_cache()
    with_cache = maml_step(cached_fn, adapted, rag_episodes, inner_steps=2, inner_lr=0.5,
                           first_order=first_order)
    without = maml_step(plain_fn, adapted, rag_episodes, inner_steps=2, inner_lr=0.5,
                        first_order=first_order)
    assert with_cache.loss == pytest.approx(without.loss, rel=1e-6)
    for k, g in without.grads.items():
        torch.testing.assert_close(with_cache.grads[k], g, **CLOSE)
    assert any(float(g.abs().sum()) > 0 for g in with_cache.grads.values())


def test_no_reuse_when_the_encoder_adapts(tiny_rag, rag_episodes):
    """The whole generator adapts: its encoder must run (and be differentiated) every call."""
    names = select_params(tiny_rag, ["generator"])
    adapted, frozen = split_params(tiny_rag, names)
    batch = support(rag_episodes)
    cache = ForwardCache()
    for _ in range(2):
        loss = call_with(tiny_rag, adapted, frozen, batch.questions, batch.answers,
                         cache=cache).loss
    assert cache.hits == 0 and cache.encoder_states is None
    encoder_weight = "generator.model.encoder.encoder.layer.0.attention.self.query.weight"
    (grad,) = torch.autograd.grad(loss, [adapted[encoder_weight]])
    assert float(grad.abs().sum()) > 0


def test_no_reuse_in_training_mode(tiny_rag, decoder_split, rag_episodes):
    """Dropout draws new masks each call, so reusing outputs would not be exact."""
    adapted, frozen = decoder_split
    batch = support(rag_episodes)
    cache = ForwardCache()
    tiny_rag.train()
    try:
        for _ in range(2):
            call_with(tiny_rag, adapted, frozen, batch.questions, batch.answers, cache=cache)
    finally:
        tiny_rag.eval()
    assert cache.hits == 0


def test_changed_encoder_weights_or_corpus_are_seen(tiny_rag, decoder_split, rag_episodes):
    adapted, frozen = decoder_split
    batch = support(rag_episodes)
    cache = ForwardCache()
    call_with(tiny_rag, adapted, frozen, batch.questions, batch.answers, cache=cache)
    name = "generator.model.encoder.encoder.layer.0.output.dense.bias"
    weight = dict(tiny_rag.named_parameters())[name]
    original = weight.detach().clone()
    try:
        with torch.no_grad():
            weight.add_(0.5)  # an optimizer step in place: the frozen view sees it
        changed = call_with(tiny_rag, adapted, frozen, batch.questions, batch.answers,
                            cache=cache).loss
        plain = call_with(tiny_rag, adapted, frozen, batch.questions, batch.answers).loss
    finally:
        with torch.no_grad():
            weight.copy_(original)
    assert cache.hits == 0 and cache.misses == 2
    torch.testing.assert_close(changed, plain, **CLOSE)

    passages, embeddings = tiny_rag.passages, tiny_rag.passage_embeddings
    tiny_rag.set_corpus(passages, embeddings.clone())  # same corpus, a new tensor
    call_with(tiny_rag, adapted, frozen, batch.questions, batch.answers, cache=cache)
    assert cache.hits == 0 and cache.misses == 3
    tiny_rag.set_corpus(passages, embeddings)


def test_a_new_top_k_rebuilds_the_generator_inputs(tiny_rag, decoder_split, rag_episodes):
    """When adaptation moves the retrieved passages, nothing from the old ones is reused."""
    adapted, frozen = decoder_split
    batch = support(rag_episodes)
    cache = ForwardCache()
    call_with(tiny_rag, adapted, frozen, batch.questions, batch.answers, cache=cache)
    stale = cache.top.flip(-1)  # pretend the earlier call retrieved other passages
    cache.top = stale
    loss = call_with(tiny_rag, adapted, frozen, batch.questions, batch.answers, cache=cache).loss
    plain = call_with(tiny_rag, adapted, frozen, batch.questions, batch.answers).loss
    assert cache.hits == 0 and not torch.equal(cache.top, stale)
    torch.testing.assert_close(loss, plain, **CLOSE)


def test_the_cache_follows_the_batch(tiny_rag, decoder_split, rag_episodes):
    """One cache given two batches in turn recomputes for each; rag_loss_fn keeps one per batch."""
    adapted, frozen = decoder_split
    a, b = (Batch.from_examples(e.support) for e in rag_episodes)
    cache = ForwardCache()
    for batch in (a, b, a):
        loss = call_with(tiny_rag, adapted, frozen, batch.questions, batch.answers,
                         cache=cache).loss
    assert cache.hits == 0
    torch.testing.assert_close(
        loss, call_with(tiny_rag, adapted, frozen, a.questions, a.answers).loss, **CLOSE)
    fn = rag_loss_fn(tiny_rag, frozen, cache_size=1)
    for batch in (a, b, a):
        fn(adapted, batch)
    assert len(fn.caches) == 1
    with pytest.raises(ValueError, match="cache_size"):
        rag_loss_fn(tiny_rag, frozen, cache_size=-1)
