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


def gspo(logp, old_logp, adv, mask, eps_low=3e-4, eps_high=4e-4, dual_clip_c=None):
    """GSPO (Zheng et al. 2025): s_i = (π/π_old)^{1/|o_i|}, clipped surrogate per sequence, mean over i;
    optional dual-clip min(L, -c·A) for A < 0 on the sequence ratio."""
    a = _seq_mean(adv.detach(), mask)
    s = _gspo_ratio(logp, old_logp, mask)
    per_seq = torch.maximum(-a * s, -a * s.clamp(1 - eps_low, 1 + eps_high))
    if dual_clip_c is not None:
        per_seq = torch.where(a < 0, torch.minimum(per_seq, -dual_clip_c * a), per_seq)
    return per_seq.mean()


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


def grpo_opsm(logp, old_logp, adv, mask, off_policy_mask_threshold=0.05):
    """TRL GRPO with OPSM (DeepSeek-V3.2): a token with A < 0 of a sequence whose mean
    (ℓ_samp - ℓ) exceeds δ loses its loss (ℓ_samp = old here); the masked tokens still count in
    the token-mean's denominator."""
    a = adv.detach()
    lp = logp.detach()
    kl = ((old_logp.detach() - lp) * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True)
    keep = ((a >= 0) | (kl <= off_policy_mask_threshold)).to(logp.dtype)
    return _token_mean(_ppo_per_token(logp, old_logp, adv) * keep, mask)


def bypass_pg_is(logp, old_logp, adv, mask, rollout_is_threshold=2.0):
    """verl bypass mode, ``loss_type=reinforce`` (old := rollout): -sg(min(π/π_roll, C))·A·log π,
    seq-mean-token-sum (``compute_policy_loss_reinforce``'s default). In bypass mode the trainer
    passes the rollout log-probs in the old_logp slot (two policies)."""
    w = torch.exp(logp - old_logp).clamp(max=rollout_is_threshold).detach()
    return -(w * adv.detach() * logp * mask).sum() / logp.shape[0]


def dro(logp, old_logp, adv, mask, dro_beta=0.1):
    """verl ``dro`` / Kimi-1.5: -(ℓ·A - ½β(ℓ - ℓ_old)²), token-mean."""
    d = logp - old_logp.detach()
    return _token_mean(-(logp * adv.detach() - 0.5 * dro_beta * d * d), mask)


def _dppo(logp, old_logp, adv, mask, keep, clip_ratio_c):
    ratio = torch.exp(torch.clamp(logp - old_logp, max=torch.log(torch.tensor(clip_ratio_c)).item()))
    return _token_mean(-adv.detach() * ratio.detach() * logp * keep.to(logp.dtype), mask)


def dppo_tv(logp, old_logp, adv, mask, clip_ratio_low=0.2, clip_ratio_high=0.2, clip_ratio_c=3.0):
    """verl ``dppo_tv`` (DPPO-Binary-TV, arXiv:2602.04879): -A·sg(min(ρ, C))·ℓ·valid, valid =
    [p - p_old <= δ_hi] if A > 0 else [p - p_old >= -δ_lo]."""
    a, old = adv.detach(), old_logp.detach()
    diff = (logp.exp() - old.exp()).detach()
    keep = torch.where(a > 0, diff <= clip_ratio_high, diff >= -clip_ratio_low)
    return _dppo(logp, old, a, mask, keep, clip_ratio_c)


def dppo_kl(logp, old_logp, adv, mask, clip_ratio_low=0.2, clip_ratio_high=0.2, clip_ratio_c=3.0):
    """verl ``dppo_kl`` (DPPO-Binary-KL): keep if D <= δ or the token moved against its advantage,
    D = p_old log(p_old/p) + (1 - p_old) log((1 - p_old)/(1 - p)) (0·log 0 = 0)."""
    a, old, lp = adv.detach(), old_logp.detach(), logp.detach()
    p_old, q_old = old.exp(), -torch.expm1(old)
    q = -torch.expm1(lp)
    rest = torch.where(q_old > 0, q_old * (torch.log(q_old) - torch.log(q)), torch.zeros_like(q))
    d = p_old * (old - lp) + rest
    keep = torch.where(a > 0, (d <= clip_ratio_high) | (lp <= old), (d <= clip_ratio_low) | (lp >= old))
    return _dppo(logp, old, a, mask, keep, clip_ratio_c)


