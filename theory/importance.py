r"""Importance weights of per-position independent policies: product ratio R and geometric G.

Positions t = 1..T are independent; at each the behaviour policy μ_t and the target π_t are
categorical over V tokens, ρ_t = π_t(o_t)/μ_t(o_t), R = Π_t ρ_t and G = R^{1/T} (GSPO's s).
Expectations are under μ ("E_old"). With χ²(π‖μ) = Σ_v (π_v - μ_v)²/μ_v:

* E_old[ρ] = 1 and E_old[ρ²] = 1 + χ², so E_old[R] = 1 and E_old[R²] = Π_t (1 + χ²_t);
* log G = (1/T) Σ_t log ρ_t, so Var(log G) = Var(log ρ)/T for i.i.d. positions;
* E_old[G] = (Σ_v μ_v ρ_v^{1/T})^T <= 1 (Jensen), and E_old[G] -> exp(-KL(μ‖π)) as T -> ∞;
* pointwise G = R^{1/T}, min_t ρ_t <= G <= max_t ρ_t, and G <= (1/T) Σ_t ρ_t (AM-GM).

>>> expected_ratio_minus_one(3)
0
>>> second_moment_minus_chi2(3)
0
"""

from __future__ import annotations

import itertools
from typing import Sequence as Seq

import sympy as sp


def _categoricals(v: int):
    """Symbolic μ, π on V tokens, the last probability 1 - Σ others (so both sum to 1)."""
    mu = list(sp.symbols(f"mu1:{v}", positive=True))
    pi = list(sp.symbols(f"pi1:{v}", positive=True))
    return mu + [1 - sum(mu)], pi + [1 - sum(pi)]


def chi2(pi: Seq, mu: Seq) -> sp.Expr:
    """χ²(π‖μ) = Σ_v (π_v - μ_v)²/μ_v."""
    return sum((p - m) ** 2 / m for p, m in zip(pi, mu))


def expected_ratio_minus_one(v: int = 3) -> sp.Expr:
    """E_μ[ρ] - 1 = Σ_v μ_v (π_v/μ_v) - 1, simplified (0: the token ratio has mean 1)."""
    mu, pi = _categoricals(v)
    return sp.simplify(sum(m * (p / m) for m, p in zip(mu, pi)) - 1)


def second_moment_minus_chi2(v: int = 3) -> sp.Expr:
    """E_μ[ρ²] - (1 + χ²(π‖μ)), simplified (0)."""
    mu, pi = _categoricals(v)
    return sp.simplify(sum(m * (p / m) ** 2 for m, p in zip(mu, pi)) - 1 - chi2(pi, mu))


def sequence_moments(mus: Seq[Seq], pis: Seq[Seq]) -> dict[str, sp.Expr]:
    """Exact E_old[R], E_old[R²], E_old[G], E_old[log G], Var(log G) by enumerating all V^T
    sequences of independent positions (``mus[t]``, ``pis[t]``: the two categoricals at t)."""
    t_len = len(mus)
    moments = {"E_R": 0, "E_R2": 0, "E_G": 0, "E_logG": 0, "E_logG2": 0}
    for seq in itertools.product(*[range(len(m)) for m in mus]):
        prob = sp.Mul(*[mus[t][v] for t, v in enumerate(seq)])
        ratios = [pis[t][v] / mus[t][v] for t, v in enumerate(seq)]
        r = sp.Mul(*ratios)
        log_g = sum(sp.log(x) for x in ratios) / t_len
        moments["E_R"] += prob * r
        moments["E_R2"] += prob * r**2
        moments["E_G"] += prob * r ** sp.Rational(1, t_len)
        moments["E_logG"] += prob * log_g
        moments["E_logG2"] += prob * log_g**2
    moments["Var_logG"] = moments["E_logG2"] - moments["E_logG"] ** 2
    return moments


def var_log_g_times_t_minus_var_log_rho(t_len: int = 3) -> sp.Expr:
    """T·Var(log G) - Var(log ρ) for T i.i.d. positions on two tokens (μ = (m, 1-m),
    π = (q, 1-q)), by exact enumeration: 0, i.e. Var(log G) = Var(log ρ)/T.

    >>> var_log_g_times_t_minus_var_log_rho(3)
    0
    """
    m, q = sp.symbols("m q", positive=True)
    mu, pi = [m, 1 - m], [q, 1 - q]
    var_g = sequence_moments([mu] * t_len, [pi] * t_len)["Var_logG"]
    logs = [sp.log(p / x) for p, x in zip(pi, mu)]
    var_rho = sum(x * l**2 for x, l in zip(mu, logs)) - sum(x * l for x, l in zip(mu, logs)) ** 2
    return sp.simplify(sp.expand(t_len * var_g - var_rho))


