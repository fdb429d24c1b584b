"""BERT cross-attention that never projects the encoder states to keys and values.

A decoder's cross-attention projects all S encoder states to keys and values in
every layer (2 * S * D^2 multiply-adds per source and layer), while a training
answer has only T << S tokens. Multiplying the other way round gives the same
numbers from the T queries' side, per head h:

    scores_h = Q_h K_h^T = (Q_h W_k,h) E^T  (+ Q_h . b_k,h, equal for every key:
                                             softmax cancels it, so b_k is unused)
    out_h    = P_h V_h   = (P_h E) W_v,h^T + rowsum(P_h) b_v,h

with E the (S, D) encoder states and P_h the attention probabilities. That costs
2 * h * T * S * D + 2 * T * D^2 multiply-adds instead of 2 * S * D^2 + 2 * T * S * D:
about 3x fewer for T = 9, S = 128, D = 384 and 12 heads. For backward it stores two
(h * T, D) tensors per source instead of the (S, D) keys and values. So it is used
while h * T <= S, where it is both cheaper and lighter (with MiniLM's 12 heads:
answers of up to 10 tokens against 128-token sources), and the original form
otherwise. Generation (``past_key_values`` given) keeps the original path too, whose
cached keys and values serve every new token, and so do key or value layers wrapped
by an adapter (LoRA), whose weight is not theirs alone.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import torch
from torch import nn


@cache
def absorbed_cross_attention_class() -> type[nn.Module]:
    """The `BertCrossAttention` subclass (imported lazily, like transformers itself)."""
    from transformers.models.bert.modeling_bert import BertCrossAttention

    class AbsorbedBertCrossAttention(BertCrossAttention):
        def forward(self, hidden_states: torch.Tensor,
                    encoder_hidden_states: torch.Tensor | None = None,
                    attention_mask: torch.Tensor | None = None, past_key_values: Any = None,
                    **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
            if (past_key_values is not None or encoder_hidden_states is None
                    or type(self.key) is not nn.Linear or type(self.value) is not nn.Linear
                    or not _absorbing_pays(self, hidden_states, encoder_hidden_states)):
                return super().forward(hidden_states, encoder_hidden_states, attention_mask,
                                       past_key_values, **kwargs)
            return _absorbed(self, hidden_states, encoder_hidden_states, attention_mask)

    return AbsorbedBertCrossAttention


def _absorbing_pays(attn: Any, hidden: torch.Tensor, encoder: torch.Tensor) -> bool:
    """Whether the absorbed form is both cheaper and lighter: h * T <= S.

    It stores two (h * T, D) tensors per source where the original stores its (S, D)
    keys and values, and its multiply-adds are fewer up to T ~ S * D / ((h - 1) * S + D).
    """
    return attn.num_attention_heads * hidden.shape[1] <= encoder.shape[1]


def _absorbed(attn: Any, hidden: torch.Tensor, encoder: torch.Tensor,
              mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    b, t, _ = hidden.shape
    h, d = attn.num_attention_heads, attn.attention_head_size
    q = attn.query(hidden).view(b, t, h, d)
    w_k = attn.key.weight.view(h, d, -1)                                          # (h, d, D)
    qk = torch.einsum("bthd,hdD->bhtD", q, w_k).reshape(b, h * t, -1)             # (B, hT, D)
    scores = torch.bmm(qk, encoder.transpose(1, 2)).view(b, h, t, -1) * attn.scaling
    if mask is not None:  # additive (eager attention) or boolean (True = attend)
        scores = (scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
                  if mask.dtype == torch.bool else scores + mask)
    probs = nn.functional.softmax(scores, dim=-1)                                 # (B, h, T, S)
    probs = nn.functional.dropout(probs, p=attn.dropout.p, training=attn.training)
    mixed = torch.bmm(probs.reshape(b, h * t, -1), encoder).view(b, h, t, -1)    # (B, h, T, D)
    w_v = attn.value.weight.view(h, d, -1)                                        # (h, d, D)
    out = torch.einsum("bhtD,hdD->bthd", mixed, w_v)
    # Dropout leaves rows of P not summing to 1, so the value bias is weighted by the sums.
    out = out + probs.sum(-1).transpose(1, 2)[..., None] * attn.value.bias.view(h, d)
    return out.reshape(b, t, h * d), probs


def absorb_cross_attention(model: nn.Module) -> int:
    """Switch every BERT cross-attention module of ``model`` to the absorbed form, in place.

    Weights, names and saved checkpoints are unchanged (only the modules' class
    changes). Returns how many modules were switched.
    """
    from transformers.models.bert.modeling_bert import BertCrossAttention

    absorbed = absorbed_cross_attention_class()
    switched = 0
    for module in model.modules():
        if type(module) is BertCrossAttention:
            module.__class__ = absorbed
            switched += 1
    return switched
