"""MAML, FOMAML, Meta-SGD and Reptile against hand computations (float64, tight tolerances).

The reference numbers come from an independent path: the parameters are
flattened into one vector and differentiated with torch.func.grad/hessian, and
the MAML chain rule is multiplied out by hand.
"""

import copy
from dataclasses import dataclass

import pytest
import torch
from torch import nn
from torch.func import functional_call

from metarag.meta.algorithms import (
    maml_step,
    meta_sgd_lrs,
    meta_sgd_step,
    reptile_step,
    set_grads,
)
from metarag.meta.inner import NonFiniteLossError, rag_loss_fn
from metarag.meta.params import select_params, split_params

TIGHT = {"rtol": 1e-10, "atol": 1e-12}
ALPHA = 0.3


@dataclass
class ToyEpisode:
    support: tuple[torch.Tensor, torch.Tensor]
    query: tuple[torch.Tensor, torch.Tensor]


@pytest.fixture()
def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()


@pytest.fixture()
def episodes():
    gen = torch.Generator().manual_seed(1)

    def data():
        x = torch.randn(5, 3, generator=gen, dtype=torch.float64)
        return x, torch.sin(x.sum(-1, keepdim=True))

    return [ToyEpisode(data(), data()) for _ in range(2)]


def mse_fn(model):
    def loss_fn(params, batch):
        x, y = batch
        return ((functional_call(model, params, (x,)) - y) ** 2).mean()
    return loss_fn


class Flat:
    """The MLP's loss as a function of one flat parameter vector, for torch.func."""

    def __init__(self, model):
        self.model = model
        self.names = [n for n, _ in model.named_parameters()]
        self.shapes = [p.shape for _, p in model.named_parameters()]
        self.theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        self.grad = torch.func.grad(self.loss)
        # jacrev of grad (reverse over reverse): jacfwd would load the jvp decompositions.
        self.hessian = torch.func.jacrev(self.grad)

    def loss(self, vec, batch):
        params, i = {}, 0
        for name, shape in zip(self.names, self.shapes):
            params[name] = vec[i:i + shape.numel()].view(shape)
            i += shape.numel()
        return mse_fn(self.model)(params, batch)

    def flat(self, params):
        return torch.cat([params[n].reshape(-1) for n in self.names])


def test_second_order_maml_equals_the_hand_unrolled_meta_gradient(mlp, episodes):
    """Two inner steps: grad = mean_i (I - a H(t0)) (I - a H(t1)) grad L_query(t2)."""
    f = Flat(mlp)
    eye = torch.eye(len(f.theta), dtype=torch.float64)
    expected = torch.zeros_like(f.theta)
    for ep in episodes:
        t0 = f.theta
        t1 = t0 - ALPHA * f.grad(t0, ep.support)
        t2 = t1 - ALPHA * f.grad(t1, ep.support)
        jac_t = (eye - ALPHA * f.hessian(t0, ep.support)) @ (eye - ALPHA * f.hessian(
            t1, ep.support))  # (dt2/dt0)^T, Hessians being symmetric
        expected += jac_t @ f.grad(t2, ep.query) / len(episodes)

    meta_params = dict(mlp.named_parameters())
    result = maml_step(mse_fn(mlp), meta_params, episodes, inner_steps=2, inner_lr=ALPHA,
                       first_order=False)
    torch.testing.assert_close(f.flat(result.grads), expected, **TIGHT)
    # The second-order terms matter here, so the check above is not vacuous.
    first = maml_step(mse_fn(mlp), meta_params, episodes, inner_steps=2, inner_lr=ALPHA,
                      first_order=True)
    assert (f.flat(first.grads) - expected).abs().max() > 1e-4
    assert len(result.tasks) == 2 and all(len(t.support) == 2 for t in result.tasks)
    assert result.loss == pytest.approx(sum(t.query for t in result.tasks) / 2, rel=1e-12)


