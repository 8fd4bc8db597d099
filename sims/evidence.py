r"""How the claims ledger decides a part from evidence: effect sizes against stated minimal effects.

Every function here is pure and takes an ``Estimate`` (a number with a two-sided interval at
level 1 − α, α = 0.05; ``low == high`` when the number is exact) and a ``Delta`` (the minimal
effect of practical interest, with its unit and reason). The outcomes are ``True`` (the part
holds), ``False`` (it fails) and ``None`` (undecided: the interval straddles a boundary).

* ``within(e, δ)`` — *equivalence* (two one-sided tests, TOST): holds when the whole interval lies
  in [−δ, δ], fails when it lies wholly outside (beyond +δ or below −δ), undecided otherwise. With
  a 95% two-sided interval this is TOST at level 2.5% per side (conservative against the usual 5%).
  Used for "X removes the effect", "X equals Y".
* ``beyond(e, δ)`` — *minimum effect*: holds when the interval lies wholly above +δ (the effect
  exists and matters), fails when it lies wholly below +δ (the effect, if any, is smaller than
  what matters, or has the other sign), undecided otherwise. Used for "X causes an effect", "X is
  lower than Y" (with the effect oriented so that the claimed direction is positive).
* ``detectable(e)`` — the *power* statement: the smallest true effect the same experiment would
  detect with 80% power at α, (z_{1−α/2} + z_{0.8})·se, where se is read off the interval's
  half-width. ``samples_needed(e, δ, n)`` — how many samples (or seeds) would bring the
  detectable effect down to δ (se ∝ 1/√n).
* ``holm(pvalues)`` — Holm's step-down adjustment for a family of comparisons (Holm 1979); a part
  decided from several variants adjusts the one-sided p-values of its tests with it.

The ledger may scale every δ by a common factor (``delta_scale``) to test how robust a verdict is
to the choice of δ (rule 12: δ halved and doubled).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from dataclasses import dataclass
from collections.abc import Iterable, Iterator

from scipy import stats

from sims.experiments._common import LEVEL, Estimate

POWER = 0.8  # the power of the "smallest detectable effect" statements

_SCALE: contextvars.ContextVar[float] = contextvars.ContextVar("delta_scale", default=1.0)


@dataclass(frozen=True)
class Delta:
    """A minimal effect of practical interest: ``value`` in ``unit``, and why that value."""

    name: str
    value: float
    unit: str
    reason: str

    def __post_init__(self) -> None:
        if not (math.isfinite(self.value) and self.value > 0):
            raise ValueError(f"Delta {self.name!r}: value must be a finite number > 0, got {self.value!r}")

    @property
    def current(self) -> float:
        """``value`` times the active ``delta_scale`` (1 outside a robustness re-decision)."""
        return self.value * _SCALE.get()

    def __str__(self) -> str:
        return f"δ = {self.current:.4g} {self.unit}".rstrip()


@contextlib.contextmanager
def delta_scale(factor: float) -> Iterator[None]:
    """Within the block every ``Delta.current`` is ``factor`` times its value."""
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"delta_scale: factor must be a finite number > 0, got {factor!r}")
    token = _SCALE.set(_SCALE.get() * factor)
    try:
        yield
    finally:
        _SCALE.reset(token)


def _d(delta: Delta | float) -> float:
    return delta.current if isinstance(delta, Delta) else float(delta) * _SCALE.get()


def within(e: Estimate, delta: Delta | float) -> bool | None:
    """Equivalence: True when [low, high] ⊂ [−δ, δ]; False when low > δ or high < −δ; else None."""
    d = _d(delta)
    if -d <= e.low and e.high <= d:
        return True
    if e.low > d or e.high < -d:
        return False
    return None


def beyond(e: Estimate, delta: Delta | float) -> bool | None:
    """Minimum effect: True when low > δ; False when high < δ; else None (the interval holds δ)."""
    d = _d(delta)
    if e.low > d:
        return True
    if e.high < d:
        return False
    return None


def oriented(e: Estimate, sign: float) -> Estimate:
    """``e`` multiplied by ``sign`` (±1), so that the claimed direction is positive."""
    if sign > 0:
        return e
    return Estimate(-e.value, -e.high, -e.low)


def ratio(num: Estimate, den: float) -> Estimate:
    """``num / den`` for an exact, non-zero ``den`` (an effect relative to a reference effect)."""
    if den == 0 or not math.isfinite(den):
        raise ValueError(f"ratio: the reference effect must be finite and non-zero, got {den!r}")
    lo, hi = sorted((num.low / den, num.high / den))
    return Estimate(num.value / den, lo, hi)


def log_ratio(a: Estimate, b: Estimate, level: float = LEVEL) -> Estimate:
    """log(a / b) of two positive estimates with a delta-method interval, se² = (se_a/a)² +
    (se_b/b)², treating them as independent (conservative when they come from the same samples
    and are positively correlated). Exact when both are."""
    if not (a.value > 0 and b.value > 0):
        raise ValueError(f"log_ratio needs positive estimates, got {a.value!r} and {b.value!r}")
    value = math.log(a.value / b.value)
    se = math.hypot(standard_error(a, level) / a.value, standard_error(b, level) / b.value)
    z = float(stats.norm.ppf(0.5 + level / 2))
    return Estimate(value, value - z * se, value + z * se)


def proportion(k: int, n: int, level: float = LEVEL) -> Estimate:
    """k/n with its Clopper–Pearson (exact binomial) interval (``scipy.stats.binomtest``)."""
    if not (0 <= k <= n and n >= 1):
        raise ValueError(f"proportion needs 0 <= k <= n and n >= 1, got k={k!r}, n={n!r}")
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="exact")
    return Estimate(k / n, float(ci.low), float(ci.high))


def standard_error(e: Estimate, level: float = LEVEL) -> float:
    """The standard error behind a symmetric-normal interval: half-width / z_{1−α/2} (0 if exact)."""
    return (e.high - e.low) / 2 / float(stats.norm.ppf(0.5 + level / 2))


def detectable(e: Estimate, level: float = LEVEL, power: float = POWER) -> float:
    """The smallest true effect detected with probability ``power`` by a two-sided test at
    1 − ``level`` with the same standard error: (z_{1−α/2} + z_power)·se (0 for exact evidence)."""
    se = standard_error(e, level)
    return (float(stats.norm.ppf(0.5 + level / 2)) + float(stats.norm.ppf(power))) * se


def samples_needed(e: Estimate, delta: Delta | float, n: int) -> int:
    """Samples (seeds, replicas) that make ``detectable`` equal δ, from ``n`` now (se ∝ 1/√n)."""
    d = _d(delta)
    now = detectable(e)
    if now <= d:
        return int(n)
    return math.ceil(n * (now / d) ** 2)


def power_text(e: Estimate, delta: Delta | float, n: int, unit: str = "", samples: str = "n") -> str:
    """"smallest detectable effect 0.012 (80% power) at seeds = 32; resolves δ = 0.07" or "…; would
    need seeds ≈ 180 to resolve δ = 0.07" (``samples`` names what n counts)."""
    d, det = _d(delta), detectable(e)
    unit = f" {unit}" if unit else ""
    head = f"smallest detectable effect {det:.3g}{unit} ({POWER:.0%} power) at {samples} = {n}"
    if det <= d:
        return head + f"; resolves δ = {d:.3g}{unit}"
    return head + f"; would need {samples} ≈ {samples_needed(e, d, n)} to resolve δ = {d:.3g}{unit}"


