"""Generator: one interface over tiny random models of every kind.

Each tiny model (2 layers, width 32, MiniLM's tokenizer) is built once per
module; tests that train build their own.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch.func import functional_call

from metarag.generation import Generator, format_source, token_nll
from metarag.generation.generator import IGNORE_INDEX, SAVE_FILE
from metarag.generation.tiny import TINY_ARCHS

ARCHS = list(TINY_ARCHS)  # bert2bert, t5, bart, gpt2, bert-lm

SOURCES = [
    format_source("Who founded the abbey?", ["Ely Abbey: It was founded by Etheldreda in 673."]),
    format_source("When?", []),
]
TARGETS = ["Etheldreda", "in 673 or so"]


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from metarag.retrieval.encoder import default_encoder_path

    return AutoTokenizer.from_pretrained(default_encoder_path())


@pytest.fixture(scope="module")
def generators(tokenizer) -> dict[str, Generator]:
    return {arch: Generator.tiny(arch, tokenizer) for arch in ARCHS}


@pytest.fixture(params=ARCHS)
def gen(request: pytest.FixtureRequest, generators: dict[str, Generator]) -> Generator:
    return generators[request.param]


def _hand_log_likelihood(gen: Generator, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Log-likelihood from the raw HF model's full logits, written out longhand."""
    labels = batch["labels"]
    if gen.is_encoder_decoder:
        dec_in = torch.full_like(labels, gen.pad_id)
        dec_in[:, 0] = gen.decoder_start_id
        dec_in[:, 1:] = labels[:, :-1].clamp(min=0)
        dec_in[:, 1:][labels[:, :-1] == IGNORE_INDEX] = gen.pad_id
        logits = gen.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           decoder_input_ids=dec_in).logits
    else:
        mask = batch["attention_mask"]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        full = gen.model(input_ids=batch["input_ids"], attention_mask=mask,
                         position_ids=positions).logits  # (B, L, V)
        t = labels.shape[1]
        logits = full[:, -t - 1:-1]
    logp = torch.log_softmax(logits.double(), dim=-1)
    out = torch.zeros(labels.shape[0], dtype=torch.float64)
    for b in range(labels.shape[0]):
        for j in range(labels.shape[1]):
            if labels[b, j] != IGNORE_INDEX:
                out[b] += logp[b, j, labels[b, j]]
    return out


def test_tokenize_shapes_and_label_masking(gen: Generator) -> None:
    batch = gen.tokenize(SOURCES, TARGETS)
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    assert ids.shape == mask.shape and labels.shape[0] == ids.shape[0] == 2
    answer = [gen.tokenizer(" " + t, add_special_tokens=False)["input_ids"] for t in TARGETS]
    for b in range(2):
        real = labels[b][labels[b] != IGNORE_INDEX].tolist()
        assert real == answer[b] + [gen.eos_id]  # answer tokens, then EOS
    if gen.is_encoder_decoder:
        # Right padding: real tokens first, labels -100 after them.
        assert mask[1].tolist() == sorted(mask[1].tolist(), reverse=True)
        assert labels[0, len(answer[0]) + 1:].eq(IGNORE_INDEX).all()
    else:
        # Left padding: every sequence ends with its answer + EOS, which the labels mirror.
        assert mask[:, -1].eq(1).all() and mask[1].tolist() == sorted(mask[1].tolist())
        t = labels.shape[1]
        labelled = labels != IGNORE_INDEX
        assert torch.equal(ids[:, -t:][labelled], labels[labelled])
        assert labels[0, 0] == IGNORE_INDEX  # the shorter answer is preceded by source tokens
    prompt = gen.tokenize(SOURCES)
    assert set(prompt) == {"input_ids", "attention_mask"}


def test_forward_is_summed_token_log_likelihood(gen: Generator) -> None:
    batch = gen.tokenize(SOURCES, TARGETS)
    head_rows = []
    hook = gen.model.get_output_embeddings().register_forward_hook(
        lambda _m, args, _out: head_rows.append(args[0].shape[:-1].numel()))
    with torch.no_grad():
        ll = gen(**batch)
        hook.remove()
        expected = _hand_log_likelihood(gen, batch)
    # The vocabulary projection ran on the labelled positions only, not on padding.
    assert head_rows == [int((batch["labels"] != IGNORE_INDEX).sum())]
    assert ll.shape == (2,) and torch.isfinite(ll).all() and (ll <= 0).all()
    torch.testing.assert_close(ll.double(), expected, rtol=1e-5, atol=1e-4)
    n_tokens = (batch["labels"] != IGNORE_INDEX).sum()
    torch.testing.assert_close(gen.loss(batch), -ll.sum() / n_tokens)