def test_one_inner_step_takes_its_own_path_to_the_same_meta_gradient(mlp, episodes):
    """One step (the query pass before the support's second-order graph):
    grad = mean_i (I - a H(t0)) grad L_query(t1), as by hand and as the general path."""
    f = Flat(mlp)
    eye = torch.eye(len(f.theta), dtype=torch.float64)
    expected = torch.zeros_like(f.theta)
    for ep in episodes:
        t1 = f.theta - ALPHA * f.grad(f.theta, ep.support)
        expected += (eye - ALPHA * f.hessian(f.theta, ep.support)) @ f.grad(t1, ep.query) / 2
    meta_params = dict(mlp.named_parameters())
    result = maml_step(mse_fn(mlp), meta_params, episodes, inner_steps=1, inner_lr=ALPHA)
    torch.testing.assert_close(f.flat(result.grads), expected, **TIGHT)
    # The general path (per-parameter rate tensors, here all ALPHA) agrees.
    rates = {k: torch.tensor(ALPHA, dtype=torch.float64) for k in meta_params}
    general = maml_step(mse_fn(mlp), meta_params, episodes, inner_steps=1, inner_lr=rates)
    torch.testing.assert_close(f.flat(general.grads), expected, **TIGHT)
    assert [len(t.support) for t in result.tasks] == [1, 1]
    assert result.loss == pytest.approx(general.loss, rel=1e-12)


def test_first_order_maml_is_the_query_gradient_at_the_adapted_parameters(mlp, episodes):
    f = Flat(mlp)
    expected = torch.zeros_like(f.theta)
    for ep in episodes:
        t = f.theta
        for _ in range(2):
            t = t - ALPHA * f.grad(t, ep.support)
        expected += f.grad(t, ep.query) / len(episodes)
    result = maml_step(mse_fn(mlp), dict(mlp.named_parameters()), episodes, inner_steps=2,
                       inner_lr=ALPHA, first_order=True)
    torch.testing.assert_close(f.flat(result.grads), expected, **TIGHT)


def test_meta_sgd_with_constant_rates_equals_maml(mlp, episodes):
    meta_params = dict(mlp.named_parameters())
    maml = maml_step(mse_fn(mlp), meta_params, episodes, inner_steps=1, inner_lr=ALPHA)
    lrs = meta_sgd_lrs(meta_params, ALPHA)
    msgd = meta_sgd_step(mse_fn(mlp), meta_params, lrs, episodes, inner_steps=1)
    for k in meta_params:
        torch.testing.assert_close(msgd.grads[k], maml.grads[k], **TIGHT)
    assert msgd.loss == pytest.approx(maml.loss, rel=1e-12)
    # d/d alpha of L_query(t0 - alpha * g0) = -g0 * grad L_query(t1), elementwise (Li et al. 2017)
    f = Flat(mlp)
    expected = torch.zeros_like(f.theta)
    for ep in episodes:
        g0 = f.grad(f.theta, ep.support)
        expected -= g0 * f.grad(f.theta - ALPHA * g0, ep.query) / len(episodes)
    torch.testing.assert_close(f.flat(msgd.lr_grads), expected, **TIGHT)
    assert maml.lr_grads is None


def test_reptile_with_one_task_and_one_step_moves_along_the_sgd_direction(mlp, episodes):
    meta_params = dict(mlp.named_parameters())
    before = {k: v.detach().clone() for k, v in meta_params.items()}
    result = reptile_step(mse_fn(mlp), meta_params, episodes[:1], inner_steps=1, inner_lr=ALPHA)
    # Reference: one step of torch.optim.SGD on a copy of the module.
    reference = copy.deepcopy(mlp)
    optimizer = torch.optim.SGD(reference.parameters(), lr=ALPHA)
    x, y = episodes[0].support
    ((reference(x) - y) ** 2).mean().backward()
    optimizer.step()
    for k, stepped in reference.named_parameters():
        # outer step of size 1 lands on the adapted weights: theta - (theta - phi) = phi
        torch.testing.assert_close(before[k] - result.grads[k], stepped.detach(), **TIGHT)
        assert torch.equal(meta_params[k], before[k]) and meta_params[k].grad is None
    assert result.tasks[0].query is not None and result.lr_grads is None


