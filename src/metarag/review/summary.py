"""Statistics of a review: win rates with 95% CIs, the both-wrong rate, inter-rater agreement.

The unit is the question, not the judgement: when several raters judge one
question, their verdicts are averaged first, so a question counts once and the
intervals are not made narrower by repeated ratings of the same answers.

- **Win rate of A** (ties count half): each question scores the mean over its
  raters of A better = 1, tie = 1/2, B better = 0; "both wrong" verdicts are left
  out (a question only judged "both wrong" drops out). The rate is the mean
  score, with a Wilson score interval on (sum of scores, questions).
- **Both-wrong rate**: each question scores the share of its raters who said
  "both wrong"; mean over judged questions, Wilson interval likewise.
- **Agreement** on the four verdicts (in system terms, so each rater's own
  display order does not matter): percent agreement and Cohen's kappa per pair of
  raters on the questions both judged; with three or more raters, also Fleiss'
  kappa on the questions every rater judged and the mean pairwise Cohen's kappa.

Wilson (1927), "Probable inference..."; Cohen (1960); Fleiss (1971).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import combinations

from metarag.review.db import VERDICTS, Comparison, Judgement, ReviewDB

Z95 = 1.959963984540054  # the 97.5% normal quantile
_SCORE = {"a": 1.0, "tie": 0.5, "b": 0.0}  # "both_wrong" scores nothing: left out


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``successes / n``.

    Fractional successes (ties counted half) are allowed: the formula only needs
    the observed proportion and n.

    Raises:
        ValueError: n < 1, or successes outside [0, n].
    """
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in [0, {n}], got {successes}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def cohen_kappa(first: Sequence[str], second: Sequence[str]) -> float | None:
    """Cohen's kappa of two raters' labels on the same items; None when undefined.

    Undefined when chance agreement is 1 (both raters used one and the same label
    throughout), or with no items.
    """
    if len(first) != len(second):
        raise ValueError(f"label lists differ in length: {len(first)} vs {len(second)}")
    n = len(first)
    if n == 0:
        return None
    observed = sum(x == y for x, y in zip(first, second)) / n
    c1, c2 = Counter(first), Counter(second)
    chance = sum(c1[k] * c2[k] for k in c1) / (n * n)
    if chance >= 1.0:
        return None
    return (observed - chance) / (1 - chance)


def fleiss_kappa(ratings: Sequence[Sequence[str]]) -> float | None:
    """Fleiss' kappa of items each rated by the same number (>= 2) of raters.

    Args:
        ratings: Per item, the labels its raters gave.

    Returns:
        Kappa, or None when undefined (no items, or every label the same).

    Raises:
        ValueError: Items rated by different numbers of raters, or by fewer than two.
    """
    if not ratings:
        return None
    n = len(ratings[0])
    if n < 2 or any(len(r) != n for r in ratings):
        raise ValueError("Fleiss' kappa needs every item rated by the same number (>= 2) "
                         "of raters")
    totals: Counter[str] = Counter()
    agreement = 0.0
    for labels in ratings:
        counts = Counter(labels)
        totals.update(counts)
        agreement += (sum(c * c for c in counts.values()) - n) / (n * (n - 1))
    observed = agreement / len(ratings)
    chance = sum((c / (n * len(ratings))) ** 2 for c in totals.values())
    if chance >= 1.0:
        return None
    return (observed - chance) / (1 - chance)


@dataclass(frozen=True)
class Rate:
    """A proportion over questions with its 95% Wilson interval (all in [0, 1])."""

    value: float
    low: float
    high: float
    n: int  # questions it is over


def _rate(successes: float, n: int) -> Rate | None:
    if n == 0:
        return None
    low, high = wilson_interval(successes, n)
    return Rate(successes / n, low, high, n)


@dataclass(frozen=True)
class RaterPair:
    """Agreement of two raters on the questions both judged."""

    rater_1: str
    rater_2: str
    shared: int
    percent: float | None      # 0-100
    kappa: float | None        # Cohen's


@dataclass
class PairSummary:
    """The summary of one comparison (system A vs system B)."""

    system_a: str
    system_b: str
    items: int                 # questions in the comparison
    judged: int                # questions with at least one judgement
    judgements: int
    raters: list[str]
    counts: dict[str, int]     # per verdict, over judgements
    win_rate_a: Rate | None    # ties half; both-wrong left out
    both_wrong: Rate | None
    multi_rated: int = 0       # questions judged by two or more raters
    rater_pairs: list[RaterPair] = field(default_factory=list)
    fleiss_kappa: float | None = None
    fleiss_items: int = 0      # questions every rater judged (>= 3 raters)
    mean_kappa: float | None = None      # mean pairwise Cohen's kappa
    mean_percent: float | None = None    # mean pairwise percent agreement


