"""PPO's clipped surrogate, with clip-higher and dual-clip (theory/ppo_clip.py).

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