def test_set_grads_and_non_finite_query_loss(mlp, episodes):
    meta_params = dict(mlp.named_parameters())
    result = maml_step(mse_fn(mlp), meta_params, episodes, inner_steps=1, inner_lr=ALPHA)
    set_grads(meta_params, result.grads)
    for k, p in meta_params.items():
        assert torch.equal(p.grad, result.grads[k])

    def exploding(params, batch):
        loss = mse_fn(mlp)(params, batch)
        return loss * float("inf") if batch is episodes[1].query else loss

    with pytest.raises(NonFiniteLossError, match="task 2 of 2: query loss"):
        maml_step(exploding, meta_params, episodes, inner_steps=1, inner_lr=ALPHA)


def test_second_order_maml_through_the_tiny_rag_model(any_tiny_rag, rag_episodes):
    """float32, real RAGModel: grads only for the chosen subset, the module untouched."""
    kind, tiny_rag = any_tiny_rag
    part = "decoder" if kind == "bert2bert" else "lora"
    names = select_params(tiny_rag, (part, "query_encoder"))
    adapted, frozen = split_params(tiny_rag, names)
    before = {k: v.detach().clone() for k, v in tiny_rag.state_dict().items()}
    loss_fn = rag_loss_fn(tiny_rag, frozen)

    result = maml_step(loss_fn, adapted, rag_episodes, inner_steps=1, inner_lr=0.5)

    assert list(result.grads) == names
    assert all(torch.isfinite(g).all() for g in result.grads.values())
    for prefix in ("generator.model.decoder." if kind == "bert2bert" else "generator.",
                   "query_model."):
        norm = sum(g.norm() for k, g in result.grads.items() if k.startswith(prefix))
        assert norm > 0, f"no meta-gradient reached {prefix}*"
    assert not any(k.startswith("generator.model.encoder.") for k in result.grads)
    if kind == "causal":
        assert all(".lora_" in k for k in result.grads if k.startswith("generator."))
    assert result.support_loss > result.loss, "one inner step should lower the loss"
    # Second order really ran: FOMAML's gradient differs.
    first = maml_step(loss_fn, adapted, rag_episodes, inner_steps=1, inner_lr=0.5,
                      first_order=True)
    diff = max((result.grads[k] - first.grads[k]).abs().max() for k in names)
    assert diff > 1e-6
    torch.testing.assert_close(first.loss, result.loss, rtol=1e-5, atol=1e-6)
    # Never mutated: same weights, no .grad written.
    for k, v in tiny_rag.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed"
    assert all(p.grad is None for p in tiny_rag.parameters())


@pytest.mark.parametrize("non_leaf", [False, True])
def test_maml_step_leaves_the_callers_grad_fields_alone(mlp, episodes, non_leaf):
    """Meta-gradients are summed in .grad while the step runs (one copy less); the caller's
    .grad fields come back untouched, and non-leaf meta-parameters take the other path."""
    meta_params = dict(mlp.named_parameters())
    reference = maml_step(mse_fn(mlp), meta_params, episodes, inner_steps=1, inner_lr=ALPHA)
    marker = {k: torch.full_like(v, 7.0) for k, v in meta_params.items()}
    for k, v in meta_params.items():
        v.grad = marker[k]
    params = {k: v * 1.0 for k, v in meta_params.items()} if non_leaf else meta_params
    result = maml_step(mse_fn(mlp), params, episodes, inner_steps=1, inner_lr=ALPHA)
    for k, v in meta_params.items():
        assert v.grad is marker[k] and bool((v.grad == 7.0).all())
        torch.testing.assert_close(result.grads[k], reference.grads[k], **TIGHT)
        v.grad = None
