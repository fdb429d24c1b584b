"""RAG losses as pure functions of retrieval scores and generator likelihoods.

RAG-sequence (Lewis et al. 2020, "Retrieval-Augmented Generation for
Knowledge-Intensive NLP Tasks", eq. 1): the answer y is generated from one
latent passage z, marginalised over the top-k:

    p(y|x) = sum_z p(z|x) * p(y|x,z),   p(z|x) = softmax_z(s(x, z) / tau)

Its negative log is differentiable in both the retrieval scores (so the
generator's loss trains the query encoder) and the generator's likelihoods.
"""

from __future__ import annotations

import torch


def rag_sequence_nll(doc_logits: torch.Tensor, seq_loglik: torch.Tensor) -> torch.Tensor:
    """-log sum_z p(z|x) p(y|x,z) per example.

    Args:
        doc_logits: (B, K) retrieval scores divided by the temperature.
        seq_loglik: (B, K) log p(y|x,z), the answer's summed token log-probabilities
            given the question and passage z.

    Returns:
        (B,) negative marginal log-likelihoods.
    """
    if doc_logits.shape != seq_loglik.shape:
        raise ValueError(f"doc_logits {tuple(doc_logits.shape)} and seq_loglik "
                         f"{tuple(seq_loglik.shape)} must have the same (B, K) shape")
    return -torch.logsumexp(doc_logits.log_softmax(dim=-1) + seq_loglik, dim=-1)


def passage_posterior(doc_logits: torch.Tensor, seq_loglik: torch.Tensor) -> torch.Tensor:
    """p(z|x,y): how much each passage explains the answer, (B, K), rows sum to 1.

    This is what an answer cites: the passages the generated answer rests on.
    """
    return (doc_logits.log_softmax(dim=-1) + seq_loglik).softmax(dim=-1)
