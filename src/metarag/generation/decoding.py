"""A decoding constraint for greedy answers: no n-gram twice within one answer.

Hugging Face's ``no_repeat_ngram_size`` looks at the whole sequence, which for a
decoder-only model includes the prompt: it would forbid copying any phrase of the
passage, the very thing an extractive answer does. This one looks at the answer's
tokens only.
"""

from __future__ import annotations

import torch


class NoRepeatInAnswer:
    """Logits processor: ban each token that would repeat an n-gram of the answer so far.

    Args:
        n: The n-gram length (>= 1).
        start: Position where the answer begins in ``input_ids`` (a decoder-only
            model's prompt width; 0 for an encoder-decoder's decoder ids, whose
            single start token cannot form a repeat on its own).
    """

    def __init__(self, n: int, start: int = 0) -> None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.n, self.start = n, start

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        n = self.n
        for row, ids in enumerate(input_ids[:, self.start:].tolist()):
            if len(ids) < n - 1:
                continue
            prefix = ids[len(ids) - (n - 1):]  # the n-1 tokens a new token would extend
            banned = {ids[i + n - 1] for i in range(len(ids) - n + 1)
                      if ids[i:i + n - 1] == prefix}
            if banned:
                scores[row, list(banned)] = float("-inf")
        return scores
