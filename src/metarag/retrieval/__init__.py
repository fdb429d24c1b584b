"""Retrieval: dense encoder, FAISS index, BM25 and hybrid fusion.

Names are imported on first use (PEP 562 ``__getattr__``), so ``import
metarag.retrieval`` does not pull in torch, transformers or faiss.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from metarag.retrieval.bm25 import BM25Index, tokenize
    from metarag.retrieval.encoder import DenseEncoder, default_encoder_path
    from metarag.retrieval.hits import Hits
    from metarag.retrieval.hybrid import Retriever, reciprocal_rank_fusion
    from metarag.retrieval.index import DenseIndex
    from metarag.retrieval.passages import passage_text

_EXPORTS = {
    "BM25Index": "metarag.retrieval.bm25",
    "tokenize": "metarag.retrieval.bm25",
    "DenseEncoder": "metarag.retrieval.encoder",
    "default_encoder_path": "metarag.retrieval.encoder",
    "Hits": "metarag.retrieval.hits",
    "Retriever": "metarag.retrieval.hybrid",
    "reciprocal_rank_fusion": "metarag.retrieval.hybrid",
    "DenseIndex": "metarag.retrieval.index",
    "passage_text": "metarag.retrieval.passages",
}

__all__ = [
    "BM25Index",
    "DenseEncoder",
    "DenseIndex",
    "Hits",
    "Retriever",
    "default_encoder_path",
    "passage_text",
    "reciprocal_rank_fusion",
    "tokenize",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'metarag.retrieval' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
