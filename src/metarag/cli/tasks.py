"""`metarag tasks`: list tasks with their sizes."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from metarag.cli.common import DataOption, SeedOption, TaskOption, format_table, load


def tasks(
    data: Path | None = DataOption,
    task: list[str] | None = TaskOption,
    seed: int = SeedOption,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Print every task: domain, language, passages, and QA pairs per split.

    Skipped items (noisy sources) are listed with their reasons.
    """
    loaded = load(data, task, seed)
    summaries = [t.summary() for t in loaded]
    if as_json:
        typer.echo(json.dumps(summaries, indent=2, ensure_ascii=False))
        return
    header = ["task", "domain", "lang", "passages", "train", "dev", "test", "skipped"]
    rows = [[s["task"], s["domain"], s["language"], s["passages"], s["train"], s["dev"],
             s["test"], sum(s["skipped"].values())] for s in summaries]
    typer.echo(format_table(header, rows))
    for s in summaries:
        for reason, n in s["skipped"].items():
            typer.echo(f"  {s['task']}: skipped {n} ({reason})")
        for what, n in s["notes"].items():
            typer.echo(f"  {s['task']}: kept {n} ({what})")
