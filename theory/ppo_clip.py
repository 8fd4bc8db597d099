r"""PPO clipped surrogate with asymmetric ε (DAPO clip-higher), optional dual-clip and OPSM.

L = max(-A·ρ, -A·clip(ρ, 1 - ε_low, 1 + ε_high)), and for A < 0 with dual-clip min(L, -c·A)
(Schulman et al. 2017, eq. 7; Yu et al. 2025, eq. 8; Ye et al. 2020). The derived weight is
A·ρ times Heaviside factors: it is A·ρ inside the trust region and on the side where the clip
does not bind, and exactly 0 where it binds (see ``theory.regions``). OPSM (DeepSeek-V3.2,
arXiv:2512.02556) multiplies L_t by M_t = 1[A_t >= 0 or mean_s(ℓsamp_s - sg ℓ_s) <= δ].

>>> from theory._core import ratio_weight
>>> e_l, e_h = sp.symbols("eps_low eps_high", positive=True)
>>> w = ratio_weight(PPO_CLIP, {"eps_low": e_l, "eps_high": e_h, "dual_clip_c": None})
>>> w.subs({e_l: sp.Rational(1, 5), e_h: sp.Rational(1, 5), sp.Symbol("A", real=True): 1,
...         sp.Symbol("rho", positive=True): sp.Rational(3, 2)})
0
"""

from __future__ import annotations

import sympy as sp

from theory._core import Sequence, TheoryEntry, clip, sg


def opsm_keep(seq: Sequence, t: int, samp, delta) -> sp.Expr:
    """DeepSeek-V3.2's M_{i,t}: 1 if A_t >= 0 or (1/n) Σ_s (ℓsamp_s - sg ℓ_s) <= δ, else 0."""
    kl = seq.mean([s - sg(l) for s, l in zip(samp, seq.logp)])
    return sp.Piecewise((1, (seq.adv[t] >= 0) | (kl <= delta)), (0, True))


def clamped_ratio(seq: Sequence, t: int, p) -> sp.Expr:
    """ρ_t = exp(clip(ℓ_t - ℓold_t, log_ratio_min, log_ratio_max)) (a trainer's log-ratio clamp;
    ρ_t itself when neither bound is set)."""
    lo, hi = p.get("log_ratio_min"), p.get("log_ratio_max")
    if lo is None and hi is None:
        return seq.ratio(t)
    return sp.exp(clip(seq.logp[t] - seq.old_logp[t], lo, hi))


def ppo_token_losses(seq: Sequence, p, samp) -> list[sp.Expr]:
    """Per-token clipped surrogate, as in the PPO paper with DAPO's decoupled bounds, optional
    dual-clip, optional log-ratio clamp, and the OPSM mask with ``samp`` (symbols) as the
    sampler's log-probs."""
    lo = None if p["eps_low"] is None else 1 - p["eps_low"]
    out = []
    for t in range(seq.n):
        a, rho = seq.adv[t], clamped_ratio(seq, t, p)
        loss = sp.Max(-a * rho, -a * clip(rho, lo, 1 + p["eps_high"]))
        if p.get("dual_clip_c") is not None:
            loss = sp.Piecewise((sp.Min(loss, -p["dual_clip_c"] * a), a < 0), (loss, True))
        if p.get("opsm_delta") is not None:
            loss = loss * opsm_keep(seq, t, samp, p["opsm_delta"])
        out.append(loss)
    return out


def ppo_clip_losses(seq: Sequence, p) -> list[sp.Expr]:
    """``ppo_clip``: OPSM's sampler log-probs are the old ones (no rollout log-probs given)."""
    return ppo_token_losses(seq, p, seq.old_logp)


def clip_breakpoints(p) -> list[sp.Expr]:
    """Ratios where a clip bound (or the dual-clip constant) sits."""
    points = [1 + p["eps_high"]]
    if p.get("eps_low") is not None:
        points.append(1 - p["eps_low"])
    if p.get("dual_clip_c") is not None:
        points.append(p["dual_clip_c"])
    for bound in (p.get("log_ratio_min"), p.get("log_ratio_max")):
        if bound is not None:
            points.append(sp.exp(bound))
    return points


PPO_CLIP = TheoryEntry("ppo_clip", ppo_clip_losses, (),
                       "Schulman et al. 2017, arXiv:1707.06347, eq. 7; Yu et al. 2025, arXiv:2503.14476, eq. 8",
                       breakpoints=clip_breakpoints)
