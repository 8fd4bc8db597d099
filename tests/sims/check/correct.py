"""Correct re-implementations of every registry objective (and two extras), as a user would write
them: plain torch from the papers' formulas, no import from ``sims``. Each must pass every
``pgverify check`` against its spec (``CORRECT`` lists the spec and its parameters).

Signature: ``fn(logp, old_logp, adv, mask, **settings) -> loss`` (``[B, T]`` tensors; ``mask`` 1 on
valid tokens). Advantages are per sequence for the sequence-level objectives (their mean over the
sequence's tokens is used).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch


def _token_mean(per_token, mask):
    """DAPO / verl token-mean: Σ m·L / Σ m."""
    return (per_token * mask).sum() / mask.sum()


def _seq_mean_token_mean(per_token, mask):
    """GRPO: (1/B) Σ_i Σ_t m·L / |o_i|."""
    return ((per_token * mask).sum(-1) / mask.sum(-1)).mean()


def _seq_mean(x, mask):
    """Per-sequence masked mean, [B]."""
    return (x * mask).sum(-1) / mask.sum(-1)


def reinforce(logp, old_logp, adv, mask):
    """Williams 1992: L = -(1/B) Σ_i A_i Σ_t log π(o_it)."""
    return -(adv.detach() * logp * mask).sum() / logp.shape[0]


def seq_is(logp, old_logp, adv, mask):
    """Off-policy REINFORCE: L = -(1/B) Σ_i Ā_i R_i, R_i = exp(Σ_t (ℓ - ℓ_old)) (gradient R_i Ā_i ∇log P)."""
    log_r = ((logp - old_logp.detach()) * mask).sum(-1)
    return -(_seq_mean(adv.detach(), mask) * torch.exp(log_r)).mean()


def _ppo_per_token(logp, old_logp, adv, eps_low=0.2, eps_high=0.2):
    """PPO's clipped token loss max(-A·ρ, -A·clip(ρ, 1 - eps_low, 1 + eps_high)), [B, T]."""
    a = adv.detach()
    ratio = torch.exp(logp - old_logp.detach())
    return torch.maximum(-a * ratio, -a * ratio.clamp(1 - eps_low, 1 + eps_high))


def ppo_clip(logp, old_logp, adv, mask, eps_low=0.2, eps_high=0.2, dual_clip_c=None):
    """PPO (Schulman 2017, eq. 7), token-mean (verl), optional dual-clip for A < 0."""
    per_token = _ppo_per_token(logp, old_logp, adv, eps_low, eps_high)
    if dual_clip_c is not None:
        a = adv.detach()
        per_token = torch.where(a < 0, torch.minimum(per_token, -dual_clip_c * a), per_token)
    return _token_mean(per_token, mask)


def dr_grpo(logp, old_logp, adv, mask, max_len=8):
    """Dr.GRPO (Liu et al. 2025): PPO clip, Σ_i Σ_t m·L / (B · MAX_TOKENS)."""
    return (_ppo_per_token(logp, old_logp, adv) * mask).sum() / (logp.shape[0] * max_len)


def _gspo_ratio(logp, old_logp, mask):
    return torch.exp(_seq_mean(logp - old_logp.detach(), mask))


def gspo(logp, old_logp, adv, mask, eps_low=3e-4, eps_high=4e-4):
    """GSPO (Zheng et al. 2025): s_i = (π/π_old)^{1/|o_i|}, clipped surrogate per sequence, mean over i."""
    a = _seq_mean(adv.detach(), mask)
    s = _gspo_ratio(logp, old_logp, mask)
    return torch.maximum(-a * s, -a * s.clamp(1 - eps_low, 1 + eps_high)).mean()


def gspo_token(logp, old_logp, adv, mask, eps_low=3e-4, eps_high=4e-4):
    """GSPO-token: s_it = sg(s_i) · π_it / sg(π_it), token surrogate, seq-mean-token-mean."""
    a = adv.detach()
    s = _gspo_ratio(logp, old_logp, mask).detach()[:, None] * torch.exp(logp - logp.detach())
    per_token = torch.maximum(-a * s, -a * s.clamp(1 - eps_low, 1 + eps_high))
    return _seq_mean_token_mean(per_token, mask)


def gmpo(logp, old_logp, adv, mask, eps=0.4):
    """GMPO (Zhao et al. 2025): geometric mean of sign-aware clipped token ratios, in log space."""
    a = _seq_mean(adv.detach(), mask)
    sign = torch.sign(a)[:, None]
    d = logp - old_logp.detach()
    d_tilde = sign * torch.minimum(sign * d, sign * d.clamp(-eps, eps))
    return -(a * torch.exp(_seq_mean(d_tilde, mask))).mean()


def cispo(logp, old_logp, adv, mask, cap=5.0):
    """CISPO (MiniMax-M1, eqs. 3-5): -sg(min(ρ, cap))·A·log π, token-mean."""
    weight = torch.exp(logp - old_logp).clamp(max=cap).detach()
    return _token_mean(-weight * adv.detach() * logp, mask)


def sapo(logp, old_logp, adv, mask, tau_pos=1.0, tau_neg=1.05):
    """SAPO (Qwen 2025): -(4/τ)·σ(τ(ρ - 1))·A, τ by the sign of A, seq-mean-token-mean."""
    a = adv.detach()
    tau = torch.where(a > 0, torch.full_like(a, tau_pos), torch.full_like(a, tau_neg))
    ratio = torch.exp(logp - old_logp.detach())
    return _seq_mean_token_mean(-(4 / tau) * torch.sigmoid(tau * (ratio - 1)) * a, mask)


def sgs_cispo(logp, old_logp, adv, mask, k=10.0, tau=0.5, cap=5.0):
    """SGS-CISPO (the seed): CISPO times sg(S), S = 1 - σ(k(P - τ)) for A > 0, P = π(o_i)."""
    a = adv.detach()
    p = torch.exp((logp * mask).sum(-1, keepdim=True)).detach()
    s = torch.where(a > 0, 1 - torch.sigmoid(k * (p - tau)), torch.ones_like(a))
    weight = torch.exp(logp - old_logp).clamp(max=cap).detach()
    return _token_mean(-s * weight * a * logp, mask)


def kl_k3_plus(logp, ref_logp, adv, mask):
    """verl "k3+": value k3 = e^{-x} - 1 + x, gradient k2's x (straight-through), token-mean."""
    x = logp - ref_logp.detach()
    k3 = torch.expm1(-x) + x
    k2 = 0.5 * x * x
    return _token_mean(k3.detach() + k2 - k2.detach(), mask)


@dataclass(frozen=True)
class Correct:
    """A correct implementation and the spec it implements."""

    fn: Callable[..., Any]
    spec: str
    spec_params: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.fn.__name__


CORRECT = (
    Correct(reinforce, "reinforce"),
    Correct(seq_is, "seq_is"),
    Correct(ppo_clip, "ppo_clip"),
    Correct(ppo_clip, "ppo_clip", {"eps_high": 0.28, "dual_clip_c": 3.0}, {"eps_high": 0.28, "dual_clip_c": 3.0}),
    Correct(dr_grpo, "ppo_clip", {"agg": "seq-mean-token-sum-norm", "max_len": 8}),
    Correct(gspo, "gspo"),
    Correct(gspo_token, "gspo_token"),
    Correct(gmpo, "gmpo"),
    Correct(cispo, "cispo"),
    Correct(sapo, "sapo"),
    Correct(sgs_cispo, "sgs_cispo"),
    Correct(kl_k3_plus, "kl", {"estimator": "k2"}),
)
