"""Log-likelihoods of target tokens from LM logits: what every loss in metarag is built on.

Pure functions of tensors, so they compose with ``torch.func.functional_call`` and
second-order autograd.
"""

from __future__ import annotations

import torch
from torch import nn

IGNORE_INDEX = -100  # label value that contributes nothing (padding, source tokens)


def sequence_log_likelihood(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of target-token log-probabilities per sequence.

    Args:
        logits: (B, T, V); position t scores ``labels[:, t]``.
        labels: (B, T) ids, -100 where nothing is predicted.

    Returns:
        (B,) float32; 0 for a row with no labelled token.
    """
    b, t, v = logits.shape
    # float32 softmax even for half-precision models; cross_entropy gives 0 at -100.
    nll = nn.functional.cross_entropy(logits.float().reshape(b * t, v), labels.reshape(b * t),
                                      ignore_index=IGNORE_INDEX, reduction="none")
    return -nll.view(b, t).sum(-1)


def labelled_log_likelihood(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """`sequence_log_likelihood` from logits at the labelled positions only.

    Args:
        logits: (N, V), one row per labelled token of ``labels`` in row-major order.
        labels: (B, T) ids, -100 where nothing is predicted (N entries are not).

    Returns:
        (B,) float32; 0 for a row with no labelled token.
    """
    labelled = labels != IGNORE_INDEX
    nll = nn.functional.cross_entropy(logits.float(), labels[labelled], reduction="none")
    rows = labelled.nonzero()[:, 0]                                                    # (N,)
    return torch.zeros(labels.shape[0], device=nll.device).index_add(0, rows, -nll)


def token_nll(log_likelihood: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood per labelled token: the usual LM training loss.

    A pure function of ``Generator.forward``'s output, so it composes with
    ``torch.func.functional_call``: ``token_nll(functional_call(gen, params,
    kwargs=batch), batch["labels"])``.

    Args:
        log_likelihood: (B,) per-sequence sums from ``Generator.forward``.
        labels: (B, T) the batch's labels (to count tokens).
    """
    n_tokens = (labels != IGNORE_INDEX).sum().clamp(min=1)
    return -log_likelihood.sum() / n_tokens
