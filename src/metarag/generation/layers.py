"""A decoder-only model's layer stack run in two parts: the frozen prefix and the rest.

When only the top layers adapt, the hidden states entering the lowest adapted layer
do not change, so `metarag.rag.model.PrefixCache` computes them once
(`Generator.prefix_states`) and each later forward runs only the layers above
(`top_logits`). This module is the one place that mirrors ``transformers``' decoder
internals (the Gemma 3 layout, which Llama-style models share; transformers 5.24).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable

import torch
from torch import nn

MASKS = ("full_attention", "sliding_attention")  # the layer types `run_layers` knows


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, L) positions of a left-padded batch, counted from each row's first real token."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def layer_stack(model: nn.Module) -> nn.Module:
    """A causal LM's embedding + layers + norm + rotary embedding (Gemma 3: ``model.model``).

    Raises:
        ValueError: The model is not a causal decoder laid out like Gemma 3.
    """
    stack = getattr(model, "model", None)
    parts = ("embed_tokens", "layers", "norm", "rotary_emb")
    config = getattr(stack, "config", None)
    types = set(getattr(config, "layer_types", None) or ["full_attention"])
    if (stack is None or not all(hasattr(stack, p) for p in parts)
            or getattr(config, "use_bidirectional_attention", False)
            or not types <= set(MASKS)):
        raise ValueError("running layers on their own needs a causal decoder laid out like "
                         "Gemma 3 (model.model.embed_tokens, .layers, .norm, .rotary_emb); "
                         f"this one is {type(model).__name__}")
    return stack


def first_adapted_layer(root: nn.Module, stack: nn.Module, adapted: Iterable[str]) -> int:
    """The lowest layer of ``stack`` a name in ``adapted`` lies in (`Generator.frozen_layers`).

    Args:
        root: The module ``adapted`` names are relative to.
        stack: The layer stack inside ``root`` (`layer_stack`).
        adapted: Parameter names as ``root.named_parameters()`` gives them.

    Returns:
        The number of layers when no name lies in one; 0 when a name lies below the
        layers or beside them (the embedding, a soft prompt); names above them (the
        final norm, an untied LM head) do not count.
    """
    base = next(name for name, module in root.named_modules() if module is stack)
    in_layer = re.compile(rf"{re.escape(base)}\.layers\.(\d+)\.")
    above = (f"{base}.norm.", "model.lm_head.")
    first = len(stack.layers)
    for name in adapted:
        if match := in_layer.match(name):
            first = min(first, int(match.group(1)))
        elif not name.startswith(above):
            return 0
    return first


def run_layers(stack: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor,
               positions: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Layers ``start .. stop-1`` of a decoder stack on (B, L, H) ``hidden``, without its norm.

    Each layer gets the arguments ``Gemma3TextModel.forward`` (transformers 5.24)
    gives it, built the same way (the public mask functions of
    ``transformers.masking_utils`` per layer type, the model's rotary embedding per
    layer type). The masks and rotary tables depend on positions only, so
    recomputing them is cheap. tests/unit/meta/test_prefix_cache.py checks the
    result against the full forward bit for bit, so an upstream change that alters
    it fails a test.
    """
    from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

    if start >= stop:
        return hidden
    make_mask = dict(zip(MASKS, (create_causal_mask, create_sliding_window_causal_mask)))
    config = stack.config
    types = getattr(config, "layer_types", None) or ["full_attention"] * len(stack.layers)
    needed = set(types[start:stop])
    mask_kwargs = {"config": config, "inputs_embeds": hidden, "attention_mask": attention_mask,
                   "cache": None, "position_ids": positions}
    masks = {t: make_mask[t](**mask_kwargs) for t in needed}
    by_type = "layer_type" in inspect.signature(stack.rotary_emb.forward).parameters
    rope = {t: stack.rotary_emb(hidden, positions, t) if by_type
            else stack.rotary_emb(hidden, positions) for t in needed}
    for i in range(start, stop):
        out = stack.layers[i](hidden, attention_mask=masks[types[i]],
                              position_embeddings=rope[types[i]], position_ids=positions)
        hidden = out[0] if isinstance(out, tuple) else out
    return hidden


def check_layer(stack: nn.Module, layer: int, name: str) -> None:
    if not 0 <= layer <= len(stack.layers):
        raise ValueError(f"{name} must be in 0..{len(stack.layers)} (the model's layers), "
                         f"got {layer}")


def top_logits(model: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor,
               from_layer: int, labelled: torch.Tensor) -> torch.Tensor:
    """(N, V) logits at the labelled positions, from layer ``from_layer``'s input states.

    The rest of a left-padded decoder-only forward: layers ``from_layer`` up, the
    final norm and the LM head (at the N labelled positions only), then the model's
    logit soft-capping if it has one.

    Args:
        model: The causal LM.
        hidden: (B, L, H) states entering layer ``from_layer``.
        attention_mask: (B, L), 1 on real tokens.
        from_layer: The first layer to run.
        labelled: (B, T) True where a label at the right edge is predicted.
    """
    stack = layer_stack(model)
    check_layer(stack, from_layer, "from_layer")
    hidden = run_layers(stack, hidden, attention_mask, position_ids(attention_mask), from_layer,
                        len(stack.layers))                                            # (B, L, H)
    t = labelled.shape[1]
    # Positions L-T-1 .. L-2 predict the T labels at the sequence's right edge.
    hidden = hidden[:, -t - 1:-1][labelled]                                            # (N, H)
    logits = model.get_output_embeddings()(stack.norm(hidden))                         # (N, V)
    cap = getattr(model.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits
