"""The domains a server answers for: what each one is on disk, and which are loaded.

A domain is an adapted checkpoint (`metarag adapt --out DIR`: ``DIR/step-*`` holds
the weights that differ from the pretrained base, ``DIR/index`` the domain's
passage index) under a name. Registering one (`inspect_domain`) reads only its
small files, so a bad folder is refused at once with the reason: no checkpoint,
another base, another model config, weights that do not fit, an index built with
another encoder. Its tensors and passages are loaded on first use and kept in a
`DomainCache`, bounded in bytes, least recently used dropped first.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metarag.errors import MetaRAGError

if TYPE_CHECKING:
    import torch

    from metarag.generation.prompt import Demo
    from metarag.rag.build import BuiltModel, ModelConfig
    from metarag.rag.model import CorpusState, RAGConfig

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
INDEX_DIR = "index"  # where `metarag adapt` writes the domain's index
_uids = itertools.count(1)


class DomainError(MetaRAGError, ValueError):
    """A domain cannot be served as given: the message says what is wrong and where."""


class UnknownDomain(MetaRAGError, KeyError):
    """No domain of that name is registered."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name, self.known = name, known
        super().__init__(f"unknown domain {name!r}; known domains: "
                         f"{', '.join(known) if known else '(none)'}")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


def check_name(name: str) -> str:
    """A domain name: 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit."""
    if not NAME.fullmatch(name):
        raise DomainError(f"domain name {name!r}: use 1-64 letters, digits, '_', '.' or '-', "
                          "starting with a letter or digit")
    return name


def parse_domain(text: str) -> tuple[str, Path, Path | None]:
    """``NAME=ADAPTED_DIR[,index=INDEX_DIR]`` -> (name, adapted dir, index dir or None).

    Raises:
        DomainError: Not of that form, naming what is missing.
    """
    name, eq, rest = text.partition("=")
    if not eq or not rest:
        raise DomainError(f"--domain {text!r}: expected NAME=ADAPTED_DIR[,index=INDEX_DIR]")
    adapted, *options = rest.split(",")
    index = None
    for option in options:
        key, eq, value = option.partition("=")
        if key != "index" or not eq or not value:
            raise DomainError(f"--domain {text!r}: unknown option {option!r}; the only option "
                              "is index=INDEX_DIR")
        index = Path(value)
    return check_name(name.strip()), Path(adapted), index


@dataclass(frozen=True)
class DomainSpec:
    """A registered domain, as read from its small files (`inspect_domain`).

    Attributes:
        name: Its name in requests.
        adapted: The adapted run (or checkpoint) folder as given.
        checkpoint: The checkpoint folder it resolved to when registered.
        index: The passage index folder.
        rag: Retrieval and decoding settings of the adapted model.
        task: The task it was adapted to (from its state), if recorded.
        task_source: Where that task's data was read from, if recorded.
        support_ids: The examples it was adapted on (the in-context pool).
        data_seed: The split seed those ids refer to.
        adapted_from: The checkpoint adaptation started from, if recorded.
        in_context: Support examples in the prompt when a request names none (all of
            them for a domain adapted with them in its prompts, `in_context_default`).
        uid: Tells a re-registered domain of the same name apart (cache key).
    """

    name: str
    adapted: Path
    checkpoint: Path
    index: Path
    rag: RAGConfig
    task: str | None = None
    task_source: str | None = None
    support_ids: tuple[str, ...] = ()
    data_seed: int = 0
    adapted_from: str | None = None
    in_context: int = 0
    uid: int = field(default_factory=lambda: next(_uids))

    def describe(self) -> dict[str, Any]:
        """JSON-able summary for ``GET /v1/domains``."""
        return {"name": self.name, "adapted": str(self.adapted),
                "checkpoint": str(self.checkpoint), "index": str(self.index),
                "task": self.task, "support_examples": len(self.support_ids),
                "k": self.rag.k, "decoding": self.rag.decoding, "in_context": self.in_context}


