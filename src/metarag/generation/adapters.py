"""Adapters on a `Generator`: LoRA layers and a soft prompt, small weight sets to meta-learn.

Meta-learning can adapt all of a RAG model's weights, or only a few added for
the purpose; these are the added ones. Both are part of the architecture: they
are built from the `ModelConfig` (``lora``, ``soft_prompt_tokens``), so a
checkpoint (state dict + config) rebuilds and reloads them, and the inner loop
picks them with the presets ``"lora"`` and ``"soft_prompt"`` of
`metarag.meta.params.select_params`. The model's other weights keep their
``requires_grad``; what adapts, and what meta-training updates, is the selection.

**LoRA** (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models"):
peft's ``inject_adapter_in_model`` turns each targeted linear layer ``W x`` into
``W x + (alpha / r) B A x`` with A (r, in) random and B (out, r) zero, so the
model computes exactly what it did before until B moves. For BERT2BERT the
default targets (peft's table per model type: BERT ``query``/``value``, T5
``q``/``v``, BART ``q_proj``/``v_proj``, GPT-2 ``c_attn``) cover encoder
self-attention, decoder self-attention and cross-attention. Names::

    generator.model.encoder.encoder.layer.0.attention.self.query.base_layer.weight  # W, kept
    generator.model.encoder.encoder.layer.0.attention.self.query.lora_A.default.weight  # (r, in)
    generator.model.encoder.encoder.layer.0.attention.self.query.lora_B.default.weight  # (out, r)

**Soft prompt** (prompt tuning, Lester et al. 2021, "The Power of Scale for
Parameter-Efficient Prompt Tuning"; meta-learned as in Hou et al. 2022,
"MetaPrompting"): n placeholder tokens start every generator source (BERT's
``[unusedN]`` tokens; other tokenizers get new special tokens and the embedding
table grows). A forward hook on the input word-embedding module replaces the
vectors at those ids by the rows of a trainable (n, d) parameter
``soft_prompt``, registered on that module and initialised from the embeddings
of real words (:data:`SOFT_PROMPT_INIT`). As the placeholders are real token
positions, attention masks, position ids, left padding and ``generate`` work
unchanged for every generator kind, and ``functional_call`` swaps the prompt in
like any weight (a hook, not a wrapper module, so no existing weight is renamed
and tied embeddings stay tied). Generation never writes a placeholder. Names:
``generator.model.encoder.embeddings.word_embeddings.soft_prompt`` (BERT2BERT),
``generator.model.shared.soft_prompt`` (T5), ``generator.model.transformer.wte.soft_prompt``
(GPT-2).

Usage::

    built = build_model(ModelConfig(lora=LoRAConfig(r=8), soft_prompt_tokens=20))
    names = select_params(built.model, "lora")        # or "soft_prompt", or both
    meta_params, frozen = split_params(built.model, names)

(YAML: ``model: {lora: {r: 8}, soft_prompt_tokens: 20}`` and the preset in the
adaptation's ``params``.)

``Generator.save`` refuses a generator with adapters (a Hugging Face folder cannot
describe them); save the RAG model as a checkpoint.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from metarag.generation.generator import Generator

SOFT_PROMPT_INIT = ("question answer context passage document evidence read find the "
                    "answer in the passage")
"""Words whose embeddings start the soft prompt (cycled when it is longer)."""
_PARAM, _IDS = "soft_prompt", "soft_prompt_ids"
_NEW_TOKEN = "<metarag_prompt_{}>"


@dataclass
class LoRAConfig:
    """LoRA adapters on the generator's linear layers (Hu et al. 2021).

    Attributes:
        r: Rank of the update B A.
        alpha: Scale; the update is multiplied by ``alpha / r``.
        dropout: Dropout on the adapters' input (training mode only).
        target_modules: Last names of the linear layers to adapt (e.g. ``["query",
            "value"]``); None for the model type's default: Gemma ``q_proj``,
            ``k_proj``, ``v_proj``, ``o_proj``; otherwise peft's (attention query and
            value: BERT ``query``/``value``, T5 ``q``/``v``, BART ``q_proj``/``v_proj``,
            GPT-2 ``c_attn``).
        top_layers: On a decoder-only stack laid out like Gemma 3 (``model.model.layers``),
            put LoRA in the last N blocks only (all of them when the model has fewer);
            None for every block. Other architectures get it in every block. The
            default, 4 of Gemma 3 270M's 18: the 14 blocks below stay the base model's,
            so they run once per source and are cached (`metarag.rag.model.PrefixCache`)
            while adaptation steps train the top; all-layer LoRA runs all 18 blocks
            forward and back at every step.
    """

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] | None = None
    top_layers: int | None = 4

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"lora.r must be >= 1, got {self.r}")
        if not self.alpha > 0:
            raise ValueError(f"lora.alpha must be positive, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"lora.dropout must be in [0, 1), got {self.dropout}")
        if self.top_layers is not None and self.top_layers < 1:
            raise ValueError(f"lora.top_layers must be >= 1 or null (every layer), got "
                             f"{self.top_layers}")
        if self.target_modules is not None and not self.target_modules:
            raise ValueError("lora.target_modules is empty: name layers (e.g. [query, value]) "
                             "or leave it null for the model type's default")


# ---------------------------------------------------------------------- LoRA


def add_lora(generator: Generator, config: LoRAConfig, *, seed: int = 0) -> list[str]:
    """Inject LoRA layers into ``generator.model`` in place.

    The wrapped layers keep their weights (as ``...base_layer.*``) and their
    ``requires_grad`` (peft would freeze them; the adapted set is chosen by name
    instead); the new A and B matrices require grad.

    Args:
        generator: The generator; changed in place.
        config: Rank, scale, dropout and target layers.
        seed: Seeds the A matrices; torch's global RNG is left as it was.

    Returns:
        The names of the new parameters, relative to ``generator``.

    Raises:
        ValueError: The generator already has LoRA, or no layer matches the targets
            (the message lists the linear layers there are).
    """
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as err:
        raise ImportError("LoRA adapters (ModelConfig.lora) need peft: pip install peft"
                          ) from err

    if "lora" in generator.adapters:
        raise ValueError("the generator already has LoRA adapters")
    model = generator.model
    targets = list(config.target_modules or default_lora_targets(model))
    linear = _linear_layers(model)
    hit = {name for name in linear if name.rsplit(".", 1)[-1] in targets}
    if not hit:
        names = sorted({n.rsplit(".", 1)[-1] for n in linear})
        raise ValueError(f"lora.target_modules {targets} match no linear layer of the "
                         f"{type(model).__name__}; its linear layers are named {names}")
    hit = _in_top_layers(model, hit, config.top_layers)
    peft_config = LoraConfig(
        r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout,
        # Full module names: peft then wraps exactly these.
        target_modules=sorted(hit), bias="none",
        # GPT-2's Conv1D stores its weight as (in, out).
        fan_in_fan_out=any(type(linear[n]).__name__ == "Conv1D" for n in hit))
    trainable = {p: p.requires_grad for p in model.parameters()}  # the same objects after
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        inject_adapter_in_model(peft_config, model)
    for p in model.parameters():  # undo peft's freezing; the new adapters train
        p.requires_grad_(trainable.get(p, True))
    generator.adapters.append("lora")
    return [n for n, p in generator.named_parameters() if p not in trainable]


# Gemma's default: every attention projection (q/k/v/o: 0.74M weights at r=8 in all 18
# blocks of Gemma 3 270M, 0.16M in the default top 4), where peft's table has q and v only.
_ALL_ATTENTION = {t: ("q_proj", "k_proj", "v_proj", "o_proj")
                  for t in ("gemma", "gemma2", "gemma3_text", "gemma3")}


def default_lora_targets(model: nn.Module) -> list[str]:
    """Default LoRA targets: Gemma's four attention projections, else peft's table (q, v).

    Raises:
        ValueError: peft has no default for the model type; set ``lora.target_modules``.
    """
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    config = model.config
    # EncoderDecoderModel (BERT2BERT) nests the configs of its two halves.
    types = ([config.encoder.model_type, config.decoder.model_type]
             if config.model_type == "encoder-decoder" else [config.model_type])
    if all(t in _ALL_ATTENTION for t in types):
        return list(_ALL_ATTENTION[types[0]])
    missing = [t for t in types if t not in DEFAULTS]
    if missing:
        raise ValueError(f"no default LoRA target layers for model type {missing[0]!r}; set "
                         "lora.target_modules to the names of its attention projections")
    return list(dict.fromkeys(m for t in types for m in DEFAULTS[t]))


def _in_top_layers(model: nn.Module, names: set[str], top: int | None) -> set[str]:
    """The module ``names`` minus those in the blocks below the last ``top`` of a
    Gemma-style stack (see `LoRAConfig.top_layers`); all of them for None or another
    architecture."""
    from metarag.generation.layers import layer_stack

    if top is None:
        return names
    try:
        blocks = len(layer_stack(model).layers)
    except ValueError:
        return names
    first = max(0, blocks - top)
    below = tuple(f"model.layers.{i}." for i in range(first))
    return {n for n in names if not n.startswith(below)}  # targets outside the blocks stay


def _linear_layers(model: nn.Module) -> dict[str, nn.Module]:
    # Conv1D: GPT-2's linear layer.
    return {n: m for n, m in model.named_modules()
            if isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D"}


# ---------------------------------------------------------------------- soft prompt


def add_soft_prompt(generator: Generator, n_tokens: int, *,
                    init_text: str = SOFT_PROMPT_INIT) -> str:
    """Put ``n_tokens`` trainable prompt vectors before every source of ``generator``.

    Args:
        generator: The generator; changed in place (its tokenizer too, when it has
            no ``[unusedN]`` tokens to use as placeholders).
        n_tokens: Prompt length n.
        init_text: The prompt starts as the embeddings of these words' tokens, cycled.

    Returns:
        The name of the (n, d) prompt parameter, relative to ``generator``.

    Raises:
        ValueError: ``n_tokens < 1``, a soft prompt is already there, or the prompt
            leaves too little of ``max_source_length`` for the source.
    """
    if n_tokens < 1:
        raise ValueError(f"soft_prompt_tokens must be >= 1, got {n_tokens}")
    if "soft_prompt" in generator.adapters:
        raise ValueError("the generator already has a soft prompt")
    room = generator.max_source_length - len(generator._cue_ids) - n_tokens
    if room < 2:  # at least the tokenizer's own special tokens
        raise ValueError(f"soft_prompt_tokens={n_tokens} leaves {room} of max_source_length="
                         f"{generator.max_source_length} tokens for the source; raise "
                         "max_source_length or use a shorter prompt")
    ids = _placeholder_ids(generator, n_tokens)
    embedding = generator.model.get_input_embeddings()
    words = generator.tokenizer(init_text, add_special_tokens=False)["input_ids"]
    if not words:
        raise ValueError(f"init_text {init_text!r} has no tokens")
    start = torch.tensor([words[i % len(words)] for i in range(n_tokens)],
                         device=embedding.weight.device)
    with torch.no_grad():
        init = embedding(start).detach().clone()  # (n, d), scaled as the module scales (BART)
    embedding.register_parameter(_PARAM, nn.Parameter(init))
    embedding.register_buffer(_IDS, torch.tensor(ids, device=init.device), persistent=False)
    embedding.register_forward_hook(_use_soft_prompt)
    # Input-only tokens: never generated (tied output embeddings still score them).
    generation = generator.model.generation_config
    generation.suppress_tokens = [*(generation.suppress_tokens or []), *ids]
    generator._prompt_ids = ids
    generator.adapters.append("soft_prompt")
    owner = next(n for n, m in generator.named_modules() if m is embedding)
    return f"{owner}.{_PARAM}"


def _placeholder_ids(generator: Generator, n: int) -> list[int]:
    """n token ids that no text produces: ``[unusedN]`` / ``<unusedN>``, else new special tokens."""
    tokenizer = generator.tokenizer
    vocab = tokenizer.get_vocab()
    # BERT's [unusedN], Gemma's <unusedN>: in the vocabulary, never produced by text.
    unused = sorted((int(m.group(1) or m.group(2)), i) for t, i in vocab.items()
                    if (m := re.fullmatch(r"\[unused(\d+)\]|<unused(\d+)>", t)))
    if len(unused) >= n:
        return [i for _, i in unused[:n]]
    tokens = [_NEW_TOKEN.format(i) for i in range(n)]
    tokenizer.add_tokens(tokens, special_tokens=True)
    ids = tokenizer.convert_tokens_to_ids(tokens)
    rows = generator.model.get_input_embeddings().num_embeddings
    if max(ids) >= rows:  # T5 tables have spare rows; others grow
        generator.model.resize_token_embeddings(len(tokenizer))
    return ids


def _use_soft_prompt(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor
                     ) -> torch.Tensor:
    """Forward hook: the prompt's vectors at placeholder positions, the embeddings elsewhere.

    Reads ``module.soft_prompt`` at call time, so ``functional_call`` swaps it in.
    """
    ids = args[0]                                         # (B, S)
    prompt = getattr(module, _PARAM)                      # (n, d)
    hit = ids.unsqueeze(-1) == getattr(module, _IDS)      # (B, S, n)
    vectors = prompt.to(output.dtype)[hit.int().argmax(-1)]  # (B, S, d); row 0 where no hit
    return torch.where(hit.any(-1, keepdim=True), vectors, output)
