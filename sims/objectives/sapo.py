"""SAPO's soft sigmoid gate (theory/sapo.py).

The contract of every objective is in ``sims.objectives`` (the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sims.aggregation import AggConfig, agg_fields, aggregate_valid
from sims.objectives._common import (
    _check_pos,
    _masked_mean,
    _prepare,
    _ratio_diagnostics,
    check_log_ratio_bounds,
    clamp_log_ratio,
)

# ----------------------------------------------------------------------------- SAPO


@dataclass(frozen=True, kw_only=True)
class SapoConfig(AggConfig):
    """Config of ``sapo``.

    Attributes:
        tau_pos: gate temperature for A > 0 (> 0); paper and verl default 1.0.
        tau_neg: gate temperature for A <= 0 (> 0); paper and verl default 1.05.
        agg: default ``seq-mean-token-mean`` (verl forces it for SAPO).
        log_ratio_min, log_ratio_max: bounds of the clamp ρ = exp(clamp(ℓ - ℓ_old, min, max)), or
            ``None`` (no bound; the paper's). verl's ``sapo`` clamps the log-ratio to ±20: beyond
            it the gate is a constant and the weight exactly 0.
    """

    agg: str = "seq-mean-token-mean"
    tau_pos: float = 1.0
    tau_neg: float = 1.05
    log_ratio_min: float | None = None
    log_ratio_max: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_pos("tau_pos", self.tau_pos)
        _check_pos("tau_neg", self.tau_neg)
        check_log_ratio_bounds(self.log_ratio_min, self.log_ratio_max)


def sapo(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, *, config: SapoConfig):
    r"""SAPO: a soft sigmoid gate on the token ratio instead of a hard clip.

    .. math::
        f_\tau(\rho) = \tfrac{4}{\tau}\,\sigma\big(\tau(\rho-1)\big),\quad
        L_{it} = -f_{\tau_{it}}(\rho_{it})\,A_{it},\quad \tau_{it} = \tau_{pos} \text{ if } A_{it}>0 \text{ else } \tau_{neg}

    Gradient weight: ``w_it = c_it·A·ρ·4σ(τ(ρ-1))(1-σ(τ(ρ-1)))``; the gate factor is 1 at ρ = 1
    (so on-policy SAPO is REINFORCE) and decays smoothly, never reaching 0, away from it.

    Args:
        logp, old_logp, adv, mask: ``[B, T]``; old_logp and adv are detached.
        config: ``SapoConfig``.

    Returns:
        ``(loss, diagnostics)``; diagnostics: ``ratio_mean``, ``ratio_max``, ``approx_kl_k1``,
        ``approx_kl_k3``, ``gate_weight_mean`` (token mean of 4σ(1-σ), the soft trust factor).

    References:
        Qwen team 2025, "Soft Adaptive Policy Optimization", arXiv:2511.20347 (gate
        f_{i,t}); verl ``sapo`` loss; TRL ``loss_type="sapo"``.

    Examples:
        >>> logp = torch.tensor([[-1.0, -2.0, -0.5]], requires_grad=True)
        >>> loss, _ = sapo(logp, logp.detach(), torch.ones(1, 3), torch.ones(1, 3), config=SapoConfig())
        >>> loss   # -(4/1)·σ(0) = -2
        tensor(-2., grad_fn=<DivBackward0>)
    """
    old_logp, adv, m = _prepare(logp, old_logp, adv, mask)
    diag = _ratio_diagnostics(logp, old_logp, m)
    ratio = torch.exp(clamp_log_ratio(logp - old_logp, config.log_ratio_min, config.log_ratio_max))  # (B, T)
    tau = torch.where(adv > 0, torch.full_like(adv, config.tau_pos), torch.full_like(adv, config.tau_neg))
    gate = torch.sigmoid(tau * (ratio - 1.0))
    loss = aggregate_valid(-(4.0 / tau) * gate * adv, m, **agg_fields(config))
    g = gate.detach()
    diag["gate_weight_mean"] = _masked_mean(4.0 * g * (1.0 - g), m)
    return loss, diag
