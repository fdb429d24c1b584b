"""FAISS index over passage embeddings: build, search, save and load.

Embeddings are unit length (see ``DenseEncoder``), so every index uses the
inner-product metric and scores are cosine similarities.

Which FAISS index (``kind``):

- ``"flat"`` (``IndexFlatIP``): exact search. A query costs N x D multiply-adds;
  at 50k passages and D=384 that is well under 10 ms on one CPU core, so exact is
  the right answer for every per-domain corpus metarag meets in practice.
- ``"hnsw"`` (``IndexHNSWFlat``, M=32): graph search, sub-millisecond queries and
  high recall at any size; costs ~17% more memory than flat at D=384 and a slower
  build, which is small next to encoding the corpus in the first place.
- ``"ivf"`` (``IndexIVFFlat``): k-means buckets, ``nlist ~ 4 sqrt(N)``, probing
  ``nlist / 16`` of them; memory-lean and quick to build, but its recall at a
  fixed ``nprobe`` depends on how clustered the embeddings are.
- ``"auto"``: flat up to ``AUTO_FLAT_MAX`` (50k) passages, HNSW above (see
  docs/BENCHMARKS.md for the latency and recall behind this choice).

On disk an index is a directory of three files, each written to a temporary
name and renamed into place, ``index.json`` last:
``index.faiss`` (FAISS's own binary format, no pickle), ``passages.jsonl`` and
``index.json`` (kind, dim, count, file sizes, encoder identity, versions).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from metarag.data.io import read_json, require
from metarag.data.schema import Passage
from metarag.errors import DataError, IndexMismatchError
from metarag.retrieval.hits import Hits
from metarag.retrieval.passages import check_passages, passage_text, read_passages, write_passages

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from metarag.retrieval.encoder import DenseEncoder

IndexKind = Literal["auto", "flat", "ivf", "hnsw"]
KINDS = ("auto", "flat", "ivf", "hnsw")

AUTO_FLAT_MAX = 50_000  # "auto" stays exact up to this many passages
HNSW_M = 32  # graph degree: 32 is FAISS's usual choice for D in the hundreds
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 64
# FAISS's k-means wants >= 39 training points per centroid; sample up to 64 per
# centroid so training on a million passages takes seconds, not minutes.
IVF_MIN_POINTS_PER_LIST = 39
IVF_TRAIN_POINTS_PER_LIST = 64

INDEX_FILE, PASSAGES_FILE, META_FILE = "index.faiss", "passages.jsonl", "index.json"
FORMAT, FORMAT_VERSION = "metarag.dense_index", 1


def auto_kind(n: int) -> str:
    """The index kind ``kind="auto"`` picks for a corpus of n passages."""
    return "flat" if n <= AUTO_FLAT_MAX else "hnsw"


def ivf_nlist(n: int) -> int:
    """IVF bucket count: ~4 sqrt(n), but never fewer than 39 training points per bucket."""
    return max(1, min(round(4 * math.sqrt(n)), n // IVF_MIN_POINTS_PER_LIST))


def ivf_nprobe(nlist: int) -> int:
    """Buckets probed per query: 1/16 of them (at least 8, at most all)."""
    return min(nlist, max(8, nlist // 16))


class DenseIndex:
    """Passages, their embeddings in a FAISS index, and the encoder for queries.

    Build with :meth:`build` (encodes the passages) or :meth:`from_embeddings`;
    reopen with :meth:`load`.

    Attributes:
        passages: The indexed passages; FAISS row i is ``passages[i]``.
        index: The FAISS index.
        kind: "flat", "ivf" or "hnsw" (never "auto" once built).
        encoder: Encodes queries for :meth:`search`; None for an index built from
            precomputed embeddings (then only :meth:`search_embeddings` works).
        encoder_identity: ``DenseEncoder.identity()`` of the encoder that embedded
            the passages, or None.
        language: ISO 639-1 code of the corpus, recorded so that a BM25 index
            built from a loaded index's passages picks the right tokenizer.
    """

    def __init__(self, passages: list[Passage], index: Any, *, kind: str,
                 encoder: DenseEncoder | None = None,
                 encoder_identity: dict[str, Any] | None = None,
                 language: str = "en") -> None:
        self.passages = passages
        self.index = index
        self.kind = kind
        self.encoder = encoder
        self.encoder_identity = encoder_identity
        self.language = language

    # ---- construction -------------------------------------------------------------

    @classmethod
    def build(cls, passages: Sequence[Passage], encoder: DenseEncoder, *,
              kind: IndexKind = "auto", batch_size: int = 64,
              show_progress: bool = False, language: str = "en") -> DenseIndex:
        """Encode passages (as :func:`passage_text`) and index them.

        Args:
            passages: The corpus; ids must be unique.
            encoder: Embeds the passages now and the queries later.
            kind: "flat", "ivf", "hnsw", or "auto" (see the module docstring).
            batch_size: Passages per encoder forward pass.
            show_progress: Show a progress bar while encoding.
            language: The corpus language (recorded, see ``language`` above).

        Raises:
            ValueError: Empty corpus, duplicate passage ids or unknown kind.
        """
        passages = check_passages(passages)
        _check_kind(kind)
        embeddings = encoder.encode([passage_text(p) for p in passages],
                                    batch_size=batch_size, show_progress=show_progress)
        return cls.from_embeddings(passages, embeddings, encoder=encoder, kind=kind,
                                   language=language)

    @classmethod
    def from_embeddings(cls, passages: Sequence[Passage], embeddings: np.ndarray, *,
                        encoder: DenseEncoder | None = None,
                        kind: IndexKind = "auto", language: str = "en") -> DenseIndex:
        """Index precomputed passage embeddings.

        Args:
            passages: The corpus; row i of ``embeddings`` belongs to ``passages[i]``.
            embeddings: (N, D) float array, rows unit length for cosine scores.
            encoder: The encoder that made the embeddings (for queries and the saved
                identity), or None.
            kind: "flat", "ivf", "hnsw" or "auto".
            language: The corpus language (recorded).
        """
        passages = check_passages(passages)
        _check_kind(kind)
        emb = np.ascontiguousarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] != len(passages):
            raise ValueError(f"embeddings must have shape ({len(passages)}, D) for "
                             f"{len(passages)} passages, got {emb.shape}")
        if encoder is not None and emb.shape[1] != encoder.dim:
            raise ValueError(f"embeddings are {emb.shape[1]}-d but the encoder is {encoder.dim}-d")
        if not np.isfinite(emb).all():
            raise ValueError("embeddings contain NaN or inf; check the encoder's output")
        chosen = auto_kind(len(passages)) if kind == "auto" else kind
        index = _new_faiss_index(chosen, emb)
        identity = encoder.identity() if encoder is not None else None
        return cls(passages, index, kind=chosen, encoder=encoder, encoder_identity=identity,
                   language=language)

    # ---- search -------------------------------------------------------------------

    @property
    def dim(self) -> int:
        """Embedding width D."""
        return int(self.index.d)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, questions: Sequence[str], k: int, *, batch_size: int = 64) -> Hits:
        """Encode questions and return the k passages with the highest cosine for each.

        Raises:
            ValueError: When the index has no encoder (built from embeddings).
        """
        if self.encoder is None:
            raise ValueError("this DenseIndex has no encoder: pass one to DenseIndex.load(..., "
                             "encoder=...) or use search_embeddings() with your own vectors")
        if isinstance(questions, str):
            raise TypeError("search expects a list of questions, got a single str; wrap it: [q]")
        q = self.encoder.encode(list(questions), batch_size=batch_size)
        return self.search_embeddings(q, k)

    def search_embeddings(self, queries: np.ndarray, k: int) -> Hits:
        """Top-k passages for query embeddings.

        Args:
            queries: (Q, D) or (D,) float array, unit-length rows.
            k: Hits per query; clamped to the corpus size.

        Returns:
            Hits with ``method="dense"``; FAISS's "no result" slots (id -1, which an
            approximate index may leave) are dropped, so a list can be shorter than k.
        """
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"query embeddings must have shape (Q, {self.dim}), got {q.shape}")
        k = min(int(k), len(self))
        if k <= 0 or q.shape[0] == 0:
            return Hits([[] for _ in range(q.shape[0])], [[] for _ in range(q.shape[0])], "dense")
        scores, rows = self.index.search(q, k)  # both (Q, k)
        ids, out_scores = [], []
        for row_ids, row_scores in zip(rows.tolist(), scores.tolist(), strict=True):
            keep = [(self.passages[i].id, s) for i, s in zip(row_ids, row_scores, strict=True)
                    if i >= 0]
            ids.append([i for i, _ in keep])
            out_scores.append([s for _, s in keep])
        return Hits(ids, out_scores, "dense")

    def set_search_params(self, *, nprobe: int | None = None,
                          ef_search: int | None = None) -> None:
        """Trade speed for recall: IVF buckets probed, or HNSW candidate-list size."""
        if nprobe is not None:
            if self.kind != "ivf":
                raise ValueError(f"nprobe applies to an IVF index; this one is {self.kind!r}")
            self.index.nprobe = int(nprobe)
        if ef_search is not None:
            if self.kind != "hnsw":
                raise ValueError(f"ef_search applies to an HNSW index; this one is {self.kind!r}")
            self.index.hnsw.efSearch = int(ef_search)

    def search_params(self) -> dict[str, int]:
        """The index's speed/recall knobs: IVF ``nlist``/``nprobe``, HNSW ``M``/``ef_search``."""
        if self.kind == "ivf":
            return {"nlist": int(self.index.nlist), "nprobe": int(self.index.nprobe)}
        if self.kind == "hnsw":
            return {"M": HNSW_M, "ef_search": int(self.index.hnsw.efSearch)}
        return {}

    def stored_embeddings(self) -> np.ndarray | None:
        """The (N, D) passage vectors the FAISS index holds, or None if it cannot return them."""
        import faiss

        try:
            if self.kind == "ivf":
                # IVF lists are keyed by bucket; reconstruction needs the id -> slot map.
                faiss.extract_index_ivf(self.index).make_direct_map()
            return self.index.reconstruct_n(0, len(self))
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
            logger.info("the %s index cannot return its vectors (%s)", self.kind, first)
            return None

    # ---- persistence --------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Write ``index.faiss``, ``passages.jsonl`` and ``index.json`` into a directory.

        Each file goes to a temporary name first and is renamed into place, the
        metadata last, so an interrupted save never leaves a half-written file under
        a real name; the recorded file sizes catch a mix of old and new files.

        Returns:
            The directory.
        """
        import faiss

        import metarag

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tmp = {name: directory / f".{name}.tmp-{os.getpid()}"
               for name in (INDEX_FILE, PASSAGES_FILE, META_FILE)}
        try:
            faiss.write_index(self.index, str(tmp[INDEX_FILE]))
            write_passages(self.passages, tmp[PASSAGES_FILE])
            meta = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "kind": self.kind,
                "metric": "inner_product",
                "dim": self.dim,
                "count": len(self),
                "language": self.language,
                "search_params": self.search_params(),
                "files": {name: tmp[name].stat().st_size for name in (INDEX_FILE, PASSAGES_FILE)},
                "encoder": self.encoder_identity,
                "metarag_version": metarag.__version__,
                "faiss_version": faiss.__version__,
            }
            tmp[META_FILE].write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
            for name in (INDEX_FILE, PASSAGES_FILE, META_FILE):
                os.replace(tmp[name], directory / name)
        finally:
            for path in tmp.values():
                path.unlink(missing_ok=True)
        return directory

    @classmethod
    def load(cls, directory: str | Path, encoder: DenseEncoder | None = None) -> DenseIndex:
        """Reopen a saved index.

        Args:
            directory: What :meth:`save` wrote.
            encoder: The query encoder. Must be the one that built the index (same
                weight fingerprint). None loads it from the saved ``name_or_path``.

        Raises:
            DataError: A file is missing, corrupt or inconsistent with ``index.json``;
                the message names the file.
            IndexMismatchError: The encoder is not the one the index was built with.
        """
        import faiss

        directory = Path(directory)
        meta_path = directory / META_FILE
        if not directory.is_dir():
            raise DataError(directory, None, "index directory not found; build one with "
                            "DenseIndex.build(...).save(dir)")
        meta = read_json(meta_path)
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise DataError(meta_path, None, f"not a metarag dense index (expected "
                            f"\"format\": \"{FORMAT}\")")
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise DataError(meta_path, "format_version", "written by a newer metarag; upgrade "
                            "metarag or rebuild the index")
        kind = require(meta, "kind", meta_path, "$", str)
        dim = require(meta, "dim", meta_path, "$", int)
        count = require(meta, "count", meta_path, "$", int)
        sizes = require(meta, "files", meta_path, "$", dict)
        identity = meta.get("encoder")
        if identity is not None and not (
                isinstance(identity, dict)
                and {"name_or_path", "dim", "max_length", "fingerprint"} <= identity.keys()):
            raise DataError(meta_path, "encoder", "expected null or an object with name_or_path, "
                            "dim, max_length and fingerprint; rebuild the index")
        if kind not in KINDS[1:]:
            raise DataError(meta_path, "kind", f"unknown index kind {kind!r}")

        for name in (INDEX_FILE, PASSAGES_FILE):
            path = directory / name
            if not path.is_file():
                raise DataError(path, None, "file not found; the index directory is incomplete, "
                                "rebuild the index")
            if name in sizes and path.stat().st_size != sizes[name]:
                raise DataError(path, None, f"{path.stat().st_size} bytes but {META_FILE} "
                                f"records {sizes[name]}: the file was replaced or a save was "
                                "interrupted; rebuild the index")
        try:
            index = faiss.read_index(str(directory / INDEX_FILE))
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise DataError(directory / INDEX_FILE, None, f"not a readable FAISS index ({first}); "
                            "rebuild the index") from None
        if index.ntotal != count or index.d != dim:
            raise DataError(directory / INDEX_FILE, None, f"holds {index.ntotal} vectors of "
                            f"dim {index.d}, but {META_FILE} says {count} of dim {dim}; "
                            "rebuild the index")
        passages = read_passages(directory / PASSAGES_FILE)
        if len(passages) != count:
            raise DataError(directory / PASSAGES_FILE, None, f"{len(passages)} passages, but "
                            f"{META_FILE} says {count}; rebuild the index")
        if kind == "ivf":
            index.nprobe = int(meta.get("search_params", {}).get("nprobe", index.nprobe))
        elif kind == "hnsw":
            ef = meta.get("search_params", {}).get("ef_search", HNSW_EF_SEARCH)
            index.hnsw.efSearch = int(ef)

        encoder = _resolve_encoder(encoder, identity, dim, directory)
        language = meta.get("language", "en")
        if not isinstance(language, str):
            raise DataError(meta_path, "language", f"expected a string, got {language!r}")
        return cls(passages, index, kind=kind, encoder=encoder, encoder_identity=identity,
                   language=language)

    def __repr__(self) -> str:
        name = self.encoder_identity["name_or_path"] if self.encoder_identity else None
        return (f"DenseIndex(kind={self.kind!r}, passages={len(self)}, dim={self.dim}, "
                f"encoder={name!r})")


def _new_faiss_index(kind: str, emb: np.ndarray) -> Any:
    """Build a FAISS inner-product index of the given kind over (N, D) float32 rows."""
    import faiss

    n, d = emb.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
    else:
        nlist = ivf_nlist(n)
        # index_factory owns its coarse quantizer (no dangling-pointer bookkeeping).
        index = faiss.index_factory(d, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
        train = emb
        if n > IVF_TRAIN_POINTS_PER_LIST * nlist:
            rng = np.random.default_rng(0)  # seeded: the same corpus gives the same buckets
            train = emb[np.sort(rng.choice(n, IVF_TRAIN_POINTS_PER_LIST * nlist, replace=False))]
        index.train(train)
        index.nprobe = ivf_nprobe(nlist)
    index.add(emb)
    return index



def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown index kind {kind!r}; expected one of {', '.join(KINDS)}")



def _describe(identity: dict[str, Any] | None) -> str:
    if identity is None:
        return "no recorded encoder"
    return (f"{identity.get('name_or_path')!r} (dim {identity.get('dim')}, "
            f"fingerprint {str(identity.get('fingerprint'))[:12]})")


def _resolve_encoder(encoder: DenseEncoder | None, identity: dict[str, Any] | None, dim: int,
                     directory: Path) -> DenseEncoder | None:
    """The query encoder for a loaded index, refusing one that did not build it."""
    loaded_from_record = encoder is None
    if encoder is None:
        if identity is None:
            return None  # built from raw embeddings: search_embeddings() only
        from metarag.retrieval.encoder import DenseEncoder

        try:
            encoder = DenseEncoder.from_pretrained(identity["name_or_path"],
                                                   max_length=int(identity["max_length"]))
        except OSError as err:
            raise OSError(f"index at {directory} was built with encoder "
                          f"{identity['name_or_path']!r}, which cannot be loaded here ({err}); "
                          "pass the same model as DenseIndex.load(dir, encoder=...)") from err
    given = encoder.identity()
    if identity is None:
        if given["dim"] != dim:
            raise IndexMismatchError(f"index at {directory} holds {dim}-d vectors but the encoder "
                                     f"{_describe(given)} makes {given['dim']}-d ones")
        return encoder
    if given["fingerprint"] != identity.get("fingerprint") or given["dim"] != dim:
        if loaded_from_record:
            raise IndexMismatchError(
                f"index at {directory} was built with encoder {_describe(identity)}, but the "
                f"model now at that path is {_describe(given)}: its weights changed since. "
                "Rebuild the index, or pass the original encoder as DenseIndex.load(dir, "
                "encoder=...)."
            )
        raise IndexMismatchError(
            f"index at {directory} was built with encoder {_describe(identity)}, but the encoder "
            f"given is {_describe(given)}. Rebuild the index with this encoder "
            "(DenseIndex.build(passages, encoder).save(dir)), or load it with the encoder that "
            "built it (encoder=None loads it from the recorded name_or_path)."
        )
    return encoder
