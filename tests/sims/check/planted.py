"""Planted-bug variants: each is a loss as a user might write it, with one real bug modelled on a
report in ``shared/research/loss_zoo.md`` §5 (or a bug class named there). ``PLANTED`` says which
spec (if any) each is checked against and which ``pgverify check`` result must flag it.

Plain torch, no import from ``sims`` (the masked means and
PPO's clipped token loss come from ``correct``): these are the
harness's inputs, not its code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from tests.sims.check.correct import _ppo_per_token, _seq_mean, _token_mean


def drgrpo_sum_over_sequences(logp, old_logp, adv, mask, max_len=8):
    """verl #3741: seq-mean-token-sum-norm summed over sequences and divided only by max_len, so
    the gradient grows with the (micro-)batch size B."""
    return (_ppo_per_token(logp, old_logp, adv) * mask).sum() / max_len


def token_mean_per_microbatch(logp, old_logp, adv, mask, micro_batch_size=3):
    """verl #5625: token-mean under gradient accumulation: each micro-batch normalised by its own
    token count, then weighted by its share of the sequences — not the global token mean."""
    per_token = _ppo_per_token(logp, old_logp, adv) * mask
    n = logp.shape[0]
    loss = 0.0
    for start in range(0, n, micro_batch_size):
        sl = slice(start, start + micro_batch_size)
        rows = per_token[sl].shape[0]
        loss = loss + per_token[sl].sum() / mask[sl].sum() * rows / n
    return loss


def gspo_token_mean_broadcast(logp, old_logp, adv, mask, eps_low=3e-4, eps_high=4e-4):
    """TRL #3823: GSPO's (B, 1) sequence loss broadcast over the token mask and token-summed
    (loss_type dapo/bnpo), so long sequences weigh more: GSPO becomes length-weighted."""
    a = _seq_mean(adv.detach(), mask)
    s = torch.exp(_seq_mean(logp - old_logp.detach(), mask))
    per_seq = torch.maximum(-a * s, -a * s.clamp(1 - eps_low, 1 + eps_high))
    return _token_mean(per_seq[:, None].expand_as(logp), mask)


def cispo_cap_relative(logp, old_logp, adv, mask, epsilon_high=5.0):
    """TRL's CISPO ``epsilon_high`` is an absolute cap on ρ (SkyRL #553/#1928: the [0, 5] range);
    read as verl's relative 1 + eps it caps at 6 instead of 5."""
    weight = torch.exp(logp - old_logp).clamp(max=1.0 + epsilon_high).detach()
    return _token_mean(-weight * adv.detach() * logp, mask)


def std_over_batch(logp, old_logp, adv, mask, group_size=4, eps=1e-4):
    """TRL #3991: advantages re-standardised inside the loss "per group" but with the batch's
    mean and std (``scale_rewards`` mix-up); then GRPO's clipped surrogate."""
    a = _seq_mean(adv.detach(), mask)
    a = ((a - a.mean()) / (a.std() + eps))[:, None].expand_as(logp)
    per_token = _ppo_per_token(logp, old_logp, a)
    return ((per_token * mask).sum(-1) / mask.sum(-1)).mean()


def k3_plus_gradient_of_k3(logp, ref_logp, adv, mask):
    """verl PR #2953 / #6058: "k3+" should take k3's value with k2's (unbiased) gradient through a
    straight-through term; with the dispatch broken it is plain k3, whose gradient 1 - e^{-x} is
    not the KL's."""
    x = logp - ref_logp.detach()
    return _token_mean(torch.expm1(-x) + x, mask)


def sapo_seq_mean_times_dp(logp, old_logp, adv, mask, tau_pos=1.0, tau_neg=1.05, dp=2):
    """verl PR #5798: the seq-mean denominator multiplied by dp instead of cancelling it, so the
    SAPO loss (which hard-codes seq-mean-token-mean) is dp² too small."""
    a = adv.detach()
    tau = torch.where(a > 0, torch.full_like(a, tau_pos), torch.full_like(a, tau_neg))
    ratio = torch.exp(logp - old_logp.detach())
    per_token = -(4 / tau) * torch.sigmoid(tau * (ratio - 1)) * a
    return ((per_token * mask).sum(-1) / mask.sum(-1)).sum() / (logp.shape[0] * dp * dp)


