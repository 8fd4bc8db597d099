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
