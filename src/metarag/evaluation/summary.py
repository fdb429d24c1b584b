"""Statistics over a benchmark's results.json: intervals, summaries and paired differences.

`metarag benchmark` scores a grid of records, one per held-out domain, method,
shots, adaptation steps and seed (schema in `metarag.evaluation.report`). This
module turns them into means with uncertainty; `report` turns those into text
and plots.

- `mean_ci`: a Student-t interval. We can afford a handful of seeds and
  domains, and at n < 30 a normal interval would be too narrow.
- `summarize`: mean ± CI per (method, shots), pooled over held-out domains and
  seeds (each (domain, seed) record is one observation), and per domain.
- `paired_difference`: two cells compared record by record, paired on
  (held_out, seed). Both sides share each domain's difficulty, so pairing
  removes that spread and the interval is far narrower than two pooled ones.

Main grid and steps curve: records with `"curve": true` belong only to the
adaptation-steps curve. Of the other records each (method, shots) keeps those
with its largest `steps`, so a grid that does not flag its curve still works.
A record whose scores lack a metric, or hold null for it (e.g. recall with no
gold passages), is left out of that metric's statistics.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

Record = Mapping[str, Any]
Results = Mapping[str, Any]
#: Keys every record must have.
REQUIRED_KEYS = ("held_out", "method", "shots", "steps", "seed", "scores")


class Estimate(NamedTuple):
    """A mean and the half-width of its confidence interval over n observations."""

    mean: float
    half_width: float  # nan when n == 1: one observation gives no interval
    n: int


@dataclass(frozen=True)
class Summary:
    """One (method, shots) cell: pooled over domains and seeds, and per domain."""

    pooled: Estimate
    per_domain: dict[str, Estimate]


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Mean and Student-t confidence half-width; the half-width is nan for one value.

    half_width = t_{(1 + confidence) / 2, n - 1} * s / sqrt(n), with s the sample
    standard deviation (n - 1 in the denominator).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("mean_ci needs at least one value, got none")
    mean = math.fsum(xs) / len(xs)
    if len(xs) == 1:
        return mean, math.nan
    from scipy import stats

    t = float(stats.t.ppf((1.0 + confidence) / 2.0, df=len(xs) - 1))
    return mean, t * statistics.stdev(xs) / math.sqrt(len(xs))


def estimate(values: Sequence[float], confidence: float = 0.95) -> Estimate:
    """`mean_ci` with the number of observations attached."""
    return Estimate(*mean_ci(values, confidence), len(values))


# ------------------------------------------------------------------ the records


def records(results: Results) -> list[Record]:
    """All records, checked: a non-empty list whose items carry every required key."""
    recs = results.get("records") if isinstance(results, Mapping) else None
    if not recs:
        raise ValueError("results have no records ('records' is missing or empty): "
                         "the benchmark produced nothing to report")
    for i, r in enumerate(recs):
        missing = [k for k in REQUIRED_KEYS if k not in r]
        if missing:
            raise ValueError(f"records[{i}] lacks {', '.join(missing)}; "
                             f"every record needs {', '.join(REQUIRED_KEYS)}")
    return list(recs)


def _listed(results: Results, key: str, found: Iterable[str]) -> list[str]:
    """results[key] in its order, then anything else found in the records."""
    names = list(results.get(key) or [])
    return names + [f for f in dict.fromkeys(found) if f not in names]


def methods(results: Results) -> list[str]:
    """Method names in display order: results["methods"], then any others seen."""
    return _listed(results, "methods", (r["method"] for r in records(results)))


def metrics(results: Results) -> list[str]:
    """Metric names in display order: results["metrics"], then any others seen."""
    return _listed(results, "metrics", (m for r in records(results) for m in r["scores"]))


def primary_metric(results: Results) -> str:
    """results["primary_metric"], or the first metric when it is not given."""
    return results.get("primary_metric") or metrics(results)[0]


def check_metric(results: Results, metric: str) -> None:
    """Raise ValueError unless some record has a score for `metric`."""
    if not any(r["scores"].get(metric) is not None for r in records(results)):
        raise ValueError(f"metric {metric!r} is not in any record's scores; "
                         f"available: {', '.join(metrics(results))}")


def check_method(results: Results, method: str) -> None:
    """Raise ValueError unless `method` is one of the results' methods."""
    known = methods(results)
    if method not in known:
        raise ValueError(f"unknown method {method!r}; the results have {', '.join(known)}")


def _unique(recs: Iterable[Record], keys: tuple[str, ...], what: str) -> None:
    seen: set[tuple[Any, ...]] = set()
    for r in recs:
        key = tuple(r[k] for k in keys)
        if key in seen:
            where = ", ".join(f"{k}={v!r}" for k, v in zip(keys, key))
            raise ValueError(f"two {what} records for {where}; flag steps-curve records "
                             "with \"curve\": true and remove repeated runs")
        seen.add(key)


