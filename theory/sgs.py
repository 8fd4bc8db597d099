r"""The seed's Smooth Gradient Scaling, analysed.

S(P, A) = 1 if A <= 0, else 1 - σ(k(P - τ)), with confidence P ∈ [0, 1], k >= 0, 0 < τ < 1.

>>> sp.simplify(dS_dP() + K * sigmoid(K * (P - TAU)) * (1 - sigmoid(K * (P - TAU))))
0
>>> limit_k_to_zero()
1/2
>>> limit_k_to_infinity()
(1, 1/2, 0)
"""

from __future__ import annotations

import sympy as sp

from theory._core import Sequence, derive_weights, sigmoid
from theory.cispo import SGS_CISPO

P = sp.Symbol("P", nonnegative=True)
K = sp.Symbol("k", positive=True)
TAU = sp.Symbol("tau", positive=True)
A = sp.Symbol("A", real=True)
DELTA = sp.Symbol("delta", positive=True)


def scale_positive(p=P, k=K, tau=TAU) -> sp.Expr:
    """S for A > 0: 1 - σ(k(P - τ))."""
    return 1 - sigmoid(k * (p - tau))


def dS_dP() -> sp.Expr:
    """dS/dP for A > 0, derived: -k σ(k(P-τ))(1 - σ(k(P-τ))) < 0 for k > 0 (S decreases in P)."""
    return sp.diff(scale_positive(), P)


def scale_range() -> tuple[sp.Expr, sp.Expr]:
    """(inf, sup) of S over P ∈ [0, 1] for A > 0: S is decreasing, so (S(1), S(0)) =
    (1 - σ(k(1 - τ)), 1 - σ(-kτ)); both lie strictly inside (0, 1) for finite k.

    >>> [sp.simplify(x) for x in scale_range()]
    [exp(k*tau)/(exp(k) + exp(k*tau)), exp(k*tau)/(exp(k*tau) + 1)]
    """
    return scale_positive(1), scale_positive(0)


def limit_k_to_zero() -> sp.Expr:
    """lim_{k→0} S = 1/2 for A > 0, whatever P: positive samples are halved, not graded."""
    return sp.limit(scale_positive(), K, 0)


def limit_k_to_infinity() -> tuple[sp.Expr, sp.Expr, sp.Expr]:
    """lim_{k→∞} S for P = τ - δ, P = τ, P = τ + δ: (1, 1/2, 0) — a hard gate 1[P < τ]."""
    return (sp.limit(scale_positive(TAU - DELTA), K, sp.oo), scale_positive(TAU),
            sp.limit(scale_positive(TAU + DELTA), K, sp.oo))


def jump_at_zero_advantage() -> tuple[sp.Expr, sp.Expr]:
    """At A = 0: (S(0+) - S(0-), lim_{A→0±} S·A). S jumps by -σ(k(P - τ)) (S is
    discontinuous) while S·A -> 0 from both sides (the product, which scales the gradient, is
    continuous).

    >>> jump_at_zero_advantage()
    (-exp(k*(P - tau))/(exp(k*(P - tau)) + 1), 0)
    """
    s_pos, s_neg = scale_positive(), sp.S.One
    return sp.simplify(s_pos - s_neg), sp.limit(s_pos * A, A, 0, "+") - sp.limit(s_neg * A, A, 0, "-")


def extra_gradient_term(p_mode: str, n: int = 2) -> list[sp.Expr]:
    """w(stop_grad_s=False) - w(stop_grad_s=True) per token, derived from the SGS-CISPO surrogate.

    For A > 0 every token gains -(∂S/∂ℓ_t)·Σ_s c_s A ℓ_s-type terms; with ℓ < 0, A > 0 and the
    clip weight c > 0 the term is positive (``extra_term_is_positive``): without the stop-
    gradient, descending the loss also pushes ℓ — and so P — up, the opposite of what SGS means
    to do.

    >>> extra_gradient_term("token", 1)
    [Piecewise((-A1*k*l1*exp(k*(tau - exp(l1)) + l1)*Min(eps_high + 1, exp(l1 - lold1))/(exp(k*(tau - exp(l1))) + 1)**2, A1 > 0), (0, True))]
    """
    seq = Sequence.make(n)
    eps_high = sp.Symbol("eps_high", positive=True)
    base = {"eps_low": None, "eps_high": eps_high, "k": K, "tau": TAU, "p_mode": p_mode}
    with_sg = derive_weights(SGS_CISPO, seq, {**base, "stop_grad_s": True})
    without = derive_weights(SGS_CISPO, seq, {**base, "stop_grad_s": False})
    return [sp.simplify(a - b) for a, b in zip(without, with_sg)]


def extra_term_is_positive(p_mode: str, n: int = 2) -> bool:
    """Whether the extra term is > 0 for every token when all advantages are > 0 (sympy decides
    the sign from the assumptions ℓ < 0, A > 0, k > 0, ratios > 0)."""
    seq = Sequence.make(n)
    positive = {a: sp.Symbol(f"a{i}", positive=True) for i, a in enumerate(seq.adv)}
    terms = [t.subs(positive) for t in extra_gradient_term(p_mode, n)]
    terms = [sp.simplify(sp.piecewise_fold(t)) for t in terms]
    return all(t.is_positive for t in terms)