def test_padding_does_not_change_a_sequence_score(gen: Generator) -> None:
    with torch.no_grad():
        together = gen(**gen.tokenize(SOURCES, TARGETS))
        alone = torch.cat([gen(**gen.tokenize([s], [t])) for s, t in zip(SOURCES, TARGETS)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-4)


def test_functional_call_equals_module_call(gen: Generator) -> None:
    batch = gen.tokenize(SOURCES, TARGETS)
    params = dict(gen.named_parameters())
    assert all(k.startswith("model.") for k in params)
    with torch.no_grad():
        torch.testing.assert_close(functional_call(gen, params, kwargs=batch), gen(**batch))


def test_second_order_gradient(gen: Generator) -> None:
    """One MAML step: the meta-gradient flows through the inner gradient (double backward)."""
    batch = gen.tokenize(SOURCES, TARGETS)
    params = dict(gen.named_parameters())

    def query_loss(create_graph: bool) -> list[torch.Tensor]:
        inner = token_nll(functional_call(gen, params, kwargs=batch), batch["labels"])
        grads = torch.autograd.grad(inner, list(params.values()), create_graph=create_graph,
                                    allow_unused=True)
        adapted = {k: p - 0.5 * g if g is not None else p
                   for (k, p), g in zip(params.items(), grads)}
        outer = token_nll(functional_call(gen, adapted, kwargs=batch), batch["labels"])
        return torch.autograd.grad(outer, list(params.values()), allow_unused=True)

    second = query_loss(create_graph=True)
    first = query_loss(create_graph=False)
    assert all(g is None or torch.isfinite(g).all() for g in second)
    differ = [not torch.allclose(a, b) for a, b in zip(second, first)
              if a is not None and b is not None]
    assert any(differ)  # the second-order term is really there


def test_generate_returns_strings(gen: Generator) -> None:
    out = gen.generate(SOURCES, max_new_tokens=4)
    assert len(out) == 2 and all(isinstance(a, str) for a in out)
    assert "question" not in out[0]  # decoder-only kinds return the continuation only
    # Batched (padded) decoding equals one-at-a-time decoding.
    assert out == [gen.generate([s], max_new_tokens=4)[0] for s in SOURCES]
    assert gen.generate(SOURCES, max_new_tokens=3, num_beams=2)[0] is not None
    assert not gen.training


@pytest.mark.parametrize("arch", ARCHS)
def test_loss_drops_when_memorising_two_examples(arch: str, tokenizer) -> None:
    gen = Generator.tiny(arch, tokenizer, seed=1)
    batch = gen.tokenize(SOURCES, TARGETS)
    with torch.no_grad():
        before = gen.loss(batch).item()
    gen.train()
    opt = torch.optim.Adam(gen.parameters(), lr=1e-2)
    for _ in range(20):
        opt.zero_grad()
        gen.loss(batch).backward()
        opt.step()
    gen.eval()
    with torch.no_grad():
        after = gen.loss(batch).item()
    assert after < 0.6 * before, (before, after)


def test_save_load_round_trip(gen: Generator, tmp_path: Path) -> None:
    gen.save(tmp_path)
    assert (tmp_path / SAVE_FILE).is_file() and (tmp_path / "model.safetensors").is_file()
    assert not list(tmp_path.glob("*.bin")) and not list(tmp_path.glob("*.pt"))
    loaded = Generator.load(tmp_path)
    assert loaded.kind == gen.kind and type(loaded.model) is type(gen.model)
    assert (loaded.max_source_length, loaded.max_target_length) == (
        gen.max_source_length, gen.max_target_length)
    batch = gen.tokenize(SOURCES, TARGETS)
    assert torch.equal(loaded.tokenize(SOURCES, TARGETS)["input_ids"], batch["input_ids"])
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch), gen(**batch), rtol=0, atol=0)


def test_over_long_source_is_truncated_with_one_warning(
        tokenizer, caplog: pytest.LogCaptureFixture) -> None:
    long_source = format_source("What colour is the door?", ["filler words here " * 100])
    for arch in ("bert2bert", "gpt2"):
        gen = Generator.tiny(arch, tokenizer, max_source_length=24, max_target_length=4)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="metarag.generation.generator"):
            batch = gen.tokenize([long_source, "question: short"], ["a much too long answer", "x"])
            gen.tokenize([long_source], ["y"])  # warned already: silent
        warnings = [r.getMessage() for r in caplog.records]
        assert sum("max_source_length=24" in w for w in warnings) == 1, warnings
        assert sum("max_target_length=4" in w for w in warnings) == 1, warnings
        assert batch["attention_mask"].sum(1).max() <= 24 + 4
        assert (batch["labels"] != IGNORE_INDEX).sum(1).tolist() == [4, 2]
        kept = gen.tokenizer.decode(batch["input_ids"][0], skip_special_tokens=True)
        assert "what colour is the door" in kept  # the question survives
        with torch.no_grad():
            assert torch.isfinite(gen(**batch)).all()
        assert len(gen.generate([long_source], max_new_tokens=2)) == 1


def test_errors_say_what_to_do(generators: dict[str, Generator], tmp_path: Path) -> None:
    gen = generators["t5"]
    with pytest.raises(TypeError, match="wrap it"):
        gen.tokenize("one string")
    with pytest.raises(ValueError, match="pair up"):
        gen.tokenize(SOURCES, TARGETS[:1])
    with pytest.raises(ValueError, match="needs labels"):
        gen(**gen.tokenize(SOURCES))
    with pytest.raises(ValueError, match="unknown tiny generator"):
        Generator.tiny("llama")
    with pytest.raises(ValueError, match="has no default model"):
        Generator.from_pretrained("seq2seq")
    with pytest.raises(OSError, match="neither a model folder nor a .gguf file"):
        Generator.from_pretrained("causal", tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="not a saved metarag generator"):
        Generator.load(tmp_path)


