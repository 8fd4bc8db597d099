"""Bisection shared by ``perturb`` and ``tasks.calibrate``."""

from __future__ import annotations

from typing import Callable


def bisect_crossing(fn: Callable[[float], float], target: float, lo: float, hi: float, steps: int) -> float:
    """Halve [lo, hi] ``steps`` times keeping fn(lo) < target <= fn(hi); return the final hi.

    The caller checks the invariant at the ends first; a continuous ``fn`` then has a crossing
    of ``target`` inside every bracket, monotone or not.
    """
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if fn(mid) < target else (lo, mid)
    return hi
