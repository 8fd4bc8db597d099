"""What every experiment shares: the result type, interval statistics and plotting setup.

An experiment (bsuite pattern) is a module with a frozen ``Config`` (``Config.quick()`` and
``Config.full()`` are the two sweeps the report runs), ``run(config, *, seed, device) -> Result``
whose ``table`` is a tidy ``pandas.DataFrame`` (one row per measured quantity and sweep point,
with ``low``/``high`` interval columns where the number is random), ``summary`` (the scores the
claims ledger reads, each a number or an ``Estimate`` with its interval), ``published`` (results
from ``research/papers.md`` reproduced: published value, ours, agreement) and ``figures(result)``
(``sims.experiments._plotting``) with ``plot(result, path)`` writing them as PNGs.

Statistics are small pure functions over scipy.stats; every interval states its level.

Which interval each reported statistic uses, and its coverage measured against an exact value
(95% nominal; a coverage test flags an interval when a one-sided binomial test of coverage ≥ 0.94
rejects at α = 1e-3; half-width intervals are flagged, so the tests have power):

===============================  ==========================================  =====================
statistic                        interval                                    measured coverage
===============================  ==========================================  =====================
mean gradient coordinate         mean ± z·``mean_se`` (``normal_interval``)  0.930-0.958 (M = 4000)
variance trace, MSE              t over 20 batch values (engine)             0.943-0.958
zero-weight fraction, ESS        t over 20 batch values (engine)             0.933-0.950
bias norm ‖E ĝ − ∇J‖             noncentral-χ² inversion (engine)            0.938-0.968; 0.953 at
                                                                             a bias of 2 SE
cosine to ∇J                     projection t × norm interval, Bonferroni    0.978-0.998
SNR                              delete-one-batch jackknife (engine)         0.985-0.990
dynamics bands over 8 seeds      t over seeds (``mean_interval``)            0.933-0.955; pass@k
                                                                             0.84-0.89 and the
                                                                             zero-gradient
                                                                             fraction 0.33-0.93
                                                                             undercover
variance / std of samples        delta method (``variance_interval``)        0.94-0.95 on light
                                                                             tails; k3 at μ = 1:
                                                                             0.81 (n = 2000), 0.91
                                                                             (20000), 0.955
                                                                             (400000)
===============================  ==========================================  =====================

Engine rows: ``tests/sims/engines/test_coverage.py`` (R = 400 seeds, M = 4000, a 729-group replica
distribution enumerated exactly, a biased off-policy and an unbiased on-policy estimator); the
others: ``tests/sims/experiments/test_coverage.py``. The bias norm and cosine intervals replaced
jackknifes that undercovered near 0 bias (0.87-0.90) and near cos = 1 (0.91). The undercovering bands
(skewed or discrete metrics over 8 seeds: a set of equal seeds gets a zero-width band) and the
heavy-tailed delta method at small n are recorded there as strict xfails.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats

from sims._checks import require
from sims.engines.montecarlo import MCConfig

LEVEL = 0.95  # confidence level of every interval in the report
MC_BATCHES = 20  # batch means behind every Monte Carlo interval (MCConfig.n_batches)


@dataclass(frozen=True)
class Estimate:
    """A number with a two-sided interval at ``LEVEL`` (``low == high == value`` when exact).

    ``halves``: the same statistic on each of two independent halves of the samples (or seeds)
    behind it, where the producer has them (``mean_interval`` does); the claims ledger re-decides
    every claim on each half to report whether a verdict is stable (``sims.claims.robustness``)."""

    value: float
    low: float
    high: float
    halves: "tuple[Estimate, Estimate] | None" = field(default=None, compare=False, repr=False)

    @classmethod
    def exact(cls, value: float) -> "Estimate":
        return cls(float(value), float(value), float(value))

    def __str__(self) -> str:
        return format_estimate(self.value, self.low, self.high)

    def excludes(self, x: float) -> bool:
        """True when ``x`` lies outside the interval (the difference is significant)."""
        return not (self.low <= x <= self.high)

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


def format_estimate(value: float, low: float, high: float) -> str:
    """``value [low, high]`` with one number of decimals for all three, chosen so the interval's
    half-width shows two significant digits ("0.0150 [0.0139, 0.0161]"); a common power of ten
    ("2.255e-04 [2.230e-04, 2.280e-04]") when the numbers are below 1e-3 or at least 1e5. An
    exact number (low == high) prints with 4 significant digits; non-finite parts as they are."""
    if low == high or not all(math.isfinite(x) for x in (value, low, high)):
        return f"{value:.4g}" if low == high else f"{value:.4g} [{low:.4g}, {high:.4g}]"
    half = (high - low) / 2
    big = max(abs(value), abs(low), abs(high))
    exp = 0
    if big >= 1e5 or big < 1e-3:
        exp = math.floor(math.log10(big))
    scale = 10.0 ** exp
    decimals = min(max(0, 1 - math.floor(math.log10(half / scale))), 12)
    suffix = f"e{exp:+03d}" if exp else ""
    return " ".join([f"{value / scale:.{decimals}f}{suffix}",
                     f"[{low / scale:.{decimals}f}{suffix},", f"{high / scale:.{decimals}f}{suffix}]"])


def rounding_of(printed: str) -> float:
    """Half a unit in the last printed digit of ``printed`` ("1.7" → 0.05, "0.0025" → 5e-05,
    "20" → 0.5, "5e-11" → 5e-12): the published value's own rounding."""
    exponent = Decimal(printed.strip()).as_tuple().exponent
    if not isinstance(exponent, int):
        raise ValueError(f"not a finite printed number: {printed!r}")
    return 0.5 * 10.0 ** exponent


