"""One interface over Hugging Face seq2seq and decoder-only language models.

``Generator`` wraps a ``transformers`` model and its tokenizer behind three calls:

- ``tokenize(sources, targets)`` -> a batch ``{"input_ids", "attention_mask", "labels"}``;
- ``forward(**batch)`` -> (B,) log p(target | source), summed over target tokens:
  what RAG-sequence marginalisation and the meta-learning losses consume; it is a
  pure function of the parameters, so ``torch.func.functional_call`` works;
- ``generate(sources)`` -> answer strings.

Kinds:

- ``"causal"`` (default): a decoder-only LM, ``AutoModelForCausalLM``: Gemma 3 270M
  unless another folder or ``.gguf`` file is named (`metarag.generation.base`).
  A `Source` becomes a base-LM prompt (demos, ``Context:`` passages trimmed passage
  by passage, ``Question: ...``, ``Answer:``) followed by the answer and EOS.
- ``"seq2seq"``: T5/BART, ``AutoModelForSeq2SeqLM``.
- ``"bert2bert"``: ``EncoderDecoderModel`` warm-started from two copies of a BERT
  checkpoint (Rothe et al. 2020), MiniLM by default: small and fast to train, but
  it does not write well. The decoder's cross-attention starts as a copy of its
  self-attention; the LM-head transform starts random.
- ``"bert-lm"``: ``BertLMHeadModel`` (``is_decoder=True``) from a BERT checkpoint; the
  cheap decoder-only option, laid out like ``"causal"``.

Batch layouts (labels are -100 where there is nothing to predict):

- encoder-decoder: input_ids/attention_mask (B, S) right-padded source;
  labels (B, T) = answer tokens + EOS, right-padded. The decoder input is labels
  shifted right behind the decoder start token.
- decoder-only: input_ids/attention_mask (B, L) = ``source + cue + target + EOS``,
  LEFT-padded so every answer ends at the right edge; labels (B, T) hold the
  target for the last T positions of input_ids. Left padding is also what
  batched generation needs, so training and generation see the same positions,
  and only the last T+1 positions need vocabulary logits.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from metarag.generation import layers
from metarag.generation.decoding import NoRepeatInAnswer
from metarag.generation.hf import (
    ENCODER_DECODER_KINDS,
    first_not_none,
    force_eager,
    inference_attention,
    load_model,
    max_positions,
    quiet_transformers,
    special_ids,
    sync_special_ids,
)
from metarag.generation.likelihood import (  # noqa: F401 (re-exported)
    IGNORE_INDEX,
    labelled_log_likelihood,
    sequence_log_likelihood,
    token_nll,
)
from metarag.generation.precision import autocast, check_precision, resolve_dtype
from metarag.generation.prompt import CAUSAL_ANSWER_CUE, Source, causal_prompt
from metarag.generation.shared_prefix import shared_prefix_cache, supports_shared_prefix

logger = logging.getLogger(__name__)

KINDS = ("bert2bert", "seq2seq", "causal", "bert-lm")
SAVE_FILE = "metarag_generator.json"
_FORMAT = "metarag-generator"
_VERSION = 1


class Generator(nn.Module):
    """A Hugging Face LM with a uniform ``tokenize`` / ``forward`` / ``loss`` / ``generate``.

    Build it with :meth:`from_pretrained`, :meth:`tiny` or :meth:`load`. Like
    ``transformers``' own ``from_pretrained``, every constructor returns the model
    in eval mode; call ``.train()`` to enable dropout.

    Attributes:
        model: The wrapped ``transformers`` model (its parameters are this module's,
            named ``model.*``).
        tokenizer: Its tokenizer.
        kind: One of :data:`KINDS`.
        max_source_length: Source tokens kept (special tokens and, for decoder-only
            kinds, the answer cue included); longer sources lose their end.
        max_target_length: Target tokens kept, EOS included.
        adapters: What `metarag.generation.adapters` added ("lora", "soft_prompt");
            empty for a plain model.
        share_prefix: Greedy batched generation runs the prompt prefix all rows share
            (in-context demos) once (`metarag.generation.shared_prefix`); False runs
            every row whole.
    """

    def __init__(self, model: Any, tokenizer: Any, *, kind: str, max_source_length: int = 256,
                 max_target_length: int = 64) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown generator kind {kind!r}; expected one of {', '.join(KINDS)}")
        if max_source_length < 2 or max_target_length < 1:
            raise ValueError(
                f"max_source_length must be >= 2 and max_target_length >= 1, got "
                f"{max_source_length} and {max_target_length}")
        self.model = model
        self.tokenizer = tokenizer
        self.kind = kind
        self.train(model.training)  # the wrapper follows the model's mode (eval after loading)
        self._warned: set[str] = set()
        force_eager(model)
        self.eos_id, self.pad_id, self.decoder_start_id = special_ids(model, tokenizer, kind)
        sync_special_ids(model, eos=self.eos_id, pad=self.pad_id,
                         bos=first_not_none(tokenizer.bos_token_id, tokenizer.cls_token_id),
                         decoder_start=self.decoder_start_id)
        # Over-long sources keep their beginning, where format_source puts the question.
        tokenizer.truncation_side = "right"
        # Decoder-only kinds read "<source> answer: <target>"; the leading space makes
        # byte-level BPE (GPT-2) tokenise the cue as it would inside running text.
        self._cue_ids: list[int] = []
        if not self.is_encoder_decoder:
            cue = tokenizer(" " + CAUSAL_ANSWER_CUE, add_special_tokens=False)
            self._cue_ids = cue["input_ids"]
        # Set by metarag.generation.adapters: soft-prompt placeholder ids put before
        # every source, and the names of the adapters injected into the model.
        self._prompt_ids: list[int] = []
        self.adapters: list[str] = []
        # Most tokens of a demo's passage in a prompt (see `_encode_prompt`).
        self.demo_context_tokens = 128
        # Decoder-only answers end at EOS or at the end of the line.
        self._stop_ids = [self.eos_id] if self.is_encoder_decoder else [
            self.eos_id, *newline_ids(tokenizer)]
        # What the weights were loaded from ("sha256:..." of the GGUF or weight files;
        # "tiny:<arch>:seed=<n>" for a tiny model); small checkpoints record it.
        self.base_identity: str | None = None
        # "auto", "float32" or "bfloat16" matrix products (`metarag.generation.precision`);
        # build_model sets it from ModelConfig.precision.
        self.precision = "auto"
        self._keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
        self.share_prefix = supports_shared_prefix(model)
        self.max_source_length, self.max_target_length = self._fit_lengths(
            max_source_length, max_target_length)

    # ------------------------------------------------------------------ build

    @classmethod
    def from_pretrained(cls, kind: str = "causal", name_or_path: str | os.PathLike | None = None,
                        *, max_source_length: int = 256, max_target_length: int = 64
                        ) -> Generator:
        """Load a generator from a local model folder or GGUF file.

        Args:
            kind: One of :data:`KINDS`.
            name_or_path: A local Hugging Face model folder, a ``.gguf`` file
                (converted once into the user cache, see `metarag.generation.base`),
                or a hub name when online. None means the kind's default: Gemma 3
                270M for "causal"; the bundled MiniLM for the BERT kinds
                ("bert2bert", "bert-lm"). For "bert2bert", a BERT folder is
                warm-started into an encoder-decoder; a saved ``EncoderDecoderModel``
                folder is loaded as it is.
            max_source_length: See the class attributes; lowered with a warning to
                what the model's position table holds.
            max_target_length: See the class attributes.

        Raises:
            ValueError: For an unknown kind, or no default for it ("seq2seq").
            OSError: When the model or tokenizer cannot be loaded; the message says
                what to pass instead (`BaseModelError` for GGUF files).
        """
        from transformers import AutoConfig, AutoTokenizer

        from metarag.generation.base import DEFAULT_GENERATOR, folder_identity, resolve_generator

        if kind not in KINDS:
            raise ValueError(f"unknown generator kind {kind!r}; expected one of {', '.join(KINDS)}")
        if name_or_path is None and kind in ("bert2bert", "bert-lm"):
            from metarag.retrieval.encoder import default_encoder_path

            path = str(default_encoder_path())
            identity = folder_identity(Path(path))
        elif name_or_path is None and kind != "causal":
            raise ValueError(
                f"kind {kind!r} has no default model: pass a model folder (name_or_path). "
                f"Defaults: {DEFAULT_GENERATOR!r} for 'causal', the bundled MiniLM for "
                "'bert2bert' and 'bert-lm'")
        else:
            resolved = resolve_generator(name_or_path)
            path, identity = resolved.path, resolved.identity
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            config = AutoConfig.from_pretrained(path)
        except OSError as err:
            raise OSError(
                f"could not load generator {path!r}: {err}. Pass a local Hugging Face model "
                "folder or .gguf file (this machine may be offline), or None for the default."
            ) from err
        model = load_model(kind, path, config)
        model.eval()
        generator = cls(model, tokenizer, kind=kind, max_source_length=max_source_length,
                        max_target_length=max_target_length)
        generator.base_identity = identity
        return generator

    @classmethod
    def tiny(cls, kind: str, tokenizer: Any = None, seed: int = 0, *,
             max_source_length: int = 256, max_target_length: int = 64) -> Generator:
        """A tiny randomly initialised generator (2 layers, width 32), for tests.

        Args:
            kind: A kind, or an architecture from :data:`~metarag.generation.tiny.TINY_ARCHS`:
                "bert2bert", "t5", "bart" ("seq2seq" = "t5"), "gemma3" ("causal" =
                "gemma3"), "gpt2", "bert-lm".
            tokenizer: None for MiniLM's BERT tokenizer, used for every architecture
                (see :mod:`metarag.generation.tiny` for how ids map).
            seed: Seeds the weights; torch's global RNG is left as it was.
            max_source_length: See the class attributes.
            max_target_length: See the class attributes.
        """
        from metarag.generation.tiny import build_tiny_model, resolve_arch

        arch, resolved_kind = resolve_arch(kind)
        if tokenizer is None:
            from transformers import AutoTokenizer

            from metarag.retrieval.encoder import default_encoder_path

            tokenizer = AutoTokenizer.from_pretrained(default_encoder_path())
        with torch.random.fork_rng(devices=[]), quiet_transformers():
            torch.manual_seed(seed)
            model = build_tiny_model(arch, tokenizer)
        model.eval()
        generator = cls(model, tokenizer, kind=resolved_kind,
                        max_source_length=max_source_length, max_target_length=max_target_length)
        generator.base_identity = f"tiny:{arch}:seed={seed}"
        return generator

    def save(self, directory: str | os.PathLike) -> Path:
        """Write weights (safetensors), configs, tokenizer and ``metarag_generator.json``.

        Returns:
            The directory, which :meth:`load` reads back.
        """
        if self.adapters:  # peft layers / a hooked embedding: not a plain HF model
            raise ValueError(
                f"this generator carries {' and '.join(self.adapters)}, which a Hugging Face "
                "folder cannot hold; save the RAG model as a checkpoint instead (model_weights "
                "+ its ModelConfig, as `metarag train` does), which rebuilds them on load")
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out)  # safetensors; tied weights stored once
        self.tokenizer.save_pretrained(out)
        meta = {"format": _FORMAT, "version": _VERSION, "kind": self.kind,
                "max_source_length": self.max_source_length,
                "max_target_length": self.max_target_length}
        tmp = out / (SAVE_FILE + ".tmp")
        tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        tmp.replace(out / SAVE_FILE)  # the marker appears only once everything is written
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Generator:
        """Load what :meth:`save` wrote.

        Raises:
            FileNotFoundError: When the directory has no ``metarag_generator.json``.
            ValueError: When that file is not a metarag generator record.
        """
        from transformers import AutoConfig, AutoTokenizer

        path = Path(directory)
        meta_path = path / SAVE_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"{meta_path} not found: {path} is not a saved metarag generator. For a plain "
                "Hugging Face directory use Generator.from_pretrained(kind, path).")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format") != _FORMAT or meta.get("kind") not in KINDS:
            raise ValueError(
                f"{meta_path}: expected format {_FORMAT!r} with a kind in {KINDS}, got "
                f"format={meta.get('format')!r}, kind={meta.get('kind')!r}; re-save the generator")
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = load_model(meta["kind"], str(path), AutoConfig.from_pretrained(path))
        model.eval()
        generator = cls(model, tokenizer, kind=meta["kind"],
                        max_source_length=int(meta["max_source_length"]),
                        max_target_length=int(meta["max_target_length"]))
        from metarag.generation.base import folder_identity

        generator.base_identity = folder_identity(path)
        return generator

    # ------------------------------------------------------------------ use

    @property
    def is_encoder_decoder(self) -> bool:
        return self.kind in ENCODER_DECODER_KINDS

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype of this generator's matrix products, from :attr:`precision`.

        ``"auto"`` is bfloat16 for a decoder-only LM of real width (hidden size >= 256:
        Gemma, made for bfloat16) where the hardware multiplies bfloat16 natively;
        float32 otherwise: the BERT kinds, and tiny test models (width 32), whose
        tests compare results exactly and whose speed does not depend on it.
        """
        width = getattr(self.model.config, "hidden_size", 0) or 0
        real_lm = self.kind == "causal" and width >= 256
        return resolve_dtype(self.precision, self.device, auto_bf16=real_lm)

    def set_precision(self, precision: str) -> None:
        """Set :attr:`precision`: "auto", "float32" or "bfloat16"."""
        self.precision = check_precision(precision)

    def _autocast(self):
        return autocast(self.compute_dtype, self.device)

    def num_parameters(self) -> int:
        """Trainable parameters, tied weights counted once."""
        return sum(p.numel() for p in self.parameters())

    def tokenize(self, sources: Sequence[str | Source], targets: Sequence[str] | None = None
                 ) -> dict[str, torch.Tensor]:
        """Tokenise, truncate and pad a batch on the model's device (layouts: module docstring).

        A `Source` given to a decoder-only kind becomes a base-LM prompt (demos,
        passages, question, ``Answer:``) trimmed passage by passage to
        ``max_source_length``; the question is kept whole. A string source, or any
        source of an encoder-decoder kind, loses its end when too long (the
        question, first in ``format_source``, survives). Over-long targets lose
        their end, keeping the EOS. Each logs one warning per generator, never an error.

        Args:
            sources: B generator inputs: `Source` objects (`make_source`) or strings
                (`format_source`).
            targets: B answers, or None for a generation prompt (no labels).

        Returns:
            ``input_ids`` and ``attention_mask`` (B, S or L) and, with targets, ``labels`` (B, T).
        """
        sources = _as_list(sources, "sources", Source)
        if targets is not None:
            targets = _as_list(targets, "targets")
            if len(targets) != len(sources):
                raise ValueError(f"got {len(sources)} sources but {len(targets)} targets; "
                                 "they must pair up one to one")
        if not sources:
            raise ValueError("tokenize needs at least one source")
        src = self._encode_sources(sources)
        tgt = self._encode_targets(targets) if targets is not None else None
        if self.is_encoder_decoder:
            batch = _pad(src, self.pad_id, left=False)
            if tgt is not None:
                batch["labels"] = _pad(tgt, IGNORE_INDEX, left=False)["input_ids"]
        else:
            seqs = [s + t for s, t in zip(src, tgt)] if tgt is not None else src
            batch = _pad(seqs, self.pad_id, left=True)
            if tgt is not None:
                # (B, T): right-aligned like the sequences, so column j is position L-T+j.
                batch["labels"] = _pad(tgt, IGNORE_INDEX, left=True)["input_ids"]
        return {k: v.to(self.device) for k, v in batch.items()}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor | None = None,
                encoder_states: torch.Tensor | None = None,
                prefix_states: torch.Tensor | None = None, from_layer: int = 0) -> torch.Tensor:
        """Per-sequence log-likelihood of the target: sum over tokens of log p(y_t | y_<t, x).

        Recomputed from the model's logits on every call (no caches, no in-place
        parameter use), so it runs under ``torch.func.functional_call`` and
        second-order autograd.

        Args:
            input_ids: (B, S) source (encoder-decoder) or (B, L) left-padded sequence.
            attention_mask: Same shape, 1 on real tokens.
            labels: (B, T) target ids, -100 where nothing is predicted.
            encoder_states: Encoder-decoder kinds only: (B, S, H) output of
                :meth:`encode` for these ``input_ids``, reused instead of running the
                encoder again (e.g. across inner steps that leave the encoder frozen).
            prefix_states: Decoder-only kinds only: (B, L, H) output of
                :meth:`prefix_states` for these ``input_ids`` and ``from_layer``; only
                the layers from ``from_layer`` up run (e.g. when the layers below are
                frozen, see `metarag.rag.model.PrefixCache`).
            from_layer: The first layer to run on ``prefix_states``.

        Returns:
            (B,) float32 log-likelihoods (<= 0).
        """
        if labels is None:
            raise ValueError("Generator.forward needs labels: build the batch with "
                             "tokenize(sources, targets)")
        labelled = labels != IGNORE_INDEX                                             # (B, T)
        if prefix_states is not None and self.is_encoder_decoder:
            raise ValueError(f"prefix_states is for decoder-only generators; this one is "
                             f"{self.kind!r} (pass encoder_states instead)")
        if self.is_encoder_decoder:
            decoder_input_ids = _shift_right(labels, self.decoder_start_id, self.pad_id)
            # Labels are right-padded and the decoder is causal, so padded decoder
            # positions never influence real ones: no decoder mask needed.
            # A tuple is what HF's encoder-decoder models take in place of running the encoder.
            reuse = {"encoder_outputs": (encoder_states,)} if encoder_states is not None else {}
            # Decoder position t predicts labels[:, t].
            logits = self._labelled_logits(labelled, input_ids=input_ids,
                                           attention_mask=attention_mask,
                                           decoder_input_ids=decoder_input_ids, use_cache=False,
                                           **reuse)
        else:
            if encoder_states is not None:
                raise ValueError(f"encoder_states is for encoder-decoder generators; this "
                                 f"one is {self.kind!r}")
            # Left padding: positions count real tokens only, as in generate().
            position_ids = layers.position_ids(attention_mask)                        # (B, L)
            if prefix_states is not None:
                with self._autocast():
                    logits = layers.top_logits(self.model, prefix_states, attention_mask,
                                               from_layer, labelled)
                return labelled_log_likelihood(logits, labels)
            keep = labels.shape[1] + 1  # positions L-T-1 .. L-2 predict the last T tokens
            kwargs = {"logits_to_keep": keep} if self._keeps_logits else {}
            width = keep if self._keeps_logits else input_ids.shape[1]
            predicts = labelled.new_zeros(labelled.shape[0], width)                   # (B, W)
            predicts[:, width - keep:width - 1] = labelled
            logits = self._labelled_logits(predicts, input_ids=input_ids,
                                           attention_mask=attention_mask,
                                           position_ids=position_ids, use_cache=False, **kwargs)
        return labelled_log_likelihood(logits, labels)

    def _labelled_logits(self, positions: torch.Tensor, **inputs: Any) -> torch.Tensor:
        """(N, V) logits at the N True ``positions`` (B, W) of the LM head's input.

        The vocabulary projection (V ~ 30k) runs on labelled positions only, not on
        padding: the (positions, V) tensors are most of a training forward's memory
        with short answers, and more so under second-order autograd.
        """
        def select(_module: nn.Module, args: tuple) -> tuple:
            return (args[0][positions], *args[1:])

        head = self.model.get_output_embeddings()
        handle = head.register_forward_pre_hook(select) if head is not None else None
        try:
            with self._autocast():
                logits = self.model(**inputs).logits
        finally:
            if handle is not None:
                handle.remove()
        # A model that does not call its head as a module returns every position.
        return logits if logits.dim() == 2 else logits[positions]

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Encoder-decoder kinds: the encoder's last hidden states (B, S, H) for a source batch.

        What :meth:`forward` computes first; pass it back as ``encoder_states``
        to skip that part when the encoder's weights have not changed.
        """
        if not self.is_encoder_decoder:
            raise ValueError(f"a {self.kind!r} generator has no separate encoder")
        encoder = self.model.get_encoder()
        with self._autocast():
            return encoder(input_ids=input_ids, attention_mask=attention_mask,
                           return_dict=True).last_hidden_state

    # ---- the frozen prefix of a decoder-only model (`metarag.generation.layers`)

    def prefix_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      first_layer: int) -> torch.Tensor:
        """Decoder-only kinds: (B, L, H) hidden states entering layer ``first_layer``.

        The input embedding (soft prompt included) and layers ``0 .. first_layer-1``
        of :meth:`forward`; pass the result back as ``prefix_states`` with
        ``from_layer=first_layer`` to run only the layers above. A left-padded row's
        real positions do not depend on its padding (causal attention, positions
        counted from the first real token), so a row's states can be reused in
        batches padded to another length.

        Raises:
            ValueError: ``first_layer`` is outside ``0 .. layers``, or the model is not
                laid out like Gemma 3 (see :meth:`frozen_layers`).
        """
        stack = self._layer_stack()
        layers.check_layer(stack, first_layer, "first_layer")
        with self._autocast():
            hidden = stack.embed_tokens(input_ids)                                    # (B, L, H)
            return layers.run_layers(stack, hidden, attention_mask,
                                     layers.position_ids(attention_mask), 0, first_layer)

    def prefix_modules(self, first_layer: int) -> list[nn.Module]:
        """The modules :meth:`prefix_states` runs: the input embedding, then the layers below."""
        stack = self._layer_stack()
        return [stack.embed_tokens, *stack.layers[:first_layer]]

    def frozen_layers(self, adapted: Iterable[str]) -> int:
        """Bottom layers whose output stays put while the parameters ``adapted`` change.

        Args:
            adapted: Parameter names as this module's ``named_parameters()`` gives them.

        Returns:
            The index of the lowest layer an adapted name lies in (the number of
            layers when none does), provided the rest lie above the layers (the
            final norm, an untied LM head); 0 when anything below adapts (the
            embedding, a soft prompt) or the model is not a decoder-only stack laid
            out like Gemma 3 (``model.model.embed_tokens``, ``.layers``, ``.norm``,
            ``.rotary_emb``; Llama-style models share that layout).
        """
        try:
            stack = self._layer_stack()
        except ValueError:
            return 0
        return layers.first_adapted_layer(self, stack, adapted)

    def _layer_stack(self) -> nn.Module:
        if self.is_encoder_decoder:
            raise ValueError("running layers on their own needs a causal decoder laid out like "
                             f"Gemma 3; this {self.kind!r} generator is an encoder-decoder")
        return layers.layer_stack(self.model)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean negative log-likelihood per target token (scalar), over the whole batch."""
        return token_nll(self(**batch), batch["labels"])

    @torch.no_grad()
    def generate(self, sources: Sequence[str | Source], *, max_new_tokens: int = 32,
                 num_beams: int = 1,
                 batch_size: int = 32, no_repeat_ngram: int = 0) -> list[str]:
        """Greedy (or beam) decoding; answers without special tokens or the prompt.

        Runs in eval mode (the previous mode is restored).

        Args:
            sources: Generator inputs.
            max_new_tokens: Most answer tokens to write.
            num_beams: 1 for greedy search.
            batch_size: Sources decoded at once.
            no_repeat_ngram: When > 0, never repeat an n-gram of this many tokens
                within an answer (a decoder-only model's prompt does not count).

        Raises:
            ValueError: When a decoder-only model's position table cannot hold the
                prompt plus ``max_new_tokens``.
        """
        from transformers import LogitsProcessorList

        sources = _as_list(sources, "sources", Source)
        if max_new_tokens < 1 or num_beams < 1 or batch_size < 1 or no_repeat_ngram < 0:
            raise ValueError(f"max_new_tokens, num_beams and batch_size must be positive and "
                             f"no_repeat_ngram >= 0, got {max_new_tokens}, {num_beams}, "
                             f"{batch_size}, {no_repeat_ngram}")
        was_training = self.training
        self.eval()
        answers: list[str] = []
        try:
            for start in range(0, len(sources), batch_size):
                batch = self.tokenize(sources[start:start + batch_size])
                prompt_len = batch["input_ids"].shape[1]
                limit = max_positions(self.model)
                if not self.is_encoder_decoder and limit and prompt_len + max_new_tokens > limit:
                    raise ValueError(
                        f"prompt ({prompt_len} tokens) + max_new_tokens ({max_new_tokens}) exceeds "
                        f"the model's {limit} positions; lower max_new_tokens or max_source_length")
                extra: dict[str, Any] = {}
                if no_repeat_ngram:
                    answer_from = 0 if self.is_encoder_decoder else prompt_len
                    extra["logits_processor"] = LogitsProcessorList(
                        [NoRepeatInAnswer(no_repeat_ngram, answer_from)])
                # Fused attention while no gradient flows; eager again for training.
                with self._autocast(), inference_attention(self.model):
                    if self.share_prefix and num_beams == 1:
                        cache = shared_prefix_cache(self.model, batch["input_ids"],
                                                    batch["attention_mask"])
                        if cache is not None:  # (use_cache: a saved config may turn it off)
                            extra.update(cache=cache, use_cache=True)
                    out = self.model.generate(**batch, max_new_tokens=max_new_tokens,
                                              num_beams=num_beams, do_sample=False,
                                              pad_token_id=self.pad_id,
                                              eos_token_id=self._stop_ids, **extra)
                if not self.is_encoder_decoder:
                    out = out[:, prompt_len:]  # the continuation only
                chunk = sources[start:start + batch_size]
                answers.extend(self._as_text(ids, source) for ids, source in zip(out, chunk))
        finally:
            self.train(was_training)
        return answers

    def _as_text(self, ids: torch.Tensor, source: str | Source) -> str:
        """Generated ids as text, up to the first line end (the source's characters for copies).

        WordPiece decoding loses spacing and case ("€80.4 million" comes back as
        "€80. 4 million", uncased), which costs exact match and BLEU on answers
        copied from a passage. When the ids occur verbatim in the tokenised
        source, the matching source substring is returned instead.
        """
        special = set(self.tokenizer.all_special_ids)
        wanted = [i for i in ids.tolist() if i not in special]
        decoded = self.tokenizer.decode(wanted, skip_special_tokens=True).strip()
        if "\n" in decoded:  # a stop token may carry text before its line end
            decoded = decoded.split("\n", 1)[0].strip()
            wanted = self.tokenizer(decoded, add_special_tokens=False)["input_ids"]
        if not wanted or not _is_wordpiece(self.tokenizer):
            return decoded
        if isinstance(source, Source):
            source = source.as_text()
        enc = self.tokenizer(source, add_special_tokens=False, return_offsets_mapping=True)
        src, offsets, n = enc["input_ids"], enc["offset_mapping"], len(wanted)
        for i in range(len(src) - n + 1):
            if src[i:i + n] == wanted:
                return source[offsets[i][0]:offsets[i + n - 1][1]]
        return decoded

    def extra_repr(self) -> str:
        return (f"kind={self.kind!r}, max_source_length={self.max_source_length}, "
                f"max_target_length={self.max_target_length}")

    # ------------------------------------------------------------------ internals

    def _encode_sources(self, sources: list[str | Source]) -> list[list[int]]:
        """Token ids of each source: a base-LM prompt, or a string's tokens (see `tokenize`)."""
        if self.is_encoder_decoder:
            sources = [s.as_text() if isinstance(s, Source) else s for s in sources]
        elif any(isinstance(s, Source) for s in sources):
            return [self._encode_prompt(s) if isinstance(s, Source)
                    else self._encode_strings([s])[0] for s in sources]
        return self._encode_strings(sources)

    def _encode_prompt(self, source: Source) -> list[int]:
        """A decoder-only prompt for a base LM within ``max_source_length`` (`causal_prompt`)."""
        head = [i for i in (first_not_none(self.tokenizer.bos_token_id,
                                           self.tokenizer.cls_token_id),) if i is not None]
        return causal_prompt(
            source, lambda text: self.tokenizer(text, add_special_tokens=False)["input_ids"],
            head=head + self._prompt_ids, budget=self.max_source_length,
            demo_context_tokens=self.demo_context_tokens, warn=self._warn_once)

    def _encode_strings(self, sources: list[str]) -> list[list[int]]:
        """Token ids with the tokenizer's special tokens (and, decoder-only, the cue).

        Soft-prompt placeholders, if any, come first; they count against the budget.
        """
        budget = self.max_source_length - len(self._cue_ids) - len(self._prompt_ids)
        # One token over budget reveals truncation without a second full pass.
        ids = self.tokenizer(sources, truncation=True, max_length=budget + 1)["input_ids"]
        long = [i for i, x in enumerate(ids) if len(x) > budget]
        if long:
            fixed = self.tokenizer([sources[i] for i in long], truncation=True,
                                   max_length=budget)["input_ids"]
            for i, x in zip(long, fixed):
                ids[i] = x
            self._warn_once("source", f"{len(long)} of {len(sources)} sources exceed "
                            f"max_source_length={self.max_source_length} tokens; their ends "
                            "were cut (the question, first, is kept). Raise max_source_length "
                            "or pass fewer or shorter passages.")
        return [self._prompt_ids + x + self._cue_ids for x in ids]

    def _encode_targets(self, targets: list[str]) -> list[list[int]]:
        """Answer tokens + EOS, at most ``max_target_length`` in all."""
        if not self.is_encoder_decoder:
            # Runs on from the cue, on one line (a line end ends an answer too).
            targets = [" " + " ".join(t.split()) for t in targets]
        budget = self.max_target_length - 1  # room for EOS
        ids = self.tokenizer(targets, add_special_tokens=False, truncation=True,
                             max_length=budget + 1)["input_ids"]
        cut = sum(len(x) > budget for x in ids)
        if cut:
            self._warn_once("target", f"{cut} of {len(targets)} targets exceed "
                            f"max_target_length={self.max_target_length} tokens (EOS included); "
                            "their ends were cut. Raise max_target_length.")
        return [x[:budget] + [self.eos_id] for x in ids]

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning("%s (logged once per generator)", message)

    def _fit_lengths(self, source: int, target: int) -> tuple[int, int]:
        """Lower the lengths, with a warning, to what the position tables hold."""
        limit = max_positions(self.model)
        if self.is_encoder_decoder:
            enc_limit, dec_limit = max_positions(self.model, "encoder"), limit
            if enc_limit and source > enc_limit:
                logger.warning("encoder holds %d positions; max_source_length %d lowered to %d",
                               enc_limit, source, enc_limit)
                source = enc_limit
            if dec_limit and target > dec_limit:
                logger.warning("decoder holds %d positions; max_target_length %d lowered to %d",
                               dec_limit, target, dec_limit)
                target = dec_limit
        elif limit and source + target > limit:
            new_source = max(limit - target, len(self._cue_ids) + 2)
            logger.warning("decoder-only model holds %d positions for source + target; "
                           "max_source_length %d lowered to %d", limit, source, new_source)
            source = new_source
        if source <= len(self._cue_ids) + 1:
            raise ValueError(f"max_source_length={source} leaves no room for the source "
                             f"after the {len(self._cue_ids)}-token answer cue; raise it")
        return source, target


