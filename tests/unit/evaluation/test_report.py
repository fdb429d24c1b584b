"""The benchmark report: intervals and paired tests by hand, the markdown, real PNGs."""

from __future__ import annotations

import copy
import math
import statistics

import pytest
from scipy import stats

from metarag.evaluation.report import (
    Criteria,
    check_claims,
    comparison_table,
    lr_grid_edges,
    markdown_report,
    mean_ci,
    paired_difference,
    plot_vs_shots,
    plot_vs_steps,
    summarize,
    write_report,
)
from metarag.evaluation.summary import curve_records, main_records, summarize_steps

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DOMAINS = {"d/easy": 0.0, "d/hard": 20.0}  # a big domain effect, which pairing removes
SEEDS = (0, 1, 2)
# maml@16 - mtft@16 per (domain, seed), in DOMAINS x SEEDS order: mean 3, sd sqrt(0.8)
DELTA = (2.0, 3.0, 4.0, 3.0, 2.0, 4.0)


def grid(shift: float = 0.0) -> dict:
    """A known grid: mtft@16 = 20 + domain + seed; maml@16 = mtft@16 + DELTA + shift;
    mtft@64 = mtft@16 + 2; zero_shot@0 = 5 + domain; a maml@16 curve at steps 0 and 4
    (plus a repeat of the final point at steps 8 that the main grid's record overrides)."""
    recs = []

    def add(held_out, method, shots, steps, seed, score, **extra):
        recs.append({"held_out": held_out, "method": method, "shots": shots, "steps": steps,
                     "seed": seed, "lr": 0.003, "scores": {"rougeL": score, "f1": score / 2},
                     **extra})

    pairs = [(d, s) for d in DOMAINS for s in SEEDS]
    for (d, s), delta in zip(pairs, DELTA):
        mtft = 20.0 + DOMAINS[d] + s
        add(d, "multitask_finetune", 16, 8, s, mtft)
        add(d, "multitask_finetune", 64, 8, s, mtft + 2.0)
        add(d, "maml", 16, 8, s, mtft + delta + shift)
        add(d, "zero_shot", 0, 0, s, 5.0 + DOMAINS[d])
        add(d, "maml", 16, 0, s, 10.0, curve=True)
        add(d, "maml", 16, 4, s, 15.0 + s, curve=True)
        add(d, "maml", 16, 8, s, 999.0, curve=True)
    return {"config": {"model": "tiny", "inner": {"steps": 8}},
            "metrics": ["rougeL", "f1"], "primary_metric": "rougeL",
            "methods": ["maml", "multitask_finetune", "zero_shot"],
            "records": recs, "wall_seconds": 412.0}


def t_half_width(values, confidence=0.95):
    n = len(values)
    return stats.t.ppf((1 + confidence) / 2, n - 1) * statistics.stdev(values) / math.sqrt(n)


# ------------------------------------------------------------------ statistics


def test_mean_ci_is_the_student_t_interval():
    mean, hw = mean_ci([1.0, 2.0, 3.0, 4.0])
    # s = sqrt(5/3), t_{0.975, 3} = 3.182446 -> 3.182446 * 1.290994 / 2
    assert mean == 2.5
    assert hw == pytest.approx(2.054260, abs=1e-6)
    assert hw == pytest.approx(t_half_width([1.0, 2.0, 3.0, 4.0]))
    assert mean_ci([1.0, 2.0, 3.0, 4.0], confidence=0.9)[1] == pytest.approx(
        t_half_width([1.0, 2.0, 3.0, 4.0], 0.9))


def test_mean_ci_of_one_value_has_no_interval():
    mean, hw = mean_ci([31.2])
    assert mean == 31.2 and math.isnan(hw)


def test_mean_ci_rejects_bad_input():
    with pytest.raises(ValueError, match="at least one value"):
        mean_ci([])
    with pytest.raises(ValueError, match="confidence must be in"):
        mean_ci([1.0, 2.0], confidence=95)


def test_paired_difference_removes_the_domain_effect():
    d = paired_difference(grid(), "maml", "multitask_finetune", "rougeL", 16)
    assert d.n == 6
    assert d.mean == pytest.approx(3.0)
    assert d.half_width == pytest.approx(t_half_width(DELTA))  # 0.939, not the domain spread
    reach = paired_difference(grid(), "maml", "multitask_finetune", "rougeL", 16, 64)
    assert reach.mean == pytest.approx(1.0)
    assert reach.half_width == pytest.approx(d.half_width)