def ppo_without_dual_clip(logp, old_logp, adv, mask, clip_ratio_c=3.0):
    """verl #783: the PPO loss is unbounded for A < 0 as ρ grows; the dual-clip it claims
    (``clip_ratio_c``) is never applied."""
    return _token_mean(_ppo_per_token(logp, old_logp, adv), mask)


def ppo_clip_ignores_sign(logp, old_logp, adv, mask, eps=0.2):
    """TRL #3032: clipping treated as effective whatever the sign of A: -A·clip(ρ) alone drops the
    gradient of A < 0 tokens with ρ > 1 + ε (PPO keeps it: the pessimistic side is unclipped)."""
    ratio = torch.exp(logp - old_logp.detach())
    return _token_mean(-adv.detach() * ratio.clamp(1 - eps, 1 + eps), mask)


def seq_ratio_unmasked(logp, old_logp, adv, mask):
    """Sequence IS with the log-ratio summed over the padded width (the mask forgotten in the
    sum), so padding values change the ratio."""
    log_r = (logp - old_logp.detach()).sum(-1)
    return -(_seq_mean(adv.detach(), mask) * torch.exp(log_r)).mean()


def cispo_ratio_not_detached(logp, old_logp, adv, mask, cap=5.0):
    """CISPO without the stop-gradient on the clipped ratio: the weight gains a ρ·A·ℓ term, so at
    ρ = 1 it is A·(1 + ℓ), not a positive multiple of A once ℓ < -1 (and, with ``--strict-constants``,
    gradient leaks into old_logp)."""
    weight = torch.exp(logp - old_logp).clamp(max=cap)
    return _token_mean(-weight * adv.detach() * logp, mask)


def seq_ratio_exp_of_sums(logp, old_logp, adv, mask):
    """The sequence ratio as exp(Σℓ)/exp(Σℓ_old) instead of exp(Σ(ℓ - ℓ_old)): both underflow on
    long or unlikely sequences and 0/0 gives NaN (NeMo-RL #2269, TRL #4772: "exploding" ratios)."""
    r = torch.exp((logp * mask).sum(-1)) / torch.exp((old_logp.detach() * mask).sum(-1))
    return -(_seq_mean(adv.detach(), mask) * r).mean()


def k3_clamped(logp, ref_logp, adv, mask):
    """verl #2928: k3 clamped to [-10, 10]; where k3 > 10 (ρ = π/π_ref < ~0.09) the gradient is
    silently zero."""
    x = logp - ref_logp.detach()
    return _token_mean((torch.expm1(-x) + x).clamp(-10, 10), mask)


def gspo_with_ppo_epsilon(logp, old_logp, adv, mask, eps=0.2):
    """TRL #3834: GSPO run with PPO's ε = 0.2 instead of the paper's 3e-4 / 4e-4."""
    a = _seq_mean(adv.detach(), mask)
    s = torch.exp(_seq_mean(logp - old_logp.detach(), mask))
    return torch.maximum(-a * s, -a * s.clamp(1 - eps, 1 + eps)).mean()


def mis_token_level(logp, old_logp, adv, mask, threshold=2.0):
    """TRL #4493: masked IS should drop a whole sequence when its ratio R exceeds the threshold
    (``sequence_mask``); this masks token by token."""
    rho = torch.exp(logp - old_logp).detach()
    weight = torch.where(rho > threshold, torch.zeros_like(rho), rho)
    return -(weight * adv.detach() * logp * mask).sum() / logp.shape[0]


def token_mean_padded_width(logp, old_logp, adv, mask, eps=0.2):
    """token-mean divided by B·T (every position, padding included) instead of the valid-token
    count: the padded width changes the loss scale."""
    return (_ppo_per_token(logp, old_logp, adv, eps, eps) * mask).sum() / mask.numel()


def dppo_tv_ratio_mask(logp, old_logp, adv, mask, eps=0.2, clip_ratio_c=3.0):
    """DPPO-Binary-TV misread as PPO's ratio trust region: the mask tests ρ against 1 ± δ instead of
    the probability difference p - p_old (arXiv:2602.04879's point: the region depends on p)."""
    a = adv.detach()
    ratio = torch.exp(logp - old_logp.detach()).detach()
    keep = torch.where(a > 0, ratio <= 1 + eps, ratio >= 1 - eps).to(logp.dtype)
    return _token_mean(-a * ratio.clamp(max=clip_ratio_c) * logp * keep, mask)


