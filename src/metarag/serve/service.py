"""The serving core without HTTP: domains, the engine, and the batching worker, wired.

`Service` is what the FastAPI app (`metarag.serve.app`) calls; tests and the
benchmark build it the same way the `metarag serve` command does::

    built, state = load_trained("runs/meta")
    service = Service(built, ServeSettings(), base_config=checkpoint_config(...))
    service.add_domain("bank", "runs/adapted-bank")
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metarag.serve.batcher import Batcher
from metarag.serve.engine import Engine
from metarag.serve.registry import DomainCache, DomainRegistry, DomainSpec, inspect_domain

if TYPE_CHECKING:
    from metarag.rag.build import BuiltModel, ModelConfig


@dataclass
class ServeSettings:
    """Limits and batching of a server (each a `metarag serve` option).

    Attributes:
        cache_bytes: Bound on the loaded domains' memory (weights, embeddings, text).
        batch_window_ms: How long a request waits for others of its domain to batch with.
        max_batch: Questions per model call at most.
        max_queue: Requests waiting at most; more get 503.
        max_body_bytes: Request bodies over this get 413.
        max_question_chars: Longer questions get 422.
        max_k: Largest ``k`` (passages per question) a request may ask for.
        max_in_context: Largest ``in_context`` (support examples in the prompt).
        request_timeout_s: A request not answered by then gets 504.
    """

    cache_bytes: int = 2 * 2**30
    batch_window_ms: float = 10.0
    max_batch: int = 8
    max_queue: int = 256
    max_body_bytes: int = 64 * 2**10
    max_question_chars: int = 2000
    max_k: int = 20
    max_in_context: int = 16
    request_timeout_s: float = 300.0

    def __post_init__(self) -> None:
        for name in ("cache_bytes", "batch_window_ms", "max_in_context"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("max_batch", "max_queue", "max_body_bytes", "max_question_chars", "max_k",
                     "request_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


@dataclass(frozen=True)
class Question:
    """One request's question, as queued."""

    text: str


class Service:
    """One base model serving any number of registered domains.

    Args:
        built: The base model, loaded once.
        settings: Limits and batching.
        base_config: The config ``built`` was made from (adapted checkpoints must
            match it but for retrieval settings); None skips that check.
    """

    def __init__(self, built: BuiltModel, settings: ServeSettings | None = None, *,
                 base_config: ModelConfig | None = None) -> None:
        self.built = built
        self.settings = settings or ServeSettings()
        self.base_config = base_config
        self.registry = DomainRegistry()
        # Registration compares index fingerprints from HTTP threads: compute it once now.
        built.passage_encoder.fingerprint()
        self.engine = Engine(built, DomainCache(self.settings.cache_bytes))
        self.batcher = Batcher(self._run, window_s=self.settings.batch_window_ms / 1000,
                               max_batch=self.settings.max_batch,
                               max_queue=self.settings.max_queue)
        self._forgotten: list[int] = []  # registrations the worker must drop
        self._lock = threading.Lock()

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self.batcher.start()

    def stop(self) -> None:
        self.batcher.stop()

    # ---- domains (any thread) -----------------------------------------------------------

    def add_domain(self, name: str, adapted: str | Path, index: str | Path | None = None
                   ) -> tuple[DomainSpec, bool]:
        """Register (or replace) a domain after checking its files; loads nothing yet.

        Returns:
            The spec, and whether the name is new.

        Raises:
            DomainError: The folder cannot be served on this base (the reason).
        """
        spec = inspect_domain(name, adapted, index, self.built, self.base_config)
        with self._lock:
            try:
                self._forgotten.append(self.registry.get(name).uid)
            except KeyError:
                pass
            return spec, self.registry.put(spec)

    def remove_domain(self, name: str) -> DomainSpec:
        """Unregister a domain; its memory is freed before the next batch. Raises UnknownDomain."""
        with self._lock:
            spec = self.registry.remove(name)
            self._forgotten.append(spec.uid)
        return spec

    def default_in_context(self, spec: DomainSpec) -> int:
        """Support examples in the prompt of a request that names none: the domain's own
        default (`DomainSpec.in_context`), at most ``max_in_context``."""
        return min(spec.in_context, self.settings.max_in_context)

    def describe(self, spec: DomainSpec) -> dict[str, Any]:
        """``spec.describe()`` with the ``in_context`` this server gives it by default."""
        return {**spec.describe(), "in_context": self.default_in_context(spec)}

    def domains(self) -> list[dict[str, Any]]:
        """Each registered domain's summary, with whether (and how much) it is loaded."""
        loaded = self.engine.cache.snapshot()
        active = self.engine.active
        return [{**self.describe(spec), "loaded": spec.uid in loaded,
                 "bytes": loaded.get(spec.uid), "active": active is not None
                 and active.uid == spec.uid} for spec in self.registry.specs()]

    def stats(self) -> dict[str, Any]:
        cache = self.engine.cache
        return {"domains": len(self.registry.names()), "queue": self.batcher.depth,
                "worker_alive": self.batcher.alive, "batches": self.batcher.batches,
                "swaps": self.engine.swaps, "cache_bytes": cache.nbytes,
                "cache_max_bytes": cache.max_bytes, "loads": cache.loads,
                "evictions": cache.evictions, "base_copy_bytes": self.engine.base_copy_bytes}

    # ---- answering ----------------------------------------------------------------------

    def submit(self, domain: str, question: str, *, k: int | None = None,
               in_context: int = 0) -> Future:
        """Queue a question; the future gives a `Done` whose value is an `Answer`.

        Raises:
            UnknownDomain: Naming the known domains.
            QueueFull: Too many waiting requests.
        """
        self.registry.get(domain)  # fail now, not after queueing
        return self.batcher.submit((domain, k, in_context), Question(question))

    def _run(self, key: tuple[str, int | None, int], questions: Sequence[Question]) -> list:
        """The batch function (worker thread): drop forgotten domains, then answer."""
        with self._lock:
            forgotten, self._forgotten = self._forgotten, []
        for uid in forgotten:
            self.engine.forget(uid)
        name, k, in_context = key
        spec = self.registry.get(name)
        return self.engine.answer(spec, [q.text for q in questions], k=k, in_context=in_context)
