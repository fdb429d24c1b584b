"""LoRA adapters and a soft prompt: built from the config, selected by preset, meta-learned.

Tiny random models throughout; the RAG model is BERT2BERT with both adapters, so
each test can adapt one of them and check the other weights stay put.
"""

from dataclasses import asdict

import pytest
import torch

from metarag.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from metarag.config import from_dict
from metarag.data.episodes import Episode
from metarag.data.schema import Passage, QAExample
from metarag.generation import Generator
from metarag.generation.adapters import LoRAConfig, add_lora, add_soft_prompt
from metarag.meta import Batch, inner_loop, maml_step, rag_loss_fn, select_params, split_params
from metarag.rag.build import (
    ModelConfig,
    build_model,
    checkpoint_config,
    load_trained,
    load_weights,
    model_weights,
)
from metarag.rag.model import RAGConfig

pytest.importorskip("peft")

PASSAGES = [
    Passage("p0", "Zorblat tablets are taken at 250 mg twice daily.", "Zorblat"),
    Passage("p1", "The Quillon bridge opened on 3 May 1911.", "Quillon bridge"),
    Passage("p2", "Marvex Holdings reported revenue of 4.2 million euros.", "Marvex"),
]
QA = [
    ("Zorblat dose?", "250 mg twice daily"),
    ("When did the Quillon bridge open?", "3 May 1911"),
    ("Marvex revenue?", "4.2 million euros"),
    ("How often is Zorblat taken?", "twice daily"),
]
SUPPORT = Batch([q for q, _ in QA[:2]], [a for _, a in QA[:2]])
N_PROMPT = 4
SOFT_PROMPT = "generator.model.encoder.embeddings.word_embeddings.soft_prompt"
SOURCES = ["question: Zorblat dose? context: Zorblat tablets are taken at 250 mg.",
           "question: Marvex revenue? context: Marvex reported 4.2 million euros."]
TARGETS = ["250 mg", "4.2 million euros"]


def _config(encoder_dir, kind="bert2bert", **adapters) -> ModelConfig:
    """A tiny RAG model config; BERT2BERT without adapters unless they are given."""
    adapters = {"lora": None, **adapters}
    return ModelConfig(encoder=str(encoder_dir), generator="tiny", generator_kind=kind,
                       max_source_length=48, max_target_length=12, rag=RAGConfig(k=2),
                       **adapters)


def _build(config):
    built = build_model(config)
    built.use_corpus(PASSAGES)
    built.model.eval()  # no dropout: repeated calls give the same loss
    return built


@pytest.fixture(scope="module")
def adapted_config(tiny_encoder_dir) -> ModelConfig:
    return _config(tiny_encoder_dir, lora=LoRAConfig(r=4, alpha=8), soft_prompt_tokens=N_PROMPT)


@pytest.fixture(scope="module")
def rag(adapted_config):
    """BERT2BERT RAG model with LoRA and a soft prompt; tests leave it as they found it."""
    return _build(adapted_config).model


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same(model, snapshot) -> None:
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshot[k]), k


# ---------------------------------------------------------------------- LoRA


@pytest.mark.parametrize("kind", ["bert2bert", "t5", "gpt2"])
def test_lora_changes_nothing_until_b_moves(kind):
    plain = Generator.tiny(kind, max_source_length=48, max_target_length=12)
    gen = Generator.tiny(kind, max_source_length=48, max_target_length=12)
    names = add_lora(gen, LoRAConfig(r=4))
    batch = gen.tokenize(SOURCES, TARGETS)
    with torch.no_grad():
        assert torch.equal(gen(**batch), plain(**batch))  # B = 0: the update is exactly 0
        lora = dict(gen.named_parameters())
        assert names and all(".lora_A." in n or ".lora_B." in n for n in names)
        assert all(not lora[n].any() for n in names if ".lora_B." in n)
        # peft froze the base weights; they are trainable again (the preset chooses)
        assert all(p.requires_grad for p in gen.parameters())
        for n in names:
            if ".lora_B." in n:
                lora[n].normal_(std=0.5)
        assert not torch.allclose(gen(**batch), plain(**batch))
    assert gen.generate(SOURCES[:1], max_new_tokens=3)  # generate runs through the adapters


