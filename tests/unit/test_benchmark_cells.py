"""The benchmark's cell store: one process per run folder."""

import pytest

from metarag.benchmark import BenchmarkConfig, BenchmarkError, CellStore


def test_a_second_run_on_the_same_folder_is_refused_until_the_first_closes(tmp_path):
    config = BenchmarkConfig(out=str(tmp_path))
    first = CellStore(tmp_path, config)
    with pytest.raises(BenchmarkError, match="another benchmark is running"):
        CellStore(tmp_path, config)
    first.close()
    CellStore(tmp_path, config).close()


def test_settings_added_later_keep_older_cells_valid(tmp_path):
    """The committed leave-one-domain-out run resumes: settings added since its first cells
    (at the values those cells ran with) leave its fingerprint as the cells recorded it."""
    import json
    from pathlib import Path

    from metarag.config import load_config

    root = Path(__file__).resolve().parents[2]
    cells = root / "docs/results/benchmark-gemma/cells.jsonl"
    recorded = {json.loads(line)["fingerprint"] for line in cells.read_text().splitlines()}
    config = load_config(BenchmarkConfig, root / "configs/benchmark-gemma-lodo.yaml")
    store = CellStore(tmp_path, config)
    store.close()
    assert recorded == {store.fingerprint}


def test_in_context_adaptation_is_chosen_by_method_not_by_setting():
    with pytest.raises(ValueError, match="meta_in_context or metaicl_finetune"):
        from metarag.meta.adapt import AdaptConfig

        BenchmarkConfig(adapt=AdaptConfig(in_context=True))


def test_screened_methods_run_on_the_first_held_out_domain_only(tmp_path):
    from metarag.benchmark import methods_on

    config = BenchmarkConfig(out=str(tmp_path), held_out=["a", "b"],
                             methods=["in_context", "zero_shot"], screen_methods=["meta"])
    assert methods_on(config, "a") == ["meta", "in_context", "zero_shot"]
    assert methods_on(config, "b") == ["in_context", "zero_shot"]
    store = CellStore(tmp_path, config)
    store.close()
    plain = CellStore(tmp_path, BenchmarkConfig(out=str(tmp_path), held_out=["a", "b"],
                                                methods=["in_context", "zero_shot"]))
    plain.close()
    assert store.fingerprint == plain.fingerprint  # which cells, not their values
    with pytest.raises(ValueError, match="first of held_out"):
        BenchmarkConfig(methods=["zero_shot"], screen_methods=["meta"])
    with pytest.raises(ValueError, match="both methods and screen_methods"):
        BenchmarkConfig(held_out=["a"], methods=["meta"], screen_methods=["meta"])


def test_meta_sgd_adapts_with_its_learned_rates_scaled_by_the_grid_rate():
    """Each grid rate multiplies the learned per-parameter rates by rate / meta.inner.lr."""
    import torch

    from metarag.benchmark import _adapt_with_best_lr
    from metarag.data.schema import QAExample, Task

    def loss_fn(params, _batch):  # gradient 1 for every weight
        return params["w"].sum()

    examples = [QAExample(id=f"q{i}", question=f"q{i}?", answers=("a",)) for i in range(4)]
    task = Task(name="t", domain="t", language="en", corpus=[], train=examples, dev=examples,
                test=examples)
    config = BenchmarkConfig(lr_grid=[0.1, 0.3])
    config.adapt.steps, config.adapt.batch_size, config.meta.inner.lr = 2, 2, 0.1
    init = {"w": torch.zeros(2)}
    rates = {"w": torch.tensor([1.0, 0.0])}
    lr, snapshots = _adapt_with_best_lr(config, init, loss_fn, examples, task, [1], rates)
    # The lower dev loss is the larger step: 0.3 / 0.1 = 3x the learned rates, 2 steps.
    assert lr == 0.3
    torch.testing.assert_close(snapshots[1]["w"], torch.tensor([-3.0, 0.0]))
    torch.testing.assert_close(snapshots[2]["w"], torch.tensor([-6.0, 0.0]))
    _, plain = _adapt_with_best_lr(config, init, loss_fn, examples, task, [])
    torch.testing.assert_close(plain[2]["w"], torch.tensor([-0.6, -0.6]))  # no rates: the grid's
