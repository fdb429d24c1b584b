"""Meta-training tiny Gemma 3 with only its top layer adapting: the frozen-prefix cache is
used across meta-steps and the run ends where a run without it ends."""

import pytest
import torch

from helpers import tiny_model
from metarag.checkpoint import load_checkpoint
from metarag.data.synthetic import synthetic_suite
from metarag.meta.adapt import AdaptConfig
from metarag.meta.train import MetaOptimConfig, MetaTrainConfig, meta_train
from metarag.rag.build import ModelConfig
from metarag.rag.model import EncoderCache, PrefixCache, RAGConfig, source_cache


def _config(out, encoder_dir) -> MetaTrainConfig:
    from metarag.config import from_dict

    model = from_dict(ModelConfig, tiny_model("causal", encoder=str(encoder_dir),
                                              max_source_length=48, max_target_length=12))
    model.rag = RAGConfig(k=2)
    return MetaTrainConfig(
        out=str(out), seed=0, eval_every=2, checkpoint_every=4, log_every=1,
        cache_dir=str(out.parent / "cache"), tensorboard=False, model=model,
        inner=AdaptConfig(steps=2, lr=1e-2, params=["top_layers:1"], exclude=[],
                          batch_size=None),
        meta=MetaOptimConfig(algorithm="maml", steps=4, meta_batch=2, n_shot=2, n_query=2,
                             outer_lr=1e-3, warmup_steps=1))


def test_second_order_meta_training_with_the_prefix_cache_equals_one_without(
        tmp_path, tiny_encoder_dir, monkeypatch):
    import metarag.meta.train as train

    tasks = synthetic_suite(seed=0, n_entities=12, questions_per_entity=4,
                            domains=["pharmacy", "legal"])
    made = []

    def cached(model, adapted, max_bytes):
        made.append(source_cache(model, adapted, max_bytes))
        return made[-1]

    monkeypatch.setattr(train, "source_cache", cached)
    with_cache = meta_train(_config(tmp_path / "cached", tiny_encoder_dir), tasks=tasks,
                            show_progress=False)
    (cache,) = made
    assert isinstance(cache, PrefixCache) and cache.from_layer == 1
    assert cache.hits > 0 and len(cache) > 0  # sequences recur across meta-steps

    monkeypatch.setattr(train, "source_cache", lambda *args: EncoderCache(0))  # no cache
    without = meta_train(_config(tmp_path / "plain", tiny_encoder_dir), tasks=tasks,
                         show_progress=False)
    assert with_cache.last_loss == pytest.approx(without.last_loss, rel=1e-5)
    got, want = (load_checkpoint(tmp_path / name).model for name in ("cached", "plain"))
    assert got.keys() == want.keys() and got
    for k, v in want.items():
        torch.testing.assert_close(got[k], v, rtol=1e-5, atol=1e-6)
    assert with_cache.validation == pytest.approx(without.validation, rel=1e-5)
