"""CISPO and SGS-CISPO: clipped importance weight on a stop-gradient (theory/cispo.py).

The contract of every objective is in ``sims.objectives`` (the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sims._checks import float_mask, require, require_choice, require_finite_number
from sims.aggregation import AggConfig, agg_fields, aggregate_valid
from sims.objectives._common import (
    _check_eps_low,
    _frac,
    _lower,
    _masked_mean,
    _prepare,
    _ratio_diagnostics,
    _seq_mean,
)

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
