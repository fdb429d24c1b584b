import pytest
import torch

from metarag.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from metarag.config import from_dict
from metarag.rag.build import ModelConfig, build_model, load_weights, model_weights
from metarag.rag.model import RAGConfig


def _config(encoder_dir, **rag) -> ModelConfig:
    return ModelConfig(encoder=str(encoder_dir), generator="tiny", max_source_length=48,
                       max_target_length=12, rag=RAGConfig(**rag))


def test_build_uses_a_frozen_passage_encoder(tiny_encoder_dir):
    built = build_model(_config(tiny_encoder_dir))
    assert all(not p.requires_grad for p in built.passage_encoder.model.parameters())
    assert all(p.requires_grad for p in built.model.query_model.parameters())
    # two copies: training the query side must not move the passage side
    assert built.passage_encoder.model is not built.model.query_model


def test_checkpoint_round_trip_and_refusal(tmp_path, tiny_encoder_dir):
    built = build_model(_config(tiny_encoder_dir))
    with torch.no_grad():
        for p in built.model.generator.parameters():
            p.add_(0.01)
    save_checkpoint(tmp_path, 1, model=model_weights(built.model), state={})
    again = build_model(_config(tiny_encoder_dir))
    load_weights(again.model, load_checkpoint(tmp_path))
    for (k, a), b in zip(built.model.state_dict().items(), again.model.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)

    other = build_model(ModelConfig(encoder=str(tiny_encoder_dir), generator="tiny",
                                    generator_kind="bert-lm"))
    with pytest.raises(CheckpointError, match="another model config.*missing"):
        load_weights(other.model, load_checkpoint(tmp_path))


def test_model_config_from_yaml_dict_validates():
    cfg = from_dict(ModelConfig, {"rag": {"k": 2, "fusion": "concat"}})
    assert cfg.rag.k == 2 and cfg.rag.fusion == "concat"
    with pytest.raises(ValueError, match="k must be"):
        from_dict(ModelConfig, {"rag": {"k": 0}})
    with pytest.raises(ValueError, match="max_source_length must be at least 8"):
        ModelConfig(max_source_length=4)


def test_load_trained_rebuilds_from_the_saved_config(tmp_path, tiny_encoder_dir):
    from dataclasses import asdict

    from metarag.rag.build import load_trained

    config = _config(tiny_encoder_dir, k=2)
    built = build_model(config)
    save_checkpoint(tmp_path, 3, model=model_weights(built.model),
                    state={"model_config": asdict(config)})
    loaded, state = load_trained(str(tmp_path))
    assert loaded.model.config.k == 2 and state["step"] == 3
    assert not loaded.model.training

    save_checkpoint(tmp_path / "bare", 1, model=model_weights(built.model), state={})
    with pytest.raises(CheckpointError, match="no 'model_config'"):
        load_trained(str(tmp_path / "bare"))


def test_randomly_initialised_weights_come_from_the_seed(tiny_encoder_dir):
    """A bert-lm warm start has a random LM head; its init must not depend on the global RNG."""
    config = ModelConfig(encoder=str(tiny_encoder_dir), generator_kind="bert-lm")
    torch.manual_seed(1)
    first = build_model(config, seed=3).model.state_dict()
    torch.manual_seed(2)
    second = build_model(config, seed=3).model.state_dict()
    other = build_model(config, seed=4).model.state_dict()
    assert all(torch.equal(v, second[k]) for k, v in first.items())
    assert any(not torch.equal(v, other[k]) for k, v in first.items())