# ---------------------------------------------------------------------- helpers


def _as_list(texts: Sequence[Any], name: str, *also: type) -> list[Any]:
    """``texts`` as a list, checking that each item is a str (or one of ``also``)."""
    if isinstance(texts, str | Source):
        raise TypeError(f"{name} must be a list, got a single {type(texts).__name__}; "
                        "wrap it: [text]")
    texts = list(texts)
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, (str, *also))), None)
    if bad is not None:
        expected = " or ".join(["str", *(t.__name__ for t in also)])
        raise TypeError(f"{name}[{bad}] is {type(texts[bad]).__name__}, expected {expected}")
    return texts


def newline_ids(tokenizer: Any) -> list[int]:
    """Ids of the vocabulary's tokens that contain a line end (Gemma: 31 of 262k)."""
    return sorted(i for t, i in tokenizer.get_vocab().items() if "\n" in t or t == "<0x0A>")


def _is_wordpiece(tokenizer: Any) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return backend is not None and type(backend.model).__name__ == "WordPiece"


def _pad(seqs: list[list[int]], value: int, *, left: bool) -> dict[str, torch.Tensor]:
    """Pad id lists to the longest: ``{"input_ids": (B, L), "attention_mask": (B, L)}``."""
    longest = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), longest), value, dtype=torch.long)
    mask = torch.zeros((len(seqs), longest), dtype=torch.long)
    for i, s in enumerate(seqs):
        span = slice(longest - len(s), longest) if left else slice(0, len(s))
        ids[i, span] = torch.tensor(s, dtype=torch.long)
        mask[i, span] = 1
    return {"input_ids": ids, "attention_mask": mask}


def _shift_right(labels: torch.Tensor, start_id: int, pad_id: int) -> torch.Tensor:
    """(B, T) labels -> (B, T) decoder inputs: start token, then labels[:, :-1]; -100 -> pad."""
    shifted = torch.cat([torch.full_like(labels[:, :1], start_id), labels[:, :-1]], dim=1)
    return shifted.masked_fill(shifted == IGNORE_INDEX, pad_id)
