"""What every experiment shares: the result type, interval statistics and plotting setup.

An experiment (bsuite pattern) is a module with a frozen ``Config`` (``Config.quick()`` and
``Config.full()`` are the two sweeps the report runs), ``run(config, *, seed, device) -> Result``
whose ``table`` is a tidy ``pandas.DataFrame`` (one row per measured quantity and sweep point,
with ``low``/``high`` interval columns where the number is random), ``summary`` (the scores the
claims ledger reads, each a number or an ``Estimate`` with its interval), ``published`` (results
from ``research/papers.md`` reproduced: published value, ours, agreement) and ``figures(result)``
(``sims.experiments._plotting``) with ``plot(result, path)`` writing them as PNGs.

Statistics are small pure functions over scipy.stats; every interval states its level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
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
    """A number with a two-sided interval at ``LEVEL`` (``low == high == value`` when exact)."""

    value: float
    low: float
    high: float

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


@dataclass(frozen=True)
class Published:
    """One published, checkable result and our reproduction of it.

    ``agrees`` is computed: |ours - published| <= tolerance (absolute), or the published value
    lies in our interval when ``ours`` has one.
    """

    name: str
    source: str
    published: float
    ours: Estimate
    tolerance: float

    @property
    def agrees(self) -> bool:
        within = abs(self.ours.value - self.published) <= self.tolerance
        return within or (self.ours.low < self.ours.high and not self.ours.excludes(self.published))

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "published": self.published,
                "ours": self.ours.value, "low": self.ours.low, "high": self.ours.high,
                "tolerance": self.tolerance, "agrees": self.agrees}


@dataclass
class Result:
    """What ``run`` returns (see the module doc)."""

    name: str
    config: Any
    table: pd.DataFrame
    summary: dict[str, Any]
    published: list[Published] = field(default_factory=list)


def mean_interval(x, level: float = LEVEL) -> Estimate:
    """Mean with a Student-t interval over independent values ``x`` (n >= 2)."""
    x = np.asarray(x, dtype=np.float64)
    if x.size < 2:
        raise ValueError(f"mean_interval needs >= 2 values, got {x.size}")
    m = float(x.mean())
    se = float(x.std(ddof=1) / math.sqrt(x.size))
    if se == 0.0:
        return Estimate(m, m, m)
    lo, hi = stats.t.interval(level, x.size - 1, loc=m, scale=se)
    return Estimate(m, float(lo), float(hi))


def normal_interval(value: float, se: float, level: float = LEVEL) -> Estimate:
    """value ± z·se (a large-sample interval from a standard error)."""
    z = float(stats.norm.ppf(0.5 + level / 2))
    return Estimate(float(value), float(value - z * se), float(value + z * se))


def variance_interval(x, level: float = LEVEL) -> Estimate:
    """Sample variance of ``x`` with a large-sample interval from the delta method: the standard
    error of s² is sqrt((m4 - s⁴)/n), valid without normality (heavy tails widen it)."""
    x = np.asarray(x, dtype=np.float64)
    n = x.size
    d = x - x.mean()
    s2 = float(d @ d / (n - 1))
    m4 = float(np.mean(d ** 4))
    return normal_interval(s2, math.sqrt(max(m4 - s2 * s2, 0.0) / n), level)


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