def inspect_domain(name: str, adapted: str | Path, index: str | Path | None,
                   built: BuiltModel, base: ModelConfig | None = None) -> DomainSpec:
    """Check that an adapted checkpoint and an index can be served on ``built``'s base.

    Reads the checkpoint's ``state.json`` and its safetensors header (names and
    shapes, not the tensors) and the index's ``index.json``.

    Args:
        name: The domain's name.
        adapted: A folder written by `metarag adapt` (or any checkpoint folder).
        index: The passage index; None for ``ADAPTED/index``.
        built: The server's base model.
        base: The config it was built from; the adapted model's must equal it but
            for ``rag`` (retrieval and decoding settings, which each domain keeps).

    Raises:
        DomainError: Saying which file is wrong and why.
    """
    from dataclasses import replace

    from safetensors import safe_open

    from metarag.checkpoint import Checkpoint, CheckpointError, read_state
    from metarag.config import ConfigError
    from metarag.meta.adapt import in_context_default
    from metarag.rag.build import (
        BASE_KEY,
        MODEL_CONFIG_KEY,
        check_base,
        check_fit,
        checkpoint_config,
    )

    check_name(name)
    adapted = Path(adapted)
    index = Path(index) if index is not None else adapted / INDEX_DIR
    where = f"domain {name!r}"
    if not adapted.is_dir():
        raise DomainError(f"{where}: {adapted} is not a folder (give the --out folder of "
                          "`metarag adapt`)")
    try:
        checkpoint, state = read_state(adapted)
        weights_file = checkpoint / "model.safetensors"
        header = Checkpoint(checkpoint, {}, {}, state)
        config = checkpoint_config(header)
        if base is not None and replace(config, rag=base.rag) != base:
            diff = sorted(k for k, v in asdict(config).items()
                          if k != "rag" and v != asdict(base)[k])
            raise CheckpointError(f"{checkpoint}: its model config differs from the base's in "
                                  f"{', '.join(diff)}; serve it with a base of the same config")
        check_base(built.model, header)
        with safe_open(str(weights_file), framework="pt") as f:
            saved = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()
                     if not k.startswith("aux.")}
        expected = {k: tuple(v.shape) for k, v in built.model.state_dict().items()}
        check_fit(checkpoint, saved, expected, partial=bool(state.get(BASE_KEY)))
    except (CheckpointError, ConfigError, OSError) as err:
        raise DomainError(f"{where}: {err}") from None
    except Exception as err:  # a corrupt safetensors header, say
        raise DomainError(f"{where}: {weights_file}: unreadable ({type(err).__name__}: "
                          f"{err})") from None
    _check_index(where, index, built)
    del state[MODEL_CONFIG_KEY]
    return DomainSpec(
        name=name, adapted=adapted, checkpoint=checkpoint, index=index, rag=config.rag,
        task=state.get("task"), task_source=state.get("task_source"),
        support_ids=tuple(state.get("support_ids") or ()),
        data_seed=int(state.get("config", {}).get("data", {}).get("seed", 0)),
        adapted_from=state.get("adapted_from"), in_context=in_context_default(state))


def _check_index(where: str, index: Path, built: BuiltModel) -> None:
    """The index exists and was built with the base's passage encoder (by fingerprint)."""
    from metarag.data.io import read_json
    from metarag.errors import DataError
    from metarag.retrieval.index import META_FILE

    meta_file = index / META_FILE
    if not meta_file.is_file():
        raise DomainError(f"{where}: {index} is not a passage index ({META_FILE} is missing); "
                          "give ,index=INDEX_DIR (a folder from `metarag index build`)")
    try:
        meta = read_json(meta_file)
    except DataError as err:
        raise DomainError(f"{where}: {err}") from None
    recorded = (meta.get("encoder") or {}).get("fingerprint") if isinstance(meta, dict) else None
    mine = built.passage_encoder.identity()["fingerprint"]
    if recorded is not None and recorded != mine:
        raise DomainError(f"{where}: index {index} was built with another encoder (fingerprint "
                          f"{recorded[:12]}) than the base's ({mine[:12]}); rebuild it with "
                          "`metarag index build ... --encoder` of the base")


