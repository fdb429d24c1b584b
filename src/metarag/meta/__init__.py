"""Functional meta-learning: parameter dicts, the inner loop, MAML / FOMAML / Meta-SGD / Reptile.

The module is never mutated: weights live in dicts (`Params`) that
``torch.func.functional_call`` swaps in, and every adaptation returns new dicts.
"""

from metarag.meta.algorithms import (
    MetaStepResult,
    TaskLosses,
    maml_step,
    meta_sgd_lrs,
    meta_sgd_step,
    reptile_step,
    set_grads,
)
from metarag.meta.inner import (
    Batch,
    NonFiniteLossError,
    as_batch,
    inner_loop,
    rag_loss_fn,
)
from metarag.meta.params import (
    PRESETS,
    Params,
    call_with,
    merge_params,
    select_params,
    split_params,
)

__all__ = [
    "PRESETS", "Batch", "MetaStepResult", "NonFiniteLossError", "Params", "TaskLosses",
    "as_batch", "call_with", "inner_loop", "maml_step", "merge_params", "meta_sgd_lrs",
    "meta_sgd_step", "rag_loss_fn", "reptile_step", "select_params", "set_grads", "split_params",
]