def test_paired_difference_uses_only_matched_pairs():
    results = grid()
    results["records"] = [r for r in results["records"]
                          if not (r["method"] == "maml" and r["seed"] == 0)]
    d = paired_difference(results, "maml", "multitask_finetune", "rougeL", 16)
    assert d.n == 4
    assert d.mean == pytest.approx(statistics.mean([3.0, 4.0, 2.0, 4.0]))


def test_summarize_pools_domains_and_seeds_and_splits_by_domain():
    table = summarize(grid(), "rougeL")
    assert list(table) == [("maml", 16), ("multitask_finetune", 16),
                           ("multitask_finetune", 64), ("zero_shot", 0)]
    mtft = [20.0, 21.0, 22.0, 40.0, 41.0, 42.0]
    pooled = table[("multitask_finetune", 16)].pooled
    assert (pooled.mean, pooled.n) == (31.0, 6)
    assert pooled.half_width == pytest.approx(t_half_width(mtft))
    easy = table[("multitask_finetune", 16)].per_domain["d/easy"]
    assert (easy.mean, easy.n) == (21.0, 3)
    assert easy.half_width == pytest.approx(t_half_width([20.0, 21.0, 22.0]))


def test_curve_records_stay_out_of_the_main_grid():
    results = grid()
    assert all(not r.get("curve") for r in main_records(results))
    assert list(curve_records(results)) == [("maml", 16)]
    curve = summarize_steps(results, "rougeL")[("maml", 16)]
    assert list(curve) == [0, 4, 8]
    assert curve[4].mean == pytest.approx(16.0)
    assert curve[8].mean == pytest.approx(34.0)  # the main grid's point, not the 999 repeat


def test_an_unflagged_grid_uses_the_largest_steps():
    results = grid()
    for r in results["records"]:
        r.pop("curve", None)
    results["records"] = [r for r in results["records"] if r["scores"]["rougeL"] != 999.0]
    assert summarize(results, "rougeL")[("maml", 16)].pooled.mean == pytest.approx(34.0)
    assert list(summarize_steps(results, "rougeL")[("maml", 16)]) == [0, 4, 8]


# ------------------------------------------------------------------ markdown


def test_comparison_table_has_the_right_numbers():
    table = comparison_table(grid(), 16)
    maml = [22.0, 24.0, 26.0, 43.0, 43.0, 46.0]
    lines = table.splitlines()
    assert lines[0] == "| method | n | ROUGE-L | F1 |"
    assert lines[2] == (f"| maml | 6 | 34.0 ± {t_half_width(maml):.1f} "
                        f"| 17.0 ± {t_half_width([v / 2 for v in maml]):.1f} |")
    assert lines[4].startswith("| zero_shot (0 shots) | 6 | 15.0 ± ")  # reference row
    only = comparison_table(grid(), 16, methods=["multitask_finetune"])
    assert len(only.splitlines()) == 3


def test_report_shows_one_observation_without_an_interval():
    results = grid()
    results["records"] = [r for r in results["records"] if r["seed"] == 0
                          and r["held_out"] == "d/easy"]
    report = markdown_report(results)
    assert "| maml | 1 | 22.0 | 11.0 |" in report
    claims = check_claims(results)
    assert claims[0].difference.n == 1 and not claims[0].met  # no interval, no claim


def test_markdown_report_has_the_numbers_and_sections():
    report = markdown_report(grid(), plots=["score_vs_shots.png"])
    for heading in ("# Benchmark report", "## Scores at 0 shots", "## Scores at 16 shots",
                    "## Scores at 64 shots", "## ROUGE-L per held-out domain",
                    "## Paired tests", "## ROUGE-L by adaptation steps"):
        assert heading in report
    hw = t_half_width(DELTA)
    assert (f"| maml at 16 shots beats multitask_finetune at 16 shots (the best baseline there) "
            f"by ≥ 2 ROUGE-L | +3.00 "
            f"| {3 - hw:.2f} to {3 + hw:.2f} | 6 |") in report
    assert "| maml | 16 | 24.0 ± " in report  # d/easy column of the per-domain table
    assert "Wall time: 412 s (6.9 min)." in report
    assert "![score vs shots](score_vs_shots.png)" in report
    assert '"steps": 8' in report  # the config


