"""Options and helpers shared by several commands."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from metarag.data.schema import Task

DATA_HELP = ("Folder of task folders (e.g. ../shared/data), or one task folder. "
             "Without it: the embedded synthetic suite.")
TASK_HELP = "Only these tasks (folder or synthetic domain names); repeat the option."

DataOption = typer.Option(None, "--data", help=DATA_HELP, file_okay=False)
TaskOption = typer.Option(None, "--task", "-t", help=TASK_HELP)
SeedOption = typer.Option(0, "--seed", help="Seed for splits and the synthetic suite.")
CacheDirOption = typer.Option(
    "runs/cache", "--cache-dir",
    help="Reuse passage embeddings saved here (keyed by encoder and corpus); "
    "'none' to always re-encode.")
NoRepeatOption = typer.Option(
    None, "--no-repeat-ngram", min=0,
    help="Never repeat an n-gram of this many tokens within an answer (stops the loops "
    "of an undertrained generator; 0: off). Default: the model's config (off).")
InContextOption = typer.Option(
    None, "--in-context", min=0,
    help="In-context K-shot: put K solved examples (question, passage, answer) before the "
    "question in the prompt. Default: a checkpoint adapted with its support set in the "
    "prompt (adapt.in_context) gets that support set; else none.")
EncoderOption = typer.Option(
    None, "--encoder",
    help="Local model folder (or hub name when online). Default: the bundled MiniLM.")


def format_table(header: list[str], rows: list[list[object]]) -> str:
    """Plain aligned columns for the terminal."""
    cells = [header, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def load(data: Path | None, names: list[str] | None, seed: int) -> list[Task]:
    """The tasks a command works on: --data/--task as the user gave them."""
    from metarag.data.loaders import load_tasks

    return load_tasks(data, names or None, seed=seed)


def cache_dir_value(text: str | None) -> str | None:
    """The --cache-dir option as a folder, or None for 'none' / empty (no cache)."""
    return None if text is None or text.strip().lower() in ("", "none") else text


def demo_examples(demos: str | None, state: dict) -> list:
    """The examples --in-context draws from: --demos' train split, or the support set
    the checkpoint was adapted on (its ``support_ids``)."""
    from metarag.data.loaders import load_task
    from metarag.meta.adapt import support_examples

    if demos is None and not state.get("support_ids"):
        raise typer.BadParameter("give --demos TASK (whose train split supplies the examples); "
                                 "this checkpoint records no support set", param_hint="--demos")
    seed = int(state.get("config", {}).get("data", {}).get("seed", 0))
    if demos is not None:
        return load_task(demos, seed=seed).train
    return support_examples(state.get("task_source") or state["task"], state["support_ids"], seed)
