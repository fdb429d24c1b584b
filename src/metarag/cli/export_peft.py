"""`metarag export-peft`: a checkpoint's LoRA adapters in peft's own layout."""

from __future__ import annotations

from pathlib import Path

import typer


def export_peft(
    checkpoint: Path = typer.Option(..., "--checkpoint", "-c", exists=True, file_okay=False,
                                    help="A checkpoint or run folder (train, meta-train or "
                                    "adapt) whose generator has LoRA."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for adapter_config.json and "
                             "adapter_model.safetensors (replaced if it holds an earlier "
                             "export)."),
) -> None:
    """Write the checkpoint's LoRA adapters as `peft.PeftModel.from_pretrained` reads them.

    Load them with: PeftModel.from_pretrained(<base model>, OUT). Only LoRA is exported:
    a checkpoint that trained other generator weights, or has a soft prompt, is refused.
    """
    from metarag.generation.peft_export import export_checkpoint

    written = export_checkpoint(checkpoint, out)
    typer.echo(f"LoRA adapters of {checkpoint} written to {written} (peft layout)")