def dppo_kl_reversed_divergence(logp, old_logp, adv, mask, clip_ratio_low=0.05, clip_ratio_high=0.05,
                                clip_ratio_c=3.0):
    """DPPO-Binary-KL with the divergence reversed, D(π‖π_old) instead of D(π_old‖π): the trust
    region's edge moves (the two binary KLs differ away from p = p_old)."""
    a, old, lp = adv.detach(), old_logp.detach(), logp.detach()
    p, q, q_old = lp.exp(), -torch.expm1(lp), -torch.expm1(old)
    rest = torch.where(q > 0, q * (torch.log(q) - torch.log(q_old)), torch.zeros_like(q))
    d = p * (lp - old) + rest
    keep = torch.where(a > 0, (d <= clip_ratio_high) | (lp <= old), (d <= clip_ratio_low) | (lp >= old))
    ratio = torch.exp(torch.clamp(lp - old, max=torch.log(torch.tensor(clip_ratio_c)).item()))
    return _token_mean(-a * ratio * logp * keep.to(logp.dtype), mask)


def dro_penalty_sign_flipped(logp, old_logp, adv, mask, dro_beta=0.1):
    """DRO with the proximal term's sign flipped (-ℓA - ½β d² instead of -(ℓA - ½β d²)): the update is
    pushed away from π_old."""
    d = logp - old_logp.detach()
    return _token_mean(-logp * adv.detach() - 0.5 * dro_beta * d * d, mask)


def kl_cov_penalty_everywhere(logp, old_logp, adv, mask, kl_cov_ratio=0.1, ppo_kl_coef=0.1):
    """KL-Cov with the |ℓ - ℓ_old| penalty on every token instead of the top-k covariance tokens."""
    d = logp - old_logp.detach()
    return _token_mean(-adv.detach() * torch.exp(d) + ppo_kl_coef * d.abs(), mask)


def clip_cov_uncentred(logp, old_logp, adv, mask, lb=1.0, ub=5.0, eps=0.2):
    """Clip-Cov with C = A·ℓ, the batch means not subtracted (the covariance is uncentred), all
    candidates detached (ratio 1)."""
    a = adv.detach()
    ratio = torch.exp(logp - old_logp.detach())
    l1, l2 = -a * ratio, -a * ratio.clamp(1 - eps, 1 + eps)
    c = a * logp.detach()
    drop = (c > lb) & (c < ub) & (mask > 0) & ~(l2 > l1)
    return _token_mean(torch.maximum(l1, l2) * (~drop).to(logp.dtype), mask)


def opsm_drops_positive_too(logp, old_logp, adv, mask, delta=0.05):
    """OPSM applied whatever the sign of A: DeepSeek-V3.2 masks only A < 0 sequences (positive
    off-policy samples still teach)."""
    kl = _seq_mean(old_logp.detach() - logp.detach(), mask)[:, None]
    keep = (kl <= delta).to(logp.dtype)
    return _token_mean(_ppo_per_token(logp, old_logp, adv) * keep, mask)


def bypass_tis_inverted(logp, old_logp, adv, mask, threshold=2.0):
    """Bypass-mode TIS (old_logp = the rollout log-probs) with the ratio upside down,
    min(π_roll/π_θ, C)."""
    w = torch.exp(old_logp.detach() - logp).clamp(max=threshold).detach()
    return -(w * adv.detach() * logp * mask).sum() / logp.shape[0]


def gspo_without_dual_clip(logp, old_logp, adv, mask, eps_low=3e-4, eps_high=4e-4, dual_clip_c=3.0):
    """GSPO configured with dual-clip c but never applying it (the class of verl #783)."""
    a = _seq_mean(adv.detach(), mask)
    s = torch.exp(_seq_mean(logp - old_logp.detach(), mask))
    return torch.maximum(-a * s, -a * s.clamp(1 - eps_low, 1 + eps_high)).mean()


def ppo_clip_rollout_is_before_clip(logp, old_logp, adv, mask, rollout_logp, threshold=2.0):
    """The rollout weight folded into the ratio before clipping (clip(ω·ρ)) instead of multiplying
    the clipped loss (verl applies rollout_is_weights after clipping)."""
    w = torch.exp(old_logp.detach() - rollout_logp.detach()).clamp(max=threshold)
    r = w * torch.exp(logp - old_logp.detach())
    a = adv.detach()
    return _token_mean(torch.maximum(-a * r, -a * r.clamp(0.8, 1.2)), mask)