def expected_geometric_iid(mu: Seq, pi: Seq, t_len) -> sp.Expr:
    """E_old[G] for T i.i.d. positions: (Σ_v μ_v (π_v/μ_v)^{1/T})^T (independence factorises).

    >>> expected_geometric_iid([sp.Rational(1, 2)] * 2, [sp.Rational(1, 4), sp.Rational(3, 4)], 2)
    (sqrt(2)/4 + sqrt(6)/4)**2
    """
    return sum(m * (p / m) ** (sp.S.One / t_len) for m, p in zip(mu, pi)) ** t_len


def limit_log_expected_geometric(v: int = 3) -> sp.Expr:
    """lim_{T→∞} log E_old[G] for i.i.d. positions, derived with h = 1/T:
    lim_{h→0} log(Σ_v μ_v e^{h a_v})/h = Σ_v μ_v a_v with a_v = log(π_v/μ_v), i.e. -KL(μ‖π)
    (μ sums to 1: its last entry is 1 - Σ others).

    >>> limit_log_expected_geometric(3)
    a1*mu1 + a2*mu2 - a3*mu1 - a3*mu2 + a3
    """
    h = sp.Symbol("h", positive=True)
    mu, _ = _categoricals(v)
    a = sp.symbols(f"a1:{v + 1}", real=True)
    return sp.limit(sp.log(sum(m * sp.exp(h * x) for m, x in zip(mu, a))) / h, h, 0)


def pointwise_relation() -> tuple[sp.Expr, sp.Expr]:
    """(log G - (log R)/T, G/R) for a sequence ratio R > 0 and T >= 1: log G = (log R)/T exactly,
    and G/R = R^{1/T - 1}, so for T >= 2 the geometric weight exceeds the true weight exactly
    when R < 1 and falls below it when R > 1: G shrinks every weight towards 1.

    >>> pointwise_relation()
    (0, R**(-1 + 1/T))
    """
    r, t = sp.Symbol("R", positive=True), sp.Symbol("T", positive=True)
    g = r ** (1 / t)
    return sp.simplify(sp.expand_log(sp.log(g), force=True) - sp.log(r) / t), sp.powsimp(g / r)


def am_gm_gap_two() -> sp.Expr:
    """(ρ1 + ρ2)/2 - sqrt(ρ1 ρ2) - (sqrt ρ1 - sqrt ρ2)²/2, simplified: 0, so the AM-GM gap of two
    ratios is a square, >= 0, and zero iff ρ1 = ρ2.

    >>> am_gm_gap_two()
    0
    """
    r1, r2 = sp.symbols("rho1 rho2", positive=True)
    return sp.simplify((r1 + r2) / 2 - sp.sqrt(r1 * r2) - (sp.sqrt(r1) - sp.sqrt(r2)) ** 2 / 2)


# The example in research/papers.md §3 and §11: V = 4, T = 5, i.i.d. positions.
EXAMPLE_MU = tuple(sp.Rational(x, 10) for x in (4, 3, 2, 1))
EXAMPLE_PI = tuple(sp.Rational(x, 100) for x in (30, 30, 25, 15))
EXAMPLE_T = 5


def example_values() -> dict[str, float]:
    """E_old[R], E_old[R²], E_old[G], E_old[log G], exp(-KL(μ‖π)) for the papers.md example.

    >>> {k: round(v, 6) for k, v in example_values().items()}
    {'E_R': 1.0, 'E_R2': 1.354081, 'E_G': 0.976279, 'E_logG': -0.029898, 'exp_neg_kl': 0.970545}
    """
    mu, pi, t = EXAMPLE_MU, EXAMPLE_PI, EXAMPLE_T
    kl = sum(m * sp.log(m / p) for m, p in zip(mu, pi))
    e_r2 = (1 + chi2(pi, mu)) ** t
    return {
        "E_R": float(sum(m * (p / m) for m, p in zip(mu, pi)) ** t),
        "E_R2": float(e_r2),
        "E_G": float(expected_geometric_iid(mu, pi, t)),
        "E_logG": float(-kl),
        "exp_neg_kl": float(sp.exp(-kl)),
    }
