"""One meta-step of MAML, first-order MAML, Meta-SGD and Reptile, as pure functions.

Each function takes a meta-batch of episodes (support set to adapt on, query set
to score the adapted weights), runs the shared `inner_loop` per task, and
returns the meta-gradients w.r.t. the meta-parameters in a `MetaStepResult`. The
module is never mutated and no optimizer is stepped here: the caller (the
meta-training loop) puts the gradients on ``.grad`` with `set_grads`, clips and
steps, and all-reduces them across processes first when training is distributed.

Gradients are accumulated task by task (each task's graph is freed before the
next is built), so memory grows with the inner steps, not the meta-batch size.
Second-order MAML with one inner step (the meta-training default) has a path of
its own that keeps the query pass and the support set's second-order graph apart
(`_one_step_maml_task`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from metarag.meta.inner import LearningRate, LossFn, NonFiniteLossError, check_loss, inner_loop
from metarag.meta.params import Params


class TaskEpisode(Protocol):
    """What a meta-step needs from an episode (e.g. `metarag.data.episodes.Episode`).

    ``support`` and ``query`` are passed to ``loss_fn`` unchanged; an optional
    ``task_name`` attribute is copied into the per-task losses.
    """

    @property
    def support(self) -> Any: ...

    @property
    def query(self) -> Any: ...


@dataclass
class TaskLosses:
    """The losses one task saw during a meta-step.

    Attributes:
        task_name: The episode's ``task_name``, when it has one.
        support: Support loss before each inner step (``support[0]`` is the
            loss of the meta-parameters; empty with zero inner steps).
        query: Query loss at the adapted parameters; None when not computed
            (Reptile with ``evaluate_query=False``).
    """

    task_name: str | None
    support: list[float]
    query: float | None


@dataclass
class MetaStepResult:
    """What one meta-step returns.

    Attributes:
        loss: Mean over tasks of the query loss at the adapted parameters (the
            MAML objective), or None when no query loss was computed.
        grads: Meta-gradient per meta-parameter, same names and shapes as
            ``meta_params``. Parameters the loss does not reach get zeros rather
            than being left out, so every process holds the same set of tensors
            to all-reduce.
        lr_grads: Gradients of the learnable inner learning rates (Meta-SGD), or None.
        tasks: Per-task losses, in episode order.
    """

    loss: float | None
    grads: Params
    lr_grads: Params | None = None
    tasks: list[TaskLosses] = field(default_factory=list)

    @property
    def support_loss(self) -> float | None:
        """Mean support loss of the meta-parameters (before adaptation), if any step ran."""
        first = [t.support[0] for t in self.tasks if t.support]
        return sum(first) / len(first) if first else None


def _check_episodes(episodes: Sequence[TaskEpisode]) -> list[TaskEpisode]:
    episodes = list(episodes)
    if not episodes:
        raise ValueError("a meta-step needs at least one episode")
    return episodes


def maml_step(
    loss_fn: LossFn,
    meta_params: Mapping[str, Tensor],
    episodes: Sequence[TaskEpisode],
    *,
    inner_steps: int,
    inner_lr: LearningRate,
    first_order: bool = False,
) -> MetaStepResult:
    """Meta-gradient of the MAML objective over a meta-batch.

    The objective (Finn et al. 2017, "Model-Agnostic Meta-Learning for Fast
    Adaptation of Deep Networks", eq. 2-3) is the mean over tasks i of
    ``L_query_i(U_i(theta))``, where ``U_i`` is `inner_loop` on task i's support
    set. With ``first_order=False`` the gradient flows through every inner step
    (Hessian-vector products included). With ``first_order=True`` it is FOMAML
    (same paper, §5.2): the inner gradients are constants, so each task
    contributes the query gradient evaluated at its adapted parameters.

    Meta-SGD (Li et al. 2017, "Meta-SGD: Learning to Learn Quickly for Few-Shot
    Learning") is this function with ``inner_lr`` a dict of per-parameter rate
    tensors that require grad; their gradients come back in ``lr_grads``. See
    `meta_sgd_step`.

    Args:
        loss_fn: ``loss_fn(params, data) -> scalar`` (e.g. `rag_loss_fn`).
        meta_params: The meta-parameters theta, tensors that require grad
            (e.g. ``split_params(model, names)[0]``: the module's own parameters).
        episodes: The meta-batch; each has ``support`` and ``query``.
        inner_steps: Gradient steps per task.
        inner_lr: Inner step size alpha (a number or per-parameter tensors).
        first_order: FOMAML instead of second-order MAML.

    Returns:
        The mean query loss, its gradients w.r.t. ``meta_params`` (and the learnable
        rates), and per-task losses.

    Raises:
        NonFiniteLossError: A support or query loss is NaN/inf; the message names
            the task and step.
        ValueError: No episodes, or meta-parameters that do not require grad.
    """
    episodes = _check_episodes(episodes)
    names = list(meta_params)
    no_grad = [k for k in names if not meta_params[k].requires_grad]
    if no_grad:
        raise ValueError(f"meta-parameters must require grad to get meta-gradients, "
                         f"{no_grad[0]!r} does not; use split_params(model, names)")
    lr_names = ([k for k, v in inner_lr.items() if v.requires_grad]
                if isinstance(inner_lr, Mapping) else [])
    targets = [meta_params[k] for k in names]
    if lr_names:
        targets += [inner_lr[k] for k in lr_names]
    n = len(episodes)
    tasks, query_losses = [], []
    with _grad_accumulator(targets) as accumulate:
        for i, episode in enumerate(episodes):
            query_losses.append(_maml_task(
                loss_fn, meta_params, episode, _task_label(i, n, episode),
                inner_steps=inner_steps, inner_lr=inner_lr, first_order=first_order,
                n_tasks=n, accumulate=accumulate, tasks=tasks))
        totals = accumulate.totals()
    grads_by_name = dict(zip(names, totals[:len(names)]))
    lr_grads = dict(zip(lr_names, totals[len(names):])) if lr_names else None
    return MetaStepResult(sum(query_losses) / n, grads_by_name, lr_grads, tasks)


def _maml_task(loss_fn: LossFn, meta_params: Mapping[str, Tensor], episode: TaskEpisode,
               where: str, *, inner_steps: int, inner_lr: LearningRate, first_order: bool,
               n_tasks: int, accumulate: _GradAccumulator, tasks: list[TaskLosses]) -> float:
    """One task of `maml_step`: adapt, score the query set, add its share of the gradients."""
    if inner_steps == 1 and not first_order and not isinstance(inner_lr, Mapping):
        return _one_step_maml_task(loss_fn, meta_params, episode, where, lr=inner_lr,
                                   n_tasks=n_tasks, accumulate=accumulate, tasks=tasks)
    support_losses: list[float] = []
    adapted = _adapt(loss_fn, meta_params, episode, where, steps=inner_steps, lr=inner_lr,
                     first_order=first_order, record=support_losses,
                     on_identity_grad=accumulate.add_by_name(list(meta_params)))
    query_loss = _query_loss(loss_fn, adapted, episode, where, inner_steps)
    # The graph keeps the adapted weights it needs; dropping the dict frees the rest now.
    del adapted
    # Backward per task (1/n of the mean) frees this task's graph before the next is built.
    accumulate(query_loss / n_tasks)
    tasks.append(TaskLosses(getattr(episode, "task_name", None), support_losses,
                            query_loss.item()))
    return tasks[-1].query


def _one_step_maml_task(loss_fn: LossFn, meta_params: Mapping[str, Tensor],
                        episode: TaskEpisode, where: str, *, lr: float, n_tasks: int,
                        accumulate: _GradAccumulator, tasks: list[TaskLosses]) -> float:
    """`_maml_task` for second order with one inner step, the query pass done first.

    With theta' = theta - lr g, g the support gradient, the meta-gradient is
    v - lr H v, with v the query gradient at theta' and H the support Hessian. Built
    as `inner_loop` builds it, the support set's create-graph backward (what H v
    differentiates) is held through the whole query pass. Here the support backward
    runs twice instead: first order for theta' (its forward graph kept), then, once
    v is known, with ``create_graph`` for H v, so the two never coexist. Same
    gradient for one more support backward: 8% less peak memory for 14% more time
    on the default model (docs/BENCHMARKS.md).
    """
    names = list(meta_params)
    params = [meta_params[k] for k in names]
    support_loss = loss_fn(dict(meta_params), episode.support)
    check_loss(support_loss, f"{where}, inner step 1 of 1")
    if not support_loss.requires_grad:
        raise ValueError(f"{where}, inner step 1: the support loss does not depend on the "
                         "adapted parameters; does loss_fn use the params it is given?")
    grads = torch.autograd.grad(support_loss, params, retain_graph=True, allow_unused=True)
    # New leaves: the query backward stops at theta' and leaves the support graph alone.
    adapted = {k: p if g is None else torch.add(p.detach(), g, alpha=-lr).requires_grad_()
               for k, p, g in zip(names, params, grads)}
    del grads
    query_loss = _query_loss(loss_fn, adapted, episode, where, 1)
    v = torch.autograd.grad(query_loss / n_tasks, [adapted[k] for k in names],
                            allow_unused=True)
    # The query graph's leaves are theta': drop it with them.
    query_value = query_loss.item()
    del adapted, query_loss
    for i, v_i in enumerate(v):
        if v_i is not None:
            accumulate.add(i, v_i)  # the identity term
    hessian_grads = torch.autograd.grad(support_loss, params, create_graph=True,
                                        allow_unused=True)
    terms = [(g * v_i).sum() for g, v_i in zip(hessian_grads, v)
             if g is not None and g.requires_grad and v_i is not None]
    del hessian_grads, v
    if terms:
        accumulate(torch.stack(terms).sum() * -lr)  # - lr H v
    tasks.append(TaskLosses(getattr(episode, "task_name", None), [support_loss.item()],
                            query_value))
    return query_value


def _query_loss(loss_fn: LossFn, adapted: Params, episode: TaskEpisode, where: str,
                steps: int) -> Tensor:
    """The query loss at the adapted weights; raises unless finite and differentiable."""
    query_loss = loss_fn(adapted, episode.query)
    check_loss(query_loss, f"{where}: query loss after {steps} inner steps")
    if not query_loss.requires_grad:
        raise ValueError(f"{where}: the query loss does not depend on the meta-parameters; "
                         "does loss_fn use the params it is given?")
    return query_loss


class _GradAccumulator:
    """Sums the gradients of several losses w.r.t. ``targets``, holding one copy of them.

    For leaf targets (the usual case: the module's parameters, Meta-SGD's rates)
    it lets autograd add each gradient into ``.grad`` as soon as it is ready
    (``backward(inputs=...)``), instead of collecting a full second copy with
    ``autograd.grad`` and adding it afterwards: one copy of the meta-parameters
    less at the end of every backward, where the peak of a meta-step is. The
    caller's ``.grad`` fields are set aside first and put back after (see
    `_grad_accumulator`), so nothing outside changes.
    """

    def __init__(self, targets: list[Tensor]) -> None:
        self.targets = targets
        self.in_place = all(t.is_leaf for t in targets)
        self._totals = None if self.in_place else [torch.zeros_like(t) for t in targets]

    def __call__(self, loss: Tensor) -> None:
        if self.in_place:
            torch.autograd.backward(loss, inputs=self.targets)
            return
        grads = torch.autograd.grad(loss, self.targets, allow_unused=True)
        for total, g in zip(self._totals, grads):
            if g is not None:
                total.add_(g)

    def add(self, i: int, grad: Tensor) -> None:
        """Add a gradient of ``targets[i]`` computed outside ``__call__`` (e.g. from a hook)."""
        if not self.in_place:
            self._totals[i].add_(grad)
        elif self.targets[i].grad is None:
            self.targets[i].grad = grad.detach().clone()  # autograd may still use ``grad``
        else:
            self.targets[i].grad.add_(grad)

    def add_by_name(self, names: list[str]) -> Callable[[str, Tensor], None]:
        """`add` for targets named ``names`` (the first ``len(names)`` targets, in order)."""
        index = {k: i for i, k in enumerate(names)}
        return lambda name, grad: self.add(index[name], grad)

    def totals(self) -> list[Tensor]:
        if not self.in_place:
            return self._totals
        return [torch.zeros_like(t) if t.grad is None else t.grad.detach()
                for t in self.targets]


@contextmanager
def _grad_accumulator(targets: list[Tensor]) -> Iterator[_GradAccumulator]:
    accumulator = _GradAccumulator(targets)
    saved = [t.grad for t in targets] if accumulator.in_place else []
    try:
        if accumulator.in_place:
            for t in targets:
                t.grad = None
        yield accumulator
    finally:
        for t, g in zip(targets, saved):
            t.grad = g


def meta_sgd_step(
    loss_fn: LossFn,
    meta_params: Mapping[str, Tensor],
    inner_lrs: Mapping[str, Tensor],
    episodes: Sequence[TaskEpisode],
    *,
    inner_steps: int,
    first_order: bool = False,
) -> MetaStepResult:
    """Meta-SGD: MAML whose per-parameter inner learning rates are learned as well.

    Li et al. 2017, "Meta-SGD: Learning to Learn Quickly for Few-Shot Learning":
    ``theta' = theta - alpha * grad L_support(theta)`` with ``alpha`` a tensor of
    the parameters' shape, trained by the outer loss together with ``theta``.
    The rates are not constrained positive (as in the paper).

    Args:
        inner_lrs: One tensor per meta-parameter that requires grad, e.g. from
            `meta_sgd_lrs`.
        Others: As `maml_step`.

    Returns:
        As `maml_step`, with ``lr_grads`` set.
    """
    fixed = [k for k, v in inner_lrs.items() if not v.requires_grad]
    if fixed:
        raise ValueError(f"Meta-SGD learns the inner rates, but {fixed[0]!r}'s rate does not "
                         "require grad; build them with meta_sgd_lrs()")
    return maml_step(loss_fn, meta_params, episodes, inner_steps=inner_steps,
                     inner_lr=inner_lrs, first_order=first_order)


def meta_sgd_lrs(meta_params: Mapping[str, Tensor], init: float) -> Params:
    """Learnable per-element inner learning rates, all starting at ``init`` (Li et al. 2017)."""
    return {k: torch.full_like(v.detach(), init).requires_grad_() for k, v in meta_params.items()}


def reptile_step(
    loss_fn: LossFn,
    meta_params: Mapping[str, Tensor],
    episodes: Sequence[TaskEpisode],
    *,
    inner_steps: int,
    inner_lr: LearningRate,
    evaluate_query: bool = True,
) -> MetaStepResult:
    """Reptile's pseudo-gradient over a meta-batch.

    Nichol, Achiam & Schulman 2018, "On First-Order Meta-Learning Algorithms"
    (Algorithm 2, batched): each task adapts with plain SGD on its support set,
    ``phi_i = U_i(theta)``, and theta moves towards the adapted weights,
    ``theta <- theta + epsilon * mean_i(phi_i - theta)``. This returns
    ``grads = mean_i(theta - phi_i)``, so an SGD outer step of size epsilon on
    them is exactly that update (and Adam on them is the paper's Adam variant).

    Reptile trains on the support set only; the query set, if
    ``evaluate_query``, is scored without gradients for monitoring. Sample
    episodes with ``n_query=0`` and pass ``evaluate_query=False`` to spend all
    examples on adaptation.

    Args:
        loss_fn: ``loss_fn(params, data) -> scalar``.
        meta_params: The meta-parameters theta (only read).
        episodes: The meta-batch.
        inner_steps: SGD steps per task, >= 1.
        inner_lr: Inner step size (a number or per-parameter tensors, held fixed).
        evaluate_query: Also compute each task's query loss at its adapted weights.

    Returns:
        The pseudo-gradients, per-task losses, and the mean query loss (None
        without ``evaluate_query``); ``lr_grads`` is None.
    """
    episodes = _check_episodes(episodes)
    if inner_steps < 1:
        raise ValueError(f"Reptile needs inner_steps >= 1 (its update is the adaptation "
                         f"displacement), got {inner_steps}")
    start = {k: v.detach() for k, v in meta_params.items()}
    totals = {k: torch.zeros_like(v) for k, v in start.items()}
    n = len(episodes)
    tasks, query_losses = [], []
    for i, episode in enumerate(episodes):
        where = _task_label(i, n, episode)
        support_losses: list[float] = []
        adapted = _adapt(loss_fn, start, episode, where, steps=inner_steps, lr=inner_lr,
                         first_order=True, record=support_losses)
        with torch.no_grad():
            for k, total in totals.items():
                total.add_((start[k] - adapted[k]) / n)
            query = None
            if evaluate_query:
                query_loss = loss_fn(adapted, episode.query)
                check_loss(query_loss, f"{where}: query loss after {inner_steps} inner steps")
                query = query_loss.item()
                query_losses.append(query)
        tasks.append(TaskLosses(getattr(episode, "task_name", None), support_losses, query))
    loss = sum(query_losses) / n if evaluate_query else None
    return MetaStepResult(loss, totals, None, tasks)


def set_grads(params: Mapping[str, Tensor], grads: Mapping[str, Tensor], *,
              accumulate: bool = False) -> None:
    """Write meta-gradients into the ``.grad`` fields an optimizer reads.

    Args:
        params: Leaf tensors by name, e.g. ``dict(model.named_parameters())`` or
            the Meta-SGD rates.
        grads: Gradients by name (``MetaStepResult.grads`` or ``.lr_grads``).
        accumulate: Add to existing ``.grad`` instead of replacing it.

    Raises:
        KeyError: A gradient's name is not in ``params``.
    """
    unknown = [k for k in grads if k not in params]
    if unknown:
        raise KeyError(f"{len(unknown)} gradients have no parameter, e.g. {unknown[0]!r}")
    for k, g in grads.items():
        p = params[k]
        if accumulate and p.grad is not None:
            p.grad.add_(g.detach())
        else:
            p.grad = g.detach().clone()


def _task_label(i: int, n: int, episode: TaskEpisode) -> str:
    name = getattr(episode, "task_name", None)
    return f"task {i + 1} of {n}" + (f" ({name!r})" if name else "")


def _adapt(loss_fn: LossFn, params: Mapping[str, Tensor], episode: TaskEpisode, where: str, *,
           steps: int, lr: LearningRate, first_order: bool, record: list[float],
           on_identity_grad: Callable[[str, Tensor], None] | None = None) -> Params:
    """`inner_loop` on the episode's support set, recording losses and naming the task on error."""
    try:
        return inner_loop(loss_fn, params, episode.support, steps=steps, lr=lr,
                          first_order=first_order, on_identity_grad=on_identity_grad,
                          on_step=lambda _step, loss: record.append(loss.item()))
    except NonFiniteLossError as err:
        raise NonFiniteLossError(f"{where}, {err}") from err
