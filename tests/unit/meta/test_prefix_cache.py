"""The frozen-prefix cache of a decoder-only generator: same losses and gradients, fewer layers run.

With ``top_layers:N`` the states entering the first adapted layer are a constant
of the tokens; `PrefixCache` keeps them per sequence and the generator runs only
the layers above (`Generator.forward(prefix_states=..., from_layer=...)`). Every
test compares against the uncached path on the tiny Gemma 3 RAG model (2 layers,
one sliding-window and one full-attention, LoRA r=2), and counts the calls of the
bottom layer to see that the cached path is really taken.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from metarag.data.schema import Passage
from metarag.meta.adapt import AdaptConfig, adapt_params, support_batches
from metarag.meta.algorithms import maml_step
from metarag.meta.inner import Batch, inner_loop, rag_loss_fn
from metarag.meta.params import call_with, select_params, split_params
from metarag.rag.model import EncoderCache, ForwardCache, PrefixCache, source_cache

# Same ops on the same inputs; a cached row reassembled into a batch of another
# width may differ from the uncached one in the last bits (matmul blocking); through
# second-order meta-gradients that grows to ~1e-6 on gradients of up to ~6 (measured).
CLOSE = {"rtol": 1e-5, "atol": 1e-6}


def layers(model):
    return model.generator.model.model.layers


@contextmanager
def counting_calls(module) -> Iterator[list[int]]:
    """``[n]``: how often ``module`` ran inside the block."""
    calls = [0]
    handle = module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        yield calls
    finally:
        handle.remove()


@pytest.fixture()
def top_split(tiny_gemma_rag):
    """The top layer (+ final norm) adapts; the embedding and layer 0 stay frozen."""
    return split_params(tiny_gemma_rag, select_params(tiny_gemma_rag, "top_layers:1"))


def support(rag_episodes) -> Batch:
    return Batch.from_examples(rag_episodes[0].support)


def plain_loss(model, adapted, frozen, batch):
    return call_with(model, adapted, frozen, batch.questions, batch.answers).loss


# ---- the generator's split forward


def test_prefix_states_then_the_top_layers_give_the_full_forward(tiny_gemma_rag):
    """From every layer: the same log-likelihoods and top-layer gradients as one full pass."""
    gen = tiny_gemma_rag.generator
    batch = gen.tokenize(["Context: Zorblat tablets are taken at 250 mg.\nQuestion: dose?",
                          "Question: when?"], ["250 mg", "3 May 1911"])
    top = [p for n, p in gen.named_parameters() if n.startswith("model.model.layers.1.")]
    full = gen(**batch)
    want = torch.autograd.grad(full.sum(), top)
    for first in range(len(layers(tiny_gemma_rag)) + 1):
        states = gen.prefix_states(batch["input_ids"], batch["attention_mask"], first)
        out = gen(**batch, prefix_states=states, from_layer=first)
        torch.testing.assert_close(out, full, rtol=0, atol=0)
        if first <= 1:
            for g, w in zip(torch.autograd.grad(out.sum(), top), want):
                torch.testing.assert_close(g, w, rtol=0, atol=0)
    with pytest.raises(ValueError, match="first_layer must be in 0..2"):
        gen.prefix_states(batch["input_ids"], batch["attention_mask"], 3)


def test_encoder_decoders_have_no_prefix(tiny_rag):
    gen = tiny_rag.generator
    batch = gen.tokenize(["a question"], ["an answer"])
    with pytest.raises(ValueError, match="causal decoder laid out like Gemma 3"):
        gen.prefix_states(batch["input_ids"], batch["attention_mask"], 1)
    with pytest.raises(ValueError, match="prefix_states is for decoder-only"):
        gen(**batch, prefix_states=torch.zeros(1, 1, 32), from_layer=1)
    assert gen.frozen_layers(["model.decoder.cls.predictions.bias"]) == 0


def test_frozen_layers_follows_the_adapted_names(tiny_gemma_rag):
    gen = tiny_gemma_rag.generator
    names = [n for n, _ in gen.named_parameters()]
    in_layer = {i: [n for n in names if n.startswith(f"model.model.layers.{i}.")] for i in (0, 1)}
    assert gen.frozen_layers(in_layer[1] + ["model.model.norm.weight"]) == 1
    assert gen.frozen_layers(["model.model.norm.weight"]) == 2  # every layer frozen
    assert gen.frozen_layers([]) == 2                            # only the retriever adapts
    assert gen.frozen_layers(in_layer[0] + in_layer[1]) == 0
    assert gen.frozen_layers(["model.model.embed_tokens.weight"] + in_layer[1]) == 0


# ---- which cache the adapted set gets (what meta-training and adaptation build)


def test_source_cache_picks_the_prefix_cache_only_when_the_bottom_stays_frozen(tiny_gemma_rag,
                                                                            tiny_rag):
    def cache_for(model, *presets, exclude=()):
        return source_cache(model, select_params(model, list(presets), list(exclude)), 3 * 2**20)

    top = cache_for(tiny_gemma_rag, "top_layers:1", "query_encoder")
    assert isinstance(top, PrefixCache) and top.from_layer == 1 and top.max_bytes == 3 * 2**20
    for off in (cache_for(tiny_gemma_rag, "lora"), cache_for(tiny_gemma_rag, "top_layers:2"),
                cache_for(tiny_gemma_rag, "top_layers:1", "embeddings")):
        assert not isinstance(off, PrefixCache) and off.max_bytes == 0  # no cache
    encoder = cache_for(tiny_rag, "top_layers:1")
    assert type(encoder) is EncoderCache and encoder.max_bytes == 3 * 2**20
    # rag_loss_fn picks the same by default, from the parameters it is not given as frozen.
    adapted, frozen = split_params(tiny_gemma_rag, select_params(tiny_gemma_rag, "top_layers:1"))
    assert isinstance(rag_loss_fn(tiny_gemma_rag, frozen).encoder_cache, PrefixCache)
    with pytest.raises(ValueError, match="from_layer"):
        PrefixCache(0)


def test_meta_training_builds_the_cache_within_its_budget(tiny_gemma_rag, top_split,
                                                          monkeypatch):
    import metarag.meta.train as train

    made = []

    def recording(model, adapted, max_bytes):
        made.append(source_cache(model, adapted, max_bytes))
        return made[-1]

    monkeypatch.setattr(train, "source_cache", recording)
    adapted, frozen = top_split
    train._loss_fn(tiny_gemma_rag, frozen, corpus=None, encoder_cache_mb=1.5)
    (cache,) = made
    assert isinstance(cache, PrefixCache) and cache.from_layer == 1
    assert cache.max_bytes == int(1.5 * 2**20)


# ---- equal to the uncached path


@pytest.mark.parametrize("presets", [["top_layers:1"], ["top_layers:1", "query_encoder"]])
@pytest.mark.parametrize("first_order", [False, True])
def test_maml_with_a_warm_prefix_cache_gives_the_uncached_meta_step(tiny_gemma_rag,
                                                                    rag_episodes, first_order,
                                                                    presets):
    """Two meta-steps sharing one PrefixCache: loss and meta-gradients (first and second
    order) equal those of a loss without any cache; the second step runs no bottom layer.

    With the query encoder adapting too, the large rate moves the retrieved passages
    within the inner loop, so new sequences enter the cache mid-step.
    """
    adapted, frozen = split_params(tiny_gemma_rag, select_params(tiny_gemma_rag, presets))
    plain = maml_step(rag_loss_fn(tiny_gemma_rag, frozen, cache_size=0), adapted, rag_episodes,
                      inner_steps=2, inner_lr=0.5, first_order=first_order)
    sources = PrefixCache(1)
    for step in range(2):
        with counting_calls(layers(tiny_gemma_rag)[0]) as bottom:
            result = maml_step(rag_loss_fn(tiny_gemma_rag, frozen, encoder_cache=sources),
                               adapted, rag_episodes, inner_steps=2, inner_lr=0.5,
                               first_order=first_order)
        if step == 0:
            cold = sources.misses
            assert cold > 0 and bottom[0] > 0
        else:
            assert bottom[0] == 0 and sources.misses == cold  # every sequence was cached
        assert result.loss == pytest.approx(plain.loss, rel=1e-5)
        for k, g in plain.grads.items():
            torch.testing.assert_close(result.grads[k], g, **CLOSE)
    assert any(float(g.abs().sum()) > 0 for g in plain.grads.values())
    for states in sources.entries.values():
        assert states.grad_fn is None and not states.requires_grad


def test_inner_steps_run_the_bottom_layer_once(tiny_gemma_rag, top_split, rag_episodes):
    """Three inner steps on one support set: layer 0 runs on the first only, layer 1 on each."""
    adapted, frozen = top_split
    batch = support(rag_episodes)
    fn = rag_loss_fn(tiny_gemma_rag, frozen)
    with counting_calls(layers(tiny_gemma_rag)[0]) as bottom, \
            counting_calls(layers(tiny_gemma_rag)[1]) as top:
        cached = inner_loop(fn, adapted, batch, steps=3, lr=0.5, first_order=False)
    assert (bottom[0], top[0]) == (1, 3)
    (cache,) = fn.caches.values()
    assert (cache.misses, cache.hits) == (1, 2)
    want = inner_loop(rag_loss_fn(tiny_gemma_rag, frozen, cache_size=0), adapted, batch,
                      steps=3, lr=0.5, first_order=False)
    for k, v in want.items():
        torch.testing.assert_close(cached[k], v, **CLOSE)


def test_adaptation_uses_the_prefix_cache(tiny_gemma_rag, rag_episodes):
    """adapt_params with top_layers:1: the hand-run uncached steps' weights; layer 0 runs once."""
    examples = rag_episodes[0].support
    config = AdaptConfig(steps=3, lr=0.3, params=["top_layers:1"], exclude=[], batch_size=None)
    with counting_calls(layers(tiny_gemma_rag)[0]) as bottom:
        got = adapt_params(tiny_gemma_rag, examples, config)
    assert bottom[0] == 1
    adapted, frozen = split_params(tiny_gemma_rag, select_params(tiny_gemma_rag, "top_layers:1"))
    plain = rag_loss_fn(tiny_gemma_rag, frozen, cache_size=0)
    want = {k: v.detach() for k, v in adapted.items()}
    for batch in support_batches(examples, config.steps, config.batch_size):
        want = inner_loop(plain, want, batch, steps=1, lr=config.lr, first_order=True)
        want = {k: v.detach() for k, v in want.items()}
    for k, v in want.items():
        torch.testing.assert_close(got[k], v, **CLOSE)