def test_verdicts_flip_with_the_data():
    assert [c.met for c in check_claims(grid())] == [True, True]
    assert markdown_report(grid()).count("**met**") == 2
    worse = grid(shift=-1.5)  # +1.5 over mtft@16 (< 2); -0.5 against mtft@64
    assert [c.met for c in check_claims(worse)] == [False, False]
    assert markdown_report(worse).count("**not met**") == 2
    lenient = Criteria(margin=1.0)
    assert [c.met for c in check_claims(worse, lenient)] == [True, False]


def test_a_claim_without_its_cells_is_reported_not_raised():
    results = grid()
    results["records"] = [r for r in results["records"] if r["shots"] != 64]
    claims = check_claims(results)
    assert claims[0].met and claims[1].difference is None
    assert "not met (no records for multitask_finetune at 64 shots)" in markdown_report(results)


# ------------------------------------------------------------------ plots and files


def test_plots_are_real_pngs(tmp_path):
    for path in (plot_vs_shots(grid(), "f1", tmp_path / "shots.png"),
                 plot_vs_steps(grid(), "rougeL", tmp_path / "steps.png")):
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000


def test_write_report_writes_the_report_and_plots(tmp_path):
    paths = write_report(grid(), tmp_path / "run")
    assert set(paths) == {"report", "score_vs_shots", "score_vs_steps"}
    assert paths["score_vs_steps"].read_bytes().startswith(PNG_MAGIC)
    assert "score_vs_steps.png" in paths["report"].read_text(encoding="utf-8")

    results = grid()
    results["records"] = [r for r in results["records"] if not r.get("curve")]
    paths = write_report(results, tmp_path / "flat")
    assert set(paths) == {"report", "score_vs_shots"}  # no curve, no steps plot
    assert paths["score_vs_shots"].stat().st_size > 0
    assert "adaptation steps" not in paths["report"].read_text(encoding="utf-8")


# ------------------------------------------------------------------ errors


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="no records"):
        summarize({"records": []}, "rougeL")
    with pytest.raises(ValueError, match="no records"):
        markdown_report({"config": {}})
    broken = copy.deepcopy(grid())
    del broken["records"][3]["seed"]
    with pytest.raises(ValueError, match=r"records\[3\] lacks seed"):
        summarize(broken, "rougeL")
    with pytest.raises(ValueError, match="metric 'bertscore' is not in any record.*rougeL, f1"):
        summarize(grid(), "bertscore")
    with pytest.raises(ValueError, match="unknown method 'reptile'.*maml"):
        paired_difference(grid(), "reptile", "maml", "rougeL", 16)
    with pytest.raises(ValueError, match="unknown method 'reptile'"):
        comparison_table(grid(), 16, methods=["maml", "reptile"])
    with pytest.raises(ValueError, match="'maml' has no records at 64 shots"):
        paired_difference(grid(), "maml", "multitask_finetune", "rougeL", 64)
    with pytest.raises(ValueError, match="no main-grid records at 32 shots"):
        comparison_table(grid(), 32)
    flat = grid()
    flat["records"] = [r for r in flat["records"] if not r.get("curve")]
    with pytest.raises(ValueError, match="no adaptation-steps curve"):
        plot_vs_steps(flat, "rougeL", "unused.png")
    repeated = grid()
    repeated["records"].append(dict(repeated["records"][0]))
    with pytest.raises(ValueError, match="two main-grid records for held_out='d/easy'"):
        summarize(repeated, "rougeL")


def test_claims_default_to_the_best_meta_method_against_the_best_baseline():
    results = grid()
    extra = []
    for r in results["records"]:
        if r["method"] == "multitask_finetune" and r["shots"] == 16:
            # in_context beats multi-task by 1 everywhere: it becomes the baseline to beat.
            extra.append({**r, "method": "in_context", "lr": None,
                          "scores": {k: v + 1 for k, v in r["scores"].items()}})
        if r["method"] == "maml" and r["shots"] == 16 and not r.get("curve"):
            extra.append({**r, "method": "meta", "scores": {k: v - 0.5 for k, v in
                                                            r["scores"].items()}})
    results["records"] += extra
    results["methods"] += ["meta", "in_context"]
    claims = check_claims(results)
    # "meta" is the only meta-learned method of META_METHODS present; "maml" is not one.
    assert claims[0].text.startswith("meta at 16 shots beats in_context at 16 shots "
                                     "(the best baseline there)")
    assert claims[0].difference.mean == pytest.approx(3.0 - 0.5 - 1.0)
    assert claims[1].text == "meta at 16 shots reaches multitask_finetune at 64 shots"
    fixed = check_claims(results, Criteria(method="maml", baseline="multitask_finetune"))
    assert fixed[0].difference.mean == pytest.approx(3.0)
    assert "best baseline" not in fixed[0].text


