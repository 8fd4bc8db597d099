r"""Rollout correction: the training/rollout mismatch weight π_old/π_roll, and PPO composed with it
(theory/rollout.py).

Three policies: π_θ (``logp``, trained), π_old (``old_logp``, the trainer's recomputation of the
behaviour policy) and π_roll (``rollout_logp``, what the inference engine reported when it
sampled). Objectives here take ``rollout_logp`` as a REQUIRED keyword-only ``[B, T]`` constant:
``loss_fn(logp, old_logp, adv, mask, *, config, rollout_logp)`` (registry ``inputs =
("rollout_logp",)``). The contract of every objective is in ``sims.objectives``.

verl's *bypass* mode (two policies: old := roll) needs no objective of its own: it is
``reinforce`` (``is_level``/``is_mode``/``is_cap``: L = -sg(TIS(π_θ/π_roll))·A·ℓ) or ``ppo_clip``
called with the rollout log-probs as ``old_logp`` (verl ``bypass_mode`` with ``loss_type``
``reinforce`` / ``ppo_clip``, shared/research/loss_zoo.md §1.2, §1.6).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from sims._checks import check_token_tensors, float_mask, require, require_choice, require_finite_number
from sims.aggregation import agg_fields, aggregate_valid
from sims.objectives._common import _check_pos, _frac, _masked_mean, _prepare, _ratio_diagnostics
from sims.objectives.ppo_clip import PpoClipConfig, ppo_token_loss

ROLLOUT_LEVELS = ("token", "sequence")
ROLLOUT_MODES = ("truncate", "mask", "band")


def check_rollout_params(level: str, mode: str, lo: float | None, hi: float, prefix: str = "") -> None:
    """Validate the rollout-weight parameters (``ValueError`` naming ``prefix + field``)."""
    require_choice(prefix + "level", level, ROLLOUT_LEVELS)
    require_choice(prefix + "mode", mode, ROLLOUT_MODES)
    _check_pos(prefix + "hi", hi)
    if mode == "band":
        require(lo is not None, prefix + "lo", lo, f"0 < lo < hi={hi} when mode='band'")
    if lo is not None:
        require(mode != "mask", prefix + "lo", lo, "None when mode='mask' (use mode='band' for [lo, hi])")
        require_finite_number(prefix + "lo", lo)
        require(0 < lo < hi, prefix + "lo", lo, f"None or 0 < lo < hi={hi}")


def rollout_is_weight(old_logp: Tensor, rollout_logp: Tensor, mask: Tensor, *, level: str = "token",
                      mode: str = "truncate", lo: float | None = None, hi: float = 2.0) -> Tensor:
    r"""The detached rollout-correction weight ``[B, T]`` built from w = π_old/π_roll.

    .. math::
        \log w_{it} = \ell^{old}_{it} - \ell^{roll}_{it}\ (\text{token}),\qquad
        \log w_{i} = \textstyle\sum_t m_{it}(\ell^{old}_{it} - \ell^{roll}_{it})\ (\text{sequence, broadcast})

    then ``truncate``: clip(w, lo, hi) (TIS, min(w, hi) when lo is None); ``mask``: w·1[w <= hi]
    (MIS); ``band``: w·1[lo <= w <= hi] (IcePop's two-sided band). Computed in log space, so a
    product ratio far beyond the float range gives its truncated or masked value, never inf.
    0 on padding.

    Args:
        old_logp, rollout_logp, mask: ``[B, T]``.
        level: ``"token"`` or ``"sequence"`` (the product ratio over the valid tokens).
        mode: ``"truncate"``, ``"mask"`` or ``"band"``.
        lo: lower bound (> 0): optional for ``truncate``, required for ``band``, ``None`` for
            ``mask``. hi: upper bound (> lo); verl's ``rollout_is_threshold`` default is 2.0.

    References:
        TIS: Yao et al. 2025, "Your Efficient RL Framework Secretly Brings You Off-Policy RL
        Training". MIS and sequence level: Liu, Li et al. 2025, "When Speed Kills Stability".
        IcePop: Ling Team 2025, Ring-1T, arXiv:2510.18855. verl ``rollout_corr_helper.py``
        (``rollout_is`` token/sequence, threshold, ``"lo_hi"``); TRL ``vllm_importance_sampling_mode``
        (``token_truncate``, ``token_mask``, ``sequence_truncate``, ``sequence_mask``).

    Examples:
        >>> old = torch.log(torch.tensor([[0.5, 0.9, 0.3]]))
        >>> roll = torch.log(torch.tensor([[0.5, 0.3, 0.6]]))           # w = [1, 3, 0.5]
        >>> rollout_is_weight(old, roll, torch.ones(1, 3))             # min(w, 2)
        tensor([[1.0000, 2.0000, 0.5000]])
        >>> rollout_is_weight(old, roll, torch.ones(1, 3), mode="band", lo=0.8, hi=2.0)
        tensor([[1., 0., 0.]])
    """
    check_rollout_params(level, mode, lo, hi)
    check_token_tensors(mask, old_logp=old_logp, rollout_logp=rollout_logp)
    return _rollout_weight(old_logp, rollout_logp, float_mask(mask, old_logp), level, mode, lo, hi)[0]


def _rollout_weight(old_logp, rollout_logp, m, level, mode, lo, hi) -> tuple[Tensor, Tensor]:
    """(ω [B, T], altered [B, T] bool: truncated, masked or outside the band) on validated inputs."""
    log_w = ((old_logp - rollout_logp) * m).detach()  # (B, T)
    if level == "sequence":
        log_w = log_w.sum(-1, keepdim=True).expand_as(log_w)
    log_hi = math.log(hi)
    log_lo = None if lo is None else math.log(lo)
    altered = (log_w > log_hi) if log_lo is None else (log_w > log_hi) | (log_w < log_lo)
    bounded = torch.exp(torch.clamp(log_w, min=log_lo, max=log_hi))  # exact inside [lo, hi]
    weight = bounded if mode == "truncate" else torch.where(altered, torch.zeros_like(log_w), bounded)
    return weight * m, altered


# ----------------------------------------------------------------------------- PPO x rollout IS


@dataclass(frozen=True, kw_only=True)
class PpoClipRolloutIsConfig(PpoClipConfig):
    """Config of ``ppo_clip_rollout_is``: the ``PpoClipConfig`` fields plus the rollout weight's.

    Attributes:
        rollout_is_level: ``"token"`` or ``"sequence"`` (verl ``rollout_is``).
        rollout_is_mode: ``"truncate"`` (TIS), ``"mask"`` (MIS) or ``"band"`` (IcePop).
        rollout_is_lo: lower bound (``rollout_is_weight``'s ``lo``), default ``None``.
        rollout_is_hi: upper bound, default 2.0 (verl ``rollout_is_threshold``).
        opsm_delta: as in ``PpoClipConfig``; here ℓ_samp = ``rollout_logp``.
    """

    rollout_is_level: str = "token"
    rollout_is_mode: str = "truncate"
    rollout_is_lo: float | None = None
    rollout_is_hi: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_rollout_params(self.rollout_is_level, self.rollout_is_mode, self.rollout_is_lo,
                             self.rollout_is_hi, prefix="rollout_is_")


def ppo_clip_rollout_is(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, *,
                        config: PpoClipRolloutIsConfig, rollout_logp: Tensor):
    r"""PPO clip (ratio π_θ/π_old) times the rollout-correction weight of π_old/π_roll (decoupled).

    .. math::
        L_{it} = \omega_{it}\,M_{it}\max\big(-A\rho,\; -A\,\mathrm{clip}(\rho, 1-\epsilon_{low}, 1+\epsilon_{high})\big)
        \ (\text{dual-clipped if } c \text{ is set}),\qquad \omega = \texttt{rollout\_is\_weight}(\ell^{old}, \ell^{roll})

    ω is detached and multiplies the per-token loss *after* clipping, as verl applies
    ``rollout_is_weights``; the OPSM mask M (if ``opsm_delta``) uses ℓ_samp = ℓ^roll, as TRL
    does when sampler log-probs are available. Gradient weight: ``w = c_it·ω_it·M_it·A·ρ``, 0
    where the clip binds (as ``ppo_clip``) and where ω = 0 (masked / outside the band).

    Args:
        logp, old_logp, adv, mask: ``[B, T]``; old_logp and adv are detached.
        config: ``PpoClipRolloutIsConfig``.
        rollout_logp: ``[B, T]`` the rollout engine's log-probs (required, detached).

    Returns:
        ``(loss, diagnostics)``: ``ppo_clip``'s keys plus ``rollout_is_weight_mean`` (token
        mean of ω) and ``rollout_is_clip_frac`` (valid tokens whose ω differs from π_old/π_roll:
        truncated, masked or outside the band).

    References:
        verl ``core_algos.py`` (every policy loss multiplies by ``rollout_is_weights`` after
        clipping) with ``rollout_corr_helper.py`` decoupled mode (shared/research/loss_zoo.md
        §1.2, §1.6); TRL ``grpo_trainer.py`` (OPSM mask, then the vLLM IS ratio, §2.5). PPO:
        Schulman et al. 2017, arXiv:1707.06347, eq. 7.

    Examples:
        >>> logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
        >>> roll = torch.tensor([[-1.0, -3.0]])                        # ω = [1, min(e, 2) = 2]
        >>> loss, d = ppo_clip_rollout_is(logp, logp.detach(), torch.ones(1, 2), torch.ones(1, 2),
        ...                               config=PpoClipRolloutIsConfig(), rollout_logp=roll)
        >>> loss, d["rollout_is_weight_mean"]
        (tensor(-1.5000, grad_fn=<DivBackward0>), tensor(1.5000))
    """
    old_logp, adv, m = _prepare(logp, old_logp, adv, mask)
    check_token_tensors(mask, logp=logp, rollout_logp=rollout_logp)
    rollout_logp = rollout_logp.detach()
    diag = _ratio_diagnostics(logp, old_logp, m)
    per_token, clip_diag = ppo_token_loss(logp, old_logp, adv, m, config, rollout_logp)
    omega, altered = _rollout_weight(old_logp, rollout_logp, m, config.rollout_is_level,
                                     config.rollout_is_mode, config.rollout_is_lo, config.rollout_is_hi)
    loss = aggregate_valid(per_token * omega, m, **agg_fields(config))
    diag.update(clip_diag)
    diag["rollout_is_weight_mean"] = _masked_mean(omega, m).detach()
    diag["rollout_is_clip_frac"] = _frac(altered, m).detach()
    return loss, diag