def agrees_with(published: float, ours: "Estimate", rounding: float) -> bool:
    """Rule 7: our reproduction agrees with a published value when our interval, widened by the
    published value's rounding on each side, contains it: low − rounding ≤ published ≤ high +
    rounding. An exact reproduction (low = high) therefore agrees when it equals the published
    value within its rounding. No other tolerance: a wide interval is reported as wide, never
    made to agree by a tolerance."""
    return ours.low - rounding <= published <= ours.high + rounding


RESOLVES = 0.10
"""A Monte Carlo reproduction resolves a published value when its interval's half-width is at most
this fraction of the value (or of its rounding, whichever is larger): an interval that spans the
value many times over (k2's plain-mean bias/KL at μ = 0.1 spans a factor of 29) contains it
without reproducing it, so it does not count as agreement (rule 7)."""


@dataclass(frozen=True)
class Published:
    """One published, checkable result and our reproduction of it.

    ``printed`` is the number as the source prints it; its rounding (``rounding_of``) is the
    ``tolerance``, unless the source states the value more exactly than it prints it (``resolution``,
    with the reason in ``basis``: e.g. a value stated as "exact" whose printed digits are the
    source's numerical error). ``agrees`` is ``agrees_with`` (rule 7). ``basis`` says what our
    number is (Monte Carlo with its interval, enumeration, closed form).
    """

    name: str
    source: str
    printed: str
    ours: Estimate
    basis: str = ""
    resolution: float | None = None

    @property
    def published(self) -> float:
        return float(Decimal(self.printed.strip()))

    @property
    def tolerance(self) -> float:
        return rounding_of(self.printed) if self.resolution is None else self.resolution

    @property
    def resolved(self) -> bool:
        """Exact, or a Monte Carlo interval no wider than ±``RESOLVES`` of the published value."""
        half = (self.ours.high - self.ours.low) / 2
        return half <= RESOLVES * max(abs(self.published), self.tolerance)

    @property
    def agrees(self) -> bool:
        """Rule 7 (``agrees_with``), for a reproduction that resolves the value."""
        return self.resolved and agrees_with(self.published, self.ours, self.tolerance)

    @property
    def agreement(self) -> str:
        """``agrees``, ``disagrees`` or ``unresolved`` (the interval is too wide to tell)."""
        if not self.resolved:
            return "unresolved"
        return "agrees" if self.agrees else "disagrees"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "published": self.published, "printed": self.printed,
                "ours": self.ours.value, "low": self.ours.low, "high": self.ours.high,
                "tolerance": self.tolerance, "basis": self.basis, "agrees": self.agrees, "resolved": self.resolved,
                "agreement": self.agreement}


