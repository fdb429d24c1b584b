"""The forward cache behind rag_loss_fn: same losses and gradients as uncached calls.

The cache reuses tokenisation, the generator's inputs (while the top-k stays)
and the generator encoder's outputs (while that encoder is frozen, in eval mode
and unmodified). Every test compares against the uncached path on the same
tiny BERT2BERT RAG model.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from metarag.meta.algorithms import maml_step
from metarag.meta.inner import Batch, inner_loop, rag_loss_fn
from metarag.meta.params import call_with, select_params, split_params
from metarag.rag.model import EncoderCache, ForwardCache

# Same op sequence on the same inputs: equal up to float32 rounding (in practice bit for bit).
CLOSE = {"rtol": 1e-6, "atol": 1e-8}


@pytest.fixture()
def decoder_split(tiny_rag):
    """Decoder + query encoder adapt (the generator's encoder stays frozen)."""
    names = select_params(tiny_rag, ["decoder", "query_encoder"])
    return split_params(tiny_rag, names)


def support(rag_episodes) -> Batch:
    return Batch.from_examples(rag_episodes[0].support)


@contextmanager
def frozen_encoder_stepped(model) -> Iterator[None]:
    """Change one frozen encoder weight in place, as an optimizer step would; undo on exit."""
    name = "generator.model.encoder.encoder.layer.0.output.dense.bias"
    weight = dict(model.named_parameters())[name]
    original = weight.detach().clone()
    try:
        with torch.no_grad():
            weight.add_(0.5)  # the frozen view shares the storage, so it sees the change
        yield
    finally:
        with torch.no_grad():
            weight.copy_(original)


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
    with frozen_encoder_stepped(tiny_rag):
        changed = call_with(tiny_rag, adapted, frozen, batch.questions, batch.answers,
                            cache=cache).loss
        plain = call_with(tiny_rag, adapted, frozen, batch.questions, batch.answers).loss
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


# ---- the per-source encoder cache, shared across batches and meta-steps


@pytest.mark.parametrize("first_order", [False, True])
def test_a_warm_encoder_cache_gives_the_uncached_meta_step(tiny_rag, decoder_split, rag_episodes,
                                                           first_order):
    """A second meta-step (a new loss function, the same EncoderCache) encodes nothing again,
    and its loss and meta-gradients are those of a loss without any cache."""
    adapted, frozen = decoder_split
    sources = EncoderCache()
    plain = maml_step(rag_loss_fn(tiny_rag, frozen, cache_size=0), adapted, rag_episodes,
                      inner_steps=2, inner_lr=0.5, first_order=first_order)
    for step in range(2):
        result = maml_step(rag_loss_fn(tiny_rag, frozen, encoder_cache=sources), adapted,
                           rag_episodes, inner_steps=2, inner_lr=0.5, first_order=first_order)
        if step == 0:
            cold_misses = sources.misses
            assert cold_misses > 0 and len(sources) > 0
        assert result.loss == pytest.approx(plain.loss, rel=1e-6)
        for k, g in plain.grads.items():
            torch.testing.assert_close(result.grads[k], g, **CLOSE)
    # The two episodes share their questions, so even the first step reused sources;
    # the second step found every source it needed.
    assert sources.misses == cold_misses and sources.hits > 0
    for states in sources.entries.values():
        assert states.grad_fn is None and not states.requires_grad


def test_partly_seen_batches_with_other_padding_match_the_uncached_loss(tiny_rag, decoder_split):
    """Seen and unseen sources mixed, in batches padded to other lengths than before."""
    adapted, frozen = decoder_split
    first = Batch(["When did the Quillon bridge open?", "Zorblat dose?"],
                  ["3 May 1911", "250 mg twice daily"])
    mixed = Batch(["Zorblat dose?", "Marvex revenue?"], ["250 mg twice daily", "4.2 million euros"])
    sources = EncoderCache()
    fn = rag_loss_fn(tiny_rag, frozen, encoder_cache=sources)
    fn(adapted, first)
    assert (sources.hits, sources.misses) == (0, 4)  # 2 questions x k=2 passages
    widths = {len(k) for k in sources.entries}
    assert len(widths) > 1  # sources of different lengths: padding was stripped
    loss = fn(adapted, mixed)
    assert sources.hits >= 1 and sources.misses > 4  # a seen question, an unseen one
    plain = call_with(tiny_rag, adapted, frozen, mixed.questions, mixed.answers).loss
    torch.testing.assert_close(loss, plain, **CLOSE)
    weights = list(adapted.values())

    def grads(out):  # the used weights' gradients (e.g. the query encoder's pooler is not)
        return [g for g in torch.autograd.grad(out, weights, create_graph=True,
                                               allow_unused=True) if g is not None]

    got, want = grads(loss), grads(plain)
    assert len(got) == len(want) > 0
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **CLOSE)
    # Second order too: differentiate a function of the gradients.
    got2, want2 = (grads(sum((g ** 2).sum() for g in gs)) for gs in (got, want))
    assert len(got2) == len(want2) > 0
    for g, w in zip(got2, want2):
        torch.testing.assert_close(g, w, **CLOSE)


