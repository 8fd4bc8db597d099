"""GSPO (sequence and token level) and GMPO: the geometric-mean family (theory/gspo.py).

The contract of every objective is in ``sims.objectives`` (the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sims._checks import require, require_finite_number
from sims.aggregation import AggConfig, agg_fields, aggregate_valid
from sims.objectives._common import (
    _check_eps_low,
    _check_pos,
    _frac,
    _lower,
    _prepare,
    _ratio_diagnostics,
    _seq_mean,
    check_log_ratio_bounds,
    clamp_log_ratio,
)

# ----------------------------------------------------------------------------- GSPO


@dataclass(frozen=True, kw_only=True)
class GspoConfig(AggConfig):
    """Config of ``gspo`` and ``gspo_token``.

    Attributes:
        eps_low: lower clip of the sequence ratio s, 0 < eps_low < 1, or ``None``.
        eps_high: upper clip of s, eps_high > 0. The paper uses (3e-4, 4e-4).
        dual_clip_c: dual-clip constant c > 1, or ``None`` (off; the paper and verl's ``gspo``
            have none): where the advantage is negative the loss is min(L, -c·A), so the
            sequence ratio's weight drops to 0 above s = c (as PPO's dual-clip does for ρ).
        agg: default ``seq-mean-token-mean`` = the paper's (1/G) Σ_i over sequences.
        log_ratio_min, log_ratio_max: bounds of the clamp of log s_i (of log ŝ_it in
            ``gspo_token``), or ``None`` (no bound; the paper's). verl's ``gspo`` clamps it at 10
            from above "for numerical stability" (``log_ratio_max=10``): beyond it the weight is 0.
    """

    agg: str = "seq-mean-token-mean"
    eps_low: float | None = 3e-4
    eps_high: float = 4e-4
    dual_clip_c: float | None = None
    log_ratio_min: float | None = None
    log_ratio_max: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_eps_low(self.eps_low)
        _check_pos("eps_high", self.eps_high)
        if self.dual_clip_c is not None:
            require_finite_number("dual_clip_c", self.dual_clip_c)
            require(self.dual_clip_c > 1, "dual_clip_c", self.dual_clip_c, "None or c > 1 (finite)")
        check_log_ratio_bounds(self.log_ratio_min, self.log_ratio_max)


def _dual_clip(loss: Tensor, adv: Tensor, config: GspoConfig) -> Tensor:
    """min(L, -c·A) where A < 0 (dual-clip), L elsewhere or when ``dual_clip_c`` is None."""
    if config.dual_clip_c is None:
        return loss
    return torch.where(adv < 0, torch.minimum(loss, -config.dual_clip_c * adv), loss)


def _gspo_diagnostics(diag, log_s, s_adv, config, m):
    s = torch.exp(log_s.detach())  # (B, 1)
    low = (torch.zeros_like(s, dtype=torch.bool) if config.eps_low is None
           else (s_adv < 0) & (s < 1.0 - config.eps_low))
    diag["seq_ratio_mean"] = s.mean()
    diag["clip_frac_low"] = _frac(low.expand_as(m), m).detach()
    diag["clip_frac_high"] = _frac(((s_adv > 0) & (s > 1.0 + config.eps_high)).expand_as(m), m).detach()
    dual = (torch.zeros_like(s, dtype=torch.bool) if config.dual_clip_c is None
            else (s_adv < 0) & (s > config.dual_clip_c))
    diag["dual_clip_frac"] = _frac(dual.expand_as(m), m).detach()
    return diag


def gspo(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, *, config: GspoConfig):
    r"""GSPO: clipped surrogate on the geometric-mean sequence ratio (sequence form).

    .. math::
        s_i = \exp\!\Big(\tfrac{1}{T_i}\textstyle\sum_t m_{it}(\ell_{it}-\ell^{old}_{it})\Big),\quad
        L_i = \max\big(-\bar A_i s_i,\; -\bar A_i\,\mathrm{clip}(s_i, 1-\epsilon_{low}, 1+\epsilon_{high})\big)

    and with dual-clip, where Ā_i < 0, L_i = min(L_i, -c·Ā_i). ``L_i`` is broadcast over the
    tokens of sequence i and aggregated. Since ∇s_i = s_i·(1/T_i) Σ_t ∇ℓ_it, the gradient weight
    is ``w_it = (Σ_s c_is)·Ā_i·s_i/T_i``, and exactly 0 where the clip binds (Ā > 0 and
    s > 1 + eps_high, Ā < 0 and s < 1 - eps_low, or with dual-clip Ā < 0 and s > c). With the
    default aggregation, w_it = Ā_i s_i / (B T_i).

    Args:
        logp, old_logp, adv, mask: ``[B, T]``; Ā_i is the masked mean of ``adv`` over sequence i.
        config: ``GspoConfig``.

    Returns:
        ``(loss, diagnostics)``; diagnostics: ``ratio_mean``, ``ratio_max``, ``approx_kl_k1``,
        ``approx_kl_k3``, ``seq_ratio_mean`` (mean of s_i), ``clip_frac_low``,
        ``clip_frac_high``, ``dual_clip_frac`` (fractions of valid tokens in clipped sequences).

    References:
        Zheng et al. 2025, "Group Sequence Policy Optimization", arXiv:2507.18071
        (objective J_GSPO and the definition of s_i). Dual-clip: Ye et al. 2020,
        arXiv:1912.09729, applied to s_i (AReaL ``c_clip``, OpenRLHF ``dual_clip`` with GSPO).

    Notes:
        Under a token-summing aggregation (``token-mean``) the broadcast makes GSPO
        length-weighted, as TRL's ``importance_sampling_level="sequence"`` does (TRL #3823).

    Examples:
        >>> logp = torch.tensor([[-1.0, -2.0, -0.5]], requires_grad=True)
        >>> loss, d = gspo(logp, logp.detach(), torch.ones(1, 3), torch.ones(1, 3), config=GspoConfig())
        >>> loss, d["seq_ratio_mean"]
        (tensor(-1., grad_fn=<DivBackward0>), tensor(1.))
    """
    old_logp, adv, m = _prepare(logp, old_logp, adv, mask)
    diag = _ratio_diagnostics(logp, old_logp, m)
    log_s = clamp_log_ratio(_seq_mean(logp - old_logp, m), config.log_ratio_min, config.log_ratio_max)  # (B, 1)
    s = torch.exp(log_s)
    s_adv = _seq_mean(adv, m)  # (B, 1)
    clipped = torch.clamp(s, min=_lower(config.eps_low), max=1.0 + config.eps_high)
    per_seq = _dual_clip(torch.maximum(-s_adv * s, -s_adv * clipped), s_adv, config)  # (B, 1)
    loss = aggregate_valid(per_seq.expand_as(logp), m, **agg_fields(config))
    return loss, _gspo_diagnostics(diag, log_s, s_adv, config, m)


def gspo_token(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, *, config: GspoConfig):
    r"""GSPO-token: per-token surrogate with value s_i and gradient through token t only.

    .. math::
        \hat s_{it} = \mathrm{sg}[s_i]\cdot\frac{\pi_\theta(o_{it})}{\mathrm{sg}[\pi_\theta(o_{it})]},\quad
        L_{it} = \max\big(-A_{it}\hat s_{it},\; -A_{it}\,\mathrm{clip}(\hat s_{it}, 1-\epsilon_{low}, 1+\epsilon_{high})\big)

    and with dual-clip, where A_it < 0, L_it = min(L_it, -c·A_it). ŝ_it equals s_i in value and
    ∂ŝ_it/∂ℓ_it = s_i, so ``w_it = c_it·A_it·s_i`` (0 where a clip binds). When A_it = A_i for every token, ``gspo_token`` and ``gspo`` have the same value and
    gradient under every aggregation: c is constant within a sequence, so Σ_s c_is·s_i/T_i =
    c_it·s_i.

    Args:
        logp, old_logp, adv, mask: ``[B, T]``; old_logp and adv are detached.
        config: ``GspoConfig``.

    Returns:
        ``(loss, diagnostics)`` with the keys of ``gspo``; the clip fractions use the sign of
        the per-sequence mean advantage.

    References:
        Zheng et al. 2025, "Group Sequence Policy Optimization", arXiv:2507.18071
        (GSPO-token objective, s_{i,t}); verl ``gspo`` loss; TRL ``trl.experimental.gspo_token``.

    Examples:
        >>> logp = torch.tensor([[-1.0, -2.0, -0.5]], requires_grad=True)
        >>> loss, _ = gspo_token(logp, logp.detach(), torch.ones(1, 3), torch.ones(1, 3),
        ...                      config=GspoConfig())
        >>> loss
        tensor(-1., grad_fn=<DivBackward0>)
    """
    old_logp, adv, m = _prepare(logp, old_logp, adv, mask)
    diag = _ratio_diagnostics(logp, old_logp, m)
    log_s = _seq_mean(logp - old_logp, m)  # (B, 1)
    s_hat = torch.exp(clamp_log_ratio(log_s.detach() + logp - logp.detach(),
                                      config.log_ratio_min, config.log_ratio_max))  # (B, T)
    clipped = torch.clamp(s_hat, min=_lower(config.eps_low), max=1.0 + config.eps_high)
    per_token = _dual_clip(torch.maximum(-adv * s_hat, -adv * clipped), adv, config)  # (B, T)
    loss = aggregate_valid(per_token, m, **agg_fields(config))
    return loss, _gspo_diagnostics(diag, log_s, _seq_mean(adv, m), config, m)


# ----------------------------------------------------------------------------- GMPO


@dataclass(frozen=True, kw_only=True)
class GmpoConfig(AggConfig):
    """Config of ``gmpo``.

    Attributes:
        eps_low: clip of the token **log**-ratio from below at -eps_low (> 0), or ``None``.
        eps_high: clip of the token log-ratio from above at +eps_high (> 0).
            The official GMPO script uses 0.4 for both: ratios in (e^-0.4, e^0.4).
        agg: default ``seq-mean-token-mean`` = plain mean over sequences (as verl forces).
    """

    agg: str = "seq-mean-token-mean"
    eps_low: float | None = 0.4
    eps_high: float = 0.4

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.eps_low is not None:
            _check_pos("eps_low", self.eps_low)
        _check_pos("eps_high", self.eps_high)


def gmpo(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, *, config: GmpoConfig):
    r"""GMPO: geometric mean of sign-aware, log-space clipped token ratios.

    .. math::
        d_{it} = \ell_{it}-\ell^{old}_{it},\quad
        \tilde d_{it} = \mathrm{sgn}(\bar A_i)\min\big(\mathrm{sgn}(\bar A_i)d_{it},\,
                        \mathrm{sgn}(\bar A_i)\,\mathrm{clip}(d_{it}, -\epsilon_{low}, \epsilon_{high})\big),
        \quad L_i = -\bar A_i \exp\!\Big(\tfrac1{T_i}\textstyle\sum_t m_{it}\tilde d_{it}\Big)

    ``L_i`` is broadcast and aggregated. Gradient weight: ``w_it = (Σ_s c_is)·Ā_i·g_i/T_i`` with
    g_i = exp(mean_t d̃_it), and exactly 0 on tokens whose log-ratio is clipped on the pessimistic
    side (Ā > 0 and d > eps_high, or Ā < 0 and d < -eps_low). Unclipped, GMPO equals GSPO's
    unclipped objective, since (Π_t|ρ_t Ā|)^{1/T} sgn(Ā) = Ā·s.

    Args:
        logp, old_logp, adv, mask: ``[B, T]``; Ā_i is the masked mean of ``adv`` over sequence i.
        config: ``GmpoConfig``.

    Returns:
        ``(loss, diagnostics)``; diagnostics: ``ratio_mean``, ``ratio_max``, ``approx_kl_k1``,
        ``approx_kl_k3``, ``seq_ratio_mean`` (mean of g_i), ``clip_frac_low``,
        ``clip_frac_high`` (fractions of valid tokens clipped on the pessimistic side).

    References:
        Zhao et al. 2025, "Geometric-Mean Policy Optimization", arXiv:2507.20673 (objective J_GMPO);
        verl ``geo_mean`` loss.

    Notes:
        eps_low / eps_high are **log-space** bounds here (verl passes them through unchanged);
        the sign is that of the per-sequence advantage (verl uses the per-token sign; identical
        when A is per sequence). A sequence with Ā = 0 has loss 0.

    Examples:
        >>> logp = torch.tensor([[-1.0, -2.0, -0.5]], requires_grad=True)
        >>> loss, _ = gmpo(logp, logp.detach(), torch.ones(1, 3), torch.ones(1, 3), config=GmpoConfig())
        >>> loss
        tensor(-1., grad_fn=<DivBackward0>)
    """
    old_logp, adv, m = _prepare(logp, old_logp, adv, mask)
    diag = _ratio_diagnostics(logp, old_logp, m)
    s_adv = _seq_mean(adv, m)  # (B, 1)
    sign = torch.sign(s_adv)  # (B, 1)
    d = logp - old_logp  # (B, T)
    low = None if config.eps_low is None else -config.eps_low
    d_clip = torch.clamp(d, min=low, max=config.eps_high)
    d_tilde = sign * torch.minimum(sign * d, sign * d_clip)  # (B, T)
    g = torch.exp(_seq_mean(d_tilde, m))  # (B, 1)
    per_seq = -s_adv * g
    loss = aggregate_valid(per_seq.expand_as(logp), m, **agg_fields(config))
    dd = d.detach()
    clip_low = (torch.zeros_like(dd, dtype=torch.bool) if low is None
                else (s_adv < 0) & (dd < low))
    diag["seq_ratio_mean"] = g.detach().mean()
    diag["clip_frac_low"] = _frac(clip_low, m).detach()
    diag["clip_frac_high"] = _frac((s_adv > 0) & (dd > config.eps_high), m).detach()
    return loss, diag
