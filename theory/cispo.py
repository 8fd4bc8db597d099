r"""CISPO and the seed's SGS-CISPO.

CISPO (MiniMax 2025, arXiv:2506.13585, eqs. 3-5): L_t = -sg(clip(ρ_t))·A_t·ℓ_t, so
w_t = clip(ρ_t)·A_t exactly — never zero unless A is, bounded by (1 + ε_high)|A|.

>>> from theory._core import ratio_weight
>>> e_h = sp.Symbol("eps_high", positive=True)
>>> ratio_weight(CISPO, {"eps_low": None, "eps_high": e_h})
A*Min(rho, eps_high + 1)

SGS-CISPO (the seed): L_t = -S'_t·sg(clip(ρ_t))·A_t·ℓ_t with S = 1 - σ(k(P - τ)) for A > 0, 1
otherwise; S' = sg(S) or S. With the stop-gradient, w_t = S_t·clip(ρ_t)·A_t.
"""

from __future__ import annotations

import sympy as sp

from theory._core import Sequence, TheoryEntry, clip, sg, sigmoid
from theory.ppo_clip import clip_breakpoints


def _clip_weight(seq: Sequence, t: int, p) -> sp.Expr:
    lo = None if p["eps_low"] is None else 1 - p["eps_low"]
    return clip(seq.ratio(t), lo, 1 + p["eps_high"])


def cispo_losses(seq: Sequence, p) -> list[sp.Expr]:
    """L_t = -sg(clip(ρ_t, 1 - ε_low, 1 + ε_high))·A_t·ℓ_t."""
    return [-sg(_clip_weight(seq, t, p)) * seq.adv[t] * seq.logp[t] for t in range(seq.n)]


def confidence(seq: Sequence, t: int, p_mode: str) -> sp.Expr:
    """SGS's P: π(o) = exp(Σℓ) (sequence), π(o_t) = exp(ℓ_t) (token), exp(mean ℓ) (geometric)."""
    if p_mode == "token":
        return sp.exp(seq.logp[t])
    total = sp.Add(*seq.logp)
    return sp.exp(total) if p_mode == "sequence" else sp.exp(total / seq.n)


def sgs_factor(p_value: sp.Expr, a: sp.Expr, k: sp.Expr, tau: sp.Expr) -> sp.Expr:
    """S(P, A) = 1 if A <= 0 else 1 - σ(k(P - τ))."""
    return sp.Piecewise((1 - sigmoid(k * (p_value - tau)), a > 0), (1, True))


def sgs_cispo_losses(seq: Sequence, p) -> list[sp.Expr]:
    """The seed's L = -(1/Σ|o|) Σ S·sg(clip(ρ))·A·log π (normaliser from the aggregation)."""
    out = []
    for t in range(seq.n):
        s = sgs_factor(confidence(seq, t, p["p_mode"]), seq.adv[t], p["k"], p["tau"])
        s = sg(s) if p["stop_grad_s"] else s
        out.append(-s * sg(_clip_weight(seq, t, p)) * seq.adv[t] * seq.logp[t])
    return out


CISPO = TheoryEntry("cispo", cispo_losses, (), "MiniMax 2025, arXiv:2506.13585, eqs. 3-5",
                    breakpoints=clip_breakpoints)
SGS_CISPO = TheoryEntry("sgs_cispo", sgs_cispo_losses, ("p_mode", "stop_grad_s"),
                        "the seed essay (shared/seed), SGS-CISPO loss", breakpoints=clip_breakpoints)


def on_policy_minus_reinforce() -> sp.Expr:
    """CISPO's derived per-token weight at θ = θ_old (ρ = 1) minus REINFORCE's: 0 whenever the
    clip range contains 1 (0 < ε_low < 1, ε_high > 0), so with the same ``token-mean``
    normaliser CISPO at θ_old is token-mean REINFORCE.

    >>> on_policy_minus_reinforce()
    0
    """
    from theory._core import RHO, ratio_weight
    from theory.reinforce import REINFORCE

    e_l, e_h = sp.symbols("eps_low eps_high", positive=True)
    w_cispo = ratio_weight(CISPO, {"eps_low": e_l / (1 + e_l), "eps_high": e_h})  # ε_low ∈ (0, 1)
    w_reinforce = ratio_weight(REINFORCE, {"is_level": None, "is_mode": "truncate", "is_cap": None})
    return sp.simplify(w_cispo.subs(RHO, 1) - w_reinforce)
