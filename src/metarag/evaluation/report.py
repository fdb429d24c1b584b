"""The benchmark report: markdown tables, the protocol's two claims, and plots.

`metarag benchmark` writes results.json::

    {"config": {...}, "metrics": ["rougeL", "f1", ...], "primary_metric": "rougeL",
     "methods": ["meta", "multitask_finetune", "finetune", "zero_shot"],
     "records": [{"held_out": "synthetic/pharmacy", "method": "meta", "shots": 16,
                  "steps": 8, "seed": 0, "lr": 0.003, "scores": {"rougeL": 31.2, ...}},
                 ...],
     "wall_seconds": 412.0}

`write_report` turns it into report.md, score_vs_shots.png and, when the grid
has an adaptation-steps curve, score_vs_steps.png next to it. The statistics
(95% Student-t intervals over held-out domains × seeds, differences paired on
(held_out, seed), which records are the main grid) live in
`metarag.evaluation.summary`.

A method whose records are all at 0 shots (zero-shot) does not depend on the
shots, so every shots table shows it as a reference row and the shots plot as
a dashed line.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metarag.evaluation import summary
from metarag.evaluation.summary import (
    Estimate,
    Results,
    Summary,
    mean_ci,
    paired_difference,
    summarize,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["BASELINES", "META_METHODS", "Claim", "Criteria", "Estimate", "Summary",
           "check_claims", "comparison_table", "lr_grid_edges", "markdown_report", "mean_ci",
           "metric_label", "paired_difference", "plot_vs_shots", "plot_vs_steps", "summarize",
           "write_report"]

REPORT_FILE, SHOTS_PLOT, STEPS_PLOT = "report.md", "score_vs_shots.png", "score_vs_steps.png"
# Table headers as in `metarag.evaluation.qa`; other metrics show their own name.
_LABELS = {"exact_match": "EM", "f1": "F1", "bleu": "BLEU", "rouge1": "ROUGE-1",
           "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "meteor": "METEOR", "mrr": "MRR"}
_BAND = "mean and 95% CI over held-out domains × seeds"


def metric_label(metric: str) -> str:
    """The display name of a metric key ("rougeL" -> "ROUGE-L", "recall@5" -> "R@5")."""
    return _LABELS.get(metric, metric.replace("recall@", "R@"))


def _fmt(e: Estimate | None, digits: int = 1) -> str:
    if e is None:
        return "–"
    if math.isnan(e.half_width):  # n == 1
        return f"{e.mean:.{digits}f}"
    return f"{e.mean:.{digits}f} ± {e.half_width:.{digits}f}"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
            *("| " + " | ".join(row) + " |" for row in rows)]


def _is_reference(results: Results, method: str) -> bool:
    """True for a method scored only at 0 shots: it is the same at every shots value."""
    return summary.shots_of(results, method) == [0]


def _present_metrics(results: Results) -> list[str]:
    return [m for m in summary.metrics(results)
            if any(r["scores"].get(m) is not None for r in summary.records(results))]


# ------------------------------------------------------------------- claims


#: Methods that meta-learn (from weights or from prompts), and the baselines a user
#: would pick at the same budget; `Criteria` picks the best of each by default.
META_METHODS = ("meta", "meta+in_context", "meta_in_context", "reptile_in_context",
                "maml_in_context", "meta_sgd_in_context", "metaicl", "metaicl_finetune")
BASELINES = ("in_context", "finetune", "finetune+in_context", "multitask_finetune",
             "multitask_finetune+in_context")


@dataclass(frozen=True)
class Criteria:
    """The protocol's two claims, on the primary metric, paired on (held_out, seed).

    1. `method` at `shots` beats `baseline` at `shots`: the mean difference is
       at least `margin` and its 95% CI excludes zero.
    2. `method` at `shots` reaches `reference` at `reference_shots`: the mean
       difference is at least 0 (the CI is reported, not required to exclude 0).

    ``method=None`` takes the best meta-learned method at `shots` (highest mean of
    the primary metric among `META_METHODS` present; else the first method), and
    ``baseline=None`` the best of `BASELINES` there: the best baseline is what a
    user would otherwise run, so that is the one to beat. Methods scored on one
    screening domain only (the results' ``screened``) are not picked.
    """

    method: str | None = None
    baseline: str | None = None
    shots: int = 16
    reference: str = "multitask_finetune"
    reference_shots: int = 64
    margin: float = 2.0


def _ranked(results: Results, metric: str, candidates: Sequence[str], shots: int) -> list[str]:
    """The candidates scored at `shots`, the highest mean first.

    Means are taken over the (held_out, seed) pairs every candidate has, so that while a
    grid is being filled a method not yet run on a hard domain does not rank first for
    it; over each candidate's own pairs when they share none.
    """
    cells = {m: summary.scores_by_pair(results, m, shots, metric) for m in candidates
             if m in summary.methods(results) and shots in summary.shots_of(results, m)}
    common = set.intersection(*(set(c) for c in cells.values())) if cells else set()

    def mean(method: str) -> float:
        pairs = common or cells[method].keys()
        return sum(cells[method][p] for p in pairs) / len(pairs) if pairs else float("-inf")

    return sorted(cells, key=mean, reverse=True)


@dataclass(frozen=True)
class Claim:
    """One claim's verdict; `difference` is None when the grid cannot test it."""

    text: str
    rule: str
    difference: Estimate | None
    met: bool
    missing: str = ""  # why it could not be tested


def _claim(results: Results, text: str, rule: str, a: tuple[str, int], b: tuple[str, int],
           passes: Callable[[Estimate], bool], confidence: float = 0.95) -> Claim:
    """Test score(a) - score(b) paired; a claim whose cells are absent is not met."""
    missing = [f"{m} at {s} shots" for m, s in (a, b)
               if m not in summary.methods(results) or s not in summary.shots_of(results, m)]
    if missing:
        return Claim(text, rule, None, False, "no records for " + " or ".join(missing))
    metric = summary.primary_metric(results)
    d = paired_difference(results, a[0], b[0], metric, a[1], b[1], confidence=confidence)
    return Claim(text, rule, d, passes(d))


def check_claims(results: Results, criteria: Criteria = Criteria()) -> list[Claim]:
    """Test both claims of `criteria` on the primary metric."""
    c = criteria
    metric = summary.primary_metric(results)
    label = metric_label(metric)
    screened = results.get("screened", {})
    metas = _ranked(results, metric, [m for m in META_METHODS if m not in screened], c.shots)
    baselines = _ranked(results, metric, list(BASELINES), c.shots)
    method = c.method or (metas[0] if metas else summary.methods(results)[0])
    # Picking the best of m methods on the same records, then testing it, is m chances to
    # win: the interval is Bonferroni-widened to 1 - 0.05/m (m = 1: the plain 95%). The
    # screened ones count: they were dropped after losing on the first domain's records.
    dropped = [m for m in META_METHODS if m in screened and m in summary.methods(results)]
    picked = 1 if c.method else max(1, len(metas) + len(dropped))
    confidence = 1 - 0.05 / picked
    baseline = c.baseline or (baselines[0] if baselines else c.reference)
    best = " (the best baseline there)" if baselines and not c.baseline else ""
    chosen = f" (the best of {picked} meta-learned methods)" if picked > 1 else ""
    ci = f"the {100 * confidence:.1f}% CI" if picked > 1 else "the 95% CI"
    return [
        _claim(results, f"{method}{chosen} at {c.shots} shots beats {baseline} at {c.shots} "
               f"shots{best} by ≥ {c.margin:g} {label}",
               f"mean difference ≥ {c.margin:g} and {ci} excludes 0",
               (method, c.shots), (baseline, c.shots),
               lambda d: d.mean >= c.margin and d.mean - d.half_width > 0,  # False for nan
               confidence),
        _claim(results, f"{method} at {c.shots} shots reaches {c.reference} at "
               f"{c.reference_shots} shots", "mean difference ≥ 0",
               (method, c.shots), (c.reference, c.reference_shots), lambda d: d.mean >= 0),
    ]


def lr_grid_edges(results: Results) -> dict[str, tuple[int, int]]:
    """Per adapted method: (cells whose picked rate is the grid's lowest or highest, cells).

    Many picks at an edge say the grid is too narrow: the best rate may lie beyond it.
    """
    counts: dict[str, list[int]] = {}
    for r in summary.main_records(results):
        if "lr_at_edge" in r:
            n = counts.setdefault(r["method"], [0, 0])
            n[0] += bool(r["lr_at_edge"])
            n[1] += 1
    return {m: (edge, total) for m, (edge, total) in counts.items()}


def _grid_edges(results: Results) -> list[str]:
    edges = lr_grid_edges(results)
    if not edges:
        return []
    grid = results.get("config", {}).get("lr_grid", [])
    lines = ["", "## Learning-rate grid", "",
             f"Grid: {', '.join(f'{x:g}' for x in grid)}; each adapted cell picks the rate "
             "with the lowest held-out dev loss.", ""]
    rows = [[m, f"{e} of {n}", "**widen the grid**" if 2 * e > n else ""]
            for m, (e, n) in edges.items()]
    return lines + _table(["method", "picked at an edge", ""], rows)


# ------------------------------------------------------------------- markdown


def _row_shots(results: Results, method: str, shots: int, required: bool) -> int | None:
    """The shots of `method`'s row in the `shots` table: `shots`, 0 for a reference
    method, or None (an error when `required`) for a method not scored there."""
    if shots in summary.shots_of(results, method):
        return shots
    if _is_reference(results, method):
        return 0
    if required:
        raise ValueError(f"method {method!r} has no records at {shots} shots")
    return None


def comparison_table(results: Results, shots: int,
                     methods: Sequence[str] | None = None) -> str:
    """A markdown table at `shots`: one row per method, one "mean ± hw" column per metric.

    Args:
        methods: rows to show, in order; all methods with records at `shots`
            (plus 0-shot reference methods) when None.
    """
    grid_shots = sorted({r["shots"] for r in summary.main_records(results)})
    if shots not in grid_shots:
        raise ValueError(f"no main-grid records at {shots} shots; "
                         f"the grid has {', '.join(map(str, grid_shots))}")
    for m in methods or ():
        summary.check_method(results, m)
    cols = _present_metrics(results)
    tables = {m: summarize(results, m) for m in cols}
    rows = []
    for method in methods if methods is not None else summary.methods(results):
        at = _row_shots(results, method, shots, required=methods is not None)
        if at is None:
            continue
        n = sum(r["method"] == method and r["shots"] == at for r in summary.main_records(results))
        cells = [_fmt(tables[m][(method, at)].pooled if (method, at) in tables[m] else None)
                 for m in cols]
        rows.append([method if at == shots else f"{method} (0 shots)", str(n), *cells])
    return "\n".join(_table(["method", "n", *map(metric_label, cols)], rows)) + "\n"


def _setup(results: Results) -> list[str]:
    recs, main = summary.records(results), summary.main_records(results)
    domains = list(dict.fromkeys(r["held_out"] for r in main))
    seeds = sorted({r["seed"] for r in main})
    config = json.dumps(results.get("config", {}), indent=2, sort_keys=True, default=str)
    return [
        f"- Held-out domains ({len(domains)}): {', '.join(domains)}",
        f"- Methods: {', '.join(summary.methods(results))}",
        *(["- Screened on one domain only (never picked for the claims; counted in "
            "their Bonferroni correction): "
           + ", ".join(f"{m} ({d})" for m, d in results["screened"].items())]
          if results.get("screened") else []),
        f"- Shots: {', '.join(map(str, sorted({r['shots'] for r in main})))}; "
        f"seeds: {', '.join(map(str, seeds))}",
        f"- Records: {len(recs)} ({len(main)} in the main grid, "
        f"{len(recs) - len(main)} on adaptation-steps curves)",
        f"- Primary metric: {metric_label(summary.primary_metric(results))}. Scores are "
        "0-100; cells are mean ± half-width of a 95% Student-t interval over held-out "
        "domains × seeds (n observations); a cell without ± has n = 1, so no interval.",
        "", "Config:", "", "```json", config, "```",
    ]


def _per_domain(results: Results, metric: str) -> list[str]:
    table = summarize(results, metric)
    domains = list(dict.fromkeys(d for s in table.values() for d in s.per_domain))
    rows = [[method, str(shots), *(_fmt(s.per_domain.get(d)) for d in domains), _fmt(s.pooled)]
            for (method, shots), s in table.items()]
    return _table(["method", "shots", *domains, "all"], rows)


def _claims(results: Results, criteria: Criteria) -> list[str]:
    rows = []
    for c in check_claims(results, criteria):
        d = c.difference
        ci = "–" if d is None or math.isnan(d.half_width) else (
            f"{d.mean - d.half_width:.2f} to {d.mean + d.half_width:.2f}")
        verdict = "met" if c.met else "not met" + (f" ({c.missing})" if c.missing else "")
        mean, n = ("–", "0") if d is None else (f"{d.mean:+.2f}", str(d.n))
        rows.append([c.text, mean, ci, n, c.rule, f"**{verdict}**"])
    return _table(["claim", "difference", "CI (see rule)", "pairs", "rule", "verdict"], rows)


def _steps(results: Results, metric: str) -> list[str]:
    curves = summary.summarize_steps(results, metric)
    steps = sorted({s for curve in curves.values() for s in curve})
    rows = [[method, str(shots), *(_fmt(curve.get(s)) for s in steps)]
            for (method, shots), curve in curves.items()]
    return _table(["method", "shots", *(f"{s} steps" for s in steps)], rows)


def markdown_report(results: Results, criteria: Criteria = Criteria(),
                    plots: Sequence[str] = ()) -> str:
    """The whole report as markdown; `plots` are image file names to embed."""
    metric = summary.primary_metric(results)
    label = metric_label(metric)
    grid_shots = sorted({r["shots"] for r in summary.main_records(results)})
    lines = ["# Benchmark report", "", *_setup(results)]
    for shots in grid_shots:
        lines += ["", f"## Scores at {shots} shots", "", comparison_table(results, shots).rstrip()]
    lines += ["", f"## {label} per held-out domain", "", *_per_domain(results, metric)]
    lines += ["", f"## Paired tests ({label}, paired on held-out domain and seed)", "",
              *_claims(results, criteria)]
    if summary.summarize_steps(results, metric):
        lines += ["", f"## {label} by adaptation steps", "", *_steps(results, metric)]
    lines += _grid_edges(results)
    lines += ["", "## Run", ""]
    if results.get("wall_seconds") is not None:
        seconds = float(results["wall_seconds"])
        lines.append(f"Wall time: {seconds:.0f} s ({seconds / 60:.1f} min).")
    for stage, seconds in results.get("stages", {}).items():
        lines.append(f"- {stage}: {seconds:.0f} s")
    for name in plots:
        lines += ["", f"![{Path(name).stem.replace('_', ' ')}]({name})"]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------- plots


def _axes(title: str, xlabel: str, ylabel: str) -> tuple[Figure, Axes]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # A bare Figure on an Agg canvas: no display, and no pyplot global state.
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    return fig, ax


def _band(ax: Axes, xs: Sequence[float], ests: Sequence[Estimate], **style: Any) -> None:
    """A line of means with a shaded CI band (no band where n == 1)."""
    means = [e.mean for e in ests]
    hws = [0.0 if math.isnan(e.half_width) else e.half_width for e in ests]
    (line,) = ax.plot(xs, means, marker="o", **style)
    ax.fill_between(xs, [m - h for m, h in zip(means, hws)],
                    [m + h for m, h in zip(means, hws)], color=line.get_color(), alpha=0.2,
                    linewidth=0)


def plot_vs_shots(results: Results, metric: str, path: str | Path) -> Path:
    """Plot `metric` against shots, one line per method; shots are evenly spaced."""
    table = summarize(results, metric)
    shots = sorted({s for _, s in table})
    label = metric_label(metric)
    fig, ax = _axes(f"{label} vs shots\n{_BAND}",
                    "shots (labelled examples from the held-out domain)", f"{label} (0-100)")
    for method in summary.methods(results):
        cells = [(i, table[(method, s)].pooled) for i, s in enumerate(shots)
                 if (method, s) in table]
        if len(shots) > 1 and _is_reference(results, method) and cells:
            _band(ax, [0, len(shots) - 1], [cells[0][1]] * 2, linestyle="--",
                  label=f"{method} (0 shots)")
        elif cells:
            _band(ax, [i for i, _ in cells], [e for _, e in cells], label=method)
    ax.set_xticks(range(len(shots)), [str(s) for s in shots])
    ax.legend()
    fig.savefig(path, dpi=120)
    return Path(path)


def plot_vs_steps(results: Results, metric: str, path: str | Path) -> Path:
    """Plot `metric` against adaptation steps, one line per (method, shots) curve."""
    curves = summary.summarize_steps(results, metric)
    if not curves:
        raise ValueError(f"no adaptation-steps curve with {metric} scores: no (method, shots) "
                         "has records at two or more steps values")
    label = metric_label(metric)
    fig, ax = _axes(f"{label} vs adaptation steps\n{_BAND}",
                    "adaptation steps (inner-loop updates on the support set)",
                    f"{label} (0-100)")
    for (method, shots), curve in curves.items():
        _band(ax, list(curve), list(curve.values()), label=f"{method} ({shots} shots)")
    ax.legend()
    fig.savefig(path, dpi=120)
    return Path(path)


def write_report(results: Results, out_dir: str | Path,
                 criteria: Criteria = Criteria()) -> dict[str, Path]:
    """Write report.md and the plots of the primary metric into `out_dir`.

    Returns:
        {"report": ..., "score_vs_shots": ..., "score_vs_steps": ...}; the steps
        plot only when the results have an adaptation-steps curve.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metric = summary.primary_metric(results)
    plots = {"score_vs_shots": plot_vs_shots(results, metric, out / SHOTS_PLOT)}
    if summary.summarize_steps(results, metric):
        plots["score_vs_steps"] = plot_vs_steps(results, metric, out / STEPS_PLOT)
    report = out / REPORT_FILE
    report.write_text(markdown_report(results, criteria, [p.name for p in plots.values()]),
                      encoding="utf-8")
    return {"report": report, **plots}
