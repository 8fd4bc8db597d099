r"""Where a loss's gradient weight is zero, and whether it is bounded, over (ratio, sign of A).

The numeric counterpart of ``theory.regions`` for a black-box loss: the weight per unit advantage
``w/|A|`` of K identical one-token sequences is evaluated on a grid of log-ratios in
[log 1e-6, log 1e6] (step 0.1, plus ±1e-5..±0.09 around ρ = 1 so that narrow windows such as
GSPO's 3e-4 are seen); each change between zero and nonzero is then located by bisection on the
log-ratio to 1e-9. A weight is *zero* when it is exactly 0.0 (the gradient is dropped; a soft
gate that underflows in float64 is exactly 0 too, and reported as such). The weight is
*unbounded* as ρ → ∞ when log|w| still grows with log ρ between 1e5 and 1e6 (slope > 0.5), and as
ρ → 0 likewise between 1e-6 and 1e-5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from sims.check.inputs import evaluate, single_token_batch

__all__ = ["SignMap", "region_map", "format_map", "maps_agree", "LOG_MAX"]

LOG_MAX = math.log(1e6)
SLOPE_UNBOUNDED = 0.5
BISECTION_TOL = 1e-9
_NEAR_ONE = [s * m * 10.0 ** e for s in (-1, 1) for e in (-5, -4, -3, -2) for m in range(1, 10)]
GRID = np.unique(np.concatenate([np.linspace(-LOG_MAX, LOG_MAX, 277), _NEAR_ONE, [0.0]]))


@dataclass(frozen=True)
class SignMap:
    """The weight map of one sign of A.

    Attributes:
        sign: +1 or -1.
        zero: ratio intervals (lo, hi) where the weight is zero (0 and inf for open ends).
        slope_high, slope_low: d log|w| / d log ρ near ρ = 1e6 and near ρ = 1e-6 (0 when zero).
        sup: max |w/A| on the grid.
    """

    sign: int
    zero: tuple[tuple[float, float], ...]
    slope_high: float
    slope_low: float
    sup: float

    @property
    def bounded(self) -> bool:
        return self.slope_high <= SLOPE_UNBOUNDED and self.slope_low >= -SLOPE_UNBOUNDED


def _weight(fn: Callable[..., Any], u: float, sign: int, k: int) -> float:
    _, w = evaluate(fn, single_token_batch(u, float(sign), k))
    return float(w[0, 0]) * sign


def _slope(fn, u1: float, u2: float, sign: int, k: int) -> float:
    a, b = abs(_weight(fn, u1, sign, k)), abs(_weight(fn, u2, sign, k))
    if a == 0.0 or b == 0.0:
        return 0.0
    return (math.log(b) - math.log(a)) / (u2 - u1)


def region_map(fn: Callable[..., Any], group_size: int) -> tuple[SignMap, SignMap]:
    """The ``SignMap`` for A > 0 and A < 0 (``VariantError`` if the loss fails on a point)."""
    out = []
    for sign in (1, -1):
        w = np.array([_weight(fn, float(u), sign, group_size) for u in GRID])
        sup = float(np.abs(w).max()) if np.isfinite(w).all() else float("inf")

        def is_zero(u: float, _s=sign) -> bool:
            return _weight(fn, u, _s, group_size) == 0.0

        flags = w == 0.0
        edges = []  # log-ratios where the zero flag changes
        for i in np.flatnonzero(flags[1:] != flags[:-1]):
            lo, hi = float(GRID[i]), float(GRID[i + 1])
            left = bool(flags[i])
            while hi - lo > BISECTION_TOL:
                mid = 0.5 * (lo + hi)
                lo, hi = (mid, hi) if is_zero(mid) == left else (lo, mid)
            edges.append(0.5 * (lo + hi))
        zero = []
        start = 0.0 if flags[0] else None
        for e in edges:
            if start is None:
                start = math.exp(e)
            else:
                zero.append((start, math.exp(e)))
                start = None
        if start is not None:
            zero.append((start, math.inf))
        u_hi, u_lo = float(GRID[-1]), float(GRID[0])
        out.append(SignMap(sign, tuple(zero), _slope(fn, u_hi - math.log(10.0), u_hi, sign, group_size),
                           _slope(fn, u_lo, u_lo + math.log(10.0), sign, group_size), sup))
    return out[0], out[1]


def _interval(lo: float, hi: float) -> str:
    if 0.0 < lo and hi < math.inf and hi / lo - 1.0 < 1e-8:
        return f"ρ = {lo:.6g}"
    if lo == 0.0 and hi == math.inf:
        return "every ratio"
    if lo == 0.0:
        return f"ρ < {hi:.6g}"
    if hi == math.inf:
        return f"ρ > {lo:.6g}"
    return f"{lo:.6g} < ρ < {hi:.6g}"


def format_map(maps: tuple[SignMap, SignMap]) -> str:
    """One line per sign: where the weight is zero, and how it behaves at the ends."""
    lines = []
    for m in maps:
        side = "A > 0" if m.sign > 0 else "A < 0"
        zero = "; ".join(_interval(lo, hi) for lo, hi in m.zero) or "none"
        if m.bounded:
            bound = f"bounded (max |w/A| = {m.sup:.4g} on ρ in [1e-6, 1e6])"
        else:
            growth = f"like ρ^{m.slope_high:.2f} as ρ -> ∞" if m.slope_high > SLOPE_UNBOUNDED else \
                f"like ρ^{m.slope_low:.2f} as ρ -> 0"
            bound = f"unbounded (grows {growth})"
        lines.append(f"{side}: zero weight: {zero}; {bound}")
    return "\n".join(lines)


def maps_agree(a: tuple[SignMap, SignMap], b: tuple[SignMap, SignMap], rtol: float = 1e-6) -> str | None:
    """None when the two maps have the same zero intervals (ends within ``rtol``), the same
    boundedness and, when bounded, the same max |w/A| on the grid, for each sign; else the first
    difference, in words."""
    for ma, mb in zip(a, b):
        side = "A > 0" if ma.sign > 0 else "A < 0"
        if len(ma.zero) != len(mb.zero) or any(
                not _close(x, y, rtol) for ia, ib in zip(ma.zero, mb.zero) for x, y in zip(ia, ib)):
            return (f"{side}: zero weight: {'; '.join(_interval(*i) for i in ma.zero) or 'none'}; "
                    f"spec: {'; '.join(_interval(*i) for i in mb.zero) or 'none'}")
        if ma.bounded != mb.bounded:
            return f"{side}: {'bounded' if ma.bounded else 'unbounded'} in the ratio; spec: " \
                   f"{'bounded' if mb.bounded else 'unbounded'}"
        if ma.bounded and not _close(ma.sup, mb.sup, rtol):
            return f"{side}: max |w/A| = {ma.sup:.6g}; spec: {mb.sup:.6g}"
    return None


def _close(x: float, y: float, rtol: float) -> bool:
    if math.isinf(x) or math.isinf(y):
        return x == y
    return abs(x - y) <= rtol * max(abs(x), abs(y), 1e-300)
