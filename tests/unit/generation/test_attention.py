"""Absorbed BERT cross-attention: the same numbers as transformers' own, without keys and values."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers.models.bert.modeling_bert import BertCrossAttention

import metarag.generation.attention as attention
from metarag.generation import Generator, format_source
from metarag.generation.attention import absorb_cross_attention, absorbed_cross_attention_class

SOURCES = [format_source("Who founded the abbey?", ["Ely Abbey: founded by Etheldreda in 673."]),
           format_source("When?", [])]  # shorter: padded, so the encoder mask matters
TARGETS = ["Etheldreda", "in 673 or so"]


@pytest.fixture(scope="module")
def pair():
    """The tiny BERT2BERT generator (absorbed) and a copy switched back to the original class."""
    absorbed = Generator.tiny("bert2bert")
    original = copy.deepcopy(absorbed)
    for module in original.model.modules():
        if type(module) is absorbed_cross_attention_class():
            module.__class__ = BertCrossAttention
    return absorbed, original


def test_generators_use_it_and_switching_twice_is_a_no_op(pair):
    absorbed, original = pair
    n_layers = absorbed.model.config.decoder.num_hidden_layers
    kinds = [type(m) for m in absorbed.model.modules() if isinstance(m, BertCrossAttention)]
    assert kinds == [absorbed_cross_attention_class()] * n_layers
    assert absorb_cross_attention(absorbed.model) == 0
    assert absorb_cross_attention(copy.deepcopy(original).model) == n_layers


def counting_absorbed(monkeypatch) -> list[int]:
    calls = []
    real = attention._absorbed
    monkeypatch.setattr(attention, "_absorbed", lambda *a: calls.append(1) or real(*a))
    return calls


def test_same_log_likelihood_and_gradients_as_the_original(pair, monkeypatch):
    absorbed, original = pair
    batch = absorbed.tokenize(SOURCES, TARGETS)
    assert not batch["attention_mask"].all(), "the test needs a padded source"
    calls = counting_absorbed(monkeypatch)
    out = {}
    for name, gen in (("absorbed", absorbed), ("original", original)):
        params = [p for n, p in gen.named_parameters() if "crossattention" in n]
        ll = gen(**batch)
        out[name] = (ll, *torch.autograd.grad(ll.sum(), params, allow_unused=True))
    assert len(calls) == absorbed.model.config.decoder.num_hidden_layers
    names = [n for n, _ in absorbed.named_parameters() if "crossattention" in n]
    torch.testing.assert_close(out["absorbed"][0], out["original"][0], rtol=1e-5, atol=1e-5)
    for name, a, o in zip(names, out["absorbed"][1:], out["original"][1:]):
        if name.endswith("self.key.bias"):
            # Softmax cancels the key bias: its true gradient is 0, which the absorbed
            # form leaves out and the original computes up to rounding.
            assert a is None and o.abs().max() < 1e-5
        else:
            torch.testing.assert_close(a, o, rtol=1e-4, atol=1e-6, msg=name)


def test_long_answers_keep_the_original_form(pair, monkeypatch):
    """With heads * answer tokens > source tokens the absorbed form would store more."""
    absorbed, original = pair
    batch = absorbed.tokenize(SOURCES[1:], [" ".join(["abbey"] * 40)])
    heads = absorbed.model.config.decoder.num_attention_heads
    assert heads * batch["labels"].shape[1] > batch["input_ids"].shape[1]
    calls = counting_absorbed(monkeypatch)
    torch.testing.assert_close(absorbed(**batch), original(**batch))
    assert not calls


def test_generation_keeps_the_cached_path(pair):
    absorbed, original = pair
    assert absorbed.generate(SOURCES, max_new_tokens=6) == original.generate(SOURCES,
                                                                              max_new_tokens=6)
