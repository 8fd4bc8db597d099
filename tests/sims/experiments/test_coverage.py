"""Coverage of the experiments' intervals (rule 8 of issue 14): the dynamics bands over seeds
(``mean_interval``) and ``variance_interval`` / the delta-method standard deviation of the KL table.

Decision, as in ``tests/sims/engines/test_coverage.py``: an interval undercovers when a one-sided
binomial test of H0: coverage ≥ 0.95 − 0.01 rejects at α = 1e-3 (``scipy.stats.binomtest``). An
interval with coverage ≥ 0.94 fails one test falsely with probability ≤ 1e-3; this module makes
27 such tests (≤ 2.7e-2 in all). Seeds are fixed. Power: the same intervals shrunk to half their
width must be flagged.

Dynamics bands: the band of a metric is a t-interval over ``n_seeds`` seeds (8 at full scale).
Its coverage depends on the shape of the per-seed distribution, so the test draws that
distribution from real training runs (``dynamics.train``, 2 steps, ``POOL`` seeds per task) and
measures coverage in the bootstrap world: ``R`` sets of 8 seeds drawn with replacement from the
pool, whose mean is then the exact truth. Measured (difficulty spread / multi-solution): reward
0.944 / 0.933, entropy 0.952 / 0.939, KL to init 0.955 / 0.939, solutions kept 0.948 / 0.945.
Two metrics undercover with the t-band, which the test must keep flagging (its case that must
reject): pass@k 0.887 / 0.842 (bounded near 1, a few low seeds: sets without one get a narrow band
above the mean) and the zero-gradient fraction 0.925 / 0.333 (mostly exactly 0: a set of equal
seeds gets the zero-width band ``mean_interval`` returns when the standard error is 0). Their band
is therefore ``bounded_mean_interval`` (the Wilson score interval, valid for any [0, 1] variable),
which must cover in the same bootstrap worlds; it is conservative there (half-width bands still
cover), so its case that must reject is the t-band.

Variance and standard deviation (``variance_interval``; ``kl_estimators`` builds s ± z·se(s) by
the same delta method): nominal on light tails — normal data (n = 2000) and k3 at μ = 0.1
(n = 20000: 0.94-0.95). On k3 at μ = 1 (a lognormal ratio, E[k3⁸] ≈ e²⁸) the delta method
undercovers at small n — 0.81 at n = 2000, 0.91 at n = 20000 — and neither a log-scale interval
(0.83, 0.91) nor a t-interval over 20 batch variances (0.81, 0.915) fixes it: at these n the
sample has not seen the tail that sets the fourth moment. At n = 400000 it is nominal (0.955 over
200 samples), so at the full report's n = 4,000,000 the interval is calibrated and its miss of
2√(e − 2) at seed 0 is one of the 5% (measured once here, not in the suite: 80 s). ``test_heavy_tailed_std_undercovers`` records that limit (strict xfail: it must
keep failing, with the number, until the interval is fixed).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from sims.experiments import dynamics as D
from sims.experiments._common import BOUNDED_METRICS, LEVEL, bounded_mean_interval, mean_interval, variance_interval
from sims.kl import kl_values

MARGIN = 0.01  # practical margin below LEVEL (as in tests/sims/engines/test_coverage.py)
ALPHA = 1e-3  # false-failure rate of one binomial test
R = 3000  # resampled seed sets per band
R_VAR = 300  # samples per variance case
POOL = 20  # training runs per task behind the bootstrap world
N_SEEDS = 8  # the full report's n_seeds


def _undercovers(hits: int, n: int) -> bool:
    """One-sided binomial test of H0: coverage ≥ LEVEL − MARGIN rejected at ``ALPHA``."""
    return stats.binomtest(int(hits), n, LEVEL - MARGIN, alternative="less").pvalue < ALPHA


def _half(iv) -> tuple[float, float]:
    return iv.value - (iv.value - iv.low) / 2, iv.value + (iv.high - iv.value) / 2


@pytest.fixture(scope="module")
def pools():
    """Per (task, metric): the final-step values of ``POOL`` two-step GRPO runs."""
    cfg = D.Config(steps=2, n_seeds=2, algorithms=("grpo",))
    alg = D.algorithms()["grpo"]
    out = {}
    for task in ("difficulty spread", "multi-solution"):
        init = D.initial_policy(task, cfg, "cpu")
        rows = [r for s in range(POOL) for r in D.train(task, "grpo", alg, init, cfg, s, "cpu")]
        for metric in D.METRICS:
            step = cfg.steps - 1 if metric == "zero_grad_frac" else cfg.steps
            out[(task, metric)] = np.array([r["value"] for r in rows if r["metric"] == metric and r["step"] == step])
    return out


def _t_intervals(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``mean_interval`` of each row of ``samples`` [R, n], vectorised (checked equal to it)."""
    n = samples.shape[1]
    m = samples.mean(1)
    half = stats.t.ppf(0.5 + LEVEL / 2, n - 1) * samples.std(1, ddof=1) / math.sqrt(n)
    return m, m - half, m + half


