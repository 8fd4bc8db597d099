"""PPO's clipped surrogate, with clip-higher and dual-clip (theory/ppo_clip.py).

The contract of every objective is in ``sims.objectives`` (the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sims._checks import check_token_tensors, require, require_finite_number
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

# ----------------------------------------------------------------------------- PPO clip


@dataclass(frozen=True, kw_only=True)
class PpoClipConfig(AggConfig):
    """Config of ``ppo_clip``.

    Attributes:
        eps_low: lower clip 1 - eps_low, 0 < eps_low < 1, or ``None`` for no lower bound.
        eps_high: upper clip 1 + eps_high, eps_high > 0 (DAPO clip-higher: 0.28).
        dual_clip_c: dual-clip constant c > 1 capping the loss at -c·A when A < 0, or ``None``
            (off). verl always applies c = 3.
        opsm_delta: off-policy sequence masking threshold δ >= 0 (DeepSeek-V3.2 OPSM; TRL
            ``off_policy_mask_threshold``), or ``None`` (off): tokens with A < 0 of a sequence
            whose mean_t(ℓ_samp - ℓ) exceeds δ lose their loss (``opsm_mask``).
        log_ratio_min, log_ratio_max: bounds of the clamp ρ = exp(clamp(ℓ - ℓ_old, min, max)),
            or ``None`` (no bound; the default, as the PPO paper). verl and OpenRLHF clamp the
            log-ratio to ±20 "for stability": beyond it ρ is a constant, so the token's weight
            is exactly 0 (``log_ratio_min=-20, log_ratio_max=20`` states that convention).
    """

    eps_low: float | None = 0.2
    eps_high: float = 0.2
    dual_clip_c: float | None = None
    opsm_delta: float | None = None
    log_ratio_min: float | None = None
    log_ratio_max: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_eps_low(self.eps_low)
        _check_pos("eps_high", self.eps_high)
        if self.dual_clip_c is not None:
            require_finite_number("dual_clip_c", self.dual_clip_c)
            require(self.dual_clip_c > 1, "dual_clip_c", self.dual_clip_c, "None or c > 1 (finite)")
        if self.opsm_delta is not None:
            require_finite_number("opsm_delta", self.opsm_delta)
            require(self.opsm_delta >= 0, "opsm_delta", self.opsm_delta, "None or delta >= 0 (finite)")
        check_log_ratio_bounds(self.log_ratio_min, self.log_ratio_max)


def opsm_mask(logp: Tensor, samp_logp: Tensor, adv: Tensor, m: Tensor, delta: float) -> Tensor:
    """DeepSeek-V3.2's off-policy sequence mask (float ``[B, T]``, detached): 1 where A >= 0 or
    the sequence's mean_t m·(ℓ_samp - sg ℓ) <= δ, else 0. ``m`` is the float mask; ``samp_logp``
    the sampler's log-probs (constant)."""
    kl = _seq_mean(samp_logp - logp.detach(), m)  # (B, 1)
    return ((adv >= 0) | (kl <= delta)).to(logp.dtype)


