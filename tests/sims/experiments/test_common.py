"""Interval formatting: one number of decimals for value and bounds, never a cut number."""

from __future__ import annotations

import math

import pytest

from sims.experiments._common import Estimate, format_estimate


@pytest.mark.parametrize("args, text", [
    ((0.0150, 0.0139, 0.0161), "0.0150 [0.0139, 0.0161]"),
    ((311.3, 296.0, 326.6), "311 [296, 327]"),
    ((0.0002255, 0.000223, 0.000228), "2.255e-04 [2.230e-04, 2.280e-04]"),
    ((-0.001706, -0.009341, 0.00593), "-0.0017 [-0.0093, 0.0059]"),
    ((5.3e6, 5.1e6, 5.5e6), "5.30e+06 [5.10e+06, 5.50e+06]"),
    ((0.875, 0.875, 0.875), "0.875"),
])
def test_format_estimate_reference_values(args, text):
    assert format_estimate(*args) == text
    assert str(Estimate(*args)) == text


@pytest.mark.parametrize("value, half", [(1.234, 0.01), (1e-7, 3e-9), (12345.0, 7.0), (0.5, 0.3), (-3.0, 1e-6)])
def test_format_estimate_bounds_round_trip(value, half):
    # every printed number parses, and the printed interval is the interval to its shown precision
    text = format_estimate(value, value - half, value + half)
    v, rest = text.split(" [")
    lo, hi = rest.rstrip("]").split(", ")
    for shown, true in ((v, value), (lo, value - half), (hi, value + half)):
        assert math.isclose(float(shown), true, rel_tol=0, abs_tol=half / 5 + 1e-300)


def test_published_agreement_is_the_interval_widened_by_the_printed_rounding():
    from sims.experiments._common import Estimate, Published, agrees_with, rounding_of

    assert rounding_of("1.7") == pytest.approx(0.05) and rounding_of("0.0025") == pytest.approx(5e-5)
    assert rounding_of("20") == 0.5 and rounding_of("5e-11") == pytest.approx(5e-12)
    # a Monte Carlo interval that misses the value (k3's std/KL at μ = 1 today) does not agree
    miss = Published("k3", "s", "1.6950", Estimate(1.6767, 1.6640, 1.6893))
    assert not miss.agrees and miss.tolerance == pytest.approx(5e-5)
    # one whose interval, widened by the rounding, contains it does (the edge included)
    assert Published("k3", "s", "1.7", Estimate(1.6767, 1.6640, 1.6893)).agrees  # 1.6893 + 0.05 ≥ 1.7
    assert agrees_with(1.6950, Estimate(1.69, 1.68, 1.69498), 5e-5)
    assert not agrees_with(1.6950, Estimate(1.69, 1.68, 1.69494), 5e-5)
    # an exact entry agrees when equal within the rounding, not when off by more
    assert Published("x", "s", "3.333", Estimate.exact(3.3332)).agrees
    assert not Published("x", "s", "3.333", Estimate.exact(3.3322)).agrees
    assert not Published("x", "s", "10.05", Estimate.exact(10.019)).agrees
    # a stated resolution replaces the rounding (a value the source states exactly)
    assert Published("z", "s", "0", Estimate.exact(1e-11), resolution=5e-11).agrees
    assert not Published("z", "s", "0", Estimate.exact(1e-10), resolution=5e-11).agrees
    d = Published("x", "s", "2.0", Estimate.exact(1.99997), "exact").as_dict()
    assert d["published"] == 2.0 and d["tolerance"] == pytest.approx(0.05) and d["agrees"] and d["printed"] == "2.0"


def test_every_quick_scale_published_entry_uses_the_rule():
    from sims.experiments import difficulty, kl_estimators, survival

    pub = difficulty._published(difficulty.Config.quick())
    assert all(p.agrees for p in pub), [p.as_dict() for p in pub if not p.agrees]
    assert any("K → ∞" in p.basis for p in pub)
    for e, printed in ((0.2, "0.012"), (0.28, "0.0128")):
        b = survival.clip_reach_bracket(e, 0.01)
        assert b.low <= float(printed) <= b.high  # the bracket holds the boundary π_old(1+ε)
    assert {p[3] for p in kl_estimators.PUBLISHED} >= {"1.6950", "0.0025"}
