"""Test-time adaptation: a few gradient steps on a new domain's support examples.

Every method of the evaluation protocol (meta-learned init, plain fine-tuning,
multi-task + fine-tuning) adapts through this one function, which runs the same
`inner_loop` that meta-training differentiates through: same optimiser (plain
SGD), same steps, same parameter subset. Only the starting weights differ, so a
comparison measures the initialisation and nothing else.

Adaptation runs in eval mode (no dropout): with a handful of steps the noise
only blurs the comparison, and meta-training adapts the same way.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from metarag.data.schema import Passage, QAExample
from metarag.meta.inner import Batch, inner_loop, rag_loss_fn
from metarag.meta.params import Params, select_params, split_params
from metarag.rag.build import BuiltModel
from metarag.rag.model import source_cache


@dataclass
class AdaptConfig:
    """How a model adapts to a new domain.

    Attributes:
        steps: SGD steps on the support set.
        lr: SGD step size.
        params: Presets or patterns of the weights that adapt (`metarag.meta.params`);
            the default, LoRA, suits the default Gemma generator (``ModelConfig.lora``).
        exclude: Patterns removed from ``params`` (the word embeddings: large, and
            a few examples only overfit them).
        batch_size: Support examples per step; the steps cycle through the support
            set in order. None: the whole support set at every step.
        in_context: Adapt as the model will be asked: with the support set as
            in-context examples in every prompt (as many as fit; an example's own
            left out), and answer with them (`adapt` keeps them on the model). In
            meta-training (``MetaTrainConfig.inner``), every prompt of an episode
            holds its support set: MAML over MetaICL-style episodes.
    """

    steps: int = 8
    lr: float = 1e-3
    params: list[str] = field(default_factory=lambda: ["lora"])
    exclude: list[str] = field(default_factory=lambda: ["embeddings"])
    batch_size: int | None = 16
    in_context: bool = False

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"adapt.steps must be >= 0, got {self.steps}")
        if not self.lr >= 0:
            raise ValueError(f"adapt.lr must be >= 0, got {self.lr}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"adapt.batch_size must be >= 1 or null, got {self.batch_size}")
        if not self.params:
            raise ValueError("adapt.params is empty: name at least one preset, e.g. 'decoder'")


def adapted_names(model: nn.Module, config: AdaptConfig) -> list[str]:
    """The parameter names ``config`` adapts on ``model``."""
    return select_params(model, config.params, config.exclude)


def support_batches(support: Sequence[QAExample], steps: int,
                    batch_size: int | None) -> list[Batch]:
    """The batch of each step: consecutive slices of the support set, wrapping around."""
    examples = list(support)
    if not examples:
        raise ValueError("adaptation needs at least one support example")
    size = len(examples) if batch_size is None else min(batch_size, len(examples))
    batches = []
    for step in range(steps):
        start = (step * size) % len(examples)
        chunk = (examples + examples)[start:start + size]
        batches.append(Batch.from_examples(chunk))
    return batches


def adapt_params(model: nn.Module, support: Sequence[QAExample],
                 config: AdaptConfig, *, learned_lrs: Mapping[str, Tensor] | None = None
                 ) -> Params:
    """Adapted values of the selected parameters; the model itself is not changed.

    The model must already point at the domain's corpus (`RAGModel.set_corpus`).
    ``learned_lrs``: Meta-SGD's per-parameter rates (`metarag.meta.train.learned_inner_lrs`),
    used instead of ``config.lr``; they must cover exactly the adapted parameters.

    Returns:
        Detached tensors keyed by parameter name, ready for `swapped_params`
        or ``load_state_dict(..., strict=False)``.
    """
    names = adapted_names(model, config)
    meta, frozen = split_params(model, names)
    current: Params = {k: v.detach() for k, v in meta.items()}
    if config.steps == 0:
        return {k: v.clone() for k, v in current.items()}
    # One loss for all steps, so the generator's frozen part (BERT2BERT's encoder, or a
    # decoder-only model's layers below the adapted ones) runs once per support source.
    loss_fn = rag_loss_fn(model, frozen, encoder_cache=source_cache(model, names))
    was_training = model.training
    model.eval()
    batches = support_batches(support, config.steps, config.batch_size)
    try:
        with model.demos_while(support if config.in_context else ()):
            for step, batch in enumerate(batches):
                try:
                    current = inner_loop(loss_fn, current, batch, steps=1,
                                         lr=learned_lrs if learned_lrs is not None else config.lr,
                                         first_order=True)
                except FloatingPointError as err:
                    raise type(err)(f"adaptation step {step + 1} of {config.steps}: {err}"
                                    ) from None
                current = {k: v.detach() for k, v in current.items()}
    finally:
        model.train(was_training)
    return current


def support_examples(source: str, support_ids: Sequence[str], seed: int) -> list[QAExample]:
    """The examples an adapted checkpoint was adapted on (its ``support_ids``), read again
    from its task source with the split seed they refer to.

    Raises:
        DataError: Some of them are no longer there (the data changed: re-adapt).
    """
    from metarag.data.loaders import load_task
    from metarag.errors import DataError

    by_id = {e.id: e for e in load_task(source, seed=seed).examples}
    missing = [i for i in support_ids if i not in by_id]
    if missing:
        raise DataError(source, "support examples", f"{len(missing)} of the {len(support_ids)} "
                        f"examples the model was adapted on are no longer there (first: "
                        f"{missing[0]!r}); re-adapt it")
    return [by_id[i] for i in support_ids]


def in_context_default(state: Mapping[str, object]) -> int:
    """Support examples an adapted checkpoint's prompts hold unless asked otherwise: all
    of them when it adapted with them in its prompts (``adapt.in_context``), else none."""
    adapted = state.get("adapt")
    if isinstance(adapted, Mapping) and adapted.get("in_context"):
        return len(state.get("support_ids") or ())  # type: ignore[arg-type]
    return 0


@contextmanager
def swapped_params(model: nn.Module, params: Mapping[str, Tensor]) -> Iterator[nn.Module]:
    """Temporarily copy ``params`` into the model's weights; the originals come back after.

    Cheaper than a deep copy of the model when many adapted versions are scored
    one after another (the evaluation protocol).
    """
    own = dict(model.named_parameters())
    unknown = [k for k in params if k not in own]
    if unknown:
        raise ValueError(f"{len(unknown)} adapted names are not parameters of the model, "
                         f"e.g. {unknown[0]!r}")
    saved = {k: own[k].detach().clone() for k in params}
    try:
        with torch.no_grad():
            for k, v in params.items():
                own[k].copy_(v)
        yield model
    finally:
        with torch.no_grad():
            for k, v in saved.items():
                own[k].copy_(v)


def adapt(built: BuiltModel, support: Sequence[QAExample],
          corpus: Sequence[Passage] | None = None, *,
          config: AdaptConfig | None = None, learned_lrs: Mapping[str, Tensor] | None = None,
          **overrides: object) -> BuiltModel:
    """Adapt a trained (or meta-trained) model to a new domain; the original is untouched.

    Args:
        built: The starting model (e.g. from `metarag.rag.build.load_trained`).
        support: The new domain's few labelled examples (its "shots").
        corpus: The domain's passages, embedded with the model's passage encoder
            (cached under ``built.cache_dir``); None keeps the model's current corpus.
        config: Steps, learning rate and adapted parameters; keyword overrides
            such as ``steps=4, lr=3e-3`` replace single fields.
        learned_lrs: Meta-SGD's learned per-parameter rates, replacing ``config.lr``.

    Returns:
        A new `BuiltModel` with its own copy of the RAG model (adapted, in eval
        mode; with ``config.in_context``, the support set as its demos), sharing
        the frozen passage encoder.

    Example:
        >>> adapted = adapt(built, task.train[:16], task.corpus, steps=8, lr=1e-3)
        >>> adapted.model.answer(["What is the renal dose of Nororatide?"])
    """
    config = config or AdaptConfig()
    if overrides:
        config = AdaptConfig(**{**config.__dict__, **overrides})
    result = BuiltModel(copy.deepcopy(built.model), built.passage_encoder, built.cache_dir)
    if corpus is not None:
        result.use_corpus(corpus, show_progress=len(corpus) > 1000)
    params = adapt_params(result.model, support, config, learned_lrs=learned_lrs)
    result.model.load_state_dict(params, strict=False)
    result.model.eval()
    # Asked as it adapted: the support set in every prompt, or no demos at all.
    result.model.use_demos(support if config.in_context else ())
    return result