def test_the_encoder_cache_empties_when_the_encoder_changes(tiny_rag, decoder_split,
                                                           rag_episodes):
    adapted, frozen = decoder_split
    batch = support(rag_episodes)
    sources = EncoderCache()
    rag_loss_fn(tiny_rag, frozen, encoder_cache=sources)(adapted, batch)
    misses = sources.misses
    with frozen_encoder_stepped(tiny_rag):
        changed = rag_loss_fn(tiny_rag, frozen, encoder_cache=sources)(adapted, batch)
        plain = call_with(tiny_rag, adapted, frozen, batch.questions, batch.answers).loss
    assert sources.hits == 0 and sources.misses == 2 * misses
    torch.testing.assert_close(changed, plain, **CLOSE)


def test_the_encoder_cache_keeps_within_its_bytes(tiny_rag, decoder_split, rag_episodes):
    adapted, frozen = decoder_split
    a, b = (Batch.from_examples(e.support) for e in rag_episodes)
    off = EncoderCache(0)
    fn = rag_loss_fn(tiny_rag, frozen, encoder_cache=off)
    torch.testing.assert_close(
        fn(adapted, a), call_with(tiny_rag, adapted, frozen, a.questions, a.answers).loss,
        **CLOSE)
    assert len(off) == 0 and off.nbytes == 0
    full = EncoderCache()
    rag_loss_fn(tiny_rag, frozen, encoder_cache=full)(adapted, a)
    one = next(iter(full.entries.values()))
    small = EncoderCache(2 * one.numel() * one.element_size())
    fn = rag_loss_fn(tiny_rag, frozen, encoder_cache=small)
    for batch in (a, b):
        fn(adapted, batch)
        assert 0 < small.nbytes <= small.max_bytes
        assert small.nbytes == sum(v.numel() * v.element_size() for v in small.entries.values())
    with pytest.raises(ValueError, match="max_bytes"):
        EncoderCache(-1)


def test_demos_put_in_the_prompt_are_seen(tiny_gemma_rag, rag_episodes):
    """The same batch with in-context examples is another prompt: no stale inputs."""
    adapted, frozen = split_params(tiny_gemma_rag, select_params(tiny_gemma_rag, ["lora"]))
    batch = support(rag_episodes)
    loss_fn = rag_loss_fn(tiny_gemma_rag, frozen)
    plain = loss_fn(adapted, batch)
    with tiny_gemma_rag.demos_while(rag_episodes[1].support):
        with_demos = loss_fn(adapted, batch)
        uncached = call_with(tiny_gemma_rag, adapted, frozen, batch.questions,
                             batch.answers).loss
    torch.testing.assert_close(with_demos, uncached, **CLOSE)
    assert abs(with_demos.item() - plain.item()) > 1e-3
    torch.testing.assert_close(loss_fn(adapted, batch), plain, **CLOSE)  # demos gone again