def ppo_token_loss(logp: Tensor, old_logp: Tensor, adv: Tensor, m: Tensor, config: PpoClipConfig,
                   samp_logp: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO's per-token loss ``[B, T]`` (clip, dual-clip, OPSM mask with ``samp_logp`` as ℓ_samp)
    on prepared inputs (old_logp, adv detached, ``m`` float), and its clip diagnostics. The
    building block of ``ppo_clip`` and ``ppo_clip_rollout_is``."""
    ratio = torch.exp(clamp_log_ratio(logp - old_logp, config.log_ratio_min, config.log_ratio_max))  # (B, T)
    clipped = torch.clamp(ratio, min=_lower(config.eps_low), max=1.0 + config.eps_high)
    per_token = torch.maximum(-adv * ratio, -adv * clipped)  # (B, T)
    r = ratio.detach()
    dual = torch.zeros_like(r, dtype=torch.bool)
    if config.dual_clip_c is not None:
        cap = -config.dual_clip_c * adv
        per_token = torch.where(adv < 0, torch.minimum(per_token, cap), per_token)
        dual = (adv < 0) & (r > config.dual_clip_c)
    kept = torch.ones_like(r)
    if config.opsm_delta is not None:
        kept = opsm_mask(logp, samp_logp, adv, m, config.opsm_delta)
        per_token = per_token * kept
    low = torch.zeros_like(dual) if config.eps_low is None else (adv < 0) & (r < 1.0 - config.eps_low)
    diag = {"clip_frac_low": _frac(low, m).detach(),
            "clip_frac_high": _frac((adv > 0) & (r > 1.0 + config.eps_high), m).detach(),
            "dual_clip_frac": _frac(dual, m).detach(),
            "opsm_masked_frac": _frac(kept == 0, m).detach()}
    return per_token, diag


def ppo_clip(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, *, config: PpoClipConfig,
             rollout_logp: Tensor | None = None):
    r"""Token-level clipped surrogate (PPO / GRPO / DAPO clip-higher), optional dual-clip and OPSM.

    .. math::
        L_{it} = M_{it}\max\big(-A\rho,\; -A\,\mathrm{clip}(\rho, 1-\epsilon_{low}, 1+\epsilon_{high})\big),
        \quad\text{and if } A<0 \text{ with dual-clip: } \min(\cdot, -cA)

    with the OPSM mask M_it = 1 unless ``opsm_delta`` is set, A_it < 0 and
    (1/T_i) Σ_t m(ℓ_samp - sg ℓ) > δ, where ℓ_samp = ``rollout_logp`` if given, else ``old_logp``.
    M multiplies the per-token loss and masked tokens still count in the aggregation's
    denominators (as TRL does).

    Gradient weight: ``w = c_it · M_it · A·ρ`` except exactly 0 where the clip binds —
    (A > 0 and ρ > 1 + eps_high), (A < 0 and ρ < 1 - eps_low), or with dual-clip (A < 0 and
    ρ > c, where the loss is the constant -cA) — and, with a log-ratio clamp, where
    ℓ - ℓ_old leaves [log_ratio_min, log_ratio_max].

    Args:
        logp, old_logp, adv, mask: ``[B, T]``; old_logp and adv are detached.
        config: ``PpoClipConfig``.
        rollout_logp: optional ``[B, T]`` sampler (inference-engine) log-probs, detached; read
            only by OPSM, so it must be ``None`` when ``opsm_delta`` is ``None``.

    Returns:
        ``(loss, diagnostics)``; diagnostics: ``ratio_mean``, ``ratio_max``, ``approx_kl_k1``,
        ``approx_kl_k3``, ``clip_frac_low`` (A < 0 and ρ < 1 - eps_low), ``clip_frac_high``
        (A > 0 and ρ > 1 + eps_high), ``dual_clip_frac`` (A < 0 and ρ > c),
        ``opsm_masked_frac`` (M = 0), as fractions of valid tokens.

    References:
        Schulman et al. 2017, "Proximal Policy Optimization Algorithms", arXiv:1707.06347, eq. 7.
        Yu et al. 2025, DAPO, arXiv:2503.14476, eq. 8 (clip-higher). Ye et al. 2020, "Mastering
        Complex Control in MOBA Games with Deep RL", arXiv:1912.09729 (dual-clip). OPSM:
        DeepSeek-AI 2025, DeepSeek-V3.2, arXiv:2512.02556 (off-policy sequence masking, M_{i,t});
        TRL ``GRPOConfig.off_policy_mask_threshold`` (grpo_trainer.py ``_compute_loss``).

    Notes:
        verl's default ``token-mean`` aggregation is kept; the GRPO paper uses
        ``seq-mean-token-mean``. verl clamps the log-ratio to ±20; this function does only when
        ``log_ratio_min`` / ``log_ratio_max`` say so.
        OPSM is a field here, not a separate objective, because TRL applies it to the GRPO loss
        as a config option; the sign test uses the token's A_it (DeepSeek-V3.2's M_{i,t}),
        which is TRL's per-sequence test when A is per sequence. With rollout correction,
        ``ppo_clip_rollout_is`` applies the same mask with ℓ_samp = its ``rollout_logp``.

    Examples:
        >>> logp = torch.tensor([[-1.0, -2.0, -0.5]], requires_grad=True)
        >>> old = torch.tensor([[-1.0, -2.5, -0.5]])                    # ρ_2 = e^0.5 > 1.2
        >>> loss, d = ppo_clip(logp, old, torch.ones(1, 3), torch.ones(1, 3), config=PpoClipConfig())
        >>> round(loss.item(), 4), round(d["clip_frac_high"].item(), 4)   # -(1 + 1.2 + 1)/3
        (-1.0667, 0.3333)
    """
    old_logp, adv, m = _prepare(logp, old_logp, adv, mask)
    if rollout_logp is not None:
        require(config.opsm_delta is not None, "rollout_logp", "a tensor",
                "None when opsm_delta is None (only OPSM reads the sampler's log-probs)")
        check_token_tensors(mask, logp=logp, rollout_logp=rollout_logp)
        rollout_logp = rollout_logp.detach()
    diag = _ratio_diagnostics(logp, old_logp, m)
    samp = old_logp if rollout_logp is None else rollout_logp
    per_token, clip_diag = ppo_token_loss(logp, old_logp, adv, m, config, samp)
    loss = aggregate_valid(per_token, m, **agg_fields(config))
    diag.update(clip_diag)
    return loss, diag