@dataclass(frozen=True)
class Planted:
    """A planted bug, the spec it is checked against, and the check that must flag it."""

    fn: Callable[..., Any]
    source: str
    flagged_by: str
    spec: str | None = None
    spec_params: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.fn.__name__


SPEC_WEIGHTS = "spec: gradient weights equal {}'s"
SPEC_REGIONS = "spec: zero-weight regions and ratio bounds equal {}'s"

PLANTED = (
    Planted(drgrpo_sum_over_sequences, "verl #3741", SPEC_WEIGHTS, "ppo_clip",
            {"agg": "seq-mean-token-sum-norm", "max_len": 8}),
    Planted(token_mean_per_microbatch, "verl #5625", "batch-permutation invariance"),
    Planted(gspo_token_mean_broadcast, "TRL #3823", SPEC_WEIGHTS, "gspo"),
    Planted(cispo_cap_relative, "TRL cispo / SkyRL #553", SPEC_WEIGHTS, "cispo", {"eps_high": 4.0}),
    Planted(std_over_batch, "TRL #3991", "group locality"),
    Planted(k3_plus_gradient_of_k3, "verl PR #2953, #6058", SPEC_WEIGHTS, "kl", {"estimator": "k2"}),
    Planted(sapo_seq_mean_times_dp, "verl PR #5798", SPEC_WEIGHTS, "sapo"),
    Planted(ppo_without_dual_clip, "verl #783", SPEC_REGIONS, "ppo_clip", {"dual_clip_c": 3.0}),
    Planted(ppo_clip_ignores_sign, "TRL #3032", SPEC_REGIONS, "ppo_clip"),
    Planted(seq_ratio_unmasked, "mask omitted (class of verl #2776 / TRL #2995)", "padding invariance"),
    Planted(cispo_ratio_not_detached, "CISPO's sg (MiniMax-M1 eq. 4)", "on-policy reduction to REINFORCE"),
    Planted(seq_ratio_exp_of_sums, "NeMo-RL #2269, TRL #4772", "contract: finite on extreme valid inputs"),
    Planted(k3_clamped, "verl #2928", SPEC_REGIONS, "kl", {"estimator": "k3"}),
    Planted(gspo_with_ppo_epsilon, "TRL #3834", SPEC_WEIGHTS, "gspo"),
    Planted(mis_token_level, "TRL #4493", SPEC_WEIGHTS, "reinforce",
            {"is_level": "sequence", "is_mode": "mask", "is_cap": 2.0}),
    Planted(token_mean_padded_width, "normaliser over padded width", "padding invariance"),
    Planted(dppo_tv_ratio_mask, "DPPO arXiv:2602.04879 (probability, not ratio, trust region)", SPEC_REGIONS,
            "dppo_tv"),
    Planted(dppo_kl_reversed_divergence, "DPPO arXiv:2602.04879 (binary KL of π_old from π)", SPEC_REGIONS,
            "dppo_kl", {"delta_low": 0.05, "delta_high": 0.05}),
    Planted(dro_penalty_sign_flipped, "verl dro sign", SPEC_WEIGHTS, "dro"),
    Planted(kl_cov_penalty_everywhere, "verl kl_cov (top-k only)", SPEC_WEIGHTS, "kl_cov", {"kl_cov_ratio": 0.1}),
    Planted(clip_cov_uncentred, "Entropy Mechanism arXiv:2505.22617 (centred covariance)", SPEC_WEIGHTS,
            "clip_cov", {"clip_cov_ratio": 1.0}),
    Planted(opsm_drops_positive_too, "DeepSeek-V3.2 OPSM (A < 0 only)", SPEC_WEIGHTS, "ppo_clip",
            {"opsm_delta": 0.05}),
    Planted(bypass_tis_inverted, "verl bypass_mode reinforce", SPEC_WEIGHTS, "reinforce",
            {"is_level": "token", "is_cap": 2.0}),
    Planted(gspo_without_dual_clip, "dual-clip on s (class of verl #783)", SPEC_REGIONS, "gspo", {"dual_clip_c": 3.0}),
    Planted(ppo_clip_rollout_is_before_clip, "verl rollout_is_weights after clipping", SPEC_WEIGHTS,
            "ppo_clip_rollout_is"),  # takes rollout_logp
)
"""``flagged_by`` is a check name; ``{}`` stands for the spec's name."""
