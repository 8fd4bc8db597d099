r"""REINFORCE with optional TIS / MIS weights, and off-policy REINFORCE with the sequence ratio.

``reinforce``: L_t = -sg(ω_t)·A_t·ℓ_t, so w_t = ω_t·A_t (ω = 1, min(ρ, C) or ρ·1[ρ <= C], with ρ
the token or the sequence ratio). ``seq_is``: L_i = -Ā·exp(log R + sg(min(log R, log C) - log R))
broadcast over the n tokens, so w_t = n·min(R, C)·Ā (the n is the broadcast; the aggregation
normaliser of ``seq-mean-token-mean`` turns it into (1/B)·min(R, C)·Ā).

>>> from theory._core import ratio_weight, ADV, RHO
>>> ratio_weight(REINFORCE, {"is_level": None, "is_mode": "truncate", "is_cap": sp.Symbol("C")})
A
>>> ratio_weight(REINFORCE, {"is_level": "token", "is_mode": "truncate", "is_cap": sp.Symbol("C", positive=True)})
A*Min(C, rho)

``dro``: L_t = -(ℓ_t A_t - ½β(ℓ_t - ℓold_t)²), so w_t = A_t - β(ℓ_t - ℓold_t): not 0 at A = 0.

>>> ratio_weight(DRO, {"beta": sp.Symbol("beta", positive=True)})
A - beta*log(rho)
"""

from __future__ import annotations

import sympy as sp

from theory._core import Sequence, TheoryEntry, sg


def _is_weight(seq: Sequence, t: int, p) -> sp.Expr:
    if p["is_level"] is None:
        return sp.S.One
    rho = seq.ratio(t) if p["is_level"] == "token" else sp.exp(seq.log_seq_ratio)
    cap = p["is_cap"]
    if p["is_mode"] == "truncate":
        return sp.Min(rho, cap)
    return sp.Piecewise((rho, rho <= cap), (0, True))


def reinforce_losses(seq: Sequence, p) -> list[sp.Expr]:
    """L_t = -sg(ω_t)·A_t·ℓ_t (Williams 1992; TIS / MIS weights detached)."""
    return [-sg(_is_weight(seq, t, p)) * seq.adv[t] * seq.logp[t] for t in range(seq.n)]


def seq_is_losses(seq: Sequence, p) -> list[sp.Expr]:
    """L_i = -Ā·exp(log R + sg(min(log R, log C) - log R)), broadcast over the sequence."""
    log_r = seq.log_seq_ratio
    log_w = log_r if p["cap"] is None else log_r + sg(sp.Min(log_r, sp.log(p["cap"])) - log_r)
    return [-seq.mean_adv * sp.exp(log_w)] * seq.n


def _is_breakpoints(p) -> list[sp.Expr]:
    return [] if p.get("is_level") is None else [p["is_cap"]]


REINFORCE = TheoryEntry("reinforce", reinforce_losses, ("is_level", "is_mode"),
                        "Williams 1992; TIS (Yao et al. 2025); MIS (Liu, Li et al. 2025)",
                        breakpoints=_is_breakpoints)
SEQ_IS = TheoryEntry("seq_is", seq_is_losses, (), "Precup, Sutton, Singh 2000; seed claim C02")


def dro_losses(seq: Sequence, p) -> list[sp.Expr]:
    """L_t = -(ℓ_t A_t - ½β(ℓ_t - ℓold_t)²) (Kimi-1.5, arXiv:2501.12599 §2.3.2; verl ``dro``)."""
    return [-(l * a - p["beta"] / 2 * (l - o) ** 2) for l, o, a in zip(seq.logp, seq.old_logp, seq.adv)]


DRO = TheoryEntry("dro", dro_losses, (), "Kimi Team 2025, arXiv:2501.12599, §2.3.2; verl dro")
