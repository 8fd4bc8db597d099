r"""Where an objective's gradient weight is zero, bounded or unbounded, over (ratio, sign of A).

For a one-token sequence the derived weight ``w(ρ, A)`` (``theory._core.ratio_weight``) is
analysed on each interval between the objective's breakpoints (its clip bounds). Inside an
interval (a, b) the ratio is written ρ = a + (b - a)·x/(1 + x) with a positive symbol x (or
ρ = a + x on (a, ∞), ρ = a·x/(1 + x) on (0, a)), A = ±α with α > 0, and sympy simplifies
w/α exactly: the region's weight, whether it is identically 0, and its limits at both ends
(unbounded when a limit is infinite).

>>> from theory.ppo_clip import PPO_CLIP
>>> table = weight_regions(PPO_CLIP, {"eps_low": 0.2, "eps_high": 0.2, "dual_clip_c": None})
>>> [(r.sign, r.lo, r.hi, r.zero, r.bounded) for r in table]   # doctest: +NORMALIZE_WHITESPACE
[(1, 0, 4/5, False, True), (1, 4/5, 6/5, False, True), (1, 6/5, oo, True, True),
 (-1, 0, 4/5, True, True), (-1, 4/5, 6/5, False, True), (-1, 6/5, oo, False, False)]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sympy as sp

from theory._core import ADV, RHO, TheoryEntry, ratio_weight

X = sp.Symbol("x", positive=True)
ALPHA = sp.Symbol("alpha", positive=True)


@dataclass(frozen=True)
class Region:
    """The weight of one (sign of A, ratio interval) cell.

    Attributes:
        sign: +1 or -1, the sign of A.
        lo, hi: the open ratio interval (``hi`` may be ``oo``).
        weight: w/|A| in the cell as a function of ``rho`` (exact).
        zero: True when w is identically 0 in the cell (the gradient is dropped).
        left, right: limits of w/|A| at the two ends of the interval.
        bounded: both limits are finite.
    """

    sign: int
    lo: sp.Expr
    hi: sp.Expr
    weight: sp.Expr
    zero: bool
    left: sp.Expr
    right: sp.Expr
    bounded: bool

    def contains(self, ratio: float, sign: int) -> bool:
        return sign == self.sign and float(self.lo) < ratio < float(self.hi)


def _rational(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return sp.nsimplify(value, rational=True)
    return value


def weight_regions(entry: TheoryEntry, params: dict[str, Any],
                   extra: dict[sp.Symbol, Any] | None = None) -> list[Region]:
    """The region table of ``entry`` for numeric ``params`` (config values; ``None`` = absent).

    ``extra`` substitutes remaining symbols (e.g. the old log-prob for SGS's confidence).
    """
    p = {k: _rational(v) for k, v in params.items()}
    w = ratio_weight(entry, p)
    if extra:
        w = w.subs(extra)
    log_space = entry.region_ratio == "log"
    points = sorted(set(entry.breakpoints(p)), key=float)
    # cells are parametrised in u = ρ, or u = log ρ when the breakpoints are log-ratios (GMPO)
    edges = [-sp.oo if log_space else sp.S.Zero, *points, sp.oo]
    table = []
    for sign in (1, -1):
        for lo, hi in zip(edges[:-1], edges[1:]):
            u, reverse = _cell(lo, hi, log_space)
            rho = sp.exp(u) if log_space else u
            cell = sp.simplify(w.subs(RHO, rho).subs(ADV, sign * ALPHA) / ALPHA)
            ends = (sp.limit(cell, X, 0, "+"), sp.limit(cell, X, sp.oo))
            left, right = ends[::-1] if reverse else ends
            if log_space:
                lo, hi = sp.exp(lo), sp.exp(hi)
            as_rho = sp.S.Zero if cell == 0 else sp.simplify(w.subs(ADV, sign * ALPHA) / ALPHA)
            table.append(Region(sign, lo, hi, as_rho, cell == 0, left, right,
                                bool(left.is_finite and right.is_finite)))
    return table


def _cell(lo, hi, log_space: bool) -> tuple[sp.Expr, bool]:
    """u(x) covering (lo, hi) as x runs over (0, ∞); ``reverse`` when x -> 0 is the right end."""
    if hi is sp.oo:
        return lo + X, False
    if lo is -sp.oo:
        return hi - X, True
    if lo == 0 and not log_space:
        return hi * X / (1 + X), False
    return lo + (hi - lo) * X / (1 + X), False


def predicted_zero(table: list[Region], ratio: float, sign: int) -> bool | None:
    """Whether the table says the weight is 0 at (ratio, sign); ``None`` on a breakpoint."""
    for region in table:
        if region.contains(ratio, sign):
            return region.zero
    return None