# ---- when not to reuse, and what the key is


def test_no_reuse_when_a_bottom_weight_adapts(tiny_gemma_rag, rag_episodes):
    """A PrefixCache(1) given while layer 0 adapts: layer 0 runs (and is differentiated)."""
    names = select_params(tiny_gemma_rag, "top_layers:2")
    adapted, frozen = split_params(tiny_gemma_rag, names)
    batch = support(rag_episodes)
    cache = ForwardCache(sources=PrefixCache(1))
    with counting_calls(layers(tiny_gemma_rag)[0]) as bottom:
        for _ in range(2):
            loss = call_with(tiny_gemma_rag, adapted, frozen, batch.questions, batch.answers,
                             cache=cache).loss
    assert bottom[0] == 2 and cache.hits == 0 and cache.encoder_states is None
    torch.testing.assert_close(loss, plain_loss(tiny_gemma_rag, adapted, frozen, batch), **CLOSE)
    weight = "generator.model.model.layers.0.mlp.down_proj.weight"
    (grad,) = torch.autograd.grad(loss, [adapted[weight]])
    assert float(grad.abs().sum()) > 0


def test_no_reuse_in_training_mode(tiny_gemma_rag, top_split, rag_episodes):
    adapted, frozen = top_split
    batch = support(rag_episodes)
    cache = ForwardCache(sources=PrefixCache(1))
    tiny_gemma_rag.train()
    try:
        for _ in range(2):
            call_with(tiny_gemma_rag, adapted, frozen, batch.questions, batch.answers, cache=cache)
    finally:
        tiny_gemma_rag.eval()
    assert cache.hits == 0 and len(cache.sources) == 0