def p_above(e: Estimate, threshold: float, level: float = LEVEL) -> float:
    """One-sided p-value of H0: effect ≤ threshold, from the normal approximation behind ``e``
    (for exact evidence 0 or 1)."""
    se = standard_error(e, level)
    if se == 0:
        return 0.0 if e.value > threshold else 1.0
    return float(stats.norm.sf((e.value - threshold) / se))


def p_below(e: Estimate, threshold: float, level: float = LEVEL) -> float:
    """One-sided p-value of H0: effect ≥ threshold (see ``p_above``)."""
    se = standard_error(e, level)
    if se == 0:
        return 0.0 if e.value < threshold else 1.0
    return float(stats.norm.cdf((e.value - threshold) / se))


def holm(pvalues: Iterable[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given): the i-th smallest p gets
    max_{j ≤ i} min(1, (m − j + 1)·p_(j)). Rejecting where adjusted p < α controls the
    family-wise error at α for any dependence between the tests."""
    ps = [float(p) for p in pvalues]
    m = len(ps)
    order = sorted(range(m), key=lambda i: ps[i])
    out = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * ps[i]))
        out[i] = running
    return out


def any_beyond_holm(estimates: dict[str, Estimate], delta: Delta | float, alpha: float = 1 - LEVEL
                    ) -> tuple[bool | None, dict[str, float]]:
    """"At least one variant has an effect beyond δ", over a family of variants, Holm-corrected:
    True when some Holm-adjusted p of H0: effect ≤ δ is below α/2; False when every variant's
    Holm-adjusted p of H0: effect ≥ δ is below α/2 (all are smaller than δ); else None. Returns the
    outcome and the adjusted p-values of the first test, by name."""
    names = list(estimates)
    if not names:
        return None, {}
    d = _d(delta)
    up = holm(p_above(estimates[n], d) for n in names)
    down = holm(p_below(estimates[n], d) for n in names)
    adjusted = dict(zip(names, up))
    if min(up) < alpha / 2:
        return True, adjusted
    if max(down) < alpha / 2:
        return False, adjusted
    return None, adjusted