def summarize(comparison: Comparison, items: int,
              judgements: Iterable[Judgement]) -> PairSummary:
    """Win rates, both-wrong rate and agreement of one comparison's judgements."""
    by_item: dict[str, dict[str, str]] = defaultdict(dict)
    for j in judgements:
        by_item[j.key][j.rater] = j.verdict
    verdicts = [v for per in by_item.values() for v in per.values()]
    counts = {v: 0 for v in VERDICTS} | Counter(verdicts)
    raters = sorted({r for per in by_item.values() for r in per})

    win_scores, wrong_shares = [], []
    for per in by_item.values():
        decisive = [_SCORE[v] for v in per.values() if v in _SCORE]
        if decisive:
            win_scores.append(sum(decisive) / len(decisive))
        wrong_shares.append(sum(v == "both_wrong" for v in per.values()) / len(per))

    summary = PairSummary(comparison.system_a, comparison.system_b, items, len(by_item),
                          len(verdicts), raters, counts,
                          _rate(sum(win_scores), len(win_scores)),
                          _rate(sum(wrong_shares), len(wrong_shares)),
                          multi_rated=sum(len(per) >= 2 for per in by_item.values()))
    for r1, r2 in combinations(raters, 2):
        shared = [per for per in by_item.values() if r1 in per and r2 in per]
        first, second = [p[r1] for p in shared], [p[r2] for p in shared]
        percent = (100.0 * sum(x == y for x, y in zip(first, second)) / len(shared)
                   if shared else None)
        summary.rater_pairs.append(RaterPair(r1, r2, len(shared), percent,
                                             cohen_kappa(first, second)))
    kappas = [p.kappa for p in summary.rater_pairs if p.kappa is not None]
    percents = [p.percent for p in summary.rater_pairs if p.percent is not None]
    summary.mean_kappa = sum(kappas) / len(kappas) if kappas else None
    summary.mean_percent = sum(percents) / len(percents) if percents else None
    if len(raters) >= 3:
        complete = [[per[r] for r in raters] for per in by_item.values()
                    if len(per) == len(raters)]
        summary.fleiss_items = len(complete)
        summary.fleiss_kappa = fleiss_kappa(complete)
    return summary


def summarize_db(db: ReviewDB) -> list[PairSummary]:
    """`summarize` every comparison in a review database, oldest first."""
    return [summarize(c, len(db.items(c.id)), db.judgements(c.id)) for c in db.comparisons()]


# --- rendering -----------------------------------------------------------------------

def _pct(rate: Rate | None) -> str:
    return "–" if rate is None else f"{100 * rate.value:.1f}%"


def _ci(rate: Rate | None) -> str:
    return "–" if rate is None else f"[{100 * rate.low:.1f}, {100 * rate.high:.1f}]"


def _num(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _table(head: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines) + "\n"
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
             for r in [head, ["-" * w for w in widths], *rows]]
    return "\n".join(lines) + "\n"


def render(summaries: Sequence[PairSummary], *, markdown: bool = False) -> str:
    """The summary as tables: markdown (for a report) or aligned plain text.

    Three tables: results per comparison, agreement per comparison, and
    agreement per pair of raters (omitted when no question has two raters).
    """
    if not summaries:
        return "(no comparisons in the review database)\n"
    results = [[s.system_a, s.system_b, f"{s.judged}/{s.items}", str(s.judgements),
                str(s.counts["a"]), str(s.counts["b"]), str(s.counts["tie"]),
                str(s.counts["both_wrong"]), _pct(s.win_rate_a), _ci(s.win_rate_a),
                _pct(s.both_wrong), _ci(s.both_wrong)] for s in summaries]
    out = [_table(["A", "B", "questions judged", "judgements", "A better", "B better", "tie",
                   "both wrong", "A win rate (ties ½)", "95% CI", "both wrong rate", "95% CI"],
                  results, markdown)]
    agreement = []
    for s in summaries:
        if len(s.raters) < 2:
            continue
        if len(s.raters) == 2:
            agreement.append([s.system_a, s.system_b, "2", str(s.multi_rated),
                              _num(s.mean_percent, 1), _num(s.mean_kappa), "Cohen"])
        else:
            agreement.append([s.system_a, s.system_b, str(len(s.raters)),
                              str(s.fleiss_items), "–", _num(s.fleiss_kappa),
                              "Fleiss (questions all raters judged)"])
            agreement.append([s.system_a, s.system_b, str(len(s.raters)),
                              str(s.multi_rated), _num(s.mean_percent, 1), _num(s.mean_kappa),
                              "mean pairwise Cohen"])
    if agreement:
        out.append(_table(["A", "B", "raters", "questions used", "% agreement", "kappa",
                           "kappa kind"], agreement, markdown))
        pairs = [[s.system_a, s.system_b, p.rater_1, p.rater_2, str(p.shared),
                  _num(p.percent, 1), _num(p.kappa)]
                 for s in summaries for p in s.rater_pairs]
        out.append(_table(["A", "B", "rater 1", "rater 2", "shared questions", "% agreement",
                           "Cohen's kappa"], pairs, markdown))
    note = ("Win rate: the share of questions where A's answer was judged better, ties "
            "counting half and 'both wrong' verdicts left out; each question weighs once "
            "(its raters' verdicts are averaged). 95% CIs: Wilson score intervals over "
            "questions. Kappa on the four verdicts; – where undefined.\n")
    return "\n".join(out) + "\n" + note