def test_a_changed_frozen_weight_empties_the_cache(tiny_gemma_rag, top_split, rag_episodes):
    adapted, frozen = top_split
    batch = support(rag_episodes)
    sources = PrefixCache(1)
    rag_loss_fn(tiny_gemma_rag, frozen, encoder_cache=sources)(adapted, batch)
    misses = sources.misses
    weight = dict(tiny_gemma_rag.named_parameters())[
        "generator.model.model.layers.0.mlp.down_proj.weight"]
    original = weight.detach().clone()
    try:
        with torch.no_grad():
            weight.add_(0.5)  # as an optimizer step would; the frozen view sees it
        changed = rag_loss_fn(tiny_gemma_rag, frozen, encoder_cache=sources)(adapted, batch)
        want = plain_loss(tiny_gemma_rag, adapted, frozen, batch)
    finally:
        with torch.no_grad():
            weight.copy_(original)
    assert sources.hits == 0 and sources.misses == 2 * misses
    torch.testing.assert_close(changed, want, **CLOSE)


def test_the_sequence_text_is_the_key(tiny_gemma_rag, top_split, rag_episodes):
    """Other passage texts (same ids, a new corpus) or other answers are new entries and
    give the uncached loss; the same texts in a new embedding tensor are found again."""
    adapted, frozen = top_split
    batch = support(rag_episodes)
    sources = PrefixCache(1)

    def cached_loss(b: Batch):
        return rag_loss_fn(tiny_gemma_rag, frozen, encoder_cache=sources)(adapted, b)

    cached_loss(batch)
    seen, misses = set(sources.entries), sources.misses
    passages, embeddings = tiny_gemma_rag.passages, tiny_gemma_rag.passage_embeddings
    try:
        tiny_gemma_rag.set_corpus(passages, embeddings.clone())  # same texts, a new tensor
        cached_loss(batch)
        assert sources.misses == misses and set(sources.entries) == seen

        edited = [Passage(p.id, p.text.replace("250", "500").replace("1911", "1912"), p.title)
                  for p in passages]
        tiny_gemma_rag.set_corpus(edited, embeddings)
        loss = cached_loss(batch)
        assert sources.misses > misses and len(set(sources.entries) - seen) > 0
        torch.testing.assert_close(loss, plain_loss(tiny_gemma_rag, adapted, frozen, batch),
                                   **CLOSE)
    finally:
        tiny_gemma_rag.set_corpus(passages, embeddings)

    misses = sources.misses
    other = Batch(batch.questions, ["an answer never seen"] * len(batch))
    loss = cached_loss(other)
    assert sources.misses == misses + 2 * len(batch)  # k=2 passages per question
    torch.testing.assert_close(loss, plain_loss(tiny_gemma_rag, adapted, frozen, other), **CLOSE)


