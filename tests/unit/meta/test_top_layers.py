"""The ``top_layers:N`` parameter preset on the tiny Gemma 3 and BERT2BERT RAG models."""

from __future__ import annotations

import pytest
from torch import nn

from metarag.meta.params import select_params


def names(model, prefix: str) -> list[str]:
    return [n for n, p in model.named_parameters() if n.startswith(prefix) and p.requires_grad]


def test_gemma_top_layers_are_the_last_blocks_and_the_final_norm(tiny_gemma_rag):
    stack = "generator.model.model."
    top = select_params(tiny_gemma_rag, "top_layers:1")
    assert top == names(tiny_gemma_rag, stack + "layers.1.") + [stack + "norm.weight"]
    assert any(".lora_A." in n for n in top)  # the LoRA inside the block comes along
    both = select_params(tiny_gemma_rag, "top_layers:2")
    assert both == (names(tiny_gemma_rag, stack + "layers.0.")
                    + names(tiny_gemma_rag, stack + "layers.1.") + [stack + "norm.weight"])
    assert not any("embed_tokens" in n for n in both)  # tied to the LM head, left out


def test_bert2bert_top_layers_are_the_decoders_last_blocks_and_head_transform(tiny_rag):
    decoder = "generator.model.decoder."
    top = select_params(tiny_rag, "top_layers:1")
    head = [decoder + "cls.predictions.bias"] + names(tiny_rag,
                                                      decoder + "cls.predictions.transform.")
    assert top == names(tiny_rag, decoder + "bert.encoder.layer.1.") + head
    assert any(".crossattention." in n for n in top)
    assert not any(n.startswith("generator.model.encoder.") for n in top)  # not the encoder's
    assert len(select_params(tiny_rag, "top_layers:2")) == (
        len(names(tiny_rag, decoder + "bert.encoder.layer.")) + len(head))
    # It composes with the other patterns like any preset.
    assert select_params(tiny_rag, "top_layers:1", exclude="cross_attention") == [
        n for n in top if ".crossattention." not in n]


@pytest.mark.parametrize(("pattern", "message"), [
    ("top_layers:3", r"the generator has 2 layers \(generator\.model\.model\.layers\); "
                     r"pick N in 1\.\.2"),
    ("top_layers:0", "N must be a whole number >= 1"),
    ("top_layers:two", "N must be a whole number >= 1"),
    ("top_layers:", "N must be a whole number >= 1"),
])
def test_a_bad_n_is_a_clear_error(tiny_gemma_rag, pattern, message):
    with pytest.raises(ValueError, match=message):
        select_params(tiny_gemma_rag, pattern)


def test_a_model_without_a_known_stack_is_a_clear_error():
    with pytest.raises(ValueError, match="no layer stack it knows"):
        select_params(nn.Sequential(nn.Linear(2, 2)), "top_layers:1")


def test_an_ampersand_intersects_patterns(tiny_gemma_rag):
    top_lora = select_params(tiny_gemma_rag, "lora&top_layers:1")
    assert top_lora == [n for n in select_params(tiny_gemma_rag, "top_layers:1")
                        if ".lora_" in n]
    assert top_lora and all(".layers.1." in n for n in top_lora)
    # Each part may be any pattern; a regex keeps a "&" of its own.
    assert select_params(tiny_gemma_rag, "lora&re:.*q_proj.*") == [
        n for n in select_params(tiny_gemma_rag, "lora") if "q_proj" in n]
    with pytest.raises(ValueError, match="'lora&re:.*nothing.*' matches no parameter"):
        select_params(tiny_gemma_rag, "lora&re:.*nothing.*")
    # A "re:" part runs to the end: the "&" inside it belongs to the regex.
    assert select_params(tiny_gemma_rag, "top_layers:1&re:.*(lora_A)&?.*") == [
        n for n in top_lora if "lora_A" in n]