@dataclass
class Result:
    """What ``run`` returns (see the module doc)."""

    name: str
    config: Any
    table: pd.DataFrame
    summary: dict[str, Any]
    published: list[Published] = field(default_factory=list)
    seconds: float | None = field(default=None, compare=False)
    """Wall time of ``run`` where the caller measured it (``sims.report.run_experiments``)."""


def mean_interval(x, level: float = LEVEL, *, halves: bool = True) -> Estimate:
    """Mean with a Student-t interval over independent values ``x`` (n >= 2); with n >= 4 its
    ``halves`` are the same interval over the first and the second half of ``x``."""
    x = np.asarray(x, dtype=np.float64)
    if x.size < 2:
        raise ValueError(f"mean_interval needs >= 2 values, got {x.size}")
    m = float(x.mean())
    se = float(x.std(ddof=1) / math.sqrt(x.size))
    split = None
    if halves and x.size >= 4:
        h = x.size // 2
        split = (mean_interval(x[:h], level, halves=False), mean_interval(x[h:], level, halves=False))
    if se == 0.0:
        return Estimate(m, m, m, split)
    lo, hi = stats.t.interval(level, x.size - 1, loc=m, scale=se)
    return Estimate(m, float(lo), float(hi), split)


ROUNDING = 1e-9
"""How far outside [0, 1] a bounded metric may be from floating-point rounding (``bounded_mean_interval``)."""


