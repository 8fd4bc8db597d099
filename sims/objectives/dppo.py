"""DPPO: REINFORCE with truncated IS inside a binary (per-token) trust region (theory/dppo.py).

The contract of every objective is in ``sims.objectives`` (the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sims.aggregation import AggConfig, agg_fields, aggregate_valid
from sims.objectives._common import _check_pos, _frac, _masked_mean, _prepare, _ratio_diagnostics


@dataclass(frozen=True, kw_only=True)
class DppoConfig(AggConfig):
    """Config of ``dppo_tv`` and ``dppo_kl`` (verl reuses its PPO keys for both).

    Attributes:
        delta_low: trust-region threshold δ_lo (> 0) for tokens with A <= 0: the largest allowed
            probability *decrease* (TV) or binary KL (KL). verl: ``clip_ratio_low`` = 0.2.
        delta_high: threshold δ_hi (> 0) for tokens with A > 0: the largest allowed probability
            *increase* (TV) or binary KL (KL). verl: ``clip_ratio_high`` = 0.2.
        is_cap: truncation C (> 0) of the detached IS weight min(ρ, C). verl: ``clip_ratio_c`` =
            3.0 (its code falls back to 20 only when the key is missing; its comment recommends a
            large C).
        agg: verl's default ``token-mean``.
    """

    delta_low: float = 0.2
    delta_high: float = 0.2
    is_cap: float = 3.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_pos("delta_low", self.delta_low)
        _check_pos("delta_high", self.delta_high)
        _check_pos("is_cap", self.is_cap)


def tv_trust_mask(logp: Tensor, old_logp: Tensor, adv: Tensor, config: DppoConfig) -> Tensor:
    """DPPO-Binary-TV's keep mask (bool ``[B, T]``, detached): with p = e^ℓ, p_old = e^ℓ_old,
    keep [p - p_old <= δ_hi] where A > 0 and [p - p_old >= -δ_lo] where A <= 0."""
    diff = torch.exp(logp.detach()) - torch.exp(old_logp)
    return torch.where(adv > 0, diff <= config.delta_high, diff >= -config.delta_low)


def binary_kl(logp: Tensor, old_logp: Tensor) -> Tensor:
    """D = p_old·log(p_old/p) + (1 - p_old)·log((1 - p_old)/(1 - p)), detached, with 0·log 0 = 0:
    the KL between the Bernoulli distributions (sampled token, any other token). +inf where
    p = 1 > p_old. Computed from log-probs (log(1 - p) = log(-expm1(ℓ)))."""
    lp, lo = logp.detach(), old_logp
    p_old = torch.exp(lo)
    q_old = -torch.expm1(lo)  # 1 - p_old
    log_q, log_q_old = torch.log(-torch.expm1(lp)), torch.log(q_old)
    rest = torch.where(q_old > 0, q_old * (log_q_old - log_q), torch.zeros_like(q_old))
    return p_old * (lo - lp) + rest


def binary_kl_trust_mask(logp: Tensor, old_logp: Tensor, adv: Tensor, config: DppoConfig) -> Tensor:
    """DPPO-Binary-KL's keep mask (bool ``[B, T]``, detached): where A > 0 keep if D <= δ_hi or
    p <= p_old; where A <= 0 keep if D <= δ_lo or p >= p_old (D = ``binary_kl``)."""
    d = binary_kl(logp, old_logp)
    lp = logp.detach()
    return torch.where(adv > 0, (d <= config.delta_high) | (lp <= old_logp),
                       (d <= config.delta_low) | (lp >= old_logp))


def _dppo(logp, old_logp, adv, mask, config: DppoConfig, trust_mask):
    old_logp, adv, m = _prepare(logp, old_logp, adv, mask)
    diag = _ratio_diagnostics(logp, old_logp, m)
    log_rho = (logp - old_logp).detach()
    log_cap = torch.log(torch.tensor(config.is_cap, dtype=logp.dtype, device=logp.device))
    weight = torch.exp(torch.minimum(log_rho, log_cap))  # min(ρ, C) without overflow
    keep = trust_mask(logp, old_logp, adv, config)
    per_token = -adv * weight * logp * keep.to(logp.dtype)  # (B, T)
    loss = aggregate_valid(per_token, m, **agg_fields(config))
    diag["trust_masked_frac"] = _frac(~keep, m).detach()
    diag["is_weight_mean"] = _masked_mean(weight, m).detach()
    diag["is_trunc_frac"] = _frac(log_rho > log_cap, m).detach()
    return loss, diag


def dppo_tv(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, *, config: DppoConfig):
    r"""DPPO-Binary-TV: truncated-IS REINFORCE, masked outside a total-variation trust region.

    .. math::
        L_{it} = -A_{it}\,\mathrm{sg}(\min(\rho_{it}, C))\,\ell_{it}\,v_{it},\qquad
        v_{it} = \begin{cases} [p_{it} - p^{old}_{it} \le \delta_{hi}] & A_{it} > 0 \\
                              [p_{it} - p^{old}_{it} \ge -\delta_{lo}] & A_{it} \le 0 \end{cases}

    with p = e^ℓ, p_old = e^ℓ_old and v detached. Gradient weight: ``w = c_it·A·min(ρ, C)·v`` —
    exactly 0 outside the trust region. Unlike PPO's ratio clip, the region depends on the
    probabilities, not only on ρ: a rare token (small p_old) may move by a large ratio.

    Args:
        logp, old_logp, adv, mask: ``[B, T]``; old_logp and adv are detached.
        config: ``DppoConfig``.

    Returns:
        ``(loss, diagnostics)``; diagnostics: ``ratio_mean``, ``ratio_max``, ``approx_kl_k1``,
        ``approx_kl_k3``, ``trust_masked_frac`` (valid tokens outside the trust region),
        ``is_weight_mean`` (token mean of min(ρ, C)), ``is_trunc_frac`` (ρ > C).

    References:
        "Rethinking the Trust Region in LLM Reinforcement Learning" (DPPO), arXiv:2602.04879
        (Binary-TV mask). verl ``core_algos.py`` policy loss ``dppo_tv`` (verl-project/verl
        1dda039b; shared/research/loss_zoo.md §1.2); SkyRL ``ppo_utils.py`` ``dppo``.

    Notes:
        A <= 0 uses the lower test (verl's ``else`` branch); at A = 0 the loss is 0 either way.
        verl's ±20 log-ratio clamp is not applied (min(ρ, C) is computed in log space).

    Examples:
        >>> logp = torch.log(torch.tensor([[0.5, 0.9]])).requires_grad_(True)
        >>> old = torch.log(torch.tensor([[0.4, 0.6]]))          # p - p_old = 0.1, 0.3 > 0.2
        >>> loss, d = dppo_tv(logp, old, torch.ones(1, 2), torch.ones(1, 2), config=DppoConfig())
        >>> round(d["trust_masked_frac"].item(), 4)
        0.5
    """
    return _dppo(logp, old_logp, adv, mask, config, tv_trust_mask)


def dppo_kl(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, *, config: DppoConfig):
    r"""DPPO-Binary-KL: truncated-IS REINFORCE, masked outside a binary-KL trust region.

    .. math::
        D_{it} = p^{old}\log\frac{p^{old}}{p} + (1-p^{old})\log\frac{1-p^{old}}{1-p},\qquad
        L_{it} = -A_{it}\,\mathrm{sg}(\min(\rho_{it}, C))\,\ell_{it}\,v_{it}

    with v = [D <= δ_hi or p <= p_old] where A > 0 and v = [D <= δ_lo or p >= p_old] where
    A <= 0 (detached): a token is dropped only when it moved *in the direction of its advantage*
    by more than the threshold. Gradient weight: ``w = c_it·A·min(ρ, C)·v``.

    Args:
        logp, old_logp, adv, mask: ``[B, T]``; old_logp and adv are detached.
        config: ``DppoConfig`` (δ_lo, δ_hi are KL thresholds here).

    Returns:
        ``(loss, diagnostics)`` with the keys of ``dppo_tv``.

    References:
        "Rethinking the Trust Region in LLM Reinforcement Learning" (DPPO), arXiv:2602.04879
        (Binary-KL mask). verl ``core_algos.py`` policy loss ``dppo_kl`` (verl-project/verl
        1dda039b; shared/research/loss_zoo.md §1.2).

    Notes:
        D uses 0·log 0 = 0 (p_old = 1) and is +inf at p = 1 > p_old (then p > p_old, so a token
        with A > 0 is dropped and one with A <= 0 kept).

    Examples:
        >>> logp = torch.log(torch.tensor([[0.5, 0.9]])).requires_grad_(True)
        >>> old = torch.log(torch.tensor([[0.4, 0.6]]))          # D = 0.0201, 0.3112
        >>> loss, d = dppo_kl(logp, old, torch.ones(1, 2), torch.ones(1, 2), config=DppoConfig())
        >>> round(d["trust_masked_frac"].item(), 4)
        0.5
    """
    return _dppo(logp, old_logp, adv, mask, config, binary_kl_trust_mask)
