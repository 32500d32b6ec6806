"""Paired differences over seeds, their 95% interval and the verdicts (mixseg_lite.stats)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from mixseg_lite.claims import CLAIMS_BY_NOTEBOOK, MIXED_CLAIMS, cam_claims
from mixseg_lite.errors import InputError
from mixseg_lite.report import claims_markdown, committed_tables
from mixseg_lite.stats import Claim, paired_difference, read_results, settle, t_interval, verdict

CLAIM = Claim("a > b", {"method": "a"}, {"method": "b"})


def rows_for(a: list[float], b: list[float]) -> list[dict]:
    return ([{"method": "a", "seed": s, "dice": v} for s, v in enumerate(a)]
            + [{"method": "b", "seed": s, "dice": v} for s, v in enumerate(b)])


def test_t_interval_matches_scipy_paired_t_test():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.8, 0.05, 7), rng.normal(0.75, 0.05, 7)
    mean, low, high = t_interval(a - b)
    expected = scipy_stats.ttest_rel(a, b).confidence_interval(0.95)
    assert mean == pytest.approx(float(np.mean(a - b)))
    assert (low, high) == pytest.approx((expected.low, expected.high))


def test_t_interval_by_hand():
    # d = 1, 2, 3: mean 2, sd 1, t_{0.975, 2} = 4.302653 -> half width 4.302653 / sqrt(3)
    mean, low, high = t_interval([1.0, 2.0, 3.0])
    half = 4.302652729749464 / math.sqrt(3)
    assert (mean, low, high) == pytest.approx((2.0, 2.0 - half, 2.0 + half))


@pytest.mark.parametrize("low, high, expected", [(0.01, 0.2, "holds"), (-0.2, -0.01, "opposite"),
                                                 (-0.1, 0.1, "not resolved at 5 seeds")])
def test_verdict(low, high, expected):
    assert verdict(low, high, 5) == expected


@pytest.mark.parametrize("low, high, expected", [
    (-0.015, 0.018, "no effect within ±0.02"),       # inside the margin on both sides
    (-0.02, 0.02, "no effect within ±0.02"),         # the margin itself counts as inside
    (-0.01, 0.03, "not resolved at 5 seeds"),        # reaches past +delta: a 0.03 gain is possible
    (0.001, 0.01, "holds"),                          # a small effect with a direction holds
    (-0.01, -0.001, "opposite")])
def test_no_effect_verdict_needs_the_whole_interval_inside_the_margin(low, high, expected):
    assert verdict(low, high, 5, delta=0.02) == expected


def test_claims_take_their_margin_from_the_metric_unless_given():
    assert Claim("a", {}, {}).margin == 0.02
    assert Claim("a", {}, {}, metric="hd95_mm").margin is None
    assert Claim("a", {}, {}, metric="hd95_mm", delta=2.0).margin == 2.0


def test_seeds_to_decide_by_hand():
    from mixseg_lite.stats import MAX_SEEDS_ESTIMATE, half_width, seeds_to_decide
    # mean 0.016, sd 0.0153 (student > teacher, default task, 5 seeds): the interval excludes 0 once
    # t_{0.975, n-1} * sd / sqrt(n) < 0.016, first at n = 6.
    n = seeds_to_decide(0.016, 0.0153, 0.02)
    assert half_width(0.0153, n) < 0.016 <= half_width(0.0153, n - 1)
    # mean 0 with spread: only "no effect" can decide it, once the half-width is below delta.
    n = seeds_to_decide(0.0, 0.05, 0.02)
    assert half_width(0.05, n) < 0.02 <= half_width(0.05, n - 1)
    assert seeds_to_decide(0.0, 0.05, None) == MAX_SEEDS_ESTIMATE + 1
    assert seeds_to_decide(0.1, 0.0, 0.02) is None


def test_an_unresolved_claim_reports_its_power_estimate():
    difference = paired_difference(rows_for([0.50, 0.62, 0.58, 0.61, 0.52], [0.51, 0.58, 0.60, 0.55, 0.50]), CLAIM)
    assert difference.verdict == "not resolved at 5 seeds"
    row = difference.as_row(power=True)
    assert row["delta"] == "±0.02" and int(row["seeds to decide (estimate)"]) > 5
    resolved = paired_difference(rows_for([0.6, 0.7, 0.65], [0.5, 0.6, 0.56]), CLAIM).as_row(power=True)
    assert resolved["seeds to decide (estimate)"] == ""


def test_paired_difference_pairs_by_seed_not_by_order():
    rows = rows_for([0.9, 0.8, 0.7, 0.85, 0.75], [0.85, 0.75, 0.65, 0.8, 0.7])
    rows.reverse()  # order must not matter
    difference = paired_difference(rows, CLAIM)
    assert difference.n == 5 and difference.wins == 5
    assert difference.mean == pytest.approx(0.05)
    # a constant difference has zero spread: the interval collapses onto it and the claim holds
    assert difference.low == pytest.approx(0.05) and difference.verdict == "holds"


def test_paired_difference_removes_what_the_rows_share():
    # Large spread between seeds, small consistent gain: unpaired it would not be resolved.
    a = [0.3, 0.9, 0.5, 0.7, 0.4]
    b = [x - 0.02 + 0.005 * (i % 2) for i, x in enumerate(a)]
    assert paired_difference(rows_for(a, b), CLAIM).verdict == "holds"


def test_lower_is_better_flips_the_sign():
    claim = Claim("a closer than b", {"method": "a"}, {"method": "b"}, metric="dice", lower_is_better=True)
    difference = paired_difference(rows_for([1.0, 1.1, 0.9], [2.0, 2.2, 2.1]), claim)
    assert difference.mean > 0 and difference.verdict == "holds"


def test_opposite_and_unresolved():
    assert paired_difference(rows_for([0.5, 0.6, 0.55], [0.7, 0.8, 0.72]), CLAIM).verdict == "opposite"
    assert paired_difference(rows_for([0.5, 0.8, 0.55], [0.7, 0.6, 0.56]), CLAIM).verdict.startswith("not resolved")


def test_missing_seeds_and_nan_are_left_out():
    rows = rows_for([0.9, 0.8, float("nan"), 0.7], [0.8, 0.7, 0.6])
    assert paired_difference(rows, CLAIM).n == 2


def test_bad_input_is_one_clear_error():
    with pytest.raises(InputError, match="at least 2 common seeds"):
        paired_difference(rows_for([0.9], [0.8]), CLAIM)
    duplicated = rows_for([0.9, 0.8], [0.8, 0.7]) + [{"method": "a", "seed": 0, "dice": 0.1}]
    with pytest.raises(InputError, match="two rows"):
        paired_difference(duplicated, CLAIM)
    with pytest.raises(InputError, match="no number in column 'dice'"):
        paired_difference([{"method": "a", "seed": 0}] + rows_for([], [0.1]), CLAIM)


def test_settle_skips_claims_whose_rows_are_absent():
    rows = rows_for([0.9, 0.8, 0.85], [0.8, 0.7, 0.75])
    other = Claim("c > a", {"method": "c"}, {"method": "a"})
    assert [d.claim for d in settle(rows, [CLAIM, other])] == ["a > b"]


def test_claim_sets_name_rows_the_notebooks_report():
    from mixseg_lite.train import METHODS

    named = {side["method"] for c in MIXED_CLAIMS for side in (c.better, c.worse)}
    assert named <= set(METHODS)  # every claim compares rows the ablation can train
    assert {c.better["method"] for c in MIXED_CLAIMS} <= {"kl", "kl_ent", "mean_teacher", "cps"}
    assert len(cam_claims(("T1", "T2"), ("dice_3d",))) == 8
    assert set(CLAIMS_BY_NOTEBOOK) == {"01_entropy_vs_pseudomask", "02_kl_distillation", "03_cam_equivariance"}


def test_claims_markdown_for_a_sweep_of_notebook_02():
    rows = []
    for seed in range(5):
        for method, branch, dice in [("kl", "student", 0.80), ("kl_ent", "student", 0.82 + 0.001 * seed),
                                     ("kl_ent", "teacher", 0.85)]:
            rows.append({"notebook": "02_kl_distillation", "seed": seed, "method": method, "branch": branch,
                         "dice": dice})
    table = claims_markdown(rows)
    assert "| KL+Ent > KL (student) | dice | 5 |" in table and "holds" in table
    assert "student > teacher (KL+Ent)" in table and "opposite" in table


def test_read_results_errors(tmp_path):
    with pytest.raises(InputError, match="no such results file"):
        read_results(tmp_path / "missing.csv")
    (tmp_path / "bad.csv").write_text("method,dice\nkl,0.5\n")
    with pytest.raises(InputError, match="'seed' column"):
        read_results(tmp_path / "bad.csv")


def test_committed_tables_says_how_to_regenerate_a_missing_file():
    assert "results/README.md" in committed_tables("no_such_sweep", MIXED_CLAIMS, ["method"], ["dice"])


def test_committed_tables_keeps_the_requested_row_order():
    text = committed_tables("mixed_ablation_cardiac", [], ["method", "branch"], ["dice"],
                            where={"recipe": "ours"}, order=["upper_bound", "lower_bound"])
    methods = [line.split()[0] for line in text.splitlines()[3:] if line.strip()]
    assert methods[:2] == ["upper_bound", "lower_bound"]