def bounded_mean_interval(x, level: float = LEVEL, *, halves: bool = True) -> Estimate:
    r"""Mean of independent values in [0, 1] with the Wilson score interval at n = ``len(x)``.

    For a variable in [0, 1] with mean μ the variance is at most μ(1 − μ), the Bernoulli's, so the
    score interval {μ : |x̄ − μ| ≤ z·sqrt(μ(1 − μ)/n)} (Wilson 1927),

        (x̄ + z²/2n ± z·sqrt(x̄(1 − x̄)/n + z²/4n²)) / (1 + z²/n),

    is at least as wide as for Bernoulli values of the same mean. Wilson's coverage for Bernoulli
    values is near nominal except within about 1/n of 0 or 1, where it dips (to about 0.84 at n = 8,
    p ≈ 0.98; Brown, Cai & DasGupta 2001, Statist. Sci. 16:101); for the seed distributions of the
    training runs it covers 0.99–1.00 (``tests/sims/experiments/test_coverage.py``). It is the band of
    metrics that are bounded and often degenerate over a few seeds — pass@k near 1, the
    zero-gradient fraction exactly 0 on most seeds — where ``mean_interval``'s t-band undercovers
    (0.84–0.89 and 0.33–0.93 over 8 seeds) and is empty when every seed agrees. It is conservative
    when the seeds vary less than Bernoulli values would. With n >= 4 its ``halves`` are the same
    interval over each half of ``x``. The interval always contains the mean. Values within
    ``ROUNDING`` outside [0, 1] (an exact probability summed in floating point) are read as the
    bound; NaN gives NaN, as ``mean_interval``; anything else outside [0, 1] is an error."""
    x = np.asarray(x, dtype=np.float64)
    if x.size < 2:
        raise ValueError(f"bounded_mean_interval needs >= 2 values, got {x.size}")
    if np.isnan(x).any():
        nan = float("nan")
        return Estimate(nan, nan, nan)
    if not ((x >= -ROUNDING) & (x <= 1 + ROUNDING)).all():
        raise ValueError(f"bounded_mean_interval needs values in [0, 1], got min {x.min()!r}, max {x.max()!r}")
    x = np.clip(x, 0.0, 1.0)
    n = x.size
    m = float(x.mean())
    z = float(stats.norm.ppf(0.5 + level / 2))
    centre = (m + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(m * (1 - m) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    split = None
    if halves and n >= 4:
        h = n // 2
        split = (bounded_mean_interval(x[:h], level, halves=False), bounded_mean_interval(x[h:], level, halves=False))
    return Estimate(m, min(m, max(0.0, centre - half)), max(m, min(1.0, centre + half)), split)


BOUNDED_METRICS = ("pass@k", "zero_grad_frac")
"""Training-dynamics metrics whose band is ``bounded_mean_interval`` (values in [0, 1], skewed or
mostly equal over seeds); every other metric's band is ``mean_interval``."""


def metric_interval(metric: str, x, level: float = LEVEL, *, halves: bool = True) -> Estimate:
    """The band of a training-dynamics ``metric`` over seeds: ``bounded_mean_interval`` for
    ``BOUNDED_METRICS``, else ``mean_interval`` (``halves`` as theirs)."""
    return (bounded_mean_interval if metric in BOUNDED_METRICS else mean_interval)(x, level, halves=halves)


def normal_interval(value: float, se: float, level: float = LEVEL) -> Estimate:
    """value ± z·se (a large-sample interval from a standard error)."""
    z = float(stats.norm.ppf(0.5 + level / 2))
    return Estimate(float(value), float(value - z * se), float(value + z * se))


def variance_interval(x, level: float = LEVEL, *, halves: bool = True) -> Estimate:
    """Sample variance of ``x`` with a large-sample interval from the delta method: the standard
    error of s² is sqrt((m4 - s⁴)/n), valid without normality (heavy tails widen it). With n >= 8
    its ``halves`` are the same interval over each half of ``x``."""
    x = np.asarray(x, dtype=np.float64)
    n = x.size
    d = x - x.mean()
    s2 = float(d @ d / (n - 1))
    m4 = float(np.mean(d ** 4))
    e = normal_interval(s2, math.sqrt(max(m4 - s2 * s2, 0.0) / n), level)
    if halves and n >= 8:
        h = n // 2
        e = dataclasses.replace(e, halves=(variance_interval(x[:h], level, halves=False),
                                           variance_interval(x[h:], level, halves=False)))
    return e


def check_replicas(n_replicas: Any) -> None:
    """A config's Monte Carlo replica count: a multiple of ``MC_BATCHES`` with >= 2 per batch."""
    require(isinstance(n_replicas, int) and n_replicas >= 2 * MC_BATCHES and n_replicas % MC_BATCHES == 0,
            "n_replicas", n_replicas, f"a multiple of {MC_BATCHES}, >= {2 * MC_BATCHES}")


def mc_config(n_replicas: int, *, group_size: int, seed: int) -> MCConfig:
    """The ``MCConfig`` of one prompt per replica, as every experiment runs the MC engine."""
    return MCConfig(n_replicas=n_replicas, n_groups=1, group_size=group_size, n_batches=MC_BATCHES,
                    chunk=min(2_000, n_replicas // MC_BATCHES), level=LEVEL, seed=seed)


def seeded(seed: int, offset: int) -> torch.Generator:
    """A CPU generator for stream ``offset`` of experiment seed ``seed`` (streams never overlap)."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(offset))


ROWS_PER_PASS = 16_384  # rows whose [rows, T] float64 tensors are alive at once (memory, not numbers)


def token_log_ratios(old, new, tokens, mask, rows_per_pass: int = ROWS_PER_PASS):
    """Yield ``(log π_new - log π_old)·mask`` for ``tokens`` ``rows_per_pass`` rows at a time.

    The log-prob gathers are per row, so the values (hence every number computed from them) do not
    depend on ``rows_per_pass``; only a few [rows_per_pass, T] tensors are alive at once, instead
    of a few [n, T] ones (200,000 sequences of 256 tokens kept 2.4 GB alive)."""
    for start in range(0, tokens.shape[0], rows_per_pass):
        rows = slice(start, start + rows_per_pass)
        yield (new.log_prob(tokens[rows]) - old.log_prob(tokens[rows])) * mask[rows]
