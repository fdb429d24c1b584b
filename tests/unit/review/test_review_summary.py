"""Review statistics against values worked out by hand (in the comments)."""

import pytest

from metarag.review.db import Comparison, Judgement, ReviewDB
from metarag.review.runs import Item
from metarag.review.summary import (
    cohen_kappa,
    fleiss_kappa,
    render,
    summarize,
    summarize_db,
    wilson_interval,
)

PAIR = Comparison(1, "maml", "multitask", "runs/maml", "runs/multitask")


def _judgements(rows):
    return [Judgement(1, key, rater, verdict, "a", "", "t") for key, rater, verdict in rows]


def test_wilson_interval_matches_the_textbook_values():
    # 7/10: p = .7, z^2 = 3.8415, centre = (.7 + .19207)/1.38415 = .64449,
    # half = 1.96 sqrt(.021 + .0096037)/1.38415 = .24772  ->  [.39677, .89221]
    low, high = wilson_interval(7, 10)
    assert low == pytest.approx(0.39677, abs=1e-5) and high == pytest.approx(0.89221, abs=1e-5)
    # 0/5: [0, z^2/(n + z^2)] = [0, 3.8415/8.8415] = [0, .43449]
    assert wilson_interval(0, 5) == pytest.approx((0.0, 0.43449), abs=1e-5)
    # Symmetric around 1/2, fractional successes allowed.
    low, high = wilson_interval(2.5, 5)
    assert low + high == pytest.approx(1.0)
    with pytest.raises(ValueError, match="n must be positive"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(6, 5)


def test_cohen_kappa_by_hand():
    # observed 4/5 = .8; marginals (a 2, b 2, tie 1) x (a 1, b 3, tie 1):
    # chance = (2*1 + 2*3 + 1*1)/25 = .36; kappa = (.8 - .36)/(1 - .36) = .6875
    first = ["a", "a", "b", "b", "tie"]
    second = ["a", "b", "b", "b", "tie"]
    assert cohen_kappa(first, second) == pytest.approx(0.6875)
    assert cohen_kappa(first, first) == pytest.approx(1.0)
    assert cohen_kappa(["a", "a"], ["a", "a"]) is None  # chance agreement 1: undefined
    assert cohen_kappa([], []) is None
    # Agreeing less than chance: observed 0, chance (1*1 + 1*1)/4 = .5 -> -1
    assert cohen_kappa(["a", "b"], ["b", "a"]) == pytest.approx(-1.0)


def test_fleiss_kappa_by_hand():
    # P_i = (sum n_ij^2 - 3)/6: 1, 1/3, 1, 0 -> mean 7/12.
    # p_j: a 6/12, b 5/12, tie 1/12 -> chance = (36 + 25 + 1)/144 = 62/144.
    # kappa = (84 - 62)/(144 - 62) = 22/82
    ratings = [["a", "a", "a"], ["a", "a", "b"], ["b", "b", "b"], ["a", "b", "tie"]]
    assert fleiss_kappa(ratings) == pytest.approx(22 / 82)
    assert fleiss_kappa([["a", "a"], ["a", "a"]]) is None
    assert fleiss_kappa([]) is None
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa([["a", "a"], ["a", "b", "b"]])


def test_two_raters_win_rate_both_wrong_and_agreement():
    rows = [("q1", "r1", "a"), ("q1", "r2", "a"),          # score 1
            ("q2", "r1", "tie"), ("q2", "r2", "b"),        # (1/2 + 0)/2 = 1/4
            ("q3", "r1", "both_wrong"), ("q3", "r2", "a"),  # only r2 decisive: 1
            ("q4", "r1", "both_wrong")]                     # no decisive verdict: left out
    s = summarize(PAIR, 6, _judgements(rows))
    assert (s.items, s.judged, s.judgements, s.raters) == (6, 4, 7, ["r1", "r2"])
    assert s.counts == {"a": 3, "b": 1, "tie": 1, "both_wrong": 2}
    # win rate over 3 questions: (1 + 1/4 + 1)/3 = .75
    assert s.win_rate_a.value == pytest.approx(0.75) and s.win_rate_a.n == 3
    assert (s.win_rate_a.low, s.win_rate_a.high) == pytest.approx(wilson_interval(2.25, 3))
    # both wrong per question: 0, 0, 1/2, 1 -> 1.5/4
    assert s.both_wrong.value == pytest.approx(0.375) and s.both_wrong.n == 4
    # r1 vs r2 on q1-q3: (a,a) (tie,b) (both_wrong,a): observed 1/3;
    # chance: r1 (a, tie, bw) x r2 (a 2, b 1) = 2/9; kappa = (1/3 - 2/9)/(7/9) = 1/7
    [pair] = s.rater_pairs
    assert (pair.rater_1, pair.rater_2, pair.shared) == ("r1", "r2", 3)
    assert pair.percent == pytest.approx(100 / 3)
    assert pair.kappa == pytest.approx(1 / 7)
    assert s.mean_kappa == pytest.approx(1 / 7) and s.multi_rated == 3
    assert s.fleiss_kappa is None  # only with three or more raters


def test_three_raters_fleiss_and_mean_pairwise_kappa():
    verdicts = {"x": ["a", "a", "b", "a"], "y": ["a", "a", "b", "b"],
                "z": ["a", "b", "b", "tie"]}
    rows = [(f"q{i}", r, v[i]) for r, v in verdicts.items() for i in range(4)]
    rows.append(("q9", "x", "a"))  # judged by one rater only: not in Fleiss
    s = summarize(PAIR, 5, _judgements(rows))
    assert s.fleiss_items == 4 and s.fleiss_kappa == pytest.approx(22 / 82)
    # xy: .75 observed, chance (3*2 + 1*2)/16 = .5 -> .5
    # xz: .5, chance (3*1 + 1*2)/16 = 5/16 -> (.5 - .3125)/.6875 = 3/11
    # yz: .5, chance (2*1 + 2*2)/16 = 3/8 -> (.5 - .375)/.625 = .2
    kappas = {(p.rater_1, p.rater_2): p.kappa for p in s.rater_pairs}
    assert kappas == pytest.approx({("x", "y"): 0.5, ("x", "z"): 3 / 11, ("y", "z"): 0.2})
    assert s.mean_kappa == pytest.approx((0.5 + 3 / 11 + 0.2) / 3)
    assert s.mean_percent == pytest.approx((75 + 50 + 50) / 3)


def test_no_judgements_renders_dashes():
    s = summarize(PAIR, 3, [])
    assert s.win_rate_a is None and s.both_wrong is None and s.rater_pairs == []
    text = render([s])
    assert "0/3" in text and "–" in text
    assert render([]) == "(no comparisons in the review database)\n"


def test_render_markdown_and_plain(tmp_path):
    rows = [("q1", "r1", "a"), ("q1", "r2", "a"), ("q2", "r1", "b"), ("q2", "r2", "tie")]
    s = summarize(PAIR, 2, _judgements(rows))
    md = render([s], markdown=True)
    lines = md.splitlines()
    assert lines[0].startswith("| A | B | questions judged | judgements | A better |")
    assert lines[1].startswith("|---|---|")
    # win rate (1 + 1/4)/2 = 62.5%, both wrong 0%
    assert lines[2].startswith("| maml | multitask | 2/2 | 4 | 2 | 1 | 1 | 0 | 62.5% | [")
    assert "| maml | multitask | 2 | 2 | 50.0 |" in md  # agreement row: Cohen
    assert "| maml | multitask | r1 | r2 | 2 | 50.0 |" in md
    assert "ties counting half" in md
    plain = render([s])
    assert "|" not in plain.split("\n\n")[0] and "62.5%" in plain


def test_summarize_db_reads_every_comparison(tmp_path):
    db = ReviewDB(tmp_path / "r.db")
    item = Item("t/q1", "t", "q1", "Q?", ["gold"], "x", "y")
    first = db.add_comparison("s1", "s2", [item])
    second = db.add_comparison("s1", "s3", [item])
    db.judge(first.id, "t/q1", "ann", "b", "a")
    db.judge(second.id, "t/q1", "ann", "a", "b")
    one, two = summarize_db(db)
    assert (one.system_b, one.win_rate_a.value) == ("s2", 0.0)
    assert (two.system_b, two.win_rate_a.value) == ("s3", 1.0)
