"""The inner loop: a few gradient steps on a support set, written functionally.

    theta_{t+1} = theta_t - alpha * grad L_support(theta_t),   t = 0 .. steps-1

(Finn et al. 2017, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep
Networks", eq. 1; alpha is a scalar, or a tensor per parameter for Meta-SGD,
Li et al. 2017.) Every step returns new tensors: the module and the caller's dict
are never touched. With ``first_order=False`` the steps stay on the autograd
graph (``create_graph=True``), so a query loss at the adapted parameters can be
differentiated back to the starting ones through every step (second-order MAML);
with ``first_order=True`` each step's gradient is a constant and only the identity
path remains (FOMAML, Reptile, test-time adaptation).

The same function serves meta-training and test-time adaptation; it is testable
on any differentiable function, and on a `RAGModel` through `rag_loss_fn`.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from metarag.data.schema import QAExample
from metarag.errors import MetaRAGError
from metarag.meta.params import Params, call_with
from metarag.rag.model import EncoderCache, ForwardCache, source_cache

LossFn = Callable[[Params, Any], Tensor]
"""``loss_fn(params, batch) -> scalar loss``; ``params`` holds only the adapted weights."""

LearningRate = float | Mapping[str, Tensor]
"""A scalar step size, or one tensor per parameter (scalar or the parameter's shape)."""


class NonFiniteLossError(MetaRAGError, FloatingPointError):
    """A support or query loss became NaN or infinite during meta-learning."""


@dataclass(frozen=True)
class Batch:
    """Questions and the answer each is trained towards, as `RAGModel.forward` takes them."""

    questions: list[str]
    answers: list[str]

    @classmethod
    def from_examples(cls, examples: Sequence[QAExample]) -> Batch:
        """Batch QA examples, training on each example's first reference answer.

        Raises:
            ValueError: No examples, or an example without answers.
        """
        if not examples:
            raise ValueError("cannot make a batch from no examples (is the episode's support "
                             "or query set empty?)")
        missing = [e.id for e in examples if not e.answers]
        if missing:
            raise ValueError(f"examples {missing[:5]} have no reference answer to train on")
        return cls([e.question for e in examples], [e.answers[0] for e in examples])

    def __len__(self) -> int:
        return len(self.questions)


def as_batch(data: Batch | Sequence[QAExample]) -> Batch:
    """A `Batch` as it is, or a list of `QAExample` batched with `Batch.from_examples`."""
    return data if isinstance(data, Batch) else Batch.from_examples(data)


class RAGLoss:
    """The loss function of a `RAGModel` over its adapted parameters (see `rag_loss_fn`)."""

    def __init__(self, model: nn.Module, frozen: Mapping[str, Tensor], *,
                 cache_size: int = 4, encoder_cache: EncoderCache | None = None) -> None:
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self.model, self.frozen, self.cache_size = model, frozen, cache_size
        if encoder_cache is None:  # the kind the adapted set allows (a prefix cache for Gemma)
            encoder_cache = source_cache(model, [n for n, _ in model.named_parameters()
                                                 if n not in frozen])
        self.encoder_cache = encoder_cache
        # Most recently used last; keyed by the batch's questions and answers and the
        # model's in-context examples (the same batch with demos is another prompt).
        self.caches: OrderedDict[tuple, ForwardCache] = OrderedDict()

    def __call__(self, params: Params, data: Batch | Sequence[QAExample]) -> Tensor:
        batch = as_batch(data)
        extra = {}
        if self.cache_size:
            key = (tuple(batch.questions), tuple(batch.answers), getattr(self.model, "demos", ()))
            cache = self.caches.pop(key, None) or ForwardCache(sources=self.encoder_cache)
            self.caches[key] = cache
            while len(self.caches) > self.cache_size:
                self.caches.popitem(last=False)
            extra["cache"] = cache
        return call_with(self.model, params, self.frozen, batch.questions, batch.answers,
                         **extra).loss

    def clear_cache(self) -> None:
        """Forget every batch and source (e.g. to time a meta-step from a cold start)."""
        self.caches.clear()
        self.encoder_cache.clear()


def rag_loss_fn(model: nn.Module, frozen: Mapping[str, Tensor], *,
                cache_size: int = 4, encoder_cache: EncoderCache | None = None) -> RAGLoss:
    """The loss function of a `RAGModel` over its adapted parameters.

    The support set is scored once per inner step with new weights but the same
    examples, so the loss keeps a `metarag.rag.model.ForwardCache` per batch and
    the model reuses what does not depend on the adapted weights: tokenisation,
    the generator's inputs while the retrieved top-k stays the same, and the
    generator encoder's outputs while that encoder is frozen and in eval mode (the
    "decoder" and "query_encoder" presets leave it frozen). Losses and gradients
    are those of uncached calls; the saving is the encoder's forward pass on every
    inner step after the first, ~80% of a forward of the default model. Across
    batches, and across meta-steps for as long as the loss function lives, a
    `metarag.rag.model.EncoderCache` keeps the encoder's states per source, so a
    (question, passage) pair seen before is not encoded again. A decoder-only
    generator whose bottom layers stay frozen (``top_layers:N``) gets the same from
    a `metarag.rag.model.PrefixCache`: those layers run once per sequence.

    Args:
        model: The RAG model (only read; ``functional_call`` swaps weights in).
        frozen: The parameters that are not adapted, from `split_params`.
        cache_size: Batches remembered, least recently used dropped first; 0 turns
            the cache off (the per-source one too). Each holds the tokenised batch
            and, when reusable, the encoder's outputs (B*K x source length x hidden
            floats: 4.5 MB for 8 questions, k=3 and 128 tokens with MiniLM). Four cover
            a MAML task
            (its support and query sets) and adaptation cycling through up to four
            support batches.
        encoder_cache: The per-source cache to use, e.g. one shared by several loss
            functions; by default a new 512 MB one of the kind the adapted set allows
            (`metarag.rag.model.source_cache`). ``EncoderCache(0)`` turns it off.

    Returns:
        ``loss_fn(params, data)`` with ``data`` a `Batch` or a list of `QAExample`
        (an episode's support or query set): the model's mean per-token marginal NLL.
    """
    return RAGLoss(model, frozen, cache_size=cache_size, encoder_cache=encoder_cache)


def check_loss(loss: Tensor, where: str) -> None:
    """Raise unless ``loss`` is a finite scalar; ``where`` names the step for the message."""
    if not isinstance(loss, Tensor) or loss.dim() != 0:
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise ValueError(f"{where}: loss_fn must return a scalar tensor, got {shape}")
    if not bool(torch.isfinite(loss)):
        raise NonFiniteLossError(f"{where}: the loss is {loss.item()}. Lower the inner learning "
                                 "rate, clip the outer gradients, or check the examples of this "
                                 "task (e.g. empty answers)")


def _check_lr(lr: LearningRate, params: Mapping[str, Tensor]) -> None:
    if isinstance(lr, Mapping):
        missing = [k for k in params if k not in lr]
        extra = [k for k in lr if k not in params]
        if missing or extra:
            raise ValueError(f"per-parameter learning rates must have exactly the adapted "
                             f"parameters' names: {len(missing)} missing (e.g. "
                             f"{missing[:1]}), {len(extra)} extra (e.g. {extra[:1]})")
        for k, rate in lr.items():
            if rate.dim() != 0 and rate.shape != params[k].shape:
                raise ValueError(f"learning rate for {k!r} has shape {tuple(rate.shape)}; it "
                                 f"must be a scalar or the parameter's {tuple(params[k].shape)}")
    elif not (isinstance(lr, int | float) and math.isfinite(lr) and lr >= 0):
        raise ValueError(f"inner learning rate must be a finite number >= 0 or a dict of "
                         f"tensors, got {lr!r}")


def inner_loop(
    loss_fn: LossFn,
    params: Mapping[str, Tensor],
    support: Any,
    *,
    steps: int,
    lr: LearningRate,
    first_order: bool,
    on_step: Callable[[int, Tensor], None] | None = None,
    on_identity_grad: Callable[[str, Tensor], None] | None = None,
) -> Params:
    """Adapt ``params`` by ``steps`` full-batch gradient steps on ``support``.

    Args:
        loss_fn: ``loss_fn(params, support) -> scalar``.
        params: The weights to adapt. Tensors that do not require grad (e.g.
            detached weights at test time) are adapted from a fresh alias; the
            caller's tensors are never modified.
        support: Whatever ``loss_fn`` takes, passed unchanged at every step.
        steps: Number of gradient steps; 0 returns the parameters as they are.
        lr: Step size alpha: a number, or per-parameter tensors (Meta-SGD), which
            may require grad so that the outer loss learns them.
        first_order: Drop the second-order terms: gradients are constants
            (``create_graph=False``). Cheaper; what FOMAML, Reptile and test-time
            adaptation use.
        on_step: Called as ``on_step(step, loss)`` with the 1-based step number and
            the detached support loss *before* that step's update.
        on_identity_grad: Second order only. The first step is built as
            ``theta_1 = theta_0.detach() - lr * g_0``, so a later backward reaches
            theta_0 only through g_0 (the Hessian-vector term); the identity term, the
            gradient arriving at ``theta_1[name]``, is passed to
            ``on_identity_grad(name, grad)`` instead, e.g. to add it into theta_0's
            ``.grad``. Same gradient in total, but autograd no longer buffers that
            term for theta_0 while it runs the second-order backward: one copy of
            the adapted weights less at a MAML step's peak (`maml_step` uses it).

    Returns:
        A new dict of adapted tensors with the same names. Parameters the loss
        does not depend on come back unchanged.

    Raises:
        NonFiniteLossError: The support loss is NaN or infinite; the message names the step.
        ValueError: Bad ``steps`` or ``lr``, or a loss that does not depend on ``params``.
    """
    if steps < 0:
        raise ValueError(f"inner steps must be >= 0, got {steps}")
    _check_lr(lr, params)
    if steps == 0:
        return dict(params)
    names = list(params)
    first: Params = {}  # theta_1's weights whose identity term goes to on_identity_grad
    # Autograd needs leaves that require grad; aliasing keeps the caller's flags untouched.
    current = {k: v if v.requires_grad else v.detach().requires_grad_() for k, v in params.items()}
    # Test-time adaptation may be called from evaluation code running under no_grad.
    with torch.enable_grad():
        for step in range(1, steps + 1):
            loss = loss_fn(current, support)
            check_loss(loss, f"inner step {step} of {steps}")
            if not loss.requires_grad:
                raise ValueError(f"inner step {step}: the support loss does not depend on the "
                                 "adapted parameters; does loss_fn use the params it is given?")
            if on_step is not None:
                on_step(step, loss.detach())
            grads = torch.autograd.grad(loss, [current[k] for k in names],
                                        create_graph=not first_order, allow_unused=True)
            split = set()
            if step == 1 and on_identity_grad is not None and not first_order:
                # A gradient with no graph (constant in the weights) has no Hessian term to
                # carry the meta-gradient: its weight keeps the plain identity path.
                split = {k for k, g in zip(names, grads) if g is not None and g.requires_grad}
            current = {k: current[k] if g is None else
                       _step(current[k].detach() if k in split else current[k], g, lr, k)
                       for k, g in zip(names, grads)}
            if split:
                first = {k: current[k] for k in split}
            # The new weights do not keep the gradients (a scalar rate saves nothing for
            # backward), so they can go now rather than stay through the next step: one
            # copy of the adapted weights less at the peak.
            del grads, loss
    # Hooked only now: the later inner steps' gradients pass through theta_1 too.
    for k, theta_1 in first.items():
        theta_1.register_hook(partial(on_identity_grad, k))
    return current


def _step(param: Tensor, grad: Tensor, lr: LearningRate, name: str) -> Tensor:
    """``param - lr * grad``; one fused op (and no temporary ``lr * grad``) for a scalar rate."""
    if isinstance(lr, Mapping):
        return param - lr[name] * grad
    return torch.add(param, grad, alpha=-lr)