class DomainRegistry:
    """Name -> `DomainSpec`, shared by the HTTP threads and the worker (locked)."""

    def __init__(self) -> None:
        self._specs: dict[str, DomainSpec] = {}
        self._lock = threading.Lock()

    def put(self, spec: DomainSpec) -> bool:
        """Register or replace a domain; True if the name is new."""
        with self._lock:
            new = spec.name not in self._specs
            self._specs[spec.name] = spec
            return new

    def remove(self, name: str) -> DomainSpec:
        """Unregister a domain. Raises `UnknownDomain`."""
        with self._lock:
            if name not in self._specs:
                raise UnknownDomain(name, sorted(self._specs))
            return self._specs.pop(name)

    def get(self, name: str) -> DomainSpec:
        """The spec of a domain. Raises `UnknownDomain`, naming the known ones."""
        with self._lock:
            if name not in self._specs:
                raise UnknownDomain(name, sorted(self._specs))
            return self._specs[name]

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._specs)

    def specs(self) -> list[DomainSpec]:
        with self._lock:
            return [self._specs[n] for n in sorted(self._specs)]


@dataclass
class DomainAssets:
    """A domain's loaded tensors: what is swapped into the base model to serve it.

    Attributes:
        spec: The domain.
        weights: Its adapted weights, state-dict name -> tensor.
        corpus: Its passages and their embeddings (or BM25 index).
        support: Its support examples, loaded on the first in-context request.
        demos: In-context prompts already built, by number of examples.
        nbytes: Approximate memory held (tensors, plus passage text).
    """

    spec: DomainSpec
    weights: dict[str, torch.Tensor]
    corpus: CorpusState
    support: list[Any] | None = None
    demos: dict[int, tuple[Demo, ...]] = field(default_factory=dict)
    nbytes: int = 0

    def measure(self) -> int:
        """Recount ``nbytes``: tensors exactly, texts by their length (+100 bytes each)."""
        tensors = sum(t.numel() * t.element_size() for t in self.weights.values())
        emb = self.corpus.embeddings
        text = sum(len(p.text) + len(p.title) + len(p.id) + 100 for p in self.corpus.passages)
        text += sum(len(e.question) + sum(map(len, e.answers)) + 100
                    for e in self.support or ())
        text += sum(len(d.question) + len(d.answer) + len(d.context) + 100
                    for demos in self.demos.values() for d in demos)
        self.nbytes = tensors + emb.numel() * emb.element_size() + text
        return self.nbytes


class DomainCache:
    """Loaded domains, least recently used first out, bounded by their `DomainAssets.nbytes`.

    The newest entry always stays, even alone over the bound (it is being served).
    Filled by the worker thread; `snapshot` and `nbytes` are read from HTTP threads
    too, hence the lock.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"cache max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self._entries: OrderedDict[int, DomainAssets] = OrderedDict()  # most recent last
        self._lock = threading.Lock()
        self.loads = self.evictions = 0

    def get(self, spec: DomainSpec) -> DomainAssets | None:
        """The loaded assets of exactly this registration, marked most recently used."""
        with self._lock:
            assets = self._entries.get(spec.uid)
            if assets is not None:
                self._entries.move_to_end(spec.uid)
            return assets

    def put(self, assets: DomainAssets) -> list[DomainAssets]:
        """Keep ``assets``; returns the entries evicted to stay within ``max_bytes``."""
        with self._lock:
            self._entries[assets.spec.uid] = assets
            self._entries.move_to_end(assets.spec.uid)
            self.loads += 1
            return self._shrink()

    def discard(self, uid: int) -> None:
        """Forget a registration's assets (it was removed or replaced)."""
        with self._lock:
            self._entries.pop(uid, None)

    def resize(self, assets: DomainAssets) -> list[DomainAssets]:
        """Recount an entry that grew (in-context demos) and evict to fit again."""
        with self._lock:
            assets.measure()
            return self._shrink()

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._nbytes()

    def snapshot(self) -> dict[int, int]:
        """uid -> bytes of the loaded entries, oldest first."""
        with self._lock:
            return {uid: a.nbytes for uid, a in self._entries.items()}

    def _nbytes(self) -> int:
        return sum(a.nbytes for a in self._entries.values())

    def _shrink(self) -> list[DomainAssets]:
        evicted = []
        while len(self._entries) > 1 and self._nbytes() > self.max_bytes:
            _, old = self._entries.popitem(last=False)
            evicted.append(old)
            self.evictions += 1
        return evicted