def main_records(results: Results) -> list[Record]:
    """The main grid: unflagged records at their (method, shots)'s largest steps."""
    grid = [r for r in records(results) if not r.get("curve", False)]
    top: dict[tuple[str, int], int] = {}
    for r in grid:
        key = (r["method"], r["shots"])
        top[key] = max(top.get(key, r["steps"]), r["steps"])
    main = [r for r in grid if r["steps"] == top[(r["method"], r["shots"])]]
    _unique(main, ("held_out", "method", "shots", "seed"), "main-grid")
    return main


def curve_records(results: Results) -> dict[tuple[str, int], list[Record]]:
    """Records of each (method, shots) scored at two or more `steps` values.

    The main grid's final point joins its curve; a curve record that repeats it
    (same domain, seed and steps) is dropped in its favour.
    """
    main = main_records(results)
    in_main = {id(r) for r in main}
    rest = [r for r in records(results) if id(r) not in in_main]
    point = ("held_out", "method", "shots", "steps", "seed")
    _unique(rest, point, "steps-curve")
    points = {tuple(r[k] for k in point): r for r in main}
    for r in rest:
        points.setdefault(tuple(r[k] for k in point), r)
    groups: dict[tuple[str, int], list[Record]] = defaultdict(list)
    for r in points.values():
        groups[(r["method"], r["shots"])].append(r)
    order = {m: i for i, m in enumerate(methods(results))}
    return {k: groups[k] for k in sorted(groups, key=lambda k: (order[k[0]], k[1]))
            if len({r["steps"] for r in groups[k]}) > 1}


def shots_of(results: Results, method: str) -> list[int]:
    """The shots values at which `method` has main-grid records, ascending."""
    return sorted({r["shots"] for r in main_records(results) if r["method"] == method})


# ----------------------------------------------------------------- statistics


def _scored(recs: Iterable[Record], metric: str) -> list[tuple[Record, float]]:
    return [(r, float(r["scores"][metric])) for r in recs
            if r["scores"].get(metric) is not None]


def summarize(results: Results, metric: str,
              confidence: float = 0.95) -> dict[tuple[str, int], Summary]:
    """Mean ± CI of `metric` per (method, shots) on the main grid, in display order.

    Pooled over held-out domains and seeds, and per held-out domain (over seeds).
    """
    check_metric(results, metric)
    cells: dict[tuple[str, int], list[tuple[Record, float]]] = defaultdict(list)
    for r, v in _scored(main_records(results), metric):
        cells[(r["method"], r["shots"])].append((r, v))
    order = {m: i for i, m in enumerate(methods(results))}
    out = {}
    for key in sorted(cells, key=lambda k: (order[k[0]], k[1])):
        domains: dict[str, list[float]] = defaultdict(list)
        for r, v in cells[key]:
            domains[r["held_out"]].append(v)
        out[key] = Summary(estimate([v for _, v in cells[key]], confidence),
                           {d: estimate(vs, confidence) for d, vs in domains.items()})
    return out


def summarize_steps(results: Results, metric: str,
                    confidence: float = 0.95) -> dict[tuple[str, int], dict[int, Estimate]]:
    """Mean ± CI of `metric` per steps value for each curve, pooled over domains and seeds."""
    check_metric(results, metric)
    out = {}
    for key, recs in curve_records(results).items():
        by_steps: dict[int, list[float]] = defaultdict(list)
        for r, v in _scored(recs, metric):
            by_steps[r["steps"]].append(v)
        if by_steps:
            out[key] = {s: estimate(by_steps[s], confidence) for s in sorted(by_steps)}
    return out


def scores_by_pair(results: Results, method: str, shots: int,
                   metric: str) -> dict[tuple[str, int], float]:
    """{(held_out, seed): score} of one main-grid (method, shots) cell."""
    check_method(results, method)
    if shots not in shots_of(results, method):
        have = ", ".join(map(str, shots_of(results, method))) or "none"
        raise ValueError(f"method {method!r} has no records at {shots} shots (it has: {have})")
    recs = [r for r in main_records(results) if r["method"] == method and r["shots"] == shots]
    return {(r["held_out"], r["seed"]): v for r, v in _scored(recs, metric)}


def paired_difference(results: Results, method_a: str, method_b: str, metric: str,
                      shots_a: int, shots_b: int | None = None,
                      confidence: float = 0.95) -> Estimate:
    """Mean ± CI of score(a) - score(b), paired on (held_out, seed).

    Args:
        shots_b: shots of `method_b`; defaults to `shots_a`. Asking "does A at 16
            shots reach B at 64?" is `shots_a=16, shots_b=64`.

    Returns:
        The estimate; `n` is the number of pairs. Records without a partner are
        left out, so compare `n` with the grid size.
    """
    check_metric(results, metric)
    shots_b = shots_a if shots_b is None else shots_b
    a = scores_by_pair(results, method_a, shots_a, metric)
    b = scores_by_pair(results, method_b, shots_b, metric)
    pairs = sorted(a.keys() & b.keys())
    if not pairs:
        raise ValueError(f"{method_a} at {shots_a} shots and {method_b} at {shots_b} shots "
                         f"share no (held_out, seed) pair with a {metric} score")
    return estimate([a[p] - b[p] for p in pairs], confidence)
