"""Parameter dicts for functional meta-learning: which weights adapt, and calling with them.

Meta-learning never mutates the module. Its weights live in plain dicts
(`Params`, name -> tensor) that `torch.func.functional_call` swaps in for one
call; the inner loop builds new dicts from old ones.

The adapted subset is chosen by name. A pattern is one of:

- a preset name (table below);
- ``"re:<regex>"``: a Python regular expression matched against the whole name;
- anything else: a shell-style ``fnmatch`` pattern, e.g. ``"generator.*.crossattention.*"``;
- ``"A&B"``: the names that both ``A`` and ``B`` match, e.g. ``"lora&top_layers:2"``
  (the LoRA weights of the top 2 layers). A ``re:`` part runs to the end of the
  pattern (a regex may hold ``&``), so it goes last: ``"lora&re:.*q_proj.*"``.

Presets, with the names they match on a `RAGModel` whose generator is BERT2BERT
(``EncoderDecoderModel``); T5, BART and decoder-only generators are covered too:

==================  ===============================================================
``all``             every trainable parameter.
``query_encoder``   ``query_model.*``: the retriever's trainable question encoder.
``generator``       ``generator.*``: the whole generator.
``generator_encoder``
                    the generator's encoder, ``generator.model.encoder.*`` (BART:
                    ``generator.model.model.encoder.*``); nothing for decoder-only
                    generators (GPT-2, bert-lm), where the preset is an error.
``decoder``         the generator minus its encoder: ``generator.model.decoder.*``
                    for BERT2BERT, i.e. decoder embeddings, self-attention,
                    cross-attention (``...layer.N.crossattention.*``), feed-forward
                    and the LM head (``generator.model.decoder.cls.*``; its output
                    matrix is tied to ``...decoder.bert.embeddings.word_embeddings``).
                    T5/BART: ``decoder.*`` and an untied ``lm_head``, but not the
                    ``shared`` embedding, which also feeds the encoder. Decoder-only
                    generators: the whole generator.
``cross_attention`` the decoder's attention over the source: BERT ``crossattention``,
                    T5 ``EncDecAttention`` (with its layer norm), BART ``encoder_attn``.
``embeddings``      token/position/type embedding matrices (BERT ``*_embeddings``,
                    T5/BART ``shared``/``embed_*``, GPT-2 ``wte``/``wpe``). Mostly
                    useful as ``exclude``: with MiniLM each word-embedding matrix is
                    11.7M of a BERT's 22.7M weights, and few-shot steps barely touch it.
``lora``            LoRA adapters, ``*.lora_A.*`` / ``*.lora_B.*`` (and peft's other
                    ``lora_*`` weights); the model needs ``ModelConfig(lora=...)``.
``soft_prompt``     the soft prompt, ``*.soft_prompt`` (n, d) on the generator's input
                    embedding; the model needs ``ModelConfig(soft_prompt_tokens=n)``.
``top_layers:N``    the generator's last N transformer blocks and what sits above them
                    (LoRA inside them included). Decoder-only Gemma 3 / Llama-style:
                    ``generator.model.model.layers.{L-N..L-1}.*`` + the final norm
                    ``generator.model.model.norm.*`` (the LM head is tied to the input
                    embedding, so it stays); BERT2BERT: the decoder's
                    ``generator.model.decoder.bert.encoder.layer.{L-N..L-1}.*`` + the
                    LM-head transform and bias ``generator.model.decoder.cls.predictions
                    .{transform.*,bias}`` (randomly initialised by the warm start);
                    ``bert-lm`` likewise without ``decoder.``; GPT-2: ``transformer.h``
                    + ``transformer.ln_f``. L is read from the model; N outside 1..L,
                    or a generator without such a stack (T5, BART), is an error. With
                    Gemma, the frozen layers below are then computed once per source
                    (`metarag.rag.model.PrefixCache`).
==================  ===============================================================

Relations on a BERT2BERT RAGModel (tested): ``query_encoder`` and ``generator`` are
disjoint and together make ``all``; ``generator_encoder`` and ``decoder`` are
disjoint and together make ``generator``; ``cross_attention`` lies inside ``decoder``;
``embeddings`` cuts across all of them. The adapter presets select only adapter
weights (`metarag.generation.adapters`); the architecture presets include the
adapters inside their part (LoRA on cross-attention is in ``cross_attention``).

Tied weights: `select_params` lists each parameter once, under the first name
``named_parameters()`` gives it; ``functional_call`` (``tie_weights=True``) then
uses the value for every alias, so the LM head follows the adapted embedding.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

Params = dict[str, Tensor]
"""Parameter name (as in ``named_parameters()``) -> tensor."""

PRESETS: dict[str, str] = {
    "all": r".*",
    "query_encoder": r"query_model\..*",
    "generator": r"generator\..*",
    "generator_encoder": r"generator\.model\.(model\.)?encoder\..*",
    "decoder": r"generator\.(?!model\.(model\.)?(encoder|shared)\.).*",
    "cross_attention": (r"generator\..*\.(crossattention|EncDecAttention|encoder_attn"
                        r"|encoder_attn_layer_norm)\..*"
                        r"|generator\.model\.decoder\.block\.\d+\.layer\.1\.layer_norm\..*"),
    "embeddings": (r".*\.(word_embeddings|position_embeddings|token_type_embeddings|shared"
                   r"|embed_tokens|embed_positions|wte|wpe)\.weight"),
    "lora": r".*\.lora_[A-Za-z_]+\..*",
    "soft_prompt": r".*\.soft_prompt",
}
"""Named patterns (regular expressions over full parameter names); see the module docstring."""

TOP_LAYERS = "top_layers:"
# The layer stacks ``top_layers:N`` knows: (the ModuleList of blocks, a regex of what sits
# above them). The first one the model has is used.
_LAYER_STACKS = (
    ("generator.model.model.layers", r"generator\.model\.model\.norm\..*"),  # Gemma 3, Llama
    ("generator.model.decoder.bert.encoder.layer",                           # BERT2BERT decoder
     r"generator\.model\.decoder\.cls\.predictions\.(transform\..*|bias)"),
    ("generator.model.bert.encoder.layer",                                   # bert-lm
     r"generator\.model\.cls\.predictions\.(transform\..*|bias)"),
    ("generator.model.transformer.h", r"generator\.model\.transformer\.ln_f\..*"),  # GPT-2
)


def _top_layers(model: nn.Module, pattern: str) -> re.Pattern[str]:
    """The regex of ``top_layers:N`` on this model (its number of layers read from it)."""
    count = pattern[len(TOP_LAYERS):]
    if not count.isdigit() or int(count) < 1:
        raise ValueError(f"parameter preset {pattern!r}: N must be a whole number >= 1, "
                         f"e.g. 'top_layers:2'")
    n = int(count)
    modules = dict(model.named_modules())
    for path, above in _LAYER_STACKS:
        layers = modules.get(path)
        if isinstance(layers, nn.ModuleList):
            total = len(layers)
            if n > total:
                raise ValueError(f"parameter preset {pattern!r}: the generator has {total} "
                                 f"layers ({path}); pick N in 1..{total}")
            blocks = "|".join(str(i) for i in range(total - n, total))
            return re.compile(rf"{re.escape(path)}\.({blocks})\..*|{above}")
    known = ", ".join(path for path, _ in _LAYER_STACKS)
    raise ValueError(f"parameter preset {pattern!r}: the model has no layer stack it knows "
                     f"({known}); it works on a RAGModel whose generator is decoder-only "
                     "(Gemma 3, GPT-2, bert-lm) or BERT2BERT. Name the layers with a pattern "
                     "instead, e.g. 're:generator\\.model\\.decoder\\.block\\.5\\..*'")


def _matcher(pattern: str, model: nn.Module) -> re.Pattern[str]:
    if pattern.startswith(TOP_LAYERS):
        return _top_layers(model, pattern)
    if pattern in PRESETS:
        return re.compile(PRESETS[pattern])
    if pattern.startswith("re:"):
        try:
            return re.compile(pattern[3:])
        except re.error as err:
            raise ValueError(f"bad regular expression in parameter pattern {pattern!r}: {err}"
                             ) from err
    return re.compile(fnmatch.translate(pattern))


_ADAPTER_OPTION = {"lora": "lora=LoRAConfig(...)", "soft_prompt": "soft_prompt_tokens=n"}


def _no_match(pattern: str, role: str, names: Sequence[str], frozen: Sequence[str]) -> ValueError:
    if pattern in _ADAPTER_OPTION and not frozen:
        return ValueError(f"{role} pattern {pattern!r}: the model has no such adapter; build "
                          f"it with ModelConfig({_ADAPTER_OPTION[pattern]}) (YAML: model."
                          f"{_ADAPTER_OPTION[pattern].split('=')[0]})")
    if frozen:
        return ValueError(f"{role} pattern {pattern!r} matches only frozen parameters "
                          f"(requires_grad=False), e.g. {frozen[0]!r}; unfreeze them or pick "
                          "other parameters")
    step = max(1, len(names) // 6)
    shown = ", ".join(repr(n) for n in names[::step][:6])
    return ValueError(f"{role} pattern {pattern!r} matches no parameter of the model. Presets: "
                      f"{', '.join(PRESETS)}, {TOP_LAYERS}N; 're:<regex>' for a regular "
                      "expression; otherwise "
                      f"an fnmatch pattern over names such as {shown} ({len(names)} in all)")


def select_params(model: nn.Module, include: str | Sequence[str] = ("all",),
                  exclude: str | Sequence[str] = ()) -> list[str]:
    """Names of the trainable parameters to adapt, in the model's order.

    Args:
        model: Any module; the presets are written for `RAGModel`.
        include: Presets or patterns (see the module docstring); a name matching
            any of them is selected. ``"*"`` works as well as ``"all"``.
        exclude: Patterns removed from the selection afterwards.

    Returns:
        Parameter names as ``model.named_parameters()`` gives them (tied weights
        once), skipping parameters with ``requires_grad=False``.

    Raises:
        ValueError: A pattern matches no trainable parameter (the message lists
            presets and some real names), or nothing is left after ``exclude``.
    """
    include = [include] if isinstance(include, str) else list(include)
    exclude = [exclude] if isinstance(exclude, str) else list(exclude)
    if not include:
        raise ValueError("include is empty: give at least one preset or pattern, e.g. 'all'")
    named = list(model.named_parameters())
    trainable = [n for n, p in named if p.requires_grad]
    frozen = [n for n, p in named if not p.requires_grad]

    def matching(pattern: str, role: str) -> set[str]:
        # "A&B": the names both match (e.g. "lora&top_layers:4"). A "re:" part runs to the
        # end of the pattern, so a regex keeps its own "&": put it last.
        head, regex, tail = pattern.partition("re:")
        parts = [p for p in head.split("&") if p] + ([regex + tail] if regex else [])
        regexes = [_matcher(part, model) for part in parts]
        hits = {n for n in trainable if all(r.fullmatch(n) for r in regexes)}
        if not hits:
            raise _no_match(pattern, role, trainable or frozen,
                            [n for n in frozen if all(r.fullmatch(n) for r in regexes)])
        return hits

    chosen = set().union(*(matching(p, "include") for p in include))
    for pattern in exclude:
        chosen -= matching(pattern, "exclude")
    if not chosen:
        raise ValueError(f"no parameter left: include={include} selects only parameters that "
                         f"exclude={exclude} removes")
    return [n for n in trainable if n in chosen]


def split_params(model: nn.Module, names: Sequence[str]) -> tuple[Params, Params]:
    """Split the model's parameters into the meta-parameters to adapt and the frozen rest.

    Args:
        model: The module.
        names: Parameters to adapt, e.g. from `select_params`.

    Returns:
        ``(adapted, frozen)``. ``adapted`` holds the module's own ``nn.Parameter``
        objects (the meta-parameters: meta-gradients are taken w.r.t. them and the
        outer optimizer steps them); ``frozen`` holds detached views of every other
        parameter, so no autograd graph is built for them. Buffers stay in the module.

    Raises:
        ValueError: A name is not a parameter of the model, or is listed twice.
    """
    named = dict(model.named_parameters())
    unknown = [n for n in names if n not in named]
    if unknown:
        raise ValueError(f"{len(unknown)} names are not parameters of the model, e.g. "
                         f"{unknown[0]!r}; take names from select_params(model, ...)")
    if len(set(names)) != len(names):
        raise ValueError("parameter names repeat; each may be adapted once")
    wanted = set(names)
    adapted = {n: named[n] for n in names}
    frozen = {n: p.detach() for n, p in named.items() if n not in wanted}
    return adapted, frozen


def merge_params(adapted: Mapping[str, Tensor], frozen: Mapping[str, Tensor]) -> Params:
    """One dict for ``functional_call``: the frozen weights and the adapted ones.

    Raises:
        ValueError: A name is in both dicts (it would be ambiguous which one is used).
    """
    both = adapted.keys() & frozen.keys()
    if both:
        raise ValueError(f"{len(both)} parameters are both adapted and frozen, e.g. "
                         f"{next(iter(both))!r}; build the two dicts with split_params")
    return {**frozen, **adapted}


def call_with(model: nn.Module, adapted: Mapping[str, Tensor], frozen: Mapping[str, Tensor],
              *args: Any, **kwargs: Any) -> Any:
    """Run ``model(*args, **kwargs)`` with ``adapted`` and ``frozen`` weights swapped in.

    The module itself is left as it was (``torch.func.functional_call``).
    """
    return torch.func.functional_call(model, merge_params(adapted, frozen), args, kwargs)