def test_lora_targets_and_errors():
    gen = Generator.tiny("bert2bert")
    names = add_lora(gen, LoRAConfig(r=2, target_modules=["value"]))
    # value projections: encoder self-attention, decoder self- and cross-attention, 2 layers
    assert len(names) == 2 * (2 + 2 + 2)
    assert all(".value.lora_" in n for n in names)
    with pytest.raises(ValueError, match="already has LoRA"):
        add_lora(gen, LoRAConfig())
    with pytest.raises(ValueError, match=r"match no linear layer.*'query'"):
        add_lora(Generator.tiny("bert-lm"), LoRAConfig(target_modules=["q_proj"]))
    with pytest.raises(ValueError, match="lora.r must be"):
        LoRAConfig(r=0)


# ---------------------------------------------------------------------- soft prompt


@pytest.mark.parametrize("kind", ["bert2bert", "gpt2"])
def test_soft_prompt_replaces_the_placeholder_embeddings_and_generates(kind):
    gen = Generator.tiny(kind, max_source_length=48, max_target_length=12)
    name = add_soft_prompt(gen, N_PROMPT, init_text="question answer")
    prompt = dict(gen.named_parameters())[name]
    assert prompt.shape == (N_PROMPT, 32) and prompt.requires_grad
    batch = gen.tokenize(SOURCES, TARGETS)
    ids = gen.tokenizer.convert_tokens_to_ids([f"[unused{i}]" for i in range(N_PROMPT)])
    row = (batch["attention_mask"][0] == 1).nonzero()[0, 0]  # left padding for gpt2
    assert batch["input_ids"][0, row:row + N_PROMPT].tolist() == ids
    embedding = gen.model.get_input_embeddings()
    words = gen.tokenizer("question answer", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        # starts as the words' embeddings, cycled
        torch.testing.assert_close(prompt, embedding.weight[words * (N_PROMPT // 2)])
        # the prompt's rows at the placeholders, the embedding table's everywhere else
        vectors = embedding(batch["input_ids"])                           # (B, S, d)
        is_prompt = torch.isin(batch["input_ids"], torch.tensor(ids))
        assert is_prompt.sum() == 2 * N_PROMPT
        assert torch.equal(vectors[0, row:row + N_PROMPT], prompt)
        assert torch.equal(vectors[~is_prompt], embedding.weight[batch["input_ids"][~is_prompt]])
        before = gen(**batch)
        prompt.add_(torch.randn_like(prompt))  # not a constant shift, which LayerNorm removes
        assert not torch.equal(gen(**batch), before)  # a tiny random bert2bert barely listens
    answers = gen.generate(SOURCES, max_new_tokens=4)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    with pytest.raises(ValueError, match="cannot hold.*checkpoint"):
        gen.save("unused-folder")


def test_generation_never_writes_a_placeholder():
    gen = Generator.tiny("bert2bert", max_source_length=48, max_target_length=12)
    placeholder = gen.tokenizer.convert_tokens_to_ids("[unused0]")
    with torch.no_grad():  # make [unused0] the decoder's favourite token
        gen.model.decoder.cls.predictions.decoder.bias[placeholder] = 1e4
    assert gen.generate(SOURCES[:1], max_new_tokens=2) == ["[unused0] [unused0]"]
    add_soft_prompt(gen, N_PROMPT)
    assert "unused" not in gen.generate(SOURCES[:1], max_new_tokens=2)[0]


@pytest.mark.parametrize("kind", ["t5", "gpt2"])
def test_soft_prompt_adds_tokens_when_the_vocabulary_has_no_unused_ones(kind, tmp_path):
    from transformers import BertTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "question", "answer", "context",
             "zorblat", "dose", "250", "mg", "?", ":", "."]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    tokenizer = BertTokenizerFast(str(tmp_path / "vocab.txt"))
    gen = Generator.tiny(kind, tokenizer=tokenizer, max_source_length=24, max_target_length=6)
    add_soft_prompt(gen, 3)
    assert len(tokenizer) == len(words) + 3
    assert gen.model.get_input_embeddings().num_embeddings >= len(tokenizer)
    batch = gen.tokenize(["question : zorblat dose ?"], ["250 mg"])
    assert gen(**batch).isfinite().all()
    assert gen.generate(["question : zorblat dose ?"], max_new_tokens=3)[0].count("metarag") == 0


def test_soft_prompt_needs_room_in_the_source():
    gen = Generator.tiny("bert2bert", max_source_length=8)
    with pytest.raises(ValueError, match="leaves 0 of max_source_length=8"):
        add_soft_prompt(gen, 8)


# ---------------------------------------------------------------------- presets


def test_presets_select_exactly_the_adapters(rag, tiny_encoder_dir):
    names = [n for n, _ in rag.named_parameters()]
    lora = select_params(rag, "lora")
    assert lora == [n for n in names if ".lora_A." in n or ".lora_B." in n]
    # query + value in encoder self-attention, decoder self- and cross-attention; 2 layers
    assert len(lora) == 2 * 2 * 3 * 2
    assert select_params(rag, "soft_prompt") == [SOFT_PROMPT]
    assert set(select_params(rag, ["lora", "soft_prompt"])) == {*lora, SOFT_PROMPT}
    assert SOFT_PROMPT not in select_params(rag, "embeddings")
    assert set(select_params(rag, "cross_attention", exclude="lora")).isdisjoint(lora)

    plain = build_model(_config(tiny_encoder_dir)).model
    with pytest.raises(ValueError, match=r"no such adapter.*ModelConfig\(lora="):
        select_params(plain, "lora")
    with pytest.raises(ValueError, match=r"ModelConfig\(soft_prompt_tokens=n\)"):
        select_params(plain, "soft_prompt")


def test_lora_leaves_the_rag_loss_unchanged_at_init(rag, tiny_encoder_dir):
    plain = _build(_config(tiny_encoder_dir, soft_prompt_tokens=N_PROMPT)).model
    with torch.no_grad():
        torch.testing.assert_close(rag(SUPPORT.questions, SUPPORT.answers).loss,
                                   plain(SUPPORT.questions, SUPPORT.answers).loss,
                                   rtol=0, atol=0)


# ---------------------------------------------------------------------- meta-learning


@pytest.mark.parametrize("preset, lr", [("lora", 0.5), ("soft_prompt", 0.5)])
def test_inner_loop_on_the_adapters_lowers_the_support_loss_and_nothing_else_moves(
        rag, preset, lr):
    snapshot = _snapshot(rag)
    meta_params, frozen = split_params(rag, select_params(rag, preset))
    loss_fn = rag_loss_fn(rag, frozen)
    before = loss_fn(meta_params, SUPPORT).item()
    adapted = inner_loop(loss_fn, meta_params, SUPPORT, steps=3, lr=lr, first_order=True)
    assert adapted.keys() == meta_params.keys()
    assert all(not torch.equal(adapted[k], meta_params[k]) for k in adapted
               if ".lora_A." not in k)  # A moves only once B has left zero
    assert loss_fn(adapted, SUPPORT).item() < before
    _assert_same(rag, snapshot)  # the module, every base weight included, is untouched
    assert all(p.grad is None for p in rag.parameters())


def test_second_order_maml_gives_gradients_to_the_adapters_only(rag):
    snapshot = _snapshot(rag)
    names = select_params(rag, ["lora", "soft_prompt"])
    meta_params, frozen = split_params(rag, names)
    examples = [QAExample(f"q{i}", q, (a,)) for i, (q, a) in enumerate(QA)]
    episodes = [Episode(examples[:2], examples[2:], "toy")]
    result = maml_step(rag_loss_fn(rag, frozen), meta_params, episodes, inner_steps=1,
                       inner_lr=0.5, first_order=False)
    assert result.grads.keys() == set(names)
    for name, grad in result.grads.items():
        assert grad.isfinite().all() and grad.abs().sum() > 0, name
    # second order: A's gradient exists only through the inner step (B starts at 0)
    assert all(result.grads[n].abs().sum() > 0 for n in names if ".lora_A." in n)
    assert all(p.grad is None for p in rag.parameters())
    _assert_same(rag, snapshot)


# ---------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_rebuilds_the_adapters(tmp_path, adapted_config, tiny_encoder_dir):
    built = _build(adapted_config)
    with torch.no_grad():  # move the adapters off their initial values
        for name in select_params(built.model, ["lora", "soft_prompt"]):
            dict(built.model.named_parameters())[name].add_(0.05)
    save_checkpoint(tmp_path, 1, model=model_weights(built.model),
                    state={"model_config": asdict(adapted_config)})
    assert from_dict(ModelConfig, asdict(adapted_config)) == adapted_config

    loaded, _ = load_trained(str(tmp_path), seed=1)  # another seed: A comes from the file
    loaded.use_corpus(PASSAGES)
    _assert_same(loaded.model, _snapshot(built.model))
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(SUPPORT.questions, SUPPORT.answers).loss,
                                   built.model(SUPPORT.questions, SUPPORT.answers).loss)

    plain = build_model(_config(tiny_encoder_dir))
    with pytest.raises(CheckpointError, match=r"another model config.*unexpected.*\.base_layer\."):
        load_weights(plain.model, load_checkpoint(tmp_path))


def test_gemma_defaults_lora_on_every_attention_projection(tiny_encoder_dir):
    """The default model's adapted set: LoRA r=8 on q/k/v/o, a no-op until B moves."""
    built = _build(_config(tiny_encoder_dir, "causal", lora=LoRAConfig(),
                           soft_prompt_tokens=N_PROMPT))
    lora = select_params(built.model, "lora")
    layers = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in lora}
    assert layers == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert len(lora) == 2 * 4 * 2  # 2 layers x 4 projections x (A, B)
    assert select_params(built.model, "soft_prompt") == [
        "generator.model.model.embed_tokens.soft_prompt"]
    plain = _build(_config(tiny_encoder_dir, "causal", soft_prompt_tokens=N_PROMPT)).model
    with torch.no_grad():
        torch.testing.assert_close(built.model(SUPPORT.questions, SUPPORT.answers).loss,
                                   plain(SUPPORT.questions, SUPPORT.answers).loss)


@pytest.mark.parametrize(("top", "blocks"), [(1, {"1"}), (2, {"0", "1"}), (9, {"0", "1"}),
                                             (None, {"0", "1"})])
def test_lora_top_layers_puts_adapters_in_the_last_blocks_only(top, blocks):
    gen = Generator.tiny("gemma3")
    add_lora(gen, LoRAConfig(top_layers=top))
    lora = [n for n, _ in gen.named_parameters() if ".lora_" in n]
    assert {n.split(".layers.")[1].split(".")[0] for n in lora} == blocks
    assert len(lora) == len(blocks) * 4 * 2  # q/k/v/o x (A, B) in each block
    # What the prefix cache can skip: the blocks below the first adapted one.
    assert gen.frozen_layers(lora) == 2 - len(blocks)


def test_lora_top_layers_is_checked():
    with pytest.raises(ValueError, match="lora.top_layers must be >= 1 or null"):
        LoRAConfig(top_layers=0)


def test_a_checkpoint_from_before_top_layers_keeps_lora_in_every_block(tmp_path,
                                                                          tiny_encoder_dir):
    """Old model configs have no lora.top_layers: their LoRA was in every block."""
    config = _config(tiny_encoder_dir, "causal", lora=LoRAConfig(top_layers=None))
    built = _build(config)
    saved = asdict(config)
    del saved["lora"]["top_layers"]
    save_checkpoint(tmp_path, 1, model=model_weights(built.model),
                    state={"model_config": saved})
    assert checkpoint_config(load_checkpoint(tmp_path)).lora.top_layers is None
    loaded, _ = load_trained(str(tmp_path))  # every block's LoRA tensors find their layer
    assert select_params(loaded.model, "lora") == select_params(built.model, "lora")
