"""Loading Hugging Face models for the Generator: eager attention, special ids, quiet loads.

Each helper works around a ``transformers`` default that would break
meta-learning or confuse a user:

- attention: SDPA by default, whose CPU kernel has no double backward;
- special ids: a BERT2BERT warm start sets no decoder start, pad or EOS ids;
- load reports: warm-starting MiniLM as a decoder prints a long table of
  "missing" weights that are missing on purpose.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger(__name__)

ENCODER_DECODER_KINDS = ("bert2bert", "seq2seq")

# Keys a warm start from a plain BERT checkpoint is expected to miss (new decoder
# cross-attention, the MLM head that sentence encoders drop) or to leave unused
# (the pooler): explained in one log line instead of transformers' load report.
_WARM_START_MISSING = ("crossattention", "cls.predictions")
_WARM_START_UNUSED = ("pooler", "cls.")


def first_not_none(*values: int | None) -> int | None:
    """The first value that is not None (token ids can be 0, so ``or`` will not do)."""
    return next((v for v in values if v is not None), None)


def special_ids(model: Any, tokenizer: Any, kind: str) -> tuple[int, int, int | None]:
    """``(eos, pad, decoder_start)``; decoder_start is None for decoder-only kinds.

    EOS falls back to [SEP] (BERT tokenizers have no EOS); pad falls back to EOS
    (GPT-2 has no pad token; the tokenizer is given EOS as its pad token so a
    saved generator keeps it). Padding is always masked or labelled -100, so the
    choice only has to be a valid id.
    """
    eos = first_not_none(tokenizer.eos_token_id, tokenizer.sep_token_id)
    if eos is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has neither an EOS nor a SEP "
                         "token; set tokenizer.eos_token before building the Generator")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(eos)
    pad = tokenizer.pad_token_id
    if kind not in ENCODER_DECODER_KINDS:
        return eos, pad, None
    if kind == "bert2bert":  # BERT2BERT convention: decode from [CLS]
        start = first_not_none(tokenizer.cls_token_id, tokenizer.bos_token_id)
    else:  # T5 starts from pad, BART from eos: trust the checkpoint
        start = first_not_none(getattr(model.config, "decoder_start_token_id", None),
                               model.generation_config.decoder_start_token_id)
    if start is None:
        raise ValueError(f"cannot tell the decoder start token for kind {kind!r}: set "
                         "model.config.decoder_start_token_id (T5: pad id; BART: eos id)")
    return eos, pad, start


def sync_special_ids(model: Any, *, eos: int, pad: int, bos: int | None,
                     decoder_start: int | None) -> None:
    """Write the ids on both ``config`` and ``generation_config``.

    EncoderDecoderModel reads them from its config in ``forward`` and from the
    generation config in ``generate``; a warm start leaves both unset.
    """
    for cfg in (model.config, model.generation_config):
        cfg.eos_token_id = eos
        cfg.pad_token_id = pad
        if bos is not None:
            cfg.bos_token_id = bos
        if decoder_start is not None:
            cfg.decoder_start_token_id = decoder_start
    # Training never puts a forced BOS/EOS in the labels (BART checkpoints ask for
    # one), so generation must not force them either.
    model.generation_config.forced_bos_token_id = None
    model.generation_config.forced_eos_token_id = None


def max_positions(model: Any, part: str = "decoder") -> int | None:
    """Position-table size of a decoder-only model, or of an encoder-decoder's part."""
    config = model.config
    if getattr(config, "is_encoder_decoder", False) and hasattr(config, part):
        config = getattr(config, part)  # EncoderDecoderConfig nests the two BERT configs
    n = getattr(config, "max_position_embeddings", None)
    if n is None:  # T5: relative positions, no table
        return None
    return int(n)


def force_eager(model: Any) -> None:
    """Use eager (plain matmul + softmax) attention everywhere.

    PyTorch's fused SDPA kernel on CPU (flash attention) has no double backward,
    so MAML's second-order gradients raise whenever SDPA dispatches to it (which
    depends on masks, shapes and versions); eager attention is plain matmul +
    softmax, slower but always differentiable twice.
    """
    with quiet_transformers():
        model.set_attn_implementation("eager")
    for module in model.modules():
        impl = getattr(getattr(module, "config", None), "_attn_implementation", "eager")
        if impl not in (None, "eager"):
            raise RuntimeError(
                f"{type(module).__name__} kept attn_implementation={impl!r} after asking for "
                "'eager'; second-order gradients need eager attention on CPU")


@contextlib.contextmanager
def inference_attention(model: Any) -> Iterator[None]:
    """PyTorch's fused SDPA attention inside the block, eager again after it.

    For generation only (no gradients flow, so SDPA's missing double backward does
    not matter): on Gemma 3 270M, 24 batched answers take 1.22x less time with it.
    A model that has no SDPA path stays eager. The switch is the whole model's:
    nothing else may run the model (or copy it) inside the block.
    """
    try:
        try:
            with quiet_transformers():
                model.set_attn_implementation("sdpa")
        except (ValueError, ImportError):  # this architecture has no SDPA implementation
            pass
        yield
    finally:
        force_eager(model)  # also after a partial switch or an error inside the block