def test_partly_seen_batches_with_other_padding_match_the_uncached_loss(tiny_gemma_rag,
                                                                         top_split):
    """Seen and unseen sequences mixed, left-padded to other widths: loss, first- and
    second-order gradients are those of the uncached path."""
    adapted, frozen = top_split
    first = Batch(["When did the Quillon bridge open?", "Zorblat dose?"],
                  ["3 May 1911", "250 mg twice daily"])
    mixed = Batch(["Zorblat dose?", "Marvex revenue?"], ["250 mg twice daily", "4.2 million euros"])
    sources = PrefixCache(1)
    fn = rag_loss_fn(tiny_gemma_rag, frozen, encoder_cache=sources)
    fn(adapted, first)
    assert (sources.hits, sources.misses) == (0, 4)
    assert len({len(k) for k in sources.entries}) > 1  # rows of different lengths
    loss = fn(adapted, mixed)
    assert sources.hits >= 1 and sources.misses > 4
    want = plain_loss(tiny_gemma_rag, adapted, frozen, mixed)
    torch.testing.assert_close(loss, want, **CLOSE)
    weights = list(adapted.values())

    def grads(out):
        return [g for g in torch.autograd.grad(out, weights, create_graph=True,
                                               allow_unused=True) if g is not None]

    got, expected = grads(loss), grads(want)
    assert len(got) == len(expected) > 0
    for g, w in zip(got, expected):
        torch.testing.assert_close(g, w, **CLOSE)
    got2, expected2 = (grads(sum((g ** 2).sum() for g in gs)) for gs in (got, expected))
    assert len(got2) == len(expected2) > 0
    for g, w in zip(got2, expected2):
        torch.testing.assert_close(g, w, **CLOSE)


def test_a_zero_budget_keeps_only_the_per_batch_reuse(tiny_gemma_rag, top_split, rag_episodes):
    """encoder_cache_mb=0: nothing stored per sequence, but inner steps still skip layer 0."""
    adapted, frozen = top_split
    batch = support(rag_episodes)
    sources = PrefixCache(1, max_bytes=0)
    fn = rag_loss_fn(tiny_gemma_rag, frozen, encoder_cache=sources)
    with counting_calls(layers(tiny_gemma_rag)[0]) as bottom:
        for _ in range(3):
            loss = fn(adapted, batch)
    assert bottom[0] == 1 and len(sources) == 0 and sources.nbytes == 0
    torch.testing.assert_close(loss, plain_loss(tiny_gemma_rag, adapted, frozen, batch), **CLOSE)
