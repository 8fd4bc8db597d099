r"""Entropy dynamics of a softmax policy under a logit update (Cui et al. 2025, arXiv:2505.22617).

For π = softmax(z) and z(η) = z + η·Δz, the derivative of the entropy at η = 0 is

    dH/dη = -Cov_π(log π, Δz)      (exact; derived below for V = 3).

Policy gradient on a tabular softmax moves the logits by Δz = π ⊙ A (A centred under π), so
dH/dη = -Cov(log π, π⊙A); natural policy gradient moves them by Δz = A: -Cov(log π, A).

>>> entropy_derivative_minus_covariance(3)
0
"""

from __future__ import annotations

import sympy as sp


def _softmax(z):
    total = sum(sp.exp(x) for x in z)
    return [sp.exp(x) / total for x in z]


def _cov(pi, x, y):
    ex = sum(p * a for p, a in zip(pi, x))
    ey = sum(p * b for p, b in zip(pi, y))
    return sum(p * (a - ex) * (b - ey) for p, a, b in zip(pi, x, y))


def entropy_derivative(v: int = 3, delta=None) -> tuple[sp.Expr, list, list]:
    """(dH/dη at η = 0, π, log π) for logits z + η·Δz (Δz symbolic unless given)."""
    z = sp.symbols(f"z1:{v + 1}", real=True)
    dz = delta if delta is not None else sp.symbols(f"dz1:{v + 1}", real=True)
    eta = sp.Symbol("eta", real=True)
    pi_eta = _softmax([a + eta * b for a, b in zip(z, dz)])
    entropy = -sum(p * sp.log(p) for p in pi_eta)
    deriv = sp.diff(entropy, eta).subs(eta, 0)
    pi = _softmax(z)
    return deriv, pi, [sp.log(p) for p in pi]


def entropy_derivative_minus_covariance(v: int = 3) -> sp.Expr:
    """dH/dη + Cov_π(log π, Δz), simplified: 0."""
    dz = sp.symbols(f"dz1:{v + 1}", real=True)
    deriv, pi, log_pi = entropy_derivative(v, dz)
    return sp.simplify(sp.expand_log(deriv + _cov(pi, log_pi, dz), force=True))


def policy_gradient_forms(v: int = 3) -> tuple[sp.Expr, sp.Expr]:
    """dH/dη + Cov(log π, π⊙A) for the PG step and dH/dη + Cov(log π, A) for the NPG step,
    with A centred under π (A_v = Q_v - Σ π Q): both simplify to 0.

    >>> policy_gradient_forms(3)
    (0, 0)
    """
    q = sp.symbols(f"Q1:{v + 1}", real=True)
    z = sp.symbols(f"z1:{v + 1}", real=True)
    pi = _softmax(z)
    adv = [x - sum(p * y for p, y in zip(pi, q)) for x in q]
    out = []
    for dz in ([p * a for p, a in zip(pi, adv)], adv):
        deriv, pi_, log_pi = entropy_derivative(v, dz)
        out.append(sp.simplify(sp.expand_log(deriv + _cov(pi_, log_pi, dz), force=True)))
    return tuple(out)


def pg_step_is_exact_gradient(v: int = 3) -> list[sp.Expr]:
    """∂E_π[Q]/∂z_b - π_b·A_b, simplified: all 0, so the tabular PG logit step is Δz = π⊙A.

    >>> pg_step_is_exact_gradient(3)
    [0, 0, 0]
    """
    q = sp.symbols(f"Q1:{v + 1}", real=True)
    z = sp.symbols(f"z1:{v + 1}", real=True)
    pi = _softmax(z)
    value = sum(p * x for p, x in zip(pi, q))
    return [sp.simplify(sp.diff(value, zb) - pb * (qb - value)) for zb, pb, qb in zip(z, pi, q)]