def band_coverage(pool: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """(hits, hits of the half-width band) of ``R`` t-bands over ``N_SEEDS`` seeds resampled from
    ``pool``, whose mean is the truth of that bootstrap world."""
    samples = rng.choice(pool, (R, N_SEEDS), replace=True)
    m, low, high = _t_intervals(samples)
    for i in range(3):
        iv = mean_interval(samples[i])
        assert (iv.value, iv.low, iv.high) == pytest.approx((m[i], low[i], high[i]), rel=1e-12, abs=1e-15)
    truth = pool.mean()
    half = (high - low) / 4
    return int(((low <= truth) & (truth <= high)).sum()), int((np.abs(m - truth) <= half).sum())


TASKS = ("difficulty spread", "multi-solution")
BAND_KNOWN_SHORT = ("pass@k", "zero_grad_frac")  # measured 0.887/0.842 and 0.925/0.333 (module doc)
BAND_OK = [(t, m) for t in TASKS for m in D.METRICS if m not in BAND_KNOWN_SHORT]


@pytest.mark.statistical
@pytest.mark.parametrize(("task", "metric"), BAND_OK)
def test_dynamics_bands_cover_in_the_bootstrap_world(pools, task, metric):
    pool = pools[(task, metric)]
    assert pool.size == POOL and np.isfinite(pool).all()
    hits, half = band_coverage(pool, np.random.default_rng(7))
    assert not _undercovers(hits, R), hits / R
    assert _undercovers(half, R), half / R


def bounded_coverage(pool: np.ndarray, rng: np.random.Generator) -> int:
    """Hits of ``R`` Wilson bands (``bounded_mean_interval``) over ``N_SEEDS`` seeds resampled from
    ``pool`` (vectorised; checked equal to the function on a few sets)."""
    samples = rng.choice(pool, (R, N_SEEDS), replace=True)
    m, n = samples.mean(1), N_SEEDS
    z = stats.norm.ppf(0.5 + LEVEL / 2)
    centre = (m + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(m * (1 - m) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low, high = np.maximum(0, centre - half), np.minimum(1, centre + half)
    for i in range(3):
        iv = bounded_mean_interval(samples[i])
        assert (iv.low, iv.high) == pytest.approx((low[i], high[i]), rel=1e-12, abs=1e-15)
    truth = pool.mean()
    return int(((low <= truth) & (truth <= high)).sum())


BOUNDED_CASES = [(t, m) for t in TASKS for m in BAND_KNOWN_SHORT]


@pytest.mark.statistical
@pytest.mark.parametrize(("task", "metric"), BOUNDED_CASES)
def test_bounded_metrics_get_the_wilson_band_which_covers_where_the_t_band_does_not(pools, task, metric):
    assert metric in BOUNDED_METRICS
    pool = pools[(task, metric)]
    assert ((pool >= 0) & (pool <= 1)).all()
    t_hits, _ = band_coverage(pool, np.random.default_rng(7))
    assert _undercovers(t_hits, R), t_hits / R  # the case that must reject: the t-band
    hits = bounded_coverage(pool, np.random.default_rng(7))
    assert not _undercovers(hits, R), hits / R


def test_wilson_band_is_scipys_at_integer_counts_and_refuses_values_outside_0_1():
    for k in range(9):
        iv = bounded_mean_interval(np.r_[np.ones(k), np.zeros(8 - k)])
        ref = stats.binomtest(k, 8).proportion_ci(confidence_level=LEVEL, method="wilson")
        assert (iv.low, iv.high) == pytest.approx((ref.low, ref.high), rel=1e-12, abs=1e-15)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        bounded_mean_interval([0.5, 1.2])


def _k3_moments(mu: float) -> tuple[float, float]:
    """(E k3, sd k3) under q = N(0, 1), p = N(μ, 1) by quadrature (k3 = r − 1 − log r)."""
    def moment(p):
        def f(x):
            log_r = mu * x - mu * mu / 2
            return (math.expm1(log_r) - log_r) ** p * math.exp(-x * x / 2) / math.sqrt(2 * math.pi)
        return integrate.quad(f, -40, 40, limit=400)[0]
    m1, m2 = moment(1), moment(2)
    return m1, math.sqrt(m2 - m1 * m1)


def _k3(mu: float, n: int, gen: torch.Generator) -> np.ndarray:
    x = torch.randn(n, generator=gen, dtype=torch.float64)
    return kl_values((-0.5 * x * x)[None], (-0.5 * (x - mu) ** 2)[None], estimator="k3")[0].numpy()


def _std_delta(x: np.ndarray) -> tuple[float, float, float]:
    """s ± z·se(s) with se(s) = se(s²)/(2s), the interval ``kl_estimators`` reports for std/KL."""
    v = variance_interval(x)
    s = math.sqrt(v.value)
    half = (v.high - v.value) / (2 * s)
    return s, s - half, s + half


def _coverage(draw, truth_var: float, n_rep: int) -> dict[str, int]:
    hits = {"var": 0, "std": 0, "var (half)": 0, "std (half)": 0}
    sd = math.sqrt(truth_var)
    for _ in range(n_rep):
        x = draw()
        v = variance_interval(x)
        hits["var"] += v.low <= truth_var <= v.high
        low, high = _half(v)
        hits["var (half)"] += low <= truth_var <= high
        s, lo, hi = _std_delta(x)
        hits["std"] += lo <= sd <= hi
        hits["std (half)"] += s - (s - lo) / 2 <= sd <= s + (hi - s) / 2
    return hits


@pytest.mark.statistical
def test_variance_and_std_intervals_cover_light_tails():
    gen = torch.Generator().manual_seed(11)
    normal = _coverage(lambda: torch.randn(1000, generator=gen, dtype=torch.float64).numpy(), 1.0, R_VAR)
    _, sd = _k3_moments(0.1)
    k3 = _coverage(lambda: _k3(0.1, 20_000, gen), sd * sd, R_VAR)
    for hits, n in ((normal, R_VAR), (k3, R_VAR)):
        assert not _undercovers(hits["var"], n) and not _undercovers(hits["std"], n), (hits, n)
        assert _undercovers(hits["var (half)"], n) and _undercovers(hits["std (half)"], n), (hits, n)


def test_k3_standard_deviation_is_the_closed_form():
    """The quadrature behind the truth: sd(k3)/KL at μ = 1 is 2√(e − 2) (papers.md, corrected)."""
    mean, sd = _k3_moments(1.0)
    assert mean == pytest.approx(0.5, rel=1e-9)
    assert sd / 0.5 == pytest.approx(2 * math.sqrt(math.e - 2), rel=1e-9)


@pytest.mark.statistical
@pytest.mark.xfail(strict=True, reason="delta-method std of a heavy-tailed estimator (k3 at μ = 1) "
                                       "undercovers: measured 0.91 at n = 20000, lower at n = 2000")
def test_heavy_tailed_std_undercovers():
    gen = torch.Generator().manual_seed(12)
    _, sd = _k3_moments(1.0)
    hits = _coverage(lambda: _k3(1.0, 2_000, gen), sd * sd, R_VAR)
    assert not _undercovers(hits["std"], R_VAR), hits["std"] / R_VAR


def test_wilson_band_contains_its_mean_reads_rounding_as_the_bound_and_passes_nan():
    import math as m

    for n in range(2, 64):
        for v in (0.0, 1.0):
            iv = bounded_mean_interval(np.full(n, v))
            assert iv.low <= iv.value <= iv.high and not iv.excludes(v), (n, v, iv)
    iv = bounded_mean_interval([1.0000000000000002, 1.0, 1.0])
    assert iv.value == 1.0 and iv.high == 1.0
    assert m.isnan(bounded_mean_interval([0.5, float("nan")]).value)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        bounded_mean_interval([0.5, 1.001])