def test_models_use_eager_attention(gen: Generator) -> None:
    impls = {m.config._attn_implementation for m in gen.model.modules() if hasattr(m, "config")}
    assert impls == {"eager"}


def test_minilm_bert2bert_from_pretrained(capfd: pytest.CaptureFixture[str],
                                         caplog: pytest.LogCaptureFixture) -> None:
    """MiniLM warm-started into BERT2BERT (the small option): ids set, decoding runs.

    About 3 s (two copies of MiniLM's weights), so it stays in the default run.
    """
    with caplog.at_level(logging.INFO, logger="metarag.generation"):
        gen = Generator.from_pretrained("bert2bert")
    err = capfd.readouterr().err
    assert "LOAD REPORT" not in err and "seem corrupted" not in err  # explained, not dumped
    assert any("decoder warm-started" in r.getMessage() for r in caplog.records)
    assert not any(r.levelno >= logging.WARNING for r in caplog.records)
    assert gen.kind == "bert2bert" and not gen.training
    tok = gen.tokenizer
    for cfg in (gen.model.config, gen.model.generation_config):
        assert cfg.decoder_start_token_id == tok.cls_token_id
        assert cfg.pad_token_id == tok.pad_token_id
        assert cfg.eos_token_id == tok.sep_token_id
    assert {m.config._attn_implementation for m in gen.model.modules()
            if hasattr(m, "config")} == {"eager"}
    layers = gen.model.decoder.bert.encoder.layer
    for layer in layers:  # cross-attention starts as a copy of self-attention, not random
        cross, own = layer.crossattention.state_dict(), layer.attention.state_dict()
        assert cross.keys() == own.keys()
        assert all(torch.equal(cross[k], own[k]) for k in own)
    assert layers[0].crossattention.self.query.weight is not layers[0].attention.self.query.weight
    out = gen.generate(SOURCES, max_new_tokens=3)
    assert len(out) == 2 and all(isinstance(a, str) for a in out)
    with torch.no_grad():
        ll = gen(**gen.tokenize(SOURCES, TARGETS))
    assert torch.isfinite(ll).all() and (ll <= 0).all()


@pytest.mark.parametrize("kind", ["bert2bert", "gpt2"])
def test_generator_conditions_on_its_source(kind):
    """Four sources with four different answers: a model that ignored its input
    (e.g. cross-attention not wired) could learn at most one of them."""
    import torch

    gen = Generator.tiny(kind, seed=0)
    gen.train()
    sources = ["question: what colour context: the sky is blue",
               "question: what animal context: the pet is a dog",
               "question: what city context: she lives in paris",
               "question: what fruit context: he ate a pear"]
    targets = ["blue", "dog", "paris", "pear"]
    batch = gen.tokenize(sources, targets)
    optimizer = torch.optim.Adam(gen.parameters(), lr=3e-3)
    for _ in range(150):
        loss = gen.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    gen.eval()
    assert gen.generate(sources, max_new_tokens=4) == targets


def test_copied_answers_come_back_with_the_source_spelling(generators: dict[str, Generator]
                                                          ) -> None:
    gen = generators["bert2bert"]  # WordPiece, uncased: decoding alone gives "€80. 4 million"
    source = "question: How much? context: Revenue was €80.4 Million in Q3."
    ids = gen.tokenizer("€80.4 Million", add_special_tokens=False)["input_ids"]
    assert gen.tokenizer.decode(ids) != "€80.4 Million"
    copied = torch.tensor([*ids, gen.eos_id])
    assert gen._as_text(copied, source) == "€80.4 Million"
    other = gen.tokenizer("nine tonnes", add_special_tokens=False)["input_ids"]
    assert gen._as_text(torch.tensor(other), source) == "nine tonnes"  # not a copy: decoded


def test_generation_runs_fused_attention_and_training_stays_eager(generators) -> None:
    """SDPA inside generate (no double backward needed there), eager before and after."""
    gen = generators["gemma3"]
    seen: list[str] = []
    hook = gen.model.register_forward_pre_hook(
        lambda module, _args: seen.append(module.config._attn_implementation))
    try:
        gen.generate(SOURCES, max_new_tokens=2)
    finally:
        hook.remove()
    assert seen and set(seen) == {"sdpa"}
    assert gen.model.config._attn_implementation == "eager"
    test_models_use_eager_attention(gen)


def test_an_error_inside_generate_leaves_the_model_eager(generators) -> None:
    gen = generators["gemma3"]

    def fail(*_args):
        raise RuntimeError("boom inside generate")

    hook = gen.model.register_forward_pre_hook(fail)
    try:
        with pytest.raises(RuntimeError, match="boom inside generate"):
            gen.generate(SOURCES, max_new_tokens=2)
    finally:
        hook.remove()
    test_models_use_eager_attention(gen)
