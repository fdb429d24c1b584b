"""Small checkpoints: only the trained weights plus the base's identity; refused on another base.

Tiny Gemma 3 + LoRA (the default model's shape) with the tiny encoder.
"""

from dataclasses import asdict

import pytest
import torch

from metarag.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from metarag.data.schema import Passage
from metarag.generation.adapters import LoRAConfig
from metarag.meta.params import select_params
from metarag.rag.build import (
    BASE_KEY,
    ModelConfig,
    base_record,
    build_model,
    load_trained,
    load_weights,
    model_weights,
)
from metarag.rag.model import RAGConfig

pytest.importorskip("peft")

PASSAGES = [Passage("p0", "Zorblat tablets are taken at 250 mg twice daily.", "Zorblat"),
            Passage("p1", "The Quillon bridge opened on 3 May 1911.", "Quillon bridge")]
QUESTIONS, ANSWERS = ["Zorblat dose?", "When did the bridge open?"], ["250 mg", "3 May 1911"]


def _config(encoder_dir) -> ModelConfig:
    return ModelConfig(encoder=str(encoder_dir), generator="tiny", generator_kind="causal",
                       lora=LoRAConfig(r=2), max_source_length=48, max_target_length=12,
                       rag=RAGConfig(k=2))


def _trained(config, seed=0, params=("lora",)):
    """A model whose selected weights moved off their initial values (as training would)."""
    built = build_model(config, seed=seed)
    names = select_params(built.model, list(params))
    own = dict(built.model.named_parameters())
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(1)
        for name in names:
            own[name].add_(0.05 * torch.randn_like(own[name]))
    return built, names


def _save(path, built, names, config, seed=0):
    return save_checkpoint(path, 1, model=model_weights(built.model, names), state={
        "model_config": asdict(config), BASE_KEY: base_record(built.model, seed=seed)})


def _loss(built) -> torch.Tensor:
    built.use_corpus(PASSAGES)
    built.model.eval()
    with torch.no_grad():
        return built.model(QUESTIONS, ANSWERS).loss


def test_a_lora_checkpoint_holds_the_adapters_and_the_base_identity(tmp_path, tiny_encoder_dir):
    config = _config(tiny_encoder_dir)
    built, names = _trained(config)
    _save(tmp_path, built, names, config)
    ckpt = load_checkpoint(tmp_path)
    assert set(ckpt.model) == set(names) and all(".lora_" in k for k in ckpt.model)
    full = sum(v.numel() for v in built.model.state_dict().values())
    assert sum(v.numel() for v in ckpt.model.values()) < full / 50
    assert ckpt.state[BASE_KEY] == {"generator": "tiny:gemma3:seed=0",
                                    "encoder": built.model.query_encoder.base_identity,
                                    "seed": 0}
    assert ckpt.state[BASE_KEY]["encoder"].startswith("sha256:")

    loaded, _ = load_trained(str(tmp_path))
    torch.testing.assert_close(_loss(loaded), _loss(built), rtol=0, atol=0)
    mine = loaded.model.state_dict()
    for k, v in built.model.state_dict().items():
        assert torch.equal(mine[k], v), k


def test_the_recorded_seed_rebuilds_the_base(tmp_path, tiny_encoder_dir):
    """A tiny base (and LoRA's A) comes from the build seed: load_trained reuses it."""
    config = _config(tiny_encoder_dir)
    built, names = _trained(config, seed=3)
    _save(tmp_path, built, names, config, seed=3)
    loaded, _ = load_trained(str(tmp_path))
    assert loaded.model.generator.base_identity == "tiny:gemma3:seed=3"
    torch.testing.assert_close(_loss(loaded), _loss(built), rtol=0, atol=0)


def test_another_base_is_refused_naming_both(tmp_path, tiny_encoder_dir):
    config = _config(tiny_encoder_dir)
    built, names = _trained(config)
    _save(tmp_path, built, names, config)
    other = build_model(config, seed=1)  # another tiny base, same shapes
    with pytest.raises(CheckpointError, match=r"trained on base tiny:gemma3:seed=0, but "
                                              r"model\.generator loads tiny:gemma3:seed=1"):
        load_weights(other.model, load_checkpoint(tmp_path))
    with pytest.raises(CheckpointError, match="seed=0.*seed=1"):
        load_trained(str(tmp_path), seed=1)

    again = build_model(config)
    again.model.query_encoder.base_identity = "sha256:" + "ab" * 32
    with pytest.raises(CheckpointError, match=r"model\.encoder loads sha256:abababababababab…"):
        load_weights(again.model, load_checkpoint(tmp_path))


def test_partial_weights_load_strictly(tmp_path, tiny_encoder_dir):
    config = _config(tiny_encoder_dir)
    built, names = _trained(config)
    weights = model_weights(built.model, names)
    base = {BASE_KEY: base_record(built.model, seed=0)}
    save_checkpoint(tmp_path / "extra", 1, state=base,
                    model={**weights, "generator.model.nope.weight": torch.zeros(2)})
    with pytest.raises(CheckpointError, match=r"1 unexpected \(e\.g\. generator\.model\.nope"):
        load_weights(build_model(config).model, load_checkpoint(tmp_path / "extra"))
    first = names[0]
    save_checkpoint(tmp_path / "shape", 1, state=base,
                    model={**weights, first: torch.zeros(3, 3)})
    with pytest.raises(CheckpointError, match=rf"other shapes \(e\.g\. {first}: saved \(3, 3\)"):
        load_weights(build_model(config).model, load_checkpoint(tmp_path / "shape"))


def test_an_older_full_checkpoint_still_loads(tmp_path, tiny_encoder_dir):
    """Written before small checkpoints: every weight, no base record."""
    config = _config(tiny_encoder_dir)
    built, _ = _trained(config, params=["all"])
    save_checkpoint(tmp_path, 1, model=dict(built.model.state_dict()),
                    state={"model_config": asdict(config)})
    loaded, _ = load_trained(str(tmp_path), seed=1)  # another base: every weight is in the file
    torch.testing.assert_close(_loss(loaded), _loss(built), rtol=0, atol=0)


def test_model_weights_is_everything_when_everything_trains(tiny_encoder_dir):
    built = build_model(_config(tiny_encoder_dir))
    everything = [n for n, _ in built.model.named_parameters()]
    assert model_weights(built.model, everything).keys() == built.model.state_dict().keys()
    assert model_weights(built.model).keys() == built.model.state_dict().keys()
    with pytest.raises(ValueError, match="not weights of the model"):
        model_weights(built.model, ["generator.nope"])


def test_the_encoder_identity_is_the_loaded_weights(tiny_encoder_dir):
    """Training the query encoder moves its fingerprint, not the identity of its base."""
    built = build_model(_config(tiny_encoder_dir))
    query, passage = built.model.query_encoder, built.passage_encoder
    assert query.base_identity == passage.base_identity == f"sha256:{passage.fingerprint()}"
    with torch.no_grad():
        next(query.model.parameters()).add_(1.0)
    assert query.fingerprint() != passage.fingerprint()
    assert query.base_identity == passage.base_identity
