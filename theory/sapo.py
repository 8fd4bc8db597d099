r"""SAPO: soft sigmoid gate f_τ(ρ) = (4/τ)·σ(τ(ρ - 1)), L = -f·A (Qwen team 2025, arXiv:2511.20347).

The derived weight is A·ρ·4σ(τ(ρ-1))(1 - σ(τ(ρ-1))): equal to A at ρ = 1, positive for every
finite ρ (never exactly zero), and → 0 as ρ → ∞ or ρ → 0.

>>> from theory._core import ratio_weight, RHO, ADV
>>> tp, tn = sp.symbols("tau_pos tau_neg", positive=True)
>>> w = ratio_weight(SAPO, {"tau_pos": tp, "tau_neg": tn})
>>> sp.simplify(w.subs(RHO, 1))
A
"""

from __future__ import annotations

import sympy as sp

from theory._core import Sequence, TheoryEntry, sigmoid
from theory.ppo_clip import clamped_ratio


def sapo_losses(seq: Sequence, p) -> list[sp.Expr]:
    """L_t = -(4/τ_t)·σ(τ_t(ρ_t - 1))·A_t with τ_t = τ_pos if A_t > 0 else τ_neg (ρ_t with the
    optional log-ratio clamp of ``log_ratio_min`` / ``log_ratio_max``)."""
    out = []
    for t in range(seq.n):
        a = seq.adv[t]
        tau = sp.Piecewise((p["tau_pos"], a > 0), (p["tau_neg"], True))
        out.append(-(4 / tau) * sigmoid(tau * (clamped_ratio(seq, t, p) - 1)) * a)
    return out


SAPO = TheoryEntry("sapo", sapo_losses, (), "Qwen team 2025, SAPO, arXiv:2511.20347")
