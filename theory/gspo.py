r"""GSPO (sequence and token forms) and GMPO.

GSPO: s = exp((1/n) Σ_t (ℓ_t - ℓold_t)), L = max(-Ā s, -Ā clip(s)) broadcast over the n tokens.
Since ∂s/∂ℓ_t = s/n, the derived weight (before the normaliser) is n·Ā·s/n = Ā·s per token of
the broadcast, 0 where the clip binds. GSPO-token: ŝ_t = sg(s)·exp(ℓ_t - sg(ℓ_t)),
L_t = max(-A_t ŝ_t, -A_t clip(ŝ_t)), w_t = A_t·s. GMPO: L = -Ā·exp((1/n) Σ_t d̃_t) with the
sign-aware log-space clip d̃.

>>> seq = Sequence.make(2)
>>> s = sp.exp(sp.Rational(1, 2) * seq.log_seq_ratio)
>>> sp.simplify(sp.diff(s, seq.logp[0]) - s / 2)     # ∇s = s·(1/T)·Σ∇ℓ
0
"""

from __future__ import annotations

import sympy as sp

from theory._core import Sequence, TheoryEntry, clip, sg
from theory.ppo_clip import clip_breakpoints


def _lower(p):
    return None if p["eps_low"] is None else 1 - p["eps_low"]


def gspo_losses(seq: Sequence, p) -> list[sp.Expr]:
    """J_GSPO's per-sequence term min(s Â, clip(s) Â), negated and broadcast (Zheng et al. 2025)."""
    s = sp.exp(seq.log_seq_ratio / seq.n)
    a = seq.mean_adv
    return [sp.Max(-a * s, -a * clip(s, _lower(p), 1 + p["eps_high"]))] * seq.n


def gspo_token_losses(seq: Sequence, p) -> list[sp.Expr]:
    """GSPO-token: ŝ_t = sg(s)·π_t/sg(π_t) (Zheng et al. 2025, GSPO-token objective)."""
    s = sp.exp(seq.log_seq_ratio / seq.n)
    out = []
    for t in range(seq.n):
        s_hat = sg(s) * sp.exp(seq.logp[t] - sg(seq.logp[t]))
        a = seq.adv[t]
        out.append(sp.Max(-a * s_hat, -a * clip(s_hat, _lower(p), 1 + p["eps_high"])))
    return out


def gmpo_losses(seq: Sequence, p) -> list[sp.Expr]:
    """GMPO: -Ā·exp(mean_t d̃_t), d̃ = sgn(Ā)·min(sgn(Ā)·d, sgn(Ā)·clip(d, -ε_low, ε_high))."""
    a = seq.mean_adv
    sgn = sp.sign(a)
    lo = None if p["eps_low"] is None else -p["eps_low"]
    d = [l - o for l, o in zip(seq.logp, seq.old_logp)]
    d_tilde = [sgn * sp.Min(sgn * x, sgn * clip(x, lo, p["eps_high"])) for x in d]
    return [-a * sp.exp(sp.Add(*d_tilde) / seq.n)] * seq.n


def _log_clip_breakpoints(p) -> list[sp.Expr]:
    """GMPO's clip bounds on the log-ratio d = log ρ."""
    return [p["eps_high"]] + ([] if p["eps_low"] is None else [-p["eps_low"]])


GSPO = TheoryEntry("gspo", gspo_losses, (), "Zheng et al. 2025, arXiv:2507.18071 (J_GSPO)",
                   breakpoints=clip_breakpoints, region_ratio="sequence")
GSPO_TOKEN = TheoryEntry("gspo_token", gspo_token_losses, (),
                         "Zheng et al. 2025, arXiv:2507.18071 (GSPO-token)",
                         breakpoints=clip_breakpoints, region_ratio="sequence")
GMPO = TheoryEntry("gmpo", gmpo_losses, (), "Zhao et al. 2025, arXiv:2507.20673 (J_GMPO)",
                   breakpoints=_log_clip_breakpoints, region_ratio="log")