def _covariance(logp, adv, mask):
    valid = mask > 0
    a, lp = adv.detach(), logp.detach()
    return (a - a[valid].mean()) * (lp - lp[valid].mean()), valid


def kl_cov(logp, old_logp, adv, mask, kl_cov_ratio=2e-4, ppo_kl_coef=0.1):
    """verl ``kl_cov``: -A·ρ, plus κ|ℓ - ℓ_old| on the top-k tokens by C = (A - Ā)(ℓ - ℓ̄) (valid-token
    means), k = max(1, int(ratio·N)); ties to the earlier token (a stable sort: ``topk``'s tie order
    is unspecified)."""
    a = adv.detach()
    d = logp - old_logp.detach()
    cov, valid = _covariance(logp, adv, mask)
    flat_idx = torch.nonzero(valid.reshape(-1), as_tuple=True)[0]
    k = max(1, int(len(flat_idx) * kl_cov_ratio))
    top = flat_idx[torch.sort(cov.reshape(-1)[flat_idx], descending=True, stable=True).indices[:k]]
    pen = torch.zeros(logp.numel(), dtype=logp.dtype)
    pen[top] = 1.0
    return _token_mean(-a * torch.exp(d) + ppo_kl_coef * d.abs() * pen.reshape(logp.shape), mask)


def clip_cov(logp, old_logp, adv, mask, clip_cov_ratio=2e-4, clip_cov_lb=1.0, clip_cov_ub=5.0, eps=0.2):
    """verl ``clip_cov``: PPO clip, with up to k tokens of lb < C < ub (not already clipped) drawn by
    torch.randperm on the global RNG and their loss multiplied by 0."""
    a = adv.detach()
    ratio = torch.exp(logp - old_logp.detach())
    l1, l2 = -a * ratio, -a * ratio.clamp(1 - eps, 1 + eps)
    cov, valid = _covariance(logp, adv, mask)
    cov = torch.where(valid & ~(l2 > l1), cov, torch.full_like(cov, -torch.inf))
    idx = torch.nonzero((cov > clip_cov_lb) & (cov < clip_cov_ub) & valid)
    corr = torch.ones_like(a)
    if len(idx) > 0:
        k = max(int(clip_cov_ratio * valid.sum().item()), 1)
        idx = idx[torch.randperm(len(idx))[:k]]
        corr[idx[:, 0], idx[:, 1]] = 0.0
    return _token_mean(torch.maximum(l1, l2) * corr, mask)


def ppo_clip_rollout_is(logp, old_logp, adv, mask, rollout_logp, rollout_is_threshold=2.0):
    """verl decoupled rollout correction: vanilla PPO clip (π_θ/π_old) times the detached token
    TIS weight min(π_old/π_roll, C), applied after clipping; token-mean."""
    w = torch.exp(old_logp.detach() - rollout_logp.detach()).clamp(max=rollout_is_threshold)
    return _token_mean(_ppo_per_token(logp, old_logp, adv) * w, mask)


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
    Correct(gspo, "gspo", {"dual_clip_c": 1.5}, {"dual_clip_c": 1.5}),
    Correct(grpo_opsm, "ppo_clip", {"opsm_delta": 0.05}),
    Correct(bypass_pg_is, "reinforce", {"is_level": "token", "is_cap": 2.0}),
    Correct(dro, "dro"),
    Correct(dppo_tv, "dppo_tv"),
    Correct(dppo_kl, "dppo_kl", {"delta_low": 0.05, "delta_high": 0.05},
            {"clip_ratio_low": 0.05, "clip_ratio_high": 0.05}),
    Correct(kl_cov, "kl_cov", {"kl_cov_ratio": 0.1}, {"kl_cov_ratio": 0.1}),
    # ratio 1: every candidate is detached, so verl's random draw is the same at any RNG state
    Correct(clip_cov, "clip_cov", {"clip_cov_ratio": 1.0}, {"clip_cov_ratio": 1.0}),
    Correct(ppo_clip_rollout_is, "ppo_clip_rollout_is"),  # takes rollout_logp (ObjectiveSpec.inputs)
)

