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


def _dual_clip(loss: sp.Expr, a: sp.Expr, p) -> sp.Expr:
    """min(L, -c·A) where A < 0 (dual-clip, Ye et al. 2020), when ``dual_clip_c`` is set."""
    c = p.get("dual_clip_c")
    return loss if c is None else sp.Piecewise((sp.Min(loss, -c * a), a < 0), (loss, True))


def _log_s(seq: Sequence, p) -> sp.Expr:
    """log s = (1/n) Σ_t (ℓ_t - ℓold_t), clipped to [log_ratio_min, log_ratio_max] when set
    (verl clamps it at 10 from above)."""
    return clip(seq.log_seq_ratio / seq.n, p.get("log_ratio_min"), p.get("log_ratio_max"))


def gspo_losses(seq: Sequence, p) -> list[sp.Expr]:
    """J_GSPO's per-sequence term min(s Â, clip(s) Â), negated and broadcast (Zheng et al. 2025),
    optionally dual-clipped and with a clamped log s."""
    s = sp.exp(_log_s(seq, p))
    a = seq.mean_adv
    return [_dual_clip(sp.Max(-a * s, -a * clip(s, _lower(p), 1 + p["eps_high"])), a, p)] * seq.n


def gspo_token_losses(seq: Sequence, p) -> list[sp.Expr]:
    """GSPO-token: ŝ_t = sg(s)·π_t/sg(π_t) (Zheng et al. 2025, GSPO-token objective); with a
    log-ratio clamp, log ŝ_t = clip(sg(log s) + ℓ_t - sg(ℓ_t)) as verl writes it."""
    log_s = seq.log_seq_ratio / seq.n
    lo, hi = p.get("log_ratio_min"), p.get("log_ratio_max")
    out = []
    for t in range(seq.n):
        s_hat = sp.exp(clip(sg(log_s) + seq.logp[t] - sg(seq.logp[t]), lo, hi))
        a = seq.adv[t]
        out.append(_dual_clip(sp.Max(-a * s_hat, -a * clip(s_hat, _lower(p), 1 + p["eps_high"])), a, p))
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


def _symbolic_clip(eps_low: bool = True) -> dict:
    e_l, e_h = sp.symbols("eps_low eps_high", positive=True)
    return {"eps_low": e_l if eps_low else None, "eps_high": e_h}


def grad_seq_ratio(n: int = 3) -> list[sp.Expr]:
    """∂s/∂ℓ_t - s/n for t = 1..n, simplified: all zero, i.e. ∇s = s·(1/T)·Σ_t ∇ℓ_t.

    >>> grad_seq_ratio(3)
    [0, 0, 0]
    """
    seq = Sequence.make(n)
    s = sp.exp(seq.log_seq_ratio / n)
    return [sp.simplify(sp.diff(s, l) - s / n) for l in seq.logp]


def _equal_advantages(seq: Sequence, exprs: list[sp.Expr]) -> list[sp.Expr]:
    a = sp.Symbol("A", real=True)
    return [e.subs({x: a for x in seq.adv}) for e in exprs]


def gspo_token_minus_gspo(n: int = 2) -> list[sp.Expr]:
    """Derived weights of GSPO-token minus GSPO when A_t = A for all t (symbolic clip bounds):
    all zero — the two forms have the same gradient (and, by construction, the same value).

    >>> gspo_token_minus_gspo(2)
    [0, 0]
    """
    from theory._core import derive_weights

    seq = Sequence.make(n)
    p = _symbolic_clip()
    w_seq = _equal_advantages(seq, derive_weights(GSPO, seq, p))
    w_tok = _equal_advantages(seq, derive_weights(GSPO_TOKEN, seq, p))
    return [sp.simplify(a - b) for a, b in zip(w_tok, w_seq)]


def gmpo_minus_gspo_unclipped(n: int = 3) -> tuple[sp.Expr, sp.Expr]:
    """GMPO's objective (Π_t |ρ_t Â|)^{1/n}·sgn(Â) minus GSPO's Â·s, for Â > 0 and Â < 0.

    >>> gmpo_minus_gspo_unclipped(3)
    (0, 0)
    """
    rhos = sp.symbols(f"rho1:{n + 1}", positive=True)
    a = sp.Symbol("a", positive=True)
    s = sp.Mul(*rhos) ** sp.Rational(1, n)
    out = []
    for adv in (a, -a):
        gmpo = sp.Mul(*[sp.Abs(r * adv) for r in rhos]) ** sp.Rational(1, n) * sp.sign(adv)
        out.append(sp.simplify(sp.powdenest(gmpo - adv * s, force=True)))
    return tuple(out)


def on_policy_gspo_minus_grpo(n: int = 2) -> list[sp.Expr]:
    """At θ = θ_old: GSPO's derived weight minus the token-clipped (GRPO) weight, per token,
    before the shared ``seq-mean-token-mean`` normaliser 1/(B·|o_i|): all zero, so on-policy
    GSPO has GRPO's gradient, 1/|o| length weighting included.

    >>> on_policy_gspo_minus_grpo(2)
    [0, 0]
    """
    from theory._core import derive_weights
    from theory.ppo_clip import PPO_CLIP

    seq = Sequence.make(n)
    p = _symbolic_clip()
    on_policy = dict(zip(seq.old_logp, seq.logp))
    w_gspo = _equal_advantages(seq, derive_weights(GSPO, seq, p))
    w_grpo = _equal_advantages(seq, derive_weights(PPO_CLIP, seq, {**p, "dual_clip_c": None}))
    return [sp.simplify((a - b).subs(on_policy)) for a, b in zip(w_gspo, w_grpo)]
