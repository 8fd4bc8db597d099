r"""DPPO's binary trust regions (TV and binary KL): truncated-IS REINFORCE times a detached mask.

L_t = -A_t·sg(min(ρ_t, C))·ℓ_t·v_t with v_t a 0/1 function of sg(p_t) = e^{sg ℓ_t} and p_old
(arXiv:2602.04879; verl ``dppo_tv`` / ``dppo_kl``), so the derived weight is A_t·min(ρ_t, C)·v_t:
the mask depends on the probabilities themselves, not only on their ratio.

>>> from theory._core import Sequence, derive_weights
>>> seq = Sequence.make(1)
>>> p = {"delta_low": sp.Rational(1, 5), "delta_high": sp.Rational(1, 5), "is_cap": 3}
>>> (w,) = derive_weights(DPPO_TV, seq, p)
>>> vals = {seq.logp[0]: sp.log(sp.Rational(1, 2)), seq.old_logp[0]: sp.log(sp.Rational(2, 5))}
>>> w.subs(vals).subs(seq.adv[0], 1), w.subs(vals).subs(seq.adv[0], -1)   # p - p_old = 0.1
(5/4, -5/4)
>>> vals = {seq.logp[0]: sp.log(sp.Rational(9, 10)), seq.old_logp[0]: sp.log(sp.Rational(3, 5))}
>>> w.subs(vals).subs(seq.adv[0], 1)   # p - p_old = 0.3 > δ_hi: dropped
0
"""

from __future__ import annotations

import sympy as sp

from theory._core import Sequence, TheoryEntry, sg


class xlogy(sp.Function):
    """x·log(y) with the convention 0·log(y) = 0 (numpy: no 0·(-inf) = nan). Only ever used
    inside a mask's condition, so it is never differentiated."""

    def _numpycode(self, printer):
        x, y = (printer._print(a) for a in self.args)
        return f"numpy.where(({x}) == 0, 0.0, ({x}) * numpy.log(numpy.where(({x}) == 0, 1.0, {y})))"


def binary_kl(l: sp.Expr, lold: sp.Expr) -> sp.Expr:
    """D = p_old log(p_old/p) + (1 - p_old) log((1 - p_old)/(1 - p)), p = e^l, p_old = e^lold."""
    p, p_old = sp.exp(l), sp.exp(lold)
    q_old = 1 - p_old
    return p_old * (lold - l) + xlogy(q_old, q_old) - xlogy(q_old, 1 - p)


def _dppo_losses(seq: Sequence, p, keep_pos, keep_neg) -> list[sp.Expr]:
    out = []
    for t in range(seq.n):
        a, l, lold = seq.adv[t], seq.logp[t], seq.old_logp[t]
        v = sp.Piecewise((1, (a > 0) & keep_pos(sg(l), lold)), (1, (a <= 0) & keep_neg(sg(l), lold)),
                         (0, True))
        out.append(-a * sg(sp.Min(seq.ratio(t), p["is_cap"])) * l * v)
    return out


def dppo_tv_losses(seq: Sequence, p) -> list[sp.Expr]:
    """v = [p - p_old <= δ_hi] if A > 0 else [p - p_old >= -δ_lo] (DPPO-Binary-TV)."""
    return _dppo_losses(seq, p, lambda l, lo: sp.exp(l) - sp.exp(lo) <= p["delta_high"],
                        lambda l, lo: sp.exp(l) - sp.exp(lo) >= -p["delta_low"])


def dppo_kl_losses(seq: Sequence, p) -> list[sp.Expr]:
    """v = [D <= δ_hi or p <= p_old] if A > 0 else [D <= δ_lo or p >= p_old] (DPPO-Binary-KL)."""
    return _dppo_losses(seq, p, lambda l, lo: (binary_kl(l, lo) <= p["delta_high"]) | (l <= lo),
                        lambda l, lo: (binary_kl(l, lo) <= p["delta_low"]) | (l >= lo))


REF = "arXiv:2602.04879 (DPPO); verl core_algos.py dppo_tv / dppo_kl"
DPPO_TV = TheoryEntry("dppo_tv", dppo_tv_losses, (), REF + " (Binary-TV)")
DPPO_KL = TheoryEntry("dppo_kl", dppo_kl_losses, (), REF + " (Binary-KL)")
