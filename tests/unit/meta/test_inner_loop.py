"""inner_loop: plain SGD steps on a dict of tensors, functional, first/second order."""

import math

import pytest
import torch

from metarag.data.schema import QAExample
from metarag.meta.inner import Batch, NonFiniteLossError, inner_loop

TARGET = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
A = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))


def quadratic(params, target):
    """L(w, b) = 1/2 (w - t)^T A (w - t) + 1/2 b^2: gradient A (w - t), Hessian A."""
    d = params["w"] - target
    return 0.5 * d @ A @ d + 0.5 * params["b"] ** 2


def make_params():
    return {"w": torch.zeros(3, dtype=torch.float64, requires_grad=True),
            "b": torch.tensor(2.0, dtype=torch.float64, requires_grad=True)}


def test_zero_inner_steps_leave_the_parameters_unchanged():
    params = make_params()
    adapted = inner_loop(quadratic, params, TARGET, steps=0, lr=0.1, first_order=False)
    assert adapted.keys() == params.keys() and adapted is not params
    for k in params:
        assert torch.equal(adapted[k], params[k])


def test_steps_are_sgd_and_nothing_is_mutated():
    params = make_params()
    before = {k: v.detach().clone() for k, v in params.items()}
    adapted = inner_loop(quadratic, params, TARGET, steps=2, lr=0.1, first_order=False)
    # by hand: w <- w - 0.1 A (w - t), b <- 0.9 b, twice
    w = before["w"]
    for _ in range(2):
        w = w - 0.1 * A @ (w - TARGET)
    torch.testing.assert_close(adapted["w"], w, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(adapted["b"], before["b"] * 0.81, rtol=1e-12, atol=1e-14)
    for k in params:
        assert torch.equal(params[k], before[k]), "the input tensors were modified"
        assert adapted[k] is not params[k]


@pytest.mark.parametrize("first_order", [False, True])
def test_second_order_terms_are_kept_or_dropped(first_order):
    """d w1 / d w0 = I - lr A with second order, I when the inner gradient is a constant."""
    params = make_params()
    adapted = inner_loop(quadratic, params, TARGET, steps=1, lr=0.1, first_order=first_order)
    (jac,) = torch.autograd.grad(adapted["w"].sum(), [params["w"]])
    expected = torch.ones(3, dtype=torch.float64) - (0 if first_order else 0.1 * A.diagonal())
    torch.testing.assert_close(jac, expected, rtol=1e-12, atol=1e-14)


def test_identity_term_of_the_first_step_can_be_taken_out_of_the_graph():
    """on_identity_grad gets the gradient arriving at w1; the graph keeps the Hessian term."""
    params = {**make_params(), "c": torch.tensor(1.0, dtype=torch.float64, requires_grad=True)}
    got = {}

    def loss(p, target):  # c's gradient is a constant: it keeps the plain identity path
        return quadratic(p, target) + 3.0 * p["c"]

    adapted = inner_loop(loss, params, TARGET, steps=2, lr=0.1, first_order=False,
                         on_identity_grad=lambda k, g: got.setdefault(k, g))
    assert not got, "the later inner steps' gradients must not reach the callback"
    w_graph, c_graph = torch.autograd.grad((adapted["w"] + adapted["c"]).sum(),
                                           [params["w"], params["c"]])
    # d w2 / d w1 = I - lr A arrives at w1; d w1 / d w0 through the graph is -lr A.
    step = torch.ones(3, dtype=torch.float64) - 0.1 * A.diagonal()
    torch.testing.assert_close(got["w"], step, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(got["w"] + w_graph, step ** 2, rtol=1e-12, atol=1e-14)
    assert set(got) == {"w"} and float(c_graph) == 3.0


def test_per_parameter_rates_and_detached_start_under_no_grad():
    """Test-time use: detached weights, called under no_grad, rates per parameter."""
    params = {k: v.detach() for k, v in make_params().items()}
    lr = {"w": torch.tensor([0.1, 0.0, 0.2], dtype=torch.float64),
          "b": torch.tensor(0.5, dtype=torch.float64)}
    with torch.no_grad():
        adapted = inner_loop(quadratic, params, TARGET, steps=1, lr=lr, first_order=True)
    torch.testing.assert_close(adapted["w"], -lr["w"] * (A @ -TARGET))
    torch.testing.assert_close(adapted["b"], torch.tensor(1.0, dtype=torch.float64))
    assert not params["w"].requires_grad, "the caller's tensor flags changed"


def test_non_finite_inner_loss_names_the_step():
    calls = []

    def loss_fn(params, _):
        calls.append(1)
        return quadratic(params, TARGET) * (math.nan if len(calls) == 2 else 1.0)

    with pytest.raises(NonFiniteLossError, match="inner step 2 of 3"):
        inner_loop(loss_fn, make_params(), None, steps=3, lr=0.1, first_order=True)


def test_bad_rates_are_refused():
    with pytest.raises(ValueError, match=">= 0"):
        inner_loop(quadratic, make_params(), TARGET, steps=1, lr=-0.1, first_order=True)
    with pytest.raises(ValueError, match="1 missing"):
        inner_loop(quadratic, make_params(), TARGET, steps=1, first_order=True,
                   lr={"w": torch.tensor(0.1)})


def test_batch_trains_on_the_first_answer():
    batch = Batch.from_examples([QAExample("a", "Q1?", ("A1", "alt")), QAExample("b", "Q2?",
                                                                                 ("A2",))])
    assert batch == Batch(["Q1?", "Q2?"], ["A1", "A2"]) and len(batch) == 2
    with pytest.raises(ValueError, match="no examples"):
        Batch.from_examples([])
    with pytest.raises(ValueError, match="no reference answer"):
        Batch.from_examples([QAExample("c", "Q?", ())])
