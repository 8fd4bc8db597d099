r"""Where a loss's gradient weight is zero, negative or unbounded, over (ratio, sign of A, base prob).

The numeric counterpart of ``theory.regions`` for a black-box loss. The weight per unit advantage
``w/A`` of K identical one-token sequences (``inputs.single_token_batch``, ``A = ±1``) is evaluated
on a grid of log-ratios ``d = log ρ`` in [-LOG_MAX, LOG_MAX] = [-31, 31] (reaching past verl's ±20
log-ratio clamp): step 0.1 for |d| <= 3 (ρ in [0.05, 20], where clip, cap and mask thresholds
live), step 0.5 for 3 < |d| <= 6 and step 1 beyond (where only clamps such as verl's live; their
ends are still found to 1e-9 by bisection), plus ±{1, 2, 5}·10^-5..10^-2 around ρ = 1 so that narrow windows such as
GSPO's 3e-4 are seen, plus the tail points ±TAIL. Each change of state on the grid is located by
bisection on the log-ratio to ``BISECTION_TOL`` = 1e-9. A region narrower than the grid cell it
falls in (0.1, 0.5 or 1 in log-ratio) can be missed.

Base probabilities. A weight may depend on the probabilities themselves, not only on their ratio
(DPPO's TV and binary-KL trust regions depend on π and π_old). The map is computed at each base
probability ``p`` in ``BASE_PROBS`` = (0.9, 0.5, 0.05): the larger of π and π_old is ``p``
(``logp = log p + min(d, 0)``, ``old_logp = log p - max(d, 0)``, as ``single_token_batch`` builds
them), so every log-ratio is reachable with both log-probs <= 0.

What each ``SignMap`` holds (per sign of A and base):

* ``zero``: intervals of ρ where the weight is exactly 0.0 *structurally* (the gradient is dropped
  by a clamp, ``where`` or mask);
* ``underflow``: intervals where it is exactly 0.0 only because float64 cannot represent it (a
  soft gate such as SAPO's ``σ(τ(ρ-1))`` whose derivative ``σ(1-σ)`` rounds to 0 for ρ ≳ 38). A
  zero interval is *underflow* when each of its finite ends is an underflow end: just outside the
  end (``UNDERFLOW_PROBE`` = 1e-4 in log-ratio, on the nonzero side) the float64 weight is tiny,
  ``|w/A| <= UNDERFLOW_REL · sup`` (1e-8: below single precision's resolution ~6e-8 of the map's
  own scale, a weight no float32/bf16 training run would see either), *and* the zero depends on
  the precision: the same input in float32 gives exactly 0 there (float32 underflows earlier,
  while a clamp or mask sits at the same ratio in both precisions). When the loss cannot run in
  float32, the float64 weight must be subnormal (< 2.2e-308) instead. Misjudged: a structural
  zero next to a weight that is already below 1e-8·sup and that float32 flushes to 0 (reported as
  underflow; e.g. SAPO's gate cut hard at ρ = 30, where its weight is ~1e-11: the difference is
  invisible to training), and a loss that computes in float64 whatever its inputs' dtype (the
  float32 probe then sees the float64 value, so a real underflow is reported as a zero region).
  ``maps_agree`` ignores underflow intervals;
* ``negative``: intervals where ``w/A < 0`` (the update pushes against the advantage); their
  finite ends are the sign changes;
* ``tail_high``, ``tail_low``: ``|w/A|`` at ``ρ = e^{±TAIL}`` = e^{±10.25}, e^{±20.5}, e^{±30.75}
  (1 : 2 : 3 in log-ratio, off round clamp values such as 20), from which boundedness is judged by
  ``grows`` (see there): by the trend of the limit, not by a slope threshold, so logarithmic
  growth counts as unbounded;
* ``sup``: max ``|w/A|`` on the grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from sims.check.inputs import evaluate, single_token_batch

__all__ = ["SignMap", "RegionMap", "region_map", "format_map", "maps_agree", "grows", "LOG_MAX", "BASE_PROBS",
           "TAIL", "GROWTH_KEEP"]

LOG_MAX = 31.0
BASE_PROBS = (0.9, 0.5, 0.05)
TAIL = (10.25, 20.5, 30.75)
GROWTH_KEEP = 0.5
GROWTH_NOISE = 1e-9
BISECTION_TOL = 1e-9
UNDERFLOW_REL = 1e-8
UNDERFLOW_PROBE = 1e-4
SMALLEST_NORMAL = 2.2250738585072014e-308
_NEAR_ONE = [s * m * 10.0 ** e for s in (-1, 1) for e in (-5, -4, -3, -2) for m in (1, 2, 5)]
GRID = np.unique(np.round(np.concatenate([
    np.linspace(-3.0, 3.0, 61), np.linspace(3.0, 6.0, 7), np.linspace(6.0, LOG_MAX, 26),
    -np.linspace(3.0, 6.0, 7), -np.linspace(6.0, LOG_MAX, 26),
    _NEAR_ONE, TAIL, [-t for t in TAIL], [0.0]]), 12))

Interval = tuple[float, float]


def grows(tail: tuple[float, float, float]) -> bool:
    """True when ``|w/A|`` at log-ratios 1 : 2 : 3 (``TAIL``) says the weight is unbounded.

    ``tail = (v1, v2, v3)``. Unbounded when a value is not finite, or when it increases at both
    steps (each by more than ``GROWTH_NOISE`` = 1e-9 relative, above rounding) and the second
    increase is at least ``GROWTH_KEEP`` = 0.5 of the first. Why 0.5: on points d, 2d, 3d every
    power of log ρ, (log ρ)^p, keeps a ratio of increases (3^p - 2^p)/(2^p - 1) > log(3/2)/log 2
    = 0.585 (ρ^p: e^{pd} > 1), while a weight converging like L - c·(log ρ)^-p keeps a ratio below
    0.585, and one converging geometrically (ρ/(1+ρ), a sigmoid) keeps ~e^-10. Misjudged: a
    bounded weight converging as slowly as L - c·(log ρ)^-p with p < 0.3 (ratio > 0.5: called
    unbounded), and anything that changes behaviour beyond ρ = e^30.75 (not seen).
    """
    v1, v2, v3 = tail
    if not all(math.isfinite(v) for v in tail):
        return True
    d1, d2 = v2 - v1, v3 - v2
    return d1 > GROWTH_NOISE * abs(v2) and d2 > GROWTH_NOISE * abs(v3) and d2 >= GROWTH_KEEP * d1


@dataclass(frozen=True)
class SignMap:
    """The weight map of one sign of A at one base probability (see the module docstring).

    Attributes:
        sign: +1 or -1.
        zero: ratio intervals (lo, hi) of structural zero weight (0 and inf for open ends).
        underflow: ratio intervals where the weight is 0.0 by float64 underflow only.
        negative: ratio intervals where w/A < 0.
        tail_high, tail_low: |w/A| at ρ = e^{TAIL} and at ρ = e^{-TAIL}.
        sup: max |w/A| on the grid (inf if a weight is not finite).
        at_one: |w/A| at ρ = 1 (the on-policy per-token scale), for reading bounds on the ratio scale.
    """

    sign: int
    zero: tuple[Interval, ...]
    underflow: tuple[Interval, ...]
    negative: tuple[Interval, ...]
    tail_high: tuple[float, float, float]
    tail_low: tuple[float, float, float]
    sup: float
    at_one: float = 0.0

    def on_ratio_scale(self, value: float) -> float | None:
        """``value`` (a |w/A|) over |w/A| at ρ = 1: the aggregation's per-token normaliser (1/N of a
        token-mean over the probe's K rows) divided out, so a cap reads as the ratio the user set
        (CISPO's 5, not 5/K); None when the weight is 0 at ρ = 1 (a penalty's minimum)."""
        return value / self.at_one if self.at_one > 0 and math.isfinite(self.at_one) else None

    @property
    def bounded_high(self) -> bool:
        return not grows(self.tail_high)

    @property
    def bounded_low(self) -> bool:
        return not grows(self.tail_low)

    @property
    def bounded(self) -> bool:
        return self.bounded_high and self.bounded_low

    @property
    def sign_changes(self) -> tuple[float, ...]:
        """The ratios where w/A turns negative or back (finite ends of ``negative``)."""
        return tuple(x for iv in self.negative for x in iv if 0.0 < x < math.inf)

    @property
    def slope_high(self) -> float:
        """d log|w| / d log ρ between the last two high tail points (0 when one is 0)."""
        return _log_slope(self.tail_high[1], self.tail_high[2], TAIL[2] - TAIL[1])

    @property
    def slope_low(self) -> float:
        """d log|w| / d log ρ between the last two low tail points, as ρ -> 0 (0 when one is 0)."""
        return -_log_slope(self.tail_low[1], self.tail_low[2], TAIL[2] - TAIL[1])


@dataclass(frozen=True)
class RegionMap:
    """The (A > 0, A < 0) ``SignMap`` pair at each base probability.

    Attributes:
        base_probs: the base probabilities, ``BASE_PROBS`` by default.
        maps: ``maps[i] = (A > 0 map, A < 0 map)`` at ``base_probs[i]``.
    """

    base_probs: tuple[float, ...]
    maps: tuple[tuple[SignMap, SignMap], ...]

    @property
    def uniform(self) -> bool:
        """True when every base probability gives the same map (``maps_agree``'s tolerance)."""
        return all(_differs(self.maps[0][s], m[s]) is None for m in self.maps[1:] for s in (0, 1))


def _log_slope(a: float, b: float, du: float) -> float:
    if a == 0.0 or b == 0.0 or not (math.isfinite(a) and math.isfinite(b)):
        return 0.0 if a == 0.0 or b == 0.0 else math.inf
    return (math.log(b) - math.log(a)) / du


def _batch(u: float, sign: int, k: int, base: float, float32: bool):
    b = single_token_batch(u, float(sign), k, base=base)
    if float32:  # only the four loss inputs change; any other field is kept as is
        b = b.with_(logp=b.logp.float(), old_logp=b.old_logp.float(), adv=b.adv.float(), mask=b.mask.float())
    return b


def _weight(fn: Callable[..., Any], u: float, sign: int, k: int, base: float, float32: bool = False) -> float:
    """w/A of the first token of ``single_token_batch(u, sign, k, base=base)`` (``VariantError``
    if the loss fails)."""
    _, w = evaluate(fn, _batch(u, sign, k, base, float32))
    return float(w[0, 0]) * sign


def _bisect(pred: Callable[[float], bool], lo: float, hi: float, left: bool) -> tuple[float, float]:
    """A bracket [lo', hi'] of width <= BISECTION_TOL with pred(lo') == left != pred(hi')."""
    while hi - lo > BISECTION_TOL:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if pred(mid) == left else (lo, mid)
    return lo, hi


def _intervals(grid: np.ndarray, flags: np.ndarray, pred: Callable[[float], bool]) -> list[tuple[float, float]]:
    """Log-ratio intervals where ``pred`` holds: grid changes of ``flags`` bisected; -inf / inf
    for an interval that reaches the end of the grid. Each finite end is the midpoint of its
    bisection bracket."""
    out, start = [], (-math.inf if flags[0] else None)
    for i in np.flatnonzero(flags[1:] != flags[:-1]):
        lo, hi = _bisect(pred, float(grid[i]), float(grid[i + 1]), bool(flags[i]))
        edge = 0.5 * (lo + hi)
        if start is None:
            start = edge
        else:
            out.append((start, edge))
            start = None
    if start is not None:
        out.append((start, math.inf))
    return out


def _underflow_end(weight: Callable[..., float], edge: float, outward: float, sup: float) -> bool:
    """True when the zero interval's end ``edge`` is an underflow end (module docstring): probed
    ``UNDERFLOW_PROBE`` outside it (``outward`` = -1 left of the interval, +1 right), halved down
    to 1e-8 while the probe is still zero (a narrow nonzero gap)."""
    eta = UNDERFLOW_PROBE
    while True:
        u = edge + outward * eta
        w64 = weight(u)
        if w64 != 0.0 or eta < 1e-8:
            break
        eta *= 0.5
    if w64 == 0.0 or not abs(w64) <= UNDERFLOW_REL * sup:
        return False
    try:
        return weight(u, float32=True) == 0.0
    except Exception:  # noqa: BLE001 (a loss that cannot run in float32: fall back on float64 alone)
        return abs(w64) < SMALLEST_NORMAL


def _ratio(iv: tuple[float, float]) -> Interval:
    return math.exp(iv[0]), math.exp(iv[1])


def sign_map(fn: Callable[..., Any], sign: int, group_size: int, base_prob: float,
             detect_underflow: bool = True) -> SignMap:
    """The ``SignMap`` of one sign of A at one base probability (``VariantError`` if the loss fails).

    ``detect_underflow=False`` reports every zero interval as structural: for a loss fed in float32 or
    bfloat16, whose coarse weights the float64 underflow test does not apply to."""
    base = math.log(base_prob)

    def weight(u: float, float32: bool = False) -> float:
        return _weight(fn, u, sign, group_size, base, float32)

    w = np.array([weight(float(u)) for u in GRID])
    sup = float(np.abs(w).max()) if np.isfinite(w).all() else math.inf
    zeros = _intervals(GRID, w == 0.0, lambda u: weight(u) == 0.0)
    negative = _intervals(GRID, w < 0.0, lambda u: weight(u) < 0.0)
    structural, underflow = [], []
    for lo, hi in zeros:
        ends = [(e, o) for e, o in ((lo, -1.0), (hi, 1.0)) if math.isfinite(e)]
        under = detect_underflow and bool(ends) and all(_underflow_end(weight, e, o, sup) for e, o in ends)
        (underflow if under else structural).append(_ratio((lo, hi)))
    at = {float(u): abs(float(x)) for u, x in zip(GRID, w)}
    return SignMap(sign, tuple(structural), tuple(underflow), tuple(_ratio(iv) for iv in negative),
                   tuple(at[t] for t in TAIL), tuple(at[-t] for t in TAIL), sup, at[0.0])


def region_map(fn: Callable[..., Any], group_size: int, base_probs: tuple[float, ...] = BASE_PROBS,
               detect_underflow: bool = True) -> RegionMap:
    """The ``RegionMap`` of ``fn`` (``VariantError`` if the loss fails on a point; ``detect_underflow``:
    tell float64 underflow from structural zeros, see ``sign_map``)."""
    for p in base_probs:
        if not 0.0 < p <= 1.0:
            raise ValueError(f"base_probs contains {p!r}; allowed: probabilities in (0, 1]")
    return RegionMap(tuple(base_probs),
                     tuple((sign_map(fn, 1, group_size, p, detect_underflow),
                            sign_map(fn, -1, group_size, p, detect_underflow)) for p in base_probs))


def _interval(lo: float, hi: float) -> str:
    if 0.0 < lo and hi < math.inf and hi / lo - 1.0 < 1e-8:
        return f"ρ = {lo:.6g}"
    if 0.0 < lo and hi < math.inf and hi / lo - 1.0 < 1e-4:  # a point widened by rounding (float32 inputs)
        return f"ρ ≈ {math.sqrt(lo * hi):.6g} (width {hi / lo - 1.0:.1g} relative)"
    if lo == 0.0 and hi == math.inf:
        return "every ratio"
    if lo == 0.0:
        return f"ρ < {hi:.6g}"
    if hi == math.inf:
        return f"ρ > {lo:.6g}"
    return f"{lo:.6g} < ρ < {hi:.6g}"


def _intervals_text(ivs: tuple[Interval, ...]) -> str:
    return "; ".join(_interval(lo, hi) for lo, hi in ivs) or "none"


def _underflow_text(ivs: tuple[Interval, ...]) -> str:
    parts = []
    for lo, hi in ivs:
        if hi == math.inf:
            parts.append(f"beyond ρ ≈ {lo:.4g}")
        elif lo == 0.0:
            parts.append(f"below ρ ≈ {hi:.4g}")
        else:
            parts.append(f"for {lo:.4g} < ρ < {hi:.4g}")
    return "underflows to 0 (float64; not a zero region) " + ", ".join(parts)


def _tail_text(tail: tuple[float, float, float], high: bool) -> str:
    where = "ρ -> ∞" if high else "ρ -> 0"
    pts = ", ".join(f"{v:.3g}" for v in tail)
    exps = "e^10.25, e^20.5, e^30.75" if high else "e^-10.25, e^-20.5, e^-30.75"
    slope = _log_slope(tail[1], tail[2], TAIL[2] - TAIL[1]) * (1 if high else -1)
    growth = f"like ρ^{slope:.2f}" if abs(slope) >= 0.05 else "slower than any power of ρ"
    return f"grows {growth} as {where}: |w/A| = {pts} at ρ = {exps}"


def _line(m: SignMap) -> str:
    """One sign's map as one line (without the side label)."""
    parts = [f"zero weight: {_intervals_text(m.zero)}"]
    if m.negative:
        parts.append(f"w/A < 0 (pushes against A): {_intervals_text(m.negative)}")
    if m.underflow:
        parts.append(_underflow_text(m.underflow))
    if m.bounded:
        rel = m.on_ratio_scale(m.sup)
        size = f"max |w/A| = {m.sup:.4g}" if rel is None else \
            f"max |w/A| = {rel:.4g} x its value at ρ = 1 (absolute {m.sup:.4g})"
        parts.append(f"bounded ({size} on ρ in [e^-{LOG_MAX:g}, e^{LOG_MAX:g}])")
    else:
        parts.append("unbounded (" + "; ".join(_tail_text(t, h) for t, h, b in (
            (m.tail_high, True, m.bounded_high), (m.tail_low, False, m.bounded_low)) if not b) + ")")
    return "; ".join(parts)


def format_map(rm: RegionMap, penalty: bool = False) -> str:
    """One line per sign when the map is the same at every base probability; else one line per
    (sign, base probability) for the sign whose map depends on it.

    ``penalty``: the loss is a penalty term that ignores A (a KL to a reference policy): one map,
    of the weight itself (probed at A = +1) over π/π_ref, with no sign of A."""
    if penalty:
        return _penalty_text(format_map(RegionMap(rm.base_probs, tuple((m[0], m[0]) for m in rm.maps))))
    lines = []
    for s in (0, 1):
        side = "A > 0" if rm.maps[0][s].sign > 0 else "A < 0"
        per_base = [m[s] for m in rm.maps]
        if all(_differs(per_base[0], m) is None for m in per_base[1:]):
            lines.append(f"{side}: {_line(per_base[0])}")
        else:
            lines += [f"{side}, base prob {p:g} (= max(π, π_old)): {_line(m)}" for p, m in zip(rm.base_probs, per_base)]
    return "\n".join(lines)


def _penalty_text(text: str) -> str:
    """A sign map's text in a penalty's terms: the first (A > 0) lines only, w for w/A, π/π_ref for ρ."""
    first = list(dict.fromkeys(line for line in text.splitlines() if line.startswith("A > 0")))
    out = "\n".join(first).replace("A > 0, base prob", "base prob").replace("A > 0: ", "")
    out = out.replace("max(π, π_old)", "max(π, π_ref)")
    out = out.replace("w/A < 0 (pushes against A)", "w < 0 (pushes log π down)")
    return out.replace("|w/A|", "|w|").replace("w/A", "w").replace("ρ", "π/π_ref")


def _differs(ma: SignMap, mb: SignMap, rtol: float = 1e-6) -> str | None:
    """None when two sign maps agree: the same structural zero and negative intervals (ends within
    ``rtol``), the same boundedness at each end and, when bounded, the same sup; underflow
    intervals are not compared. Else the first difference, in words (``ma`` first)."""
    side = "A > 0" if ma.sign > 0 else "A < 0"
    for label, ia, ib in (("zero weight", ma.zero, mb.zero), ("w/A < 0", ma.negative, mb.negative)):
        if len(ia) != len(ib) or any(not _close(x, y, rtol) for a, b in zip(ia, ib) for x, y in zip(a, b)):
            return f"{side}: {label}: {_intervals_text(ia)}; spec: {_intervals_text(ib)}"
    for where, ba, bb, tail in (("as ρ -> ∞", ma.bounded_high, mb.bounded_high, ma.tail_high),
                                ("as ρ -> 0", ma.bounded_low, mb.bounded_low, ma.tail_low)):
        if ba != bb:
            return (f"{side}: {'bounded' if ba else 'unbounded'} {where}; spec: {'bounded' if bb else 'unbounded'} "
                    f"(|w/A| = {', '.join(f'{v:.3g}' for v in tail)} at log ρ = ±{', ±'.join(f'{t:g}' for t in TAIL)})")
    if ma.bounded and not _close(ma.sup, mb.sup, rtol):
        ra, rb = ma.on_ratio_scale(ma.sup), mb.on_ratio_scale(mb.sup)
        if ra is not None and rb is not None:
            return (f"{side}: max |w/A| = {ra:.6g} x its value at ρ = 1; spec: {rb:.6g} x (absolute "
                    f"{ma.sup:.6g} vs {mb.sup:.6g})")
        return f"{side}: max |w/A| = {ma.sup:.6g}; spec: {mb.sup:.6g}"
    return None


def maps_agree(a: RegionMap, b: RegionMap, rtol: float = 1e-6) -> str | None:
    """None when the two maps agree (``_differs``) for each sign at each base probability; else
    the first difference, in words, prefixed by the base probability."""
    if a.base_probs != b.base_probs:
        return f"base probabilities {a.base_probs}; spec: {b.base_probs}"
    for p, pa, pb in zip(a.base_probs, a.maps, b.maps):
        for ma, mb in zip(pa, pb):
            diff = _differs(ma, mb, rtol)
            if diff is not None:
                return f"base prob {p:g}: {diff}"
    return None


def _close(x: float, y: float, rtol: float) -> bool:
    if math.isinf(x) or math.isinf(y):
        return x == y
    return abs(x - y) <= rtol * max(abs(x), abs(y), 1e-300)
