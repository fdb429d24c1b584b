"""Precision: bfloat16 matrix products over float32 weights, and what "auto" picks."""

from __future__ import annotations

import pytest
import torch

from metarag.generation import Generator, format_source, token_nll
from metarag.generation.precision import cpu_has_native_bf16, resolve_dtype
from metarag.rag.build import ModelConfig

SOURCES = [format_source("Who founded the abbey?", ["Ely Abbey: founded by Etheldreda in 673."]),
           format_source("When?", ["It was 673."])]
TARGETS = ["Etheldreda", "in 673"]


@pytest.fixture(params=["gemma3", "bert2bert"])
def gen(request: pytest.FixtureRequest) -> Generator:
    return Generator.tiny(request.param)


def _linear_output_dtypes(gen: Generator, run) -> set[torch.dtype]:
    seen: set[torch.dtype] = set()
    hooks = [m.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
             for m in gen.modules() if isinstance(m, torch.nn.Linear)]
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    return seen


def test_bfloat16_runs_products_in_bf16_and_keeps_float32_weights(gen: Generator) -> None:
    batch = gen.tokenize(SOURCES, TARGETS)
    reference = gen(**batch)
    gen.set_precision("bfloat16")
    try:
        assert gen.compute_dtype == torch.bfloat16
        assert _linear_output_dtypes(gen, lambda: gen(**batch)) == {torch.bfloat16}
        scores = gen(**batch)
        assert scores.dtype == torch.float32
        assert not torch.equal(scores, reference)  # really computed otherwise ...
        torch.testing.assert_close(scores, reference, rtol=0.05, atol=0.05)  # ... and close
        loss = token_nll(gen(**batch), batch["labels"])
        grads = torch.autograd.grad(loss, [p for p in gen.parameters() if p.requires_grad])
        assert all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
        assert all(p.dtype == torch.float32 for p in gen.parameters())
        assert all(isinstance(a, str) for a in gen.generate(SOURCES, max_new_tokens=4))
    finally:
        gen.set_precision("auto")
    assert _linear_output_dtypes(gen, lambda: gen(**batch)) == {torch.float32}


def test_second_order_gradient_under_bfloat16() -> None:
    gen = Generator.tiny("gemma3")
    gen.set_precision("bfloat16")
    batch = gen.tokenize(SOURCES, TARGETS)
    params = [p for p in gen.parameters() if p.requires_grad]
    loss = token_nll(gen(**batch), batch["labels"])
    grads = torch.autograd.grad(loss, params, create_graph=True)
    meta = torch.autograd.grad(sum((g * g).sum() for g in grads), params, allow_unused=True)
    assert any(m is not None and m.abs().sum() > 0 for m in meta)


def test_auto_is_float32_for_tiny_models_and_follows_the_hardware_for_pretrained() -> None:
    assert Generator.tiny("gemma3").compute_dtype == torch.float32
    cpu = torch.device("cpu")
    expected = torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    assert resolve_dtype("auto", cpu, auto_bf16=True) == expected
    assert resolve_dtype("auto", cpu, auto_bf16=False) == torch.float32
    assert resolve_dtype("float32", cpu, auto_bf16=True) == torch.float32
    assert resolve_dtype("bfloat16", cpu, auto_bf16=False) == torch.bfloat16


def test_unknown_precision_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown precision 'fp16'.*bfloat16"):
        ModelConfig(precision="fp16")
    with pytest.raises(ValueError, match="unknown precision"):
        Generator.tiny("gemma3").set_precision("half")