def load_model(kind: str, path: str, config: Any) -> Any:
    """The ``transformers`` model of ``kind`` from ``path``, eager attention, load explained."""
    from transformers import (
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForSeq2SeqLM,
        EncoderDecoderModel,
    )

    eager = {"attn_implementation": "eager"}
    if kind == "bert2bert" and config.model_type == "encoder-decoder":
        model, info = _quiet_load(EncoderDecoderModel.from_pretrained, path, **eager)
        _report_load(path, info)
        return model
    if kind == "bert2bert":
        # Warm start (Rothe et al. 2020): encoder and decoder both copy the checkpoint.
        # Same as EncoderDecoderModel.from_encoder_decoder_pretrained(path, path), loaded
        # part by part to explain the expected gaps in place of transformers' report.
        encoder, info = _quiet_load(AutoModel.from_pretrained, path, add_pooling_layer=False,
                                    **eager)
        _report_load(path, info, part="bert2bert encoder", warm_start=True)
        decoder, info = _quiet_load(AutoModelForCausalLM.from_pretrained, path, is_decoder=True,
                                    add_cross_attention=True, **eager)
        _report_load(path, info, part="bert2bert decoder", warm_start=True)
        copy_self_to_cross_attention(decoder)
        with quiet_transformers():
            return EncoderDecoderModel(encoder=encoder, decoder=decoder)
    if kind == "seq2seq":
        model, info = _quiet_load(AutoModelForSeq2SeqLM.from_pretrained, path, **eager)
        _report_load(path, info)
        return model
    # "causal" and "bert-lm"; is_decoder makes a BERT checkpoint attend causally.
    extra = {"is_decoder": True} if kind == "bert-lm" else {}
    model, info = _quiet_load(AutoModelForCausalLM.from_pretrained, path, **extra, **eager)
    _report_load(path, info, part=kind, warm_start=kind == "bert-lm")
    return model


def copy_self_to_cross_attention(decoder: Any) -> None:
    """Start each decoder layer's new cross-attention as a copy of its self-attention.

    The encoder is the same checkpoint, so its outputs live in the space the
    self-attention was trained on: the copy attends to passage tokens the way
    the checkpoint attends within a text, where a random cross-attention must
    first learn to look at the passage at all (BERT2BERT then wrote one answer
    for every passage after 800 steps; docs/RESULTS.md).
    """
    layers = [m for m in decoder.modules() if hasattr(m, "crossattention")]
    for layer in layers:
        layer.crossattention.load_state_dict(layer.attention.state_dict())
    logger.info("bert2bert: %d cross-attention layers start as copies of their self-attention",
                len(layers))


def _quiet_load(loader: Any, path: str, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    """Call a ``from_pretrained`` with its report and progress bar off; return the report."""
    try:
        with quiet_transformers():
            return loader(path, output_loading_info=True, **kwargs)
    except OSError as err:
        raise OSError(f"could not load generator weights from {path!r}: {err}") from err


def _report_load(path: str, info: dict[str, Any], *, part: str = "model",
                 warm_start: bool = False) -> None:
    """Log what a load left random or unused: info when a warm start expects it, else warning.

    Loading MiniLM as a decoder misses the MLM head (it starts random) and, for
    bert2bert, the cross-attention (copied from self-attention afterwards, see
    `copy_self_to_cross_attention`), and leaves the pooler unused; that is the
    warm start working as designed, not a broken checkpoint.
    """
    missing = list(info.get("missing_keys", []))
    unused = list(info.get("unexpected_keys", []))
    mismatched = list(info.get("mismatched_keys", []))
    if warm_start:
        new = [k for k in missing if any(p in k for p in _WARM_START_MISSING)]
        dropped = [k for k in unused if any(p in k for p in _WARM_START_UNUSED)]
        if new or dropped:
            cross = sum("crossattention" in k for k in new)
            logger.info("%s warm-started from %s: %d new LM-head tensors start random, "
                        "%d new cross-attention tensors, %d checkpoint tensors unused (pooler, "
                        "MLM head); expected, train before use", part, path, len(new) - cross,
                        cross, len(dropped))
        missing = [k for k in missing if k not in new]
        unused = [k for k in unused if k not in dropped]
    if missing or unused or mismatched:
        logger.warning("loading %s from %s: %d tensors missing (random): %s; %d unused: %s; "
                       "%d with mismatched shapes: %s", part, path, len(missing), missing[:5],
                       len(unused), unused[:5], len(mismatched), mismatched[:5])


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' logging below ERROR and its progress bars, then restore them."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
