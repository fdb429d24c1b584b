"""The one base model, and the domain whose weights, corpus and settings it holds now.

Serving a domain means copying its adapted weights (LoRA, a soft prompt, the query
encoder, top layers: whatever its checkpoint holds) into the base model's own
tensors, pointing retrieval at its passages, and using its retrieval settings.
Switching back restores the base's values of every weight the previous domain
set, from a copy taken the first time a domain touched it. Nothing is reloaded:
the base is built once.

An `Engine` is not thread-safe: one worker thread (`metarag.serve.batcher`) owns
it, so no two requests ever run on a half-swapped model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from metarag.errors import DataError, MetaRAGError
from metarag.serve.registry import DomainAssets, DomainCache, DomainError, DomainSpec

if TYPE_CHECKING:
    from metarag.rag.build import BuiltModel
    from metarag.rag.model import Answer

log = logging.getLogger(__name__)


class LoadError(MetaRAGError, RuntimeError):
    """A registered domain's files could not be loaded (changed since registration)."""


class Engine:
    """Answers questions for any domain on one base model, swapping domains in and out.

    Args:
        built: The base model (e.g. `metarag.rag.build.load_trained`), in eval mode.
        cache: Where loaded domains are kept (`DomainCache`).
    """

    def __init__(self, built: BuiltModel, cache: DomainCache) -> None:
        self.built = built
        self.cache = cache
        self.model = built.model
        self.base_rag = self.model.config
        # The model's own tensors by state-dict name: the targets of every copy.
        self._tensors = self.model.state_dict(keep_vars=True)
        self._base: dict[str, torch.Tensor] = {}  # base values of the names a domain set
        self._active: DomainAssets | None = None
        self.swaps = 0

    @property
    def active(self) -> DomainSpec | None:
        """The domain the model holds now (None: the base)."""
        return self._active.spec if self._active is not None else None

    @property
    def base_copy_bytes(self) -> int:
        """Memory of the kept base values (outside the cache's bound)."""
        return sum(t.numel() * t.element_size() for t in self._base.values())

    def answer(self, spec: DomainSpec, questions: Sequence[str], *, k: int | None = None,
               in_context: int = 0) -> list[Answer]:
        """Answer a batch of questions as domain ``spec``'s adapted model.

        Raises:
            DomainError: ``in_context`` exceeds the domain's support examples.
            Exception: Whatever loading the domain's files raises (the model is then
                back on the base, ready for the next request).
        """
        from metarag.evaluation.qa import answer_questions

        assets = self.activate(spec)
        self.model.demos = self._demos(assets, in_context) if in_context else ()
        try:
            return answer_questions(self.built, list(questions), k=k,
                                    batch_size=max(1, len(questions)))
        finally:
            self.model.demos = ()

    def activate(self, spec: DomainSpec) -> DomainAssets:
        """Put a domain into the model (loading it on first use); a no-op if it is there."""
        if self._active is not None and self._active.spec.uid == spec.uid:
            if self.cache.get(spec) is None:  # evicted while in use: count it again
                self.cache.put(self._active)
            return self._active
        try:
            assets = self.cache.get(spec) or self._load(spec)
            self._apply(assets)
        except BaseException:
            self.reset()  # never leave a half-swapped model behind
            raise
        return assets

    def reset(self) -> None:
        """Put the base back: its weights and settings (the corpus is the next domain's)."""
        # Every weight any domain ever wrote: after a failed swap the model may hold parts
        # of a domain that is no longer `_active`.
        self._restore(self._base.keys())
        self._active = None
        self.model.config = self.base_rag
        self.model.demos = ()

    def forget(self, uid: int) -> None:
        """Drop a removed or replaced registration from the cache (and the model)."""
        if self._active is not None and self._active.spec.uid == uid:
            self.reset()
        self.cache.discard(uid)

    def _load(self, spec: DomainSpec) -> DomainAssets:
        """Read a domain's weights and index (checked against the base), and cache them."""
        from metarag.checkpoint import load_checkpoint
        from metarag.rag.build import fitting_weights

        started = time.perf_counter()
        try:
            checkpoint = load_checkpoint(spec.checkpoint)
        except Exception as err:  # safetensors raises its own error types
            raise LoadError(f"{spec.checkpoint / 'model.safetensors'}: cannot read the adapted "
                            f"weights ({type(err).__name__}: {err}); re-adapt the domain, then "
                            "PUT it again") from err
        weights = fitting_weights(self.model, checkpoint)
        # The corpus is built in the model itself (its retriever kind decides how), then kept.
        self.model.config = spec.rag
        self.built.use_index(spec.index, model_name=f"domain {spec.name!r}")
        assets = DomainAssets(spec, weights, self.model.corpus_state())
        assets.measure()
        for old in self.cache.put(assets):
            log.info("domain %r evicted from the cache (%d bytes)", old.spec.name, old.nbytes)
        log.info("domain %r loaded: %d weights, %d passages, %.1f MB, %.0f ms", spec.name,
                 len(weights), len(assets.corpus.passages), assets.nbytes / 2**20,
                 1000 * (time.perf_counter() - started))
        return assets

    def _apply(self, assets: DomainAssets) -> None:
        with torch.no_grad():
            for name in assets.weights:
                if name not in self._base:
                    self._base[name] = self._tensors[name].detach().clone()
            if self._active is not None:
                self._restore(self._active.weights.keys() - assets.weights.keys())
            self._active = None  # mid-copy the model is neither domain
            for name, value in assets.weights.items():
                self._tensors[name].copy_(value)
        self.model.config = assets.spec.rag
        self.model.restore_corpus(assets.corpus)
        self._active = assets
        self.swaps += 1

    def _restore(self, names: object) -> None:
        with torch.no_grad():
            for name in names:  # type: ignore[attr-defined]
                self._tensors[name].copy_(self._base[name])

    def _demos(self, assets: DomainAssets, n: int) -> tuple:
        """The in-context prompt of ``n`` of the domain's support examples, built once."""
        if n in assets.demos:
            return assets.demos[n]
        spec = assets.spec
        if n > len(spec.support_ids):
            raise DomainError(f"domain {spec.name!r} was adapted on {len(spec.support_ids)} "
                              f"examples; in_context must be at most that")
        if assets.support is None:
            from metarag.meta.adapt import support_examples

            if not spec.task_source:
                raise DomainError(f"domain {spec.name!r}: its checkpoint records no task source "
                                  "to read the support examples from")
            try:
                assets.support = support_examples(spec.task_source, spec.support_ids,
                                                  spec.data_seed)
            except DataError as err:
                raise DomainError(f"domain {spec.name!r}: {err}") from None
        assets.demos[n] = self.model.use_demos(assets.support, n)
        self.model.demos = ()
        self.cache.resize(assets)
        return assets.demos[n]
