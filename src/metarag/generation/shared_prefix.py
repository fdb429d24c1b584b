"""Batched generation that runs the prompt prefix every row shares once.

In-context prompts start with the same demonstrations in every row of a batch
(`causal_prompt`: demos, then the passages and the question): with 6 demos in a
1,024-token budget that is most of each prompt. `shared_prefix_cache` runs the
common prefix once (batch 1) and lays its keys and values out as the cache that
``generate`` would hold after prefilling those slots of the left-padded batch, so
``generate`` prefills only what follows.

Layout: row i, left-padded by p_i, holds the prefix in slots p_i .. p_i + n. The
cache covers slots 0 .. n: p_i pad slots (zeros, masked), then the prefix's first
n - p_i tokens; ``generate`` feeds the slots after n (the prefix's last p_i tokens
and the row's own). Every token keeps its slot and position, so attention masks,
positions and sliding windows are those of the plain batch: the answers are the
same up to the float rounding of other matrix shapes.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

# Below this many shared tokens the extra forward is not worth it.
MIN_SHARED_TOKENS = 32


def common_prefix_length(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> int:
    """Tokens every row of a left-padded batch starts with (after its padding)."""
    lengths = attention_mask.sum(1)
    pads = input_ids.shape[1] - lengths
    shared = int(lengths.min())
    first = input_ids[0, int(pads[0]):int(pads[0]) + shared]
    for row, pad in zip(input_ids[1:], pads[1:].tolist()):
        differ = (row[pad:pad + shared] != first[:shared]).nonzero()
        if len(differ):
            shared = int(differ[0])
    return shared


def supports_shared_prefix(model: Any) -> bool:
    """A decoder-only ``transformers`` model that takes a cache and positions, and can
    skip the logits (`shared_prefix_cache` checks its cache layers too)."""
    params = inspect.signature(model.forward).parameters
    return (not getattr(model.config, "is_encoder_decoder", False)
            and all(name in params for name in ("cache", "logits_to_keep", "position_ids")))


def shared_prefix_cache(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
                        min_tokens: int = MIN_SHARED_TOKENS) -> Any | None:
    """The cache to pass to ``model.generate(input_ids, attention_mask, cache=...,
    use_cache=True)`` (module docstring); None when the rows share fewer than
    ``min_tokens`` tokens, there is one row, or the model's cache is not one of plain
    and sliding-window key/value layers (linear attention, shared KV, a static cache).

    Call it under the same precision and attention settings as ``generate``.
    """
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    batch, width = input_ids.shape
    if batch < 2 or getattr(model.generation_config, "cache_implementation", None) not in (
            None, "hybrid"):  # generate refuses a cache beside another implementation
        return None
    slots = min(common_prefix_length(input_ids, attention_mask), width - 1)
    if slots < min_tokens:
        return None
    cache = DynamicCache(config=model.config)  # trims sliding-window layers as generate would
    if not all(type(layer) in (DynamicLayer, DynamicSlidingWindowLayer) for layer in cache.layers):
        return None
    pads = (width - attention_mask.sum(1)).tolist()
    prefix = input_ids[:1, pads[0]:pads[0] + slots]
    # Plain layers keep every slot, sliding-window ones too: the rows need the first tokens.
    computed = DynamicCache()
    with torch.no_grad():
        model(input_ids=prefix, position_ids=torch.arange(slots, device=prefix.device)[None],
              cache=computed, use_cache=True, logits_to_keep=1)
    for index, layer in enumerate(computed.layers):
        cache.update(_by_row(layer.keys, pads, slots), _by_row(layer.values, pads, slots), index)
    return cache


def _by_row(states: torch.Tensor, pads: list[int], slots: int) -> torch.Tensor:
    """(1, heads, n, d) prefix states -> (B, heads, n, d): row i shifted right by its padding."""
    out = states.new_zeros((len(pads), *states.shape[1:]))
    for row, pad in enumerate(pads):
        if pad < slots:
            out[row, :, pad:] = states[0, :, :slots - pad]
    return out
