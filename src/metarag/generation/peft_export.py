"""LoRA adapters out of metarag, in peft's own layout.

metarag injects LoRA with peft (`metarag.generation.adapters.add_lora`) but saves it
inside its own checkpoints. `export_peft` writes the adapters of a generator the
way ``PeftModel.save_pretrained`` would, so the rest of the ecosystem loads them
as they are::

    DIR/
      adapter_config.json        peft's LoraConfig, base_model_name_or_path set
      adapter_model.safetensors  base_model.model.<module>.lora_A.weight, ...
      README.md                  the base it was trained on (and Gemma's terms)

    base = AutoModelForCausalLM.from_pretrained(<the base folder>)
    model = PeftModel.from_pretrained(base, DIR)     # the adapted generator

Names are peft's ``get_peft_model_state_dict`` on the generator's model (the
adapter name ``default`` dropped) under ``base_model.model.``, the prefix a
``PeftModel`` gives them. The base's identity (`Generator.base_identity`) goes in
the safetensors metadata (``metarag_base``), where peft ignores it.

Only LoRA has a place there: a generator with a soft prompt, or a checkpoint
whose other generator weights were trained, is refused (the export would not
compute what metarag's model computes). A trained query encoder is not part of
the generator and is left out, with a warning.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from metarag.errors import MetaRAGError

if TYPE_CHECKING:
    from metarag.generation.generator import Generator

logger = logging.getLogger(__name__)

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."
"""What a ``PeftModel`` puts before the base model's own parameter names."""
_ADAPTER = "default"  # the adapter name `add_lora` injects under (peft's default)
_LORA = re.compile(r".*\.lora_[A-Za-z_]+\..*")  # the "lora" preset of metarag.meta.params
# peft's task type per generator kind: PeftModel.from_pretrained returns the
# matching PeftModelFor... class (generate() and friends); None: plain PeftModel.
_TASK_TYPES = {"causal": "CAUSAL_LM", "seq2seq": "SEQ_2_SEQ_LM"}
_GEMMA_TERMS = ("Gemma is provided under and subject to the Gemma Terms of Use found at "
                "https://ai.google.dev/gemma/terms; these adapters are a derivative of it and "
                "carry those terms on.")


class PeftExportError(MetaRAGError, ValueError):
    """The model holds something peft's LoRA layout cannot describe."""


def export_peft(generator: Generator, out: str | os.PathLike, *,
                base_model_name_or_path: str | None = None) -> Path:
    """Write ``generator``'s LoRA adapters to ``out`` in peft's layout (module docstring).

    Args:
        generator: A generator with LoRA (`metarag.generation.adapters.add_lora`).
        out: The folder to write; replaced if it holds an earlier export, refused
            if it holds anything else.
        base_model_name_or_path: Recorded in ``adapter_config.json``; None for the
            folder the base model was loaded from (its identity for a tiny model).

    Returns:
        The folder.

    Raises:
        PeftExportError: No LoRA, a soft prompt, or ``out`` holds other files.
    """
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    if "lora" not in generator.adapters:
        raise PeftExportError("the generator has no LoRA adapters to export (ModelConfig.lora "
                              "is null)")
    if "soft_prompt" in generator.adapters:
        raise PeftExportError(
            "the generator also has a soft prompt, which peft's LoRA layout cannot hold: the "
            "exported adapters alone would not compute what this model computes. Train "
            "without model.soft_prompt_tokens to export.")
    model = generator.model
    config = copy.deepcopy(model.peft_config[_ADAPTER])
    config.base_model_name_or_path = (base_model_name_or_path
                                      or getattr(model, "name_or_path", None)
                                      or generator.base_identity)
    config.inference_mode = True  # as PeftModel.save_pretrained writes it
    config.task_type = _TASK_TYPES.get(generator.kind)
    # The base's embedding rows are never LoRA-adapted here; saving them would copy the base.
    adapters = get_peft_model_state_dict(model, adapter_name=_ADAPTER,
                                         save_embedding_layers=False)
    tensors = {PEFT_PREFIX + k: v.detach().contiguous().clone() for k, v in adapters.items()}
    metadata = {"format": "pt"}
    if generator.base_identity:
        metadata["metarag_base"] = generator.base_identity

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / CONFIG_FILE).is_file():
        raise PeftExportError(f"{out} exists and holds other files; give an empty or new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    # Written beside and renamed into place: a killed export leaves no half folder.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        config.save_pretrained(str(tmp))
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata=metadata)
        (tmp / "README.md").write_text(_readme(generator, config.base_model_name_or_path),
                                       encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("exported %d LoRA tensors to %s", len(tensors), out)
    return out


def export_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Export the LoRA adapters of a metarag checkpoint (or run folder) to peft's layout.

    The model is rebuilt from the checkpoint's config and loaded as `load_trained`
    does; besides LoRA only a trained query encoder may differ from the base.

    Raises:
        PeftExportError: Other generator weights were trained (or, in an older
            full checkpoint, differ from the base), naming them; or see `export_peft`.
        CheckpointError: See `metarag.rag.build.load_weights`.
    """
    from metarag.checkpoint import load_checkpoint
    from metarag.rag.build import (
        AUX_PREFIX,
        build_model,
        build_seed,
        checkpoint_config,
        load_weights,
    )

    ckpt = load_checkpoint(checkpoint)
    built = build_model(checkpoint_config(ckpt), seed=build_seed(ckpt.state))
    base = built.model.state_dict()
    # A small checkpoint holds only what trained; an older full one holds everything,
    # so there "trained" means "differs from the rebuilt base".
    trained = [k for k, v in ckpt.model.items() if not k.startswith(AUX_PREFIX)
               and not (k in base and base[k].shape == v.shape and torch.equal(base[k], v))]
    others = [k for k in trained if k.startswith("generator.") and not _LORA.fullmatch(k)]
    if others:
        raise PeftExportError(
            f"{ckpt.path}: {len(others)} trained generator weights are not LoRA (e.g. "
            f"{', '.join(others[:3])}); peft's LoRA layout cannot hold them. Export a run "
            "that trains LoRA only (params: [lora]).")
    if any(k.startswith("query_model.") for k in trained):
        logger.warning("%s: the trained query encoder is not part of the generator and is "
                       "not exported", ckpt.path)
    load_weights(built.model, ckpt)
    return export_peft(built.model.generator, out)


def _readme(generator: Generator, base_name: str | None) -> str:
    lines = ["# LoRA adapters exported by metarag", "",
             f"Base model: `{base_name}` ({generator.base_identity or 'identity unknown'}).", "",
             "```python", "from peft import PeftModel",
             "model = PeftModel.from_pretrained(base_model, \"<this folder>\")", "```", ""]
    if "gemma" in str(getattr(generator.model.config, "model_type", "")):
        lines += [_GEMMA_TERMS, ""]
    return "\n".join(lines)
