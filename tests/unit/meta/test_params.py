"""Choosing the adapted parameters by preset or pattern, and splitting them from the frozen rest."""

import pytest
import torch
from torch import nn

from metarag.meta.params import PRESETS, call_with, merge_params, select_params, split_params


def names_of(model, *include, exclude=()):
    return set(select_params(model, include, exclude))


def test_presets_on_the_tiny_rag_model_are_non_empty_and_related_as_documented(tiny_rag):
    # The adapter presets need a model with adapters: tests/unit/test_adapters.py.
    sets = {name: names_of(tiny_rag, name) for name in PRESETS
            if name not in ("lora", "soft_prompt")}
    assert all(sets.values()), [k for k, v in sets.items() if not v]
    every = {n for n, _ in tiny_rag.named_parameters()}
    assert sets["all"] == every == names_of(tiny_rag, "*")
    # query_encoder | generator = all, disjoint
    assert not sets["query_encoder"] & sets["generator"]
    assert sets["query_encoder"] | sets["generator"] == every
    # generator_encoder | decoder = generator, disjoint
    assert not sets["generator_encoder"] & sets["decoder"]
    assert sets["generator_encoder"] | sets["decoder"] == sets["generator"]
    # decoder = the BERT2BERT decoder incl. cross-attention and LM head
    assert all(n.startswith("generator.model.decoder.") for n in sets["decoder"])
    assert any(".cls.predictions." in n for n in sets["decoder"])
    assert sets["cross_attention"] < sets["decoder"]
    assert all(".crossattention." in n for n in sets["cross_attention"])
    assert len(sets["cross_attention"]) == 2 * 10  # 2 layers x (q, k, v, out, LayerNorm) x (w, b)
    assert len(sets["embeddings"]) == 9  # 3 BERTs x (word, position, token type)
    # patterns combine, and exclude removes
    assert names_of(tiny_rag, "decoder", "query_encoder", exclude="embeddings") == (
        (sets["decoder"] | sets["query_encoder"]) - sets["embeddings"])


@pytest.mark.parametrize("kind", ["t5", "bart", "gpt2", "bert-lm"])
def test_generator_presets_cover_other_architectures(kind):
    from metarag.generation import Generator

    model = nn.ModuleDict({"generator": Generator.tiny(kind)})  # names as inside a RAGModel
    decoder, cross = names_of(model, "decoder"), set()
    assert decoder and names_of(model, "embeddings")
    if kind in ("t5", "bart"):
        encoder, cross = names_of(model, "generator_encoder"), names_of(model, "cross_attention")
        assert encoder and cross < decoder and not encoder & decoder
        assert not any("shared" in n for n in decoder)
    else:  # decoder-only: the whole generator is the decoder
        assert decoder == names_of(model, "generator")
        with pytest.raises(ValueError, match="'generator_encoder' matches no parameter"):
            select_params(model, "generator_encoder")


def test_fnmatch_and_regex_patterns():
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    assert select_params(model, "*.bias") == ["0.bias", "1.bias"]
    assert select_params(model, "re:1\\..*") == ["1.weight", "1.bias"]
    assert select_params(model, "all", exclude=("0.*",)) == ["1.weight", "1.bias"]


def test_a_pattern_that_matches_nothing_is_named_with_examples():
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    with pytest.raises(ValueError, match="'decodr' matches no parameter.*Presets.*'0.weight'"):
        select_params(model, "decodr")
    with pytest.raises(ValueError, match="no parameter left"):
        select_params(model, "0.*", exclude="0.*")
    model[0].requires_grad_(False)
    with pytest.raises(ValueError, match="matches only frozen parameters"):
        select_params(model, "0.*")
    assert select_params(model) == ["1.weight", "1.bias"]


def test_split_and_call_leave_the_module_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1))
    adapted, frozen = split_params(model, ["2.weight", "2.bias"])
    assert adapted["2.weight"] is model[2].weight  # the meta-parameters themselves
    assert set(frozen) == {"0.weight", "0.bias"} and not frozen["0.weight"].requires_grad
    x = torch.randn(4, 2)
    torch.testing.assert_close(call_with(model, adapted, frozen, x), model(x))
    shifted = {k: v + 1.0 for k, v in adapted.items()}
    out = call_with(model, shifted, frozen, x)
    torch.testing.assert_close(out, model(x) + 1.0 + model[1](model[0](x)).sum(-1,
                                                                             keepdim=True))
    assert torch.equal(model[2].bias, adapted["2.bias"])  # module unchanged
    with pytest.raises(ValueError, match="not parameters of the model"):
        split_params(model, ["2.weigth"])
    with pytest.raises(ValueError, match="both adapted and frozen"):
        merge_params(adapted, {**frozen, "2.bias": frozen["0.bias"]})
