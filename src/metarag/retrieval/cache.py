"""On-disk cache of passage embeddings, keyed by encoder and corpus.

Embedding a large corpus is the slowest part of setting up a task on CPU
(MedQuAD's 33k passages take ~20 minutes); the passage encoder is frozen, so
the result only changes when the encoder's weights or the passages change.
Files are plain ``.npy`` read with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from metarag.data.schema import Passage

logger = logging.getLogger(__name__)


def corpus_fingerprint(passages: Sequence[Passage]) -> str:
    """sha256 over the passage ids and the text the encoder sees."""
    from metarag.retrieval.passages import passage_text

    digest = hashlib.sha256()
    for p in passages:
        digest.update(p.id.encode() + b"\0" + passage_text(p).encode() + b"\0")
    return digest.hexdigest()


def cached_embeddings(encoder, passages: Sequence[Passage], cache_dir: str | Path | None, *,
                      batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
    """Embed passages with ``encoder``, reusing ``cache_dir`` when it holds them already.

    Args:
        encoder: A `DenseEncoder` (its weight fingerprint is part of the key).
        passages: The corpus.
        cache_dir: Folder for ``.npy`` files; None disables caching.
    """
    from metarag.retrieval.passages import passage_text

    def embed() -> np.ndarray:
        return encoder.encode([passage_text(p) for p in passages], batch_size=batch_size,
                              show_progress=show_progress)

    if cache_dir is None:
        return embed()
    key = f"{encoder.fingerprint()[:16]}-{corpus_fingerprint(passages)[:16]}.npy"
    path = Path(cache_dir) / key
    if path.is_file():
        emb = np.load(path, allow_pickle=False)
        if emb.shape == (len(passages), encoder.dim):
            logger.debug("passage embeddings from cache %s", path)
            return emb
        logger.warning("ignoring cache %s: shape %s does not fit", path, emb.shape)
    emb = embed()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}.npy")
    np.save(tmp, emb, allow_pickle=False)
    os.replace(tmp, path)
    return emb
