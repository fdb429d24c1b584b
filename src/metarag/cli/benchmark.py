"""`metarag benchmark`: the leave-one-domain-out evaluation protocol, with report and plots."""

from __future__ import annotations

from pathlib import Path

import typer


def benchmark(
    config: Path | None = typer.Option(None, "--config", "-c", exists=True, dir_okay=False,
                                       help="YAML config (see configs/benchmark-demo.yaml). "
                                       "Default: built-in defaults on the synthetic suite."),
    overrides: list[str] | None = typer.Option(
        None, "--set", "-s", help="Override a config key, e.g. --set shots=[0,4,16] "
        "--set held_out=[synthetic/legal] --set meta.meta.steps=50; repeat the option."),
    report_only: bool = typer.Option(
        False, "--report-only", help="Compute nothing: rebuild results.json, the report and "
        "the plots from the cells already in OUT/cells.jsonl (a run's progress, also while "
        "it runs; with --set, a view of part of the grid)."),
) -> None:
    """Compare the meta-learned init with the baselines on held-out domains.

    For each held-out domain: meta-train and multi-task-train on the other
    domains (same budget; reused from OUT/<domain>/ when already trained),
    then adapt every method with the same steps and learning-rate grid at each
    number of shots and seed, and score answers and retrieval on the held-out
    test split. Writes OUT/results.json, OUT/report.md (mean and 95% CI per
    metric, paired tests) and PNG plots of score against shots and steps, and
    prints the comparison table.
    """
    from metarag.benchmark import BenchmarkConfig, report_benchmark, run_benchmark
    from metarag.config import load_config, save_config
    from metarag.evaluation.report import comparison_table

    cfg = load_config(BenchmarkConfig, config, overrides or [])
    out = Path(cfg.out)
    if report_only:
        results = report_benchmark(cfg)
    else:
        save_config(cfg, out / "config.yaml")
        results = run_benchmark(cfg)
    shots = cfg.curve_shots if cfg.curve_shots in cfg.shots else max(cfg.shots)
    typer.echo(f"\nHeld out: {', '.join(sorted({r['held_out'] for r in results['records']}))}; "
               f"{shots} shots, {len(cfg.seeds)} seeds (mean ± 95% CI):\n")
    typer.echo(comparison_table(results, shots))
    plots = [str(p) for p in (out / "score_vs_shots.png", out / "score_vs_steps.png")
             if p.is_file()]
    typer.echo(f"\nwall time {results['wall_seconds']:.0f} s. Report: {out / 'report.md'}; "
               f"plots: {', '.join(plots) or 'none'}")
