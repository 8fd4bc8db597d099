r"""KL estimators k1, k2, k3: expected gradients on a categorical softmax, and the Gaussian table.

Samples x ~ q = softmax(θ); with r = p(x)/q(x), the per-sample estimators of KL(q‖p) are
k1 = -log r, k2 = (log r)²/2, k3 = r - 1 - log r. Differentiating the per-sample estimate and
taking the expectation (Schulman 2020; papers.md §8):

* E_q[∇k1] = 0 (no KL signal),
* E_q[∇k2] = ∇KL(q‖p) (reverse KL, the intended one),
* E_q[∇k3] = ∇KL(p‖q) (forward KL: biased as a gradient of KL(q‖p)).

>>> [sp.simplify(d) for d in expected_gradient_minus_target("k1", 3)]
[0, 0, 0]
"""

from __future__ import annotations

import sympy as sp
from sympy.stats import E, Normal

ESTIMATORS = ("k1", "k2", "k3")


def estimator_value(name: str, log_r: sp.Expr) -> sp.Expr:
    """k(log r) for the per-sample estimator ``name`` of KL(q‖p), r = p/q."""
    if name == "k1":
        return -log_r
    if name == "k2":
        return log_r**2 / 2
    return sp.exp(log_r) - 1 - log_r


def _softmax(theta):
    z = sum(sp.exp(t) for t in theta)
    return [sp.exp(t) / z for t in theta]


def expected_gradient_minus_target(name: str, v: int = 3) -> list[sp.Expr]:
    """E_q[∇_θ k(x)] minus its target gradient, per component of θ, for q = softmax(θ) over V
    tokens and a fixed categorical p: the target is 0 for k1, ∇KL(q‖p) for k2 and ∇KL(p‖q) for
    k3. Each entry simplifies to 0."""
    theta = sp.symbols(f"theta1:{v + 1}", real=True)
    p = sp.symbols(f"p1:{v + 1}", positive=True)
    q = _softmax(theta)
    log_q = [sp.log(x) for x in q]
    expected = [sum(q[a] * sp.diff(estimator_value(name, sp.log(p[a]) - log_q[a]), th)
                    for a in range(v)) for th in theta]
    if name == "k1":
        target = [0] * v
    elif name == "k2":
        kl = sum(q[a] * (log_q[a] - sp.log(p[a])) for a in range(v))
        target = [sp.diff(kl, th) for th in theta]
    else:
        kl = sum(p[a] * (sp.log(p[a]) - log_q[a]) for a in range(v))
        target = [sp.diff(kl, th) for th in theta]
    return [sp.simplify(e - t) for e, t in zip(expected, target)]


MU = sp.Symbol("mu", positive=True)


def gaussian_moments(name: str) -> tuple[sp.Expr, sp.Expr]:
    """(E_q[k], Var_q[k]) for q = N(0, 1), p = N(μ, 1), where log r = μx - μ²/2 and
    KL(q‖p) = μ²/2, derived with sympy.stats.

    >>> gaussian_moments("k2")
    (mu**2*(mu**2 + 4)/8, mu**4*(mu**2 + 2)/4)
    """
    x = Normal("x", 0, 1)
    k = estimator_value(name, MU * x - MU**2 / 2)
    mean = sp.simplify(E(k))
    var = sp.simplify(E(sp.expand(k**2)) - mean**2)
    return mean, var


def gaussian_table(mus=(sp.Rational(1, 10), sp.S.One)) -> dict[str, dict[str, tuple[float, float]]]:
    """bias/KL and std/KL of k1, k2, k3 at each μ (Schulman's table, papers.md §8).

    Closed forms: std(k1)/KL = 2/μ; bias(k2)/KL = μ²/4, std(k2)/KL = sqrt(2 + μ²);
    std(k3)/KL = 2·sqrt(e^{μ²} - 1 - μ²)/μ². At μ = 1 the last is 2·sqrt(e - 2) = 1.6950
    (Schulman: 1.7; papers.md's 1.6948 is off in the fourth digit).

    >>> t = gaussian_table()
    >>> {k: [round(x, 4) for x in v["0.1"]] for k, v in t.items()}
    {'k1': [0.0, 20.0], 'k2': [0.0025, 1.4177], 'k3': [0.0, 1.4166]}
    >>> {k: [round(x, 4) for x in v["1"]] for k, v in t.items()}
    {'k1': [0.0, 2.0], 'k2': [0.25, 1.7321], 'k3': [0.0, 1.695]}
    """
    kl = MU**2 / 2
    table: dict[str, dict[str, tuple[float, float]]] = {}
    for name in ESTIMATORS:
        mean, var = gaussian_moments(name)
        table[name] = {
            f"{float(m):g}": (float(((mean - kl) / kl).subs(MU, m)), float((sp.sqrt(var) / kl).subs(MU, m)))
            for m in mus
        }
    return table
