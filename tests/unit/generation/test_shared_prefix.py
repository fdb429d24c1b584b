"""Generation that runs the prompt prefix shared by a batch once (in-context demos)."""

from __future__ import annotations

import pytest
import torch

from metarag.generation import Generator
from metarag.generation.hf import inference_attention
from metarag.generation.prompt import Demo, make_source
from metarag.generation.shared_prefix import common_prefix_length, shared_prefix_cache

DEMOS = [Demo("Who built the mill at Ely?", "the monks of the abbey",
              "Ely mill: The monks of the abbey built the mill in 1102 beside the river."),
         Demo("How tall is the tower?", "66 metres", "Ely tower: The west tower is 66 metres.")]
QUESTIONS = [("When was it founded?", "Ely Abbey: It was founded by Etheldreda in 673."),
             ("Who?", "Ely: Etheldreda."),
             ("What stands on the hill above the fen, and since when has it stood there?",
              "Ely Cathedral: The cathedral stands on the hill above the fen since 1083 and "
              "its octagon was rebuilt after the crossing tower fell in 1322.")]


@pytest.fixture(scope="module", params=["gemma3", "gpt2", "bert-lm"])
def gen(request: pytest.FixtureRequest) -> Generator:
    return Generator.tiny(request.param)


def _sources() -> list:
    return [make_source(q, [p], DEMOS) for q, p in QUESTIONS]


def test_common_prefix_length_of_a_left_padded_batch() -> None:
    ids = torch.tensor([[0, 0, 5, 6, 7, 8], [5, 6, 7, 9, 9, 9], [0, 5, 6, 7, 8, 1]])
    mask = (torch.arange(6) >= torch.tensor([[2], [0], [1]])).long()
    assert common_prefix_length(ids, mask) == 3
    assert common_prefix_length(ids[:1], mask[:1]) == 4


LONG = "Ely Cathedral: " + " ".join(["The octagon was rebuilt after the tower fell."] * 12)
BATCHES = {
    "padded differently": lambda: _sources(),
    "padding longer than the shared prefix": lambda: [
        make_source("Why?", [], DEMOS), make_source("What was rebuilt?", [LONG], DEMOS)],
    "no padding": lambda: _sources()[:1] * 2,
}


def _generate(gen: Generator, batch: dict, cache) -> tuple[torch.Tensor, torch.Tensor]:
    extra = {"cache": cache, "use_cache": True} if cache is not None else {}
    out = gen.model.generate(**batch, max_new_tokens=5, do_sample=False, pad_token_id=gen.pad_id,
                             output_logits=True, return_dict_in_generate=True, **extra)
    return out.sequences, torch.stack(out.logits)


@pytest.mark.parametrize("layout", list(BATCHES))
def test_cached_prefix_gives_the_logits_of_the_whole_prompts(gen: Generator, layout: str
                                                             ) -> None:
    """Every generated step's logits, with prompts longer than Gemma's sliding window
    (16 here), under the fused attention `Generator.generate` runs."""
    batch = gen.tokenize(BATCHES[layout]())
    ids, mask = batch["input_ids"], batch["attention_mask"]
    pads = ids.shape[1] - mask.sum(1)
    with inference_attention(gen.model):
        cache = shared_prefix_cache(gen.model, ids, mask)
        assert cache is not None
        slots = cache.get_seq_length()
        assert slots > 16 and slots == min(common_prefix_length(ids, mask), ids.shape[1] - 1)
        if layout == "padding longer than the shared prefix":
            assert int(pads.max()) > slots
        fast, fast_logits = _generate(gen, batch, cache)
        plain, plain_logits = _generate(gen, batch, None)
    assert torch.equal(fast, plain)
    torch.testing.assert_close(fast_logits, plain_logits, atol=1e-5, rtol=1e-5)


def test_generate_shares_the_prefix_and_answers_the_same(gen: Generator) -> None:
    sources = _sources()
    fed: list[int] = []
    hook = gen.model.get_input_embeddings().register_forward_hook(
        lambda _m, args, _out: fed.append(args[0].numel()))
    try:
        gen.share_prefix = False
        plain = gen.generate(sources, max_new_tokens=6)
        plain_tokens, fed[:] = sum(fed), []
        gen.share_prefix = True
        shared = gen.generate(sources, max_new_tokens=6)
        shared_tokens = sum(fed)
    finally:
        hook.remove()
    assert shared == plain
    # The fast path ran: the demos went through the model once, not once per row.
    prefix = common_prefix_length(*gen.tokenize(sources).values())
    assert plain_tokens - shared_tokens >= prefix


def test_no_cache_when_rows_share_little(gen: Generator) -> None:
    batch = gen.tokenize([make_source(q, [p]) for q, p in QUESTIONS])
    assert shared_prefix_cache(gen.model, batch["input_ids"], batch["attention_mask"]) is None
    one = gen.tokenize(_sources()[:1])
    assert shared_prefix_cache(gen.model, one["input_ids"], one["attention_mask"]) is None
