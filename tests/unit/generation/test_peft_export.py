"""LoRA adapters written in peft's layout load with peft as they are and compute the same."""

from dataclasses import asdict

import pytest
import torch

from metarag.checkpoint import save_checkpoint
from metarag.generation.adapters import LoRAConfig
from metarag.generation.peft_export import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    PeftExportError,
    export_checkpoint,
    export_peft,
)
from metarag.meta.params import select_params
from metarag.rag.build import BASE_KEY, ModelConfig, base_record, build_model, model_weights

peft = pytest.importorskip("peft")


def _built(encoder_dir, lora=None, **overrides):
    config = ModelConfig(encoder=str(encoder_dir), generator="tiny", generator_kind="causal",
                         lora=lora or LoRAConfig(r=2), max_source_length=48,
                         max_target_length=12, **overrides)
    built = build_model(config)
    own = dict(built.model.named_parameters())
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(1)
        for name in select_params(built.model, ["lora"]):  # as if trained: B leaves zero
            own[name].add_(0.05 * torch.randn_like(own[name]))
    return config, built


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("top_layers", [None, 1])
def test_peft_loads_the_export_and_computes_what_metarag_computes(tmp_path, tiny_encoder_dir,
                                                                  top_layers):
    from safetensors import safe_open

    _, built = _built(tiny_encoder_dir, lora=LoRAConfig(r=2, top_layers=top_layers))
    generator = built.model.generator
    out = export_peft(generator, tmp_path / "adapters")
    assert (out / CONFIG_FILE).is_file() and (out / WEIGHTS_FILE).is_file()
    with safe_open(str(out / WEIGHTS_FILE), "pt") as f:
        names = list(f.keys())
        assert f.metadata()["metarag_base"] == generator.base_identity
    assert names and all(n.startswith("base_model.model.") and ".lora_" in n for n in names)
    if top_layers == 1:  # LoRA in the top block only, and peft finds it there
        assert all(".layers.1." in n for n in names)

    # A fresh copy of the same base, without adapters, then peft's own loader.
    base = type(generator).tiny("causal", seed=0).model
    ids = torch.tensor([[2, 17, 33, 5, 9, 41]])
    plain = _logits(base, ids)
    adapted = peft.PeftModel.from_pretrained(base, str(out))
    assert isinstance(adapted, peft.PeftModelForCausalLM)
    expected = _logits(generator.model, ids)
    torch.testing.assert_close(_logits(adapted, ids), expected)
    assert not torch.allclose(plain, expected)  # the adapters do change the answer


def test_a_checkpoint_exports_and_a_rewrite_replaces_the_folder(tmp_path, tiny_encoder_dir):
    from safetensors.torch import load_file

    config, built = _built(tiny_encoder_dir)
    names = select_params(built.model, ["lora"])
    save_checkpoint(tmp_path / "ckpt", 1, model=model_weights(built.model, names),
                    state={"model_config": asdict(config),
                           BASE_KEY: base_record(built.model, seed=0)})
    out = export_checkpoint(tmp_path / "ckpt", tmp_path / "adapters")
    first = load_file(out / WEIGHTS_FILE)
    assert first.keys() == {"base_model.model." + n.removeprefix("generator.model.")
                            .replace(".default", "") for n in names}
    (out / "stale.txt").write_text("from an earlier export")
    export_checkpoint(tmp_path / "ckpt", out)  # an earlier export is replaced
    again = load_file(out / WEIGHTS_FILE)
    assert all(torch.equal(again[k], v) for k, v in first.items())
    assert not (out / "stale.txt").exists()

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep me")
    with pytest.raises(PeftExportError, match="holds other files"):
        export_checkpoint(tmp_path / "ckpt", tmp_path / "other")
    assert (tmp_path / "other" / "notes.txt").read_text() == "keep me"


def test_what_peft_cannot_hold_is_refused(tmp_path, tiny_encoder_dir):
    _, prompted = _built(tiny_encoder_dir, soft_prompt_tokens=2)
    with pytest.raises(PeftExportError, match="soft prompt"):
        export_peft(prompted.model.generator, tmp_path / "a")

    config, built = _built(tiny_encoder_dir)
    names = select_params(built.model, ["lora"])
    names += [n for n in select_params(built.model, ["generator"]) if "layernorm" in n][:1]
    with torch.no_grad():
        dict(built.model.named_parameters())[names[-1]].add_(1.0)
    save_checkpoint(tmp_path / "ckpt", 1, model=model_weights(built.model, names),
                    state={"model_config": asdict(config),
                           BASE_KEY: base_record(built.model, seed=0)})
    with pytest.raises(PeftExportError, match=r"1 trained generator weights are not LoRA"):
        export_checkpoint(tmp_path / "ckpt", tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_the_export_peft_command(tmp_path, tiny_encoder_dir):
    from typer.testing import CliRunner

    from metarag.cli import app

    config, built = _built(tiny_encoder_dir)
    save_checkpoint(tmp_path / "ckpt", 1,
                    model=model_weights(built.model, select_params(built.model, ["lora"])),
                    state={"model_config": asdict(config),
                           BASE_KEY: base_record(built.model, seed=0)})
    result = CliRunner().invoke(app, ["export-peft", "-c", str(tmp_path / "ckpt"),
                                      "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "peft layout" in result.stdout and (tmp_path / "out" / CONFIG_FILE).is_file()
