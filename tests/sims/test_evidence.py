"""sims.evidence: equivalence and minimum-effect decisions on both sides of δ and straddling it,
power statements, Holm's adjustment and the δ scale of the robustness re-decision."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from sims import evidence as ev
from sims.experiments._common import Estimate

D = ev.Delta("test effect", 0.1, "units", "a test")


@pytest.mark.parametrize("est, within, beyond", [
    (Estimate(0.0, -0.05, 0.05), True, False),     # inside ±δ: equivalent; short of δ: no effect
    (Estimate(0.3, 0.2, 0.4), False, True),        # wholly beyond δ
    (Estimate(-0.3, -0.4, -0.2), False, False),    # wholly below −δ: not equivalent, no positive effect
    (Estimate(0.1, 0.05, 0.15), None, None),       # straddles δ: undecided both ways
    (Estimate(-0.1, -0.15, -0.05), None, False),   # straddles −δ
    (Estimate.exact(0.05), True, False),           # exact evidence decides by its value
    (Estimate.exact(0.2), False, True),
])
def test_within_and_beyond_on_both_sides_of_delta_and_straddling(est, within, beyond):
    assert ev.within(est, D) is within
    assert ev.beyond(est, D) is beyond


def test_delta_scale_moves_the_decision_and_is_restored():
    e = Estimate(0.15, 0.12, 0.18)
    assert ev.beyond(e, D) is True
    with ev.delta_scale(2.0):
        assert D.current == pytest.approx(0.2) and ev.beyond(e, D) is False
        with ev.delta_scale(0.5):
            assert D.current == pytest.approx(0.1)
    assert D.current == pytest.approx(0.1)
    with pytest.raises(ValueError, match="factor"):
        with ev.delta_scale(0.0):
            pass
    with pytest.raises(ValueError, match="finite number > 0"):
        ev.Delta("bad", -1.0, "", "")


def test_detectable_effect_and_samples_needed():
    z = stats.norm.ppf(0.975)
    e = Estimate(0.0, -z * 0.01, z * 0.01)  # se = 0.01
    assert ev.standard_error(e) == pytest.approx(0.01)
    assert ev.detectable(e) == pytest.approx((z + stats.norm.ppf(0.8)) * 0.01)
    assert ev.detectable(Estimate.exact(1.0)) == 0
    # se ∝ 1/√n: to detect δ = detectable/2 needs 4× the samples
    assert ev.samples_needed(e, ev.detectable(e) / 2, 32) == 128
    assert ev.samples_needed(e, 1.0, 32) == 32
    assert "resolves δ" in ev.power_text(e, 1.0, 32) and "would need seeds ≈ 128" in ev.power_text(
        e, ev.detectable(e) / 2, 32, samples="seeds")


def test_holm_matches_the_step_down_definition():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted: 0.005 (×4 = 0.02), 0.01 (×3 = 0.03), 0.03 (×2 = 0.06), 0.04 (×1 → max(0.06, 0.04) = 0.06)
    assert ev.holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert ev.holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])
    assert ev.holm([]) == []


def test_holm_controls_the_family_wise_error_under_the_null():
    # 10 null tests, 2000 families: P(any adjusted p < 0.05) <= 0.05 (binomial tolerance: one-sided
    # test at 1e-3 on 2000 families; false-failure rate < 1e-3)
    rng = np.random.default_rng(0)
    fam = 2000
    rejections = sum(min(ev.holm(rng.uniform(size=10))) < 0.05 for _ in range(fam))
    assert stats.binomtest(rejections, fam, 0.05, alternative="greater").pvalue > 1e-3
    # and it must reject: unadjusted p-values over 10 null tests reject about 40% of families
    unadjusted = sum(min(rng.uniform(size=10)) < 0.05 for _ in range(fam))
    assert stats.binomtest(unadjusted, fam, 0.05, alternative="greater").pvalue < 1e-3


def test_any_beyond_holm_needs_the_corrected_evidence():
    z = stats.norm.ppf(0.975)
    strong = Estimate(0.5, 0.5 - z * 0.05, 0.5 + z * 0.05)
    weak = Estimate(0.2, 0.2 - z * 0.05, 0.2 + z * 0.05)  # one-sided p vs δ = 0.1: Φ(−2) ≈ 0.023
    short = Estimate(0.0, -z * 0.01, z * 0.01)
    assert ev.any_beyond_holm({"a": strong}, D)[0] is True
    # alone the weak variant clears α/2 = 0.025; beside two others Holm multiplies its p by 3
    assert ev.any_beyond_holm({"a": weak}, D)[0] is True
    assert ev.any_beyond_holm({"a": weak, "b": short, "c": short}, D)[0] is None
    assert ev.any_beyond_holm({"b": short, "c": short}, D)[0] is False
    assert ev.any_beyond_holm({}, D) == (None, {})


def test_log_ratio_and_proportion():
    a, b = Estimate.exact(2.0), Estimate.exact(1.0)
    assert ev.log_ratio(a, b) == Estimate.exact(math.log(2.0))
    z = stats.norm.ppf(0.975)
    a = Estimate(2.0, 2.0 - z * 0.2, 2.0 + z * 0.2)  # relative se 0.1
    lr = ev.log_ratio(a, b)
    assert ev.standard_error(lr) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="positive"):
        ev.log_ratio(Estimate.exact(0.0), b)
    p = ev.proportion(3, 100)
    ci = stats.binomtest(3, 100).proportion_ci(method="exact")
    assert (p.value, p.low, p.high) == pytest.approx((0.03, ci.low, ci.high))
    assert ev.proportion(0, 500).low == 0 and ev.proportion(0, 500).high < 0.01
