r"""Policy-gradient objectives as small pure torch functions.

Every objective has the signature ``loss_fn(logp, old_logp, adv, mask, *, config) -> (loss,
diagnostics)``:

* ``logp``      ``[B, T]`` log π_θ(o_t | o_<t) of the sampled tokens (carries gradient);
* ``old_logp``  ``[B, T]`` log π_old of the same tokens (treated as a constant: detached);
* ``adv``       ``[B, T]`` advantages, usually one value per sequence broadcast over its tokens
  (treated as a constant: detached);
* ``mask``      ``[B, T]`` 1 on valid tokens, 0 on padding; every sequence has a valid token.

The loss is a 0-d tensor, produced by the per-token loss ``L`` and the config's aggregation
(``sims.aggregation``). Diagnostics are detached 0-d tensors. The gradient of every objective is
``∇_θ loss = -Σ_it w_it ∇_θ log π_θ(o_it)`` with the *gradient weight* ``w = -∂loss/∂logp``,
written in each docstring as ``w_it = c_it · (...)`` where ``c_it`` is the aggregation's
per-token normaliser (``sims.aggregation.token_weights``). Notation: ratio ρ = exp(logp -
old_logp), clip(x, a, b) = min(max(x, a), b), sg = stop-gradient, 1[·] an indicator, σ the
logistic sigmoid. Clip ranges are always ``[1 - eps_low, 1 + eps_high]``; ``eps_low=None``
means no lower bound.

No log-ratio is clamped: ratios are computed exactly, so a huge log-ratio overflows as it
would in float arithmetic rather than being silently altered.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sims._checks import check_token_inputs, float_mask, require, require_choice, require_finite_number
from sims.aggregation import AggConfig, agg_fields, aggregate_valid, masked_sum

__all__ = [
    "ReinforceConfig", "reinforce",
    "SeqIsConfig", "seq_is",
    "PpoClipConfig", "ppo_clip",
    "GspoConfig", "gspo", "gspo_token",
    "GmpoConfig", "gmpo",
    "CispoConfig", "cispo",
    "SapoConfig", "sapo",
    "SgsCispoConfig", "sgs_cispo", "sgs_scale",
]

# ----------------------------------------------------------------------------- helpers


def _masked_mean(x: Tensor, m: Tensor) -> Tensor:
    return masked_sum(x, m) / m.sum()


def _frac(cond: Tensor, m: Tensor) -> Tensor:
    """Fraction of valid tokens where ``cond`` holds."""
    return _masked_mean(cond.to(m.dtype), m)


def _seq_mean(x: Tensor, m: Tensor) -> Tensor:
    """Per-sequence masked mean ``Σ_t m x / T_i`` as ``[B, 1]``."""
    return (x * m).sum(-1, keepdim=True) / m.sum(-1, keepdim=True)


def _ratio_diagnostics(logp: Tensor, old_logp: Tensor, m: Tensor) -> dict[str, Tensor]:
    """``ratio_mean``, ``ratio_max``, ``approx_kl_k1``, ``approx_kl_k3`` (token means, detached)."""
    log_ratio = (logp - old_logp).detach()
    ratio = torch.exp(log_ratio)
    n_valid = m.sum()
    return {
        "ratio_mean": masked_sum(ratio, m) / n_valid,
        "ratio_max": torch.where(m > 0, ratio, 0.0).max(),
        "approx_kl_k1": -masked_sum(log_ratio, m) / n_valid,
        "approx_kl_k3": masked_sum(torch.expm1(log_ratio) - log_ratio, m) / n_valid,
    }


def _prepare(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor):
    """Validate inputs; return (old_logp, adv) detached and the float mask."""
    check_token_inputs(logp, old_logp, adv, mask)
    return old_logp.detach(), adv.detach(), float_mask(mask, logp)


def _check_eps_low(eps_low: float | None, upper: float = 1.0) -> None:
    if eps_low is not None:
        require_finite_number("eps_low", eps_low)
        require(0 < eps_low < upper, "eps_low", eps_low, f"None (no lower bound) or 0 < eps_low < {upper}")


def _check_pos(name: str, value: float) -> None:
    require_finite_number(name, value)
    require(value > 0, name, value, f"{name} > 0 (finite)")


def _lower(eps_low: float | None) -> float | None:
    return None if eps_low is None else 1.0 - eps_low


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


# ----------------------------------------------------------------------------- PPO clip


@dataclass(frozen=True, kw_only=True)
class PpoClipConfig(AggConfig):
    """Config of ``ppo_clip``.

    Attributes:
        eps_low: lower clip 1 - eps_low, 0 < eps_low < 1, or ``None`` for no lower bound.
        eps_high: upper clip 1 + eps_high, eps_high > 0 (DAPO clip-higher: 0.28).
        dual_clip_c: dual-clip constant c > 1 capping the loss at -c·A when A < 0, or ``None``
            (off). verl always applies c = 3.
    """

    eps_low: float | None = 0.2
    eps_high: float = 0.2
    dual_clip_c: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_eps_low(self.eps_low)
        _check_pos("eps_high", self.eps_high)
        if self.dual_clip_c is not None:
            require_finite_number("dual_clip_c", self.dual_clip_c)
            require(self.dual_clip_c > 1, "dual_clip_c", self.dual_clip_c, "None or c > 1 (finite)")


def ppo_clip(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, *, config: PpoClipConfig):
    r"""Token-level clipped surrogate (PPO / GRPO / DAPO clip-higher), optional dual-clip.

    .. math::
        L_{it} = \max\big(-A\rho,\; -A\,\mathrm{clip}(\rho, 1-\epsilon_{low}, 1+\epsilon_{high})\big),
        \quad\text{and if } A<0 \text{ with dual-clip: } L_{it} = \min(L_{it}, -cA)

    Gradient weight: ``w = c_it · A·ρ`` except exactly 0 where the clip binds —
    (A > 0 and ρ > 1 + eps_high), (A < 0 and ρ < 1 - eps_low), or with dual-clip (A < 0 and
    ρ > c, where the loss is the constant -cA).

    Args:
        logp, old_logp, adv, mask: ``[B, T]``; old_logp and adv are detached.
        config: ``PpoClipConfig``.

    Returns:
        ``(loss, diagnostics)``; diagnostics: ``ratio_mean``, ``ratio_max``, ``approx_kl_k1``,
        ``approx_kl_k3``, ``clip_frac_low`` (A < 0 and ρ < 1 - eps_low), ``clip_frac_high``
        (A > 0 and ρ > 1 + eps_high), ``dual_clip_frac`` (A < 0 and ρ > c), as fractions of valid
        tokens.

    References:
        Schulman et al. 2017, "Proximal Policy Optimization Algorithms", arXiv:1707.06347, eq. 7.
        Yu et al. 2025, DAPO, arXiv:2503.14476, eq. 8 (clip-higher). Ye et al. 2020, "Mastering
        Complex Control in MOBA Games with Deep RL", arXiv:1912.09729 (dual-clip).

    Notes:
        verl's default ``token-mean`` aggregation is kept; the GRPO paper uses
        ``seq-mean-token-mean``. verl clamps the log-ratio to ±20; this function does not.

    Examples:
        >>> logp = torch.tensor([[-1.0, -2.0, -0.5]], requires_grad=True)
        >>> old = torch.tensor([[-1.0, -2.5, -0.5]])                    # ρ_2 = e^0.5 > 1.2
        >>> loss, d = ppo_clip(logp, old, torch.ones(1, 3), torch.ones(1, 3), config=PpoClipConfig())
        >>> round(loss.item(), 4), round(d["clip_frac_high"].item(), 4)   # -(1 + 1.2 + 1)/3
        (-1.0667, 0.3333)
    """
    old_logp, adv, m = _prepare(logp, old_logp, adv, mask)
    diag = _ratio_diagnostics(logp, old_logp, m)
    ratio = torch.exp(logp - old_logp)  # (B, T)
    clipped = torch.clamp(ratio, min=_lower(config.eps_low), max=1.0 + config.eps_high)
    per_token = torch.maximum(-adv * ratio, -adv * clipped)  # (B, T)
    r = ratio.detach()
    dual = torch.zeros_like(r, dtype=torch.bool)
    if config.dual_clip_c is not None:
        cap = -config.dual_clip_c * adv
        per_token = torch.where(adv < 0, torch.minimum(per_token, cap), per_token)
        dual = (adv < 0) & (r > config.dual_clip_c)
    loss = aggregate_valid(per_token, m, **agg_fields(config))
    low = torch.zeros_like(dual) if config.eps_low is None else (adv < 0) & (r < 1.0 - config.eps_low)
    diag["clip_frac_low"] = _frac(low, m).detach()
    diag["clip_frac_high"] = _frac((adv > 0) & (r > 1.0 + config.eps_high), m).detach()
    diag["dual_clip_frac"] = _frac(dual, m).detach()
    return loss, diag


# ----------------------------------------------------------------------------- GSPO


@dataclass(frozen=True, kw_only=True)
class GspoConfig(AggConfig):
    """Config of ``gspo`` and ``gspo_token``.

    Attributes:
        eps_low: lower clip of the sequence ratio s, 0 < eps_low < 1, or ``None``.
        eps_high: upper clip of s, eps_high > 0. The paper uses (3e-4, 4e-4).
        agg: default ``seq-mean-token-mean`` = the paper's (1/G) Σ_i over sequences.
    """

    agg: str = "seq-mean-token-mean"
    eps_low: float | None = 3e-4
    eps_high: float = 4e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_eps_low(self.eps_low)
        _check_pos("eps_high", self.eps_high)


def _gspo_diagnostics(diag, log_s, s_adv, config, m):
    s = torch.exp(log_s.detach())  # (B, 1)
    low = (torch.zeros_like(s, dtype=torch.bool) if config.eps_low is None
           else (s_adv < 0) & (s < 1.0 - config.eps_low))
    diag["seq_ratio_mean"] = s.mean()
    diag["clip_frac_low"] = _frac(low.expand_as(m), m).detach()
    diag["clip_frac_high"] = _frac(((s_adv > 0) & (s > 1.0 + config.eps_high)).expand_as(m), m).detach()
    return diag


def gspo(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, *, config: GspoConfig):
    r"""GSPO: clipped surrogate on the geometric-mean sequence ratio (sequence form).

    .. math::
        s_i = \exp\!\Big(\tfrac{1}{T_i}\textstyle\sum_t m_{it}(\ell_{it}-\ell^{old}_{it})\Big),\quad
        L_i = \max\big(-\bar A_i s_i,\; -\bar A_i\,\mathrm{clip}(s_i, 1-\epsilon_{low}, 1+\epsilon_{high})\big)

    ``L_i`` is broadcast over the tokens of sequence i and aggregated. Since ∇s_i = s_i·(1/T_i)
    Σ_t ∇ℓ_it, the gradient weight is ``w_it = (Σ_s c_is)·Ā_i·s_i/T_i``, and exactly 0 where the
    clip binds (Ā > 0 and s > 1 + eps_high, or Ā < 0 and s < 1 - eps_low). With the default
    aggregation, w_it = Ā_i s_i / (B T_i).

    Args:
        logp, old_logp, adv, mask: ``[B, T]``; Ā_i is the masked mean of ``adv`` over sequence i.
        config: ``GspoConfig``.

    Returns:
        ``(loss, diagnostics)``; diagnostics: ``ratio_mean``, ``ratio_max``, ``approx_kl_k1``,
        ``approx_kl_k3``, ``seq_ratio_mean`` (mean of s_i), ``clip_frac_low``,
        ``clip_frac_high`` (fractions of valid tokens in clipped sequences).

    References:
        Zheng et al. 2025, "Group Sequence Policy Optimization", arXiv:2507.18071
        (objective J_GSPO and the definition of s_i).

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
    log_s = _seq_mean(logp - old_logp, m)  # (B, 1)
    s = torch.exp(log_s)
    s_adv = _seq_mean(adv, m)  # (B, 1)
    clipped = torch.clamp(s, min=_lower(config.eps_low), max=1.0 + config.eps_high)
    per_seq = torch.maximum(-s_adv * s, -s_adv * clipped)  # (B, 1)
    loss = aggregate_valid(per_seq.expand_as(logp), m, **agg_fields(config))
    return loss, _gspo_diagnostics(diag, log_s, s_adv, config, m)