def test_report_counts_rates_picked_at_the_grid_edge():
    results = grid()
    results["config"]["lr_grid"] = [0.001, 0.003, 0.01]
    for i, r in enumerate(main_records(results)):
        if r["method"] == "maml":
            r["lr_at_edge"] = i % 3 != 0
    edges = lr_grid_edges(results)
    assert set(edges) == {"maml"} and edges["maml"][1] == 6
    report = markdown_report(results)
    assert "## Learning-rate grid" in report and "Grid: 0.001, 0.003, 0.01" in report
    assert (f"| maml | {edges['maml'][0]} of 6 | "
            + ("**widen the grid**" if 2 * edges["maml"][0] > 6 else "")) in report
    assert "## Learning-rate grid" not in markdown_report(grid())


def test_a_method_picked_among_several_gets_a_bonferroni_interval():
    results = grid()
    extra = []
    for r in results["records"]:
        if r["method"] == "maml" and r["shots"] == 16 and not r.get("curve"):
            extra.append({**r, "method": "meta"})
            extra.append({**r, "method": "metaicl",
                          "scores": {k: v - 1 for k, v in r["scores"].items()}})
    results["records"] += extra
    results["methods"] += ["meta", "metaicl"]
    claim = check_claims(results, Criteria(baseline="multitask_finetune"))[0]
    assert claim.text.startswith("meta (the best of 2 meta-learned methods) at 16 shots")
    assert "97.5% CI excludes 0" in claim.rule
    single = check_claims(results, Criteria(method="meta", baseline="multitask_finetune"))[0]
    assert single.difference.mean == claim.difference.mean == pytest.approx(3.0)
    assert claim.difference.half_width > single.difference.half_width


def test_a_method_screened_on_one_domain_is_not_picked_for_the_claims():
    results = grid()
    extra = []
    for r in results["records"]:
        if r["method"] == "maml" and r["shots"] == 16 and not r.get("curve"):
            extra.append({**r, "method": "meta"})
            if r["held_out"] == "d/hard":  # the higher pooled mean, from one domain only
                extra.append({**r, "method": "metaicl",
                              "scores": {k: v + 5 for k, v in r["scores"].items()}})
    results["records"] += extra
    results["methods"] += ["meta", "metaicl"]
    assert check_claims(results)[0].text.startswith("metaicl (the best of 2")
    results["screened"] = {"metaicl": "d/hard"}
    # Never picked, but still one of the chances to win: the interval stays widened.
    claim = check_claims(results)[0]
    assert claim.text.startswith("meta (the best of 2") and "97.5% CI" in claim.rule
    assert "counted in their Bonferroni correction): metaicl (d/hard)" in (
        markdown_report(results))


def test_methods_are_ranked_on_the_pairs_they_share_while_a_grid_fills():
    """metaicl, so far run on the hard-scoring domain only, has the higher pooled mean but
    trails meta on the pairs both have: meta is the one picked."""
    results = grid()
    extra = []
    for r in results["records"]:
        if r["method"] == "maml" and r["shots"] == 16 and not r.get("curve"):
            extra.append({**r, "method": "meta"})
            if r["held_out"] == "d/hard":
                extra.append({**r, "method": "metaicl",
                              "scores": {k: v - 1 for k, v in r["scores"].items()}})
    results["records"] += extra
    results["methods"] += ["meta", "metaicl"]
    pooled = summarize(results, "rougeL")
    assert pooled[("metaicl", 16)].pooled.mean > pooled[("meta", 16)].pooled.mean
    assert check_claims(results, Criteria(baseline="multitask_finetune"))[0].text.startswith(
        "meta (the best of 2")
