r"""Rollout correction: PPO clip times the detached weight ω of w = π_old/π_roll.

ω_t = clip(w, lo, hi) (truncate), w·1[w <= hi] (mask) or w·1[lo <= w <= hi] (band), with
w = exp(ℓold_t - ℓroll_t) (token) or exp(Σ_s (ℓold_s - ℓroll_s)) (sequence). ω does not depend
on ℓ, so the derived weight of L_t = ω_t·L^PPO_t is ω_t times PPO's (verl multiplies the clipped
per-token loss by ``rollout_is_weights``); OPSM's sampler log-probs are ℓroll.

>>> from theory._core import Sequence
>>> seq = Sequence.make(1)
>>> rollout_weight(seq, 0, {"rollout_is_level": "token", "rollout_is_mode": "mask",
...                         "rollout_is_lo": None, "rollout_is_hi": 2})
Piecewise((exp(lold1 - lroll1), exp(lold1 - lroll1) <= 2), (0, True))
"""

from __future__ import annotations

import sympy as sp

from theory._core import Sequence, TheoryEntry, clip
from theory.ppo_clip import clip_breakpoints, ppo_token_losses


def rollout_weight(seq: Sequence, t: int, p) -> sp.Expr:
    """ω_t of ``sims.objectives.rollout.rollout_is_weight`` with the config's rollout fields."""
    if p["rollout_is_level"] == "token":
        w = sp.exp(seq.old_logp[t] - seq.rollout_logp[t])
    else:
        w = sp.exp(sp.Add(*[o - r for o, r in zip(seq.old_logp, seq.rollout_logp)]))
    lo, hi = p["rollout_is_lo"], p["rollout_is_hi"]
    if p["rollout_is_mode"] == "truncate":
        return clip(w, lo, hi)
    inside = (w <= hi) if lo is None else (w >= lo) & (w <= hi)
    return sp.Piecewise((w, inside), (0, True))


def ppo_clip_rollout_is_losses(seq: Sequence, p) -> list[sp.Expr]:
    """L_t = ω_t·L^PPO_t, with OPSM reading ℓroll as the sampler's log-probs."""
    ppo = ppo_token_losses(seq, p, seq.rollout_logp)
    return [rollout_weight(seq, t, p) * loss for t, loss in enumerate(ppo)]


PPO_CLIP_ROLLOUT_IS = TheoryEntry(
    "ppo_clip_rollout_is", ppo_clip_rollout_is_losses, ("rollout_is_level", "rollout_is_mode"),
    "Schulman et al. 2017, arXiv:1707.06347, eq. 7, times verl's rollout_is_weights "
    "(rollout_corr_helper.py, decoupled mode)",
    breakpoints=clip_breakpoints, inputs=("rollout_logp",))