def gspo_token(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, *, config: GspoConfig):
    r"""GSPO-token: per-token surrogate with value s_i and gradient through token t only.

    .. math::
        \hat s_{it} = \mathrm{sg}[s_i]\cdot\frac{\pi_\theta(o_{it})}{\mathrm{sg}[\pi_\theta(o_{it})]},\quad
        L_{it} = \max\big(-A_{it}\hat s_{it},\; -A_{it}\,\mathrm{clip}(\hat s_{it}, 1-\epsilon_{low}, 1+\epsilon_{high})\big)

    ŝ_it equals s_i in value and ∂ŝ_it/∂ℓ_it = s_i, so ``w_it = c_it·A_it·s_i`` (0 where the clip
    binds). When A_it = A_i for every token, ``gspo_token`` and ``gspo`` have the same value and
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
    s_hat = torch.exp(log_s.detach() + logp - logp.detach())  # (B, T)
    clipped = torch.clamp(s_hat, min=_lower(config.eps_low), max=1.0 + config.eps_high)
    per_token = torch.maximum(-adv * s_hat, -adv * clipped)  # (B, T)
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


# ----------------------------------------------------------------------------- CISPO


@dataclass(frozen=True, kw_only=True)
class CispoConfig(AggConfig):
    """Config of ``cispo``: the IS weight is clipped to [1 - eps_low, 1 + eps_high].

    The three conventions in use are all expressible:

    * MiniMax-M1 (paper): upper cap only -> ``eps_low=None``, ``eps_high`` tuned
      (``CispoConfig.minimax_m1(eps_high)``);
    * verl: 1 ± eps -> ``eps_low=eps_high=0.2`` (``CispoConfig.verl(0.2, 0.2)``);
    * TRL: absolute cap ``epsilon_high`` on the ratio, no lower bound -> ``eps_low=None``,
      ``eps_high=epsilon_high - 1`` (``CispoConfig.trl(5.0)``); TRL's unset default cap 0.2 is
      ``eps_high=-0.8``, which is why eps_high may be negative here.

    Attributes:
        eps_low: 0 < eps_low < 1, or ``None`` (no lower bound).
        eps_high: eps_high > -1 and 1 + eps_high > 1 - eps_low. Default 4.0 (cap 5, as in
            ScaleRL and ms-swift; the M1 paper gives no number).
    """

    eps_low: float | None = None
    eps_high: float = 4.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_cispo_eps(self.eps_low, self.eps_high)

    @classmethod
    def minimax_m1(cls, eps_high: float, **kw) -> "CispoConfig":
        """MiniMax-M1: no lower bound, upper bound 1 + eps_high."""
        return cls(eps_low=None, eps_high=eps_high, **kw)

    @classmethod
    def verl(cls, eps_low: float = 0.2, eps_high: float = 0.2, **kw) -> "CispoConfig":
        """verl ``cispo``: clip(ρ, 1 - clip_ratio_low, 1 + clip_ratio_high)."""
        return cls(eps_low=eps_low, eps_high=eps_high, **kw)

    @classmethod
    def trl(cls, epsilon_high: float, **kw) -> "CispoConfig":
        """TRL ``loss_type="cispo"``: min(ρ, epsilon_high), an absolute cap."""
        return cls(eps_low=None, eps_high=epsilon_high - 1.0, **kw)


def _check_cispo_eps(eps_low: float | None, eps_high: float) -> None:
    _check_eps_low(eps_low)
    require_finite_number("eps_high", eps_high)
    lower = 0.0 if eps_low is None else 1.0 - eps_low
    require(eps_high > -1 and 1.0 + eps_high > lower, "eps_high", eps_high,
            f"eps_high > -1 with 1 + eps_high > {lower} (the lower clip bound)")


def _cispo_weight(ratio: Tensor, eps_low: float | None, eps_high: float) -> Tensor:
    """sg(clip(ρ, 1 - eps_low, 1 + eps_high)) as ``[B, T]``, from the detached ratio ρ."""
    return torch.clamp(ratio, min=_lower(eps_low), max=1.0 + eps_high)


def _cispo_clip_diagnostics(diag, r, weight, config, m):
    low = torch.zeros_like(r, dtype=torch.bool) if config.eps_low is None else r < 1.0 - config.eps_low
    diag["clip_frac_low"] = _frac(low, m).detach()
    diag["clip_frac_high"] = _frac(r > 1.0 + config.eps_high, m).detach()
    diag["is_weight_mean"] = _masked_mean(weight, m).detach()
    return diag


def cispo(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, *, config: CispoConfig):
    r"""CISPO: REINFORCE with a clipped, stop-gradient importance weight.

    .. math::
        L_{it} = -\,\mathrm{sg}\big(\mathrm{clip}(\rho_{it}, 1-\epsilon_{low}, 1+\epsilon_{high})\big)\,A_{it}\,\ell_{it},
        \qquad w_{it} = c_{it}\,\mathrm{clip}(\rho_{it}, 1-\epsilon_{low}, 1+\epsilon_{high})\,A_{it}

    The weight is never zero unless A is: the clip bounds the gradient, it does not remove it.

    Args:
        logp, old_logp, adv, mask: ``[B, T]``; old_logp and adv are detached.
        config: ``CispoConfig`` (see it for the MiniMax-M1 / verl / TRL conventions).

    Returns:
        ``(loss, diagnostics)``; diagnostics: ``ratio_mean``, ``ratio_max``, ``approx_kl_k1``,
        ``approx_kl_k3``, ``clip_frac_low`` (ρ < 1 - eps_low), ``clip_frac_high``
        (ρ > 1 + eps_high), ``is_weight_mean`` (token mean of the clipped weight).

    References:
        MiniMax 2025, "MiniMax-M1: Scaling Test-Time Compute Efficiently with Lightning
        Attention", arXiv:2506.13585, eqs. 3-5.

    Notes:
        The loss value -w·A·ℓ is a surrogate whose gradient, not value, matters. Default
        aggregation ``token-mean`` (verl); the paper normalises per group (``prompt-token-mean``).

    Examples:
        >>> logp = torch.tensor([[-1.0, -2.0, -0.5]], requires_grad=True)
        >>> old = torch.tensor([[-1.0, -3.0, -0.5]])            # ρ_2 = e ≈ 2.718, below the cap 5
        >>> loss, d = cispo(logp, old, torch.ones(1, 3), torch.ones(1, 3), config=CispoConfig())
        >>> round(loss.item(), 4)                               # (1 + 2e + 0.5) / 3
        2.3122
    """
    old_logp, adv, m = _prepare(logp, old_logp, adv, mask)
    diag = _ratio_diagnostics(logp, old_logp, m)
    ratio = torch.exp((logp - old_logp).detach())  # (B, T), detached
    weight = _cispo_weight(ratio, config.eps_low, config.eps_high)  # (B, T)
    loss = aggregate_valid(-weight * adv * logp, m, **agg_fields(config))
    return loss, _cispo_clip_diagnostics(diag, ratio, weight, config, m)


# ----------------------------------------------------------------------------- SAPO


@dataclass(frozen=True, kw_only=True)
class SapoConfig(AggConfig):
    """Config of ``sapo``.

    Attributes:
        tau_pos: gate temperature for A > 0 (> 0); paper and verl default 1.0.
        tau_neg: gate temperature for A <= 0 (> 0); paper and verl default 1.05.
        agg: default ``seq-mean-token-mean`` (verl forces it for SAPO).
    """

    agg: str = "seq-mean-token-mean"
    tau_pos: float = 1.0
    tau_neg: float = 1.05

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_pos("tau_pos", self.tau_pos)
        _check_pos("tau_neg", self.tau_neg)


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
    ratio = torch.exp(logp - old_logp)  # (B, T)
    tau = torch.where(adv > 0, torch.full_like(adv, config.tau_pos), torch.full_like(adv, config.tau_neg))
    gate = torch.sigmoid(tau * (ratio - 1.0))
    loss = aggregate_valid(-(4.0 / tau) * gate * adv, m, **agg_fields(config))
    g = gate.detach()
    diag["gate_weight_mean"] = _masked_mean(4.0 * g * (1.0 - g), m)
    return loss, diag


# ----------------------------------------------------------------------------- SGS-CISPO


P_MODES = ("sequence", "token", "geometric")


@dataclass(frozen=True, kw_only=True)
class SgsCispoConfig(AggConfig):
    """Config of ``sgs_cispo``: CISPO's clip plus the seed's Smooth Gradient Scaling.

    Attributes:
        eps_low, eps_high: CISPO's clip bounds (see ``CispoConfig``).
        k: steepness of the sigmoid, k >= 0 (k = 0 gives S = 1/2 for A > 0).
        tau: confidence threshold, 0 < tau < 1.
        p_mode: what the confidence P is: ``"sequence"`` P = exp(Σ_t ℓ_t) = π_θ(o);
            ``"token"`` P = exp(ℓ_t); ``"geometric"`` P = exp(mean_t ℓ_t).
        stop_grad_s: whether S is inside a stop-gradient. The seed does not say.

    The seed gives no values for k and tau; the defaults (k=10, tau=0.5) are this project's
    choice and every experiment states the values it uses.
    """

    eps_low: float | None = None
    eps_high: float = 4.0
    k: float = 10.0
    tau: float = 0.5
    p_mode: str = "sequence"
    stop_grad_s: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_cispo_eps(self.eps_low, self.eps_high)
        require_finite_number("k", self.k)
        require(self.k >= 0, "k", self.k, "k >= 0 (finite)")
        require_finite_number("tau", self.tau)
        require(0 < self.tau < 1, "tau", self.tau, "0 < tau < 1")
        require_choice("p_mode", self.p_mode, P_MODES)
        require(isinstance(self.stop_grad_s, bool), "stop_grad_s", self.stop_grad_s, "True or False")


def sgs_scale(logp: Tensor, adv: Tensor, mask: Tensor, *, k: float, tau: float, p_mode: str) -> Tensor:
    r"""The seed's Smooth Gradient Scaling factor S as ``[B, T]`` (differentiable in ``logp``).

    .. math::
        S_{it} = 1 \text{ if } A_{it} \le 0, \qquad S_{it} = 1 - \sigma\big(k(P_{it} - \tau)\big) \text{ if } A_{it} > 0

    with P chosen by ``p_mode`` (see ``SgsCispoConfig``). Inputs are assumed validated.

    >>> logp = torch.log(torch.tensor([[0.5, 0.5]]))
    >>> sgs_scale(logp, torch.tensor([[1.0, -1.0]]), torch.ones(1, 2), k=10.0, tau=0.5, p_mode="token")
    tensor([[0.5000, 1.0000]])
    """
    s_pos = 1.0 - torch.sigmoid(k * (_confidence(logp, float_mask(mask, logp), p_mode) - tau))
    return torch.where(adv > 0, s_pos, torch.ones_like(s_pos))


def sgs_cispo(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, *, config: SgsCispoConfig):
    r"""SGS-CISPO, the seed's proposal: CISPO with the Smooth Gradient Scaling factor S.

    .. math::
        L_{it} = -\,S'_{it}\,\mathrm{sg}\big(\mathrm{clip}(\rho_{it})\big)\,A_{it}\,\ell_{it},\qquad
        S' = \mathrm{sg}(S) \text{ if stop\_grad\_s else } S

    With ``stop_grad_s=True`` the gradient weight is ``w_it = c_it·S_it·clip(ρ_it)·A_it``. With
    ``stop_grad_s=False`` it gains the term ``Σ_s c_is·(∂S_is/∂ℓ_it)·clip(ρ_is)·A_is·ℓ_is`` (S
    depends on ℓ through P); ``theory/`` derives its sign.

    Args:
        logp, old_logp, adv, mask: ``[B, T]``; old_logp and adv are detached.
        config: ``SgsCispoConfig``.

    Returns:
        ``(loss, diagnostics)``; the keys of ``cispo`` plus ``sgs_scale_mean`` (token mean of S)
        and ``sgs_prob_mean`` (token mean of the confidence P).

    References:
        The seed essay (``shared/seed``), "SGS-CISPO" loss; claims C12, C13, C15. CISPO: MiniMax
        2025, arXiv:2506.13585, eqs. 3-5.

    Notes:
        Default aggregation ``token-mean``: the seed's 1/Σ|o_i|. With stop_grad_s=False the
        extra term multiplies ℓ (a log-probability), so its size depends on the value of ℓ.

    Examples:
        >>> logp = torch.log(torch.tensor([[0.5, 0.5, 0.5]])).requires_grad_()
        >>> cfg = SgsCispoConfig(p_mode="token")
        >>> loss, d = sgs_cispo(logp, logp.detach(), torch.ones(1, 3), torch.ones(1, 3), config=cfg)
        >>> round(loss.item(), 4), d["sgs_scale_mean"]        # -(0.5)(1)(1)(log 0.5)
        (0.3466, tensor(0.5000))
    """
    old_logp, adv, m = _prepare(logp, old_logp, adv, mask)
    diag = _ratio_diagnostics(logp, old_logp, m)
    ratio = torch.exp((logp - old_logp).detach())  # (B, T), detached
    weight = _cispo_weight(ratio, config.eps_low, config.eps_high)  # (B, T)
    scale = sgs_scale(logp, adv, m, k=config.k, tau=config.tau, p_mode=config.p_mode)  # (B, T)
    if config.stop_grad_s:
        scale = scale.detach()
    loss = aggregate_valid(-scale * weight * adv * logp, m, **agg_fields(config))
    diag = _cispo_clip_diagnostics(diag, ratio, weight, config, m)
    diag["sgs_scale_mean"] = _masked_mean(scale.detach(), m)
    diag["sgs_prob_mean"] = _masked_mean(_confidence(logp.detach(), m, config.p_mode), m)
    return loss, diag


def _confidence(logp: Tensor, m: Tensor, p_mode: str) -> Tensor:
    """The SGS confidence P as ``[B, T]``."""
    if p_mode == "token":
        return torch.exp(logp)
    if p_mode == "sequence":
        return torch.exp((logp * m).sum(-1, keepdim=True)).expand_as(logp)
    return torch.exp(_seq_mean(logp, m)).expand_as(logp)
