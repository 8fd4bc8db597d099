"""REINFORCE with truncated/masked IS, and sequence-level IS (theory/reinforce.py).

The contract of every objective is in ``sims.objectives`` (the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sims._checks import require_choice
from sims.aggregation import AggConfig, agg_fields, aggregate_valid
from sims.objectives._common import (
    _check_pos,
    _frac,
    _masked_mean,
    _prepare,
    _ratio_diagnostics,
    _seq_mean,
)

# ----------------------------------------------------------------------------- REINFORCE


@dataclass(frozen=True, kw_only=True)
class ReinforceConfig(AggConfig):
    """Config of ``reinforce``.

    Attributes:
        agg: aggregation; default ``seq-mean-token-sum`` = mean over sequences of A·∇log P(o).
        is_level: ``None`` (no importance weight), ``"token"`` (ρ_t) or ``"sequence"`` (Π_t ρ_t).
        is_mode: ``"truncate"`` (TIS: min(ρ, C)) or ``"mask"`` (MIS: ρ·1[ρ <= C]).
        is_cap: the threshold C (> 0); verl's ``rollout_is_threshold`` default is 2.0.
    """

    agg: str = "seq-mean-token-sum"
    is_level: str | None = None
    is_mode: str = "truncate"
    is_cap: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        require_choice("is_level", self.is_level, (None, "token", "sequence"))
        require_choice("is_mode", self.is_mode, ("truncate", "mask"))
        _check_pos("is_cap", self.is_cap)


def reinforce(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, *, config: ReinforceConfig):
    r"""REINFORCE with an optional truncated (TIS) or masked (MIS) importance weight.

    .. math::
        L_{it} = -\,\mathrm{sg}(\omega_{it})\, A_{it}\, \ell_{it}, \qquad
        w_{it} = c_{it}\, \omega_{it}\, A_{it}

    with ω = 1 (``is_level=None``); ω = min(ρ, C) (TIS) or ρ·1[ρ <= C] (MIS), where ρ is the
    token ratio ρ_it (``"token"``) or the sequence ratio exp(Σ_t m·(ℓ - ℓ_old)) (``"sequence"``),
    computed in log space.

    Args:
        logp, old_logp, adv, mask: ``[B, T]``; old_logp and adv are detached.
        config: ``ReinforceConfig``.

    Returns:
        ``(loss, diagnostics)``; diagnostics: ``ratio_mean``, ``ratio_max``, ``approx_kl_k1``,
        ``approx_kl_k3``, ``is_weight_mean`` (token mean of ω), ``is_trunc_frac`` (fraction of
        valid tokens with ρ > C, i.e. truncated or masked; 0 without a weight).

    References:
        Williams 1992, "Simple statistical gradient-following algorithms", Machine Learning 8.
        TIS: Yao et al. 2025, "Your Efficient RL Framework Secretly Brings You Off-Policy
        RL Training" (truncated IS, min(ρ, C)). MIS: Liu, Li et al. 2025, "When Speed Kills
        Stability" (masked IS). verl ``compute_policy_loss_reinforce`` / ``bypass_mode``.

    Notes:
        The weight is always detached (as in verl). On padding it is irrelevant (masked).

    Examples:
        >>> logp = torch.tensor([[-1.0, -2.0, -0.5]], requires_grad=True)
        >>> adv = torch.tensor([[1.0, 1.0, 1.0]]); mask = torch.ones(1, 3)
        >>> loss, _ = reinforce(logp, logp.detach(), adv, mask, config=ReinforceConfig())
        >>> loss  # -(1)(-1 - 2 - 0.5)
        tensor(3.5000, grad_fn=<DivBackward0>)
    """
    old_logp, adv, m = _prepare(logp, old_logp, adv, mask)
    diag = _ratio_diagnostics(logp, old_logp, m)
    if config.is_level is None:
        weight = torch.ones_like(logp)
        over = torch.zeros_like(logp, dtype=torch.bool)
    else:
        log_rho = (logp - old_logp).detach()  # (B, T)
        if config.is_level == "sequence":
            log_rho = (log_rho * m).sum(-1, keepdim=True).expand_as(logp)  # (B, T)
        log_cap = torch.log(torch.tensor(config.is_cap, dtype=logp.dtype, device=logp.device))
        over = log_rho > log_cap
        weight = torch.exp(torch.minimum(log_rho, log_cap))  # min(ρ, C) without overflow
        if config.is_mode == "mask":
            weight = torch.where(over, torch.zeros_like(weight), weight)
    per_token = -weight.detach() * adv * logp  # (B, T)
    loss = aggregate_valid(per_token, m, **agg_fields(config))
    diag["is_weight_mean"] = _masked_mean(weight, m).detach()
    diag["is_trunc_frac"] = _frac(over, m).detach()
    return loss, diag


# ----------------------------------------------------------------------------- sequence IS


@dataclass(frozen=True, kw_only=True)
class SeqIsConfig(AggConfig):
    """Config of ``seq_is``.

    Attributes:
        agg: aggregation of the per-sequence loss broadcast over tokens; the default
            ``seq-mean-token-mean`` makes the loss the plain mean over sequences.
        cap: truncation threshold C of the sequence ratio (> 0), or ``None`` for none.
    """

    agg: str = "seq-mean-token-mean"
    cap: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cap is not None:
            _check_pos("cap", self.cap)


def seq_is(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, *, config: SeqIsConfig):
    r"""Off-policy REINFORCE with the full sequence importance ratio R(o) = Π_t ρ_t.

    .. math::
        \log R_i = \textstyle\sum_t m_{it}(\ell_{it} - \ell^{old}_{it}),\qquad
        L_i = -\bar A_i \exp\!\big(\log R_i + \mathrm{sg}[\min(\log R_i, \log C) - \log R_i]\big)

    The value of ``L_i`` is -min(R_i, C)·Ā_i; its gradient with respect to every token of the
    sequence is the same: ∂L_i/∂ℓ_it = -min(R_i, C)·Ā_i. ``L_i`` is broadcast over the tokens of
    sequence i and aggregated, so ``w_it = (Σ_s c_is)·min(R_i, C)·Ā_i``; with the default
    aggregation Σ_s c_is = 1/B and the estimator is (1/B) Σ_i min(R_i, C)·Ā_i·∇log P(o_i).
    Untruncated (``cap=None``) this is the unbiased off-policy gradient E_old[R·A·∇log P].

    Args:
        logp, old_logp, adv, mask: ``[B, T]``; Ā_i is the masked mean of ``adv`` over sequence i.
        config: ``SeqIsConfig``.

    Returns:
        ``(loss, diagnostics)``; diagnostics: ``ratio_mean``, ``ratio_max``, ``approx_kl_k1``,
        ``approx_kl_k3``, ``log_seq_ratio_mean`` (mean over sequences of log R_i),
        ``is_weight_mean`` (mean over sequences of min(R_i, C)), ``is_trunc_frac`` (fraction
        of valid tokens in sequences with R_i > C).

    References:
        Precup, Sutton, Singh 2000, "Eligibility traces for off-policy policy evaluation"
        (per-trajectory IS); the seed's claim C02; truncation as in Liu, Li et al. 2025 (Seq-TIS).

    Notes:
        Computed in log space; with ``cap=None`` a log-ratio beyond the float range overflows to
        ``inf`` — the exponential blow-up claim C03 is about.

    Examples:
        >>> logp = torch.tensor([[-1.0, -2.0, -0.5]], requires_grad=True)
        >>> old = torch.tensor([[-1.0, -2.0, -0.5 - 0.6931471805599453]])   # R = 2
        >>> loss, d = seq_is(logp, old, torch.ones(1, 3), torch.ones(1, 3), config=SeqIsConfig())
        >>> round(loss.item(), 4), round(d["is_weight_mean"].item(), 4)
        (-2.0, 2.0)
    """
    old_logp, adv, m = _prepare(logp, old_logp, adv, mask)
    diag = _ratio_diagnostics(logp, old_logp, m)
    log_r = ((logp - old_logp) * m).sum(-1, keepdim=True)  # (B, 1)
    if config.cap is None:
        log_w = log_r
        over = torch.zeros_like(log_r, dtype=torch.bool)
    else:
        log_cap = torch.log(torch.tensor(config.cap, dtype=logp.dtype, device=logp.device))
        log_w = log_r + (torch.minimum(log_r, log_cap) - log_r).detach()
        over = log_r.detach() > log_cap
    per_seq = -_seq_mean(adv, m) * torch.exp(log_w)  # (B, 1)
    loss = aggregate_valid(per_seq.expand_as(logp), m, **agg_fields(config))
    diag["log_seq_ratio_mean"] = log_r.detach().mean()
    diag["is_weight_mean"] = torch.exp(log_w.detach()).mean()
    diag["is_trunc_frac"] = _frac(over.expand_as(m), m).detach()
    return loss, diag


# ----------------------------------------------------------------------------- DRO / Kimi-1.5


@dataclass(frozen=True, kw_only=True)
class DroConfig(AggConfig):
    """Config of ``dro``.

    Attributes:
        beta: coefficient β (> 0) of the squared log-ratio penalty ½β(ℓ - ℓ_old)²; verl's
            ``policy_loss.dro_beta`` (must be > 0; Kimi-1.5 calls it τ). Neither verl nor the
            paper fixes a value; 0.1 here is this package's choice, not a published default.
        agg: verl's default ``token-mean``.
    """

    beta: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_pos("beta", self.beta)


def dro(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, *, config: DroConfig):
    r"""DRO / Kimi-1.5: REINFORCE plus a squared log-ratio (k2-to-old) proximal penalty.

    .. math::
        L_{it} = -\Big(\ell_{it} A_{it} - \tfrac{\beta}{2}(\ell_{it} - \ell^{old}_{it})^2\Big),
        \qquad w_{it} = c_{it}\,\big(A_{it} - \beta(\ell_{it} - \ell^{old}_{it})\big)

    The penalty pulls every token back towards π_old whatever its advantage, so, by design,
    two ``pgverify check`` properties do not apply: **zero advantage, zero weight** (at A = 0,
    w = -c·β(ℓ - ℓ_old) ≠ 0 off-policy) and **advantage scale equivariance** (w(kA) ≠ k·w(A)).
    On-policy (ℓ = ℓ_old) w = c·A, so the reduction to REINFORCE holds.

    Args:
        logp, old_logp, adv, mask: ``[B, T]``; old_logp and adv are detached.
        config: ``DroConfig``.

    Returns:
        ``(loss, diagnostics)``; diagnostics: ``ratio_mean``, ``ratio_max``, ``approx_kl_k1``,
        ``approx_kl_k3``, ``penalty_mean`` (token mean of ½β(ℓ - ℓ_old)²).

    References:
        Kimi Team 2025, "Kimi k1.5: Scaling Reinforcement Learning with LLMs", arXiv:2501.12599,
        §2.3.2 (policy optimization: the surrogate gradient with the τ/2·(log π/π_old)² term).
        verl ``core_algos.py`` policy loss ``dro`` (``policy_loss.dro_beta``; docs/algo/dro.md);
        ROLL ``pg_variant="kimi15"``.

    Examples:
        >>> logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
        >>> old = torch.tensor([[-1.0, -3.0]])
        >>> loss, d = dro(logp, old, torch.zeros(1, 2), torch.ones(1, 2), config=DroConfig(beta=1.0))
        >>> loss.backward(); logp.grad          # w = A - β(ℓ - ℓ_old) = [0, -1], token-mean /2
        tensor([[0.0000, 0.5000]])
    """
    old_logp, adv, m = _prepare(logp, old_logp, adv, mask)
    diag = _ratio_diagnostics(logp, old_logp, m)
    penalty = 0.5 * config.beta * (logp - old_logp) ** 2  # (B, T)
    per_token = -(logp * adv - penalty)
    loss = aggregate_valid(per_token, m, **agg_fields(config))
    diag["penalty_mean"] = _masked_mean(penalty, m).detach()
    return loss, diag
