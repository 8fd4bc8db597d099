"""KL-Cov and Clip-Cov: token selection by the batch covariance of advantage and log-prob.

Both are *batch-coupled*: which tokens are selected depends on the means of A and ℓ over all
valid tokens of the (micro-)batch, so a token's loss depends on the other sequences and there
is no per-sequence sympy twin (the registry marks them ``batch_coupled``; their tests use
hand-derived reference values). The contract of every objective is in ``sims.objectives``.

The covariance term of valid token (i, t), with means over the valid tokens of the batch:

    C_it = (A_it - mean A)·(ℓ_it - mean sg(ℓ))

(Cui et al. 2025, "The Entropy Mechanism of Reinforcement Learning for Reasoning Language
Models", arXiv:2505.22617, §4: the centred cross-product whose batch mean is Cov(ℓ, A)).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sims._checks import require, require_choice, require_finite_number
from sims.aggregation import AggConfig, agg_fields, aggregate_valid
from sims.objectives._common import (
    _check_eps_low,
    _check_pos,
    _frac,
    _lower,
    _masked_mean,
    _prepare,
    _ratio_diagnostics,
)

SELECTIONS = ("random", "all_candidates")


def _check_ratio(name: str, value: float) -> None:
    require_finite_number(name, value)
    require(0 < value <= 1, name, value, "0 < ratio <= 1 (the fraction of valid tokens selected)")


def token_covariance(logp: Tensor, adv: Tensor, m: Tensor) -> Tensor:
    """C = (A - mean A)·(ℓ - mean sg ℓ) ``[B, T]`` (detached), means over valid tokens (``m``)."""
    lp = logp.detach()
    return (adv - _masked_mean(adv, m)) * (lp - _masked_mean(lp, m))


def _n_selected(ratio: float, m: Tensor) -> int:
    """k = max(1, ⌊ratio·N⌋) with N the number of valid tokens (verl's count)."""
    return max(1, int(ratio * int(m.sum().item())))


# ----------------------------------------------------------------------------- KL-Cov


@dataclass(frozen=True, kw_only=True)
class KlCovConfig(AggConfig):
    """Config of ``kl_cov``.

    Attributes:
        kl_cov_ratio: fraction ρ (0 < ρ <= 1) of valid tokens penalised: k = max(1, ⌊ρ·N⌋).
            verl ``policy_loss.kl_cov_ratio`` = 2e-4.
        ppo_kl_coef: coefficient κ (> 0) of the |ℓ - ℓ_old| penalty. verl's yaml sets 0.1 (its
            code falls back to 1.0 when the key is unset).
        agg: verl's default ``token-mean``.
    """

    kl_cov_ratio: float = 2e-4
    ppo_kl_coef: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_ratio("kl_cov_ratio", self.kl_cov_ratio)
        _check_pos("ppo_kl_coef", self.ppo_kl_coef)


def top_covariance_tokens(cov: Tensor, m: Tensor, k: int) -> Tensor:
    """Bool ``[B, T]``: the k valid tokens of largest C. Ties are broken by position: the
    earlier token in row-major (i, t) order wins (a stable descending sort), so the selection
    is deterministic; verl's ``torch.topk`` leaves the order of ties unspecified."""
    flat = torch.where(m > 0, cov, torch.full_like(cov, -torch.inf)).reshape(-1)
    order = torch.sort(flat, descending=True, stable=True).indices[:k]
    chosen = torch.zeros_like(flat, dtype=torch.bool)
    chosen[order] = True
    return chosen.reshape(cov.shape) & (m > 0)


def kl_cov(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, *, config: KlCovConfig):
    r"""KL-Cov: unclipped policy gradient, with an |ℓ - ℓ_old| penalty on the top-k covariance tokens.

    .. math::
        L_{it} = -A_{it}\rho_{it} + \kappa\,\lvert\ell_{it} - \ell^{old}_{it}\rvert\,S_{it},\qquad
        S = \text{the } k = \max(1, \lfloor \rho_{kl} N\rfloor) \text{ valid tokens of largest } C

    (C as in the module docstring; ties to the earlier token, ``top_covariance_tokens``). No PPO
    clip. Gradient weight: ``w = c_it·(A·ρ - κ·sign(ℓ - ℓ_old)·S)`` (sign(0) = 0). Batch-coupled.
    By design the selected tokens' penalty weight does not depend on A, so two ``pgverify
    check`` properties do not apply: **zero advantage, zero weight** and **advantage scale
    equivariance**; nor does **group locality** (C uses the batch means), nor **batch-permutation
    invariance** when C has ties (broken by position; with two valid tokens C_1 = C_2 always).
    On-policy the penalty has weight 0, so the reduction to REINFORCE holds.

    Args:
        logp, old_logp, adv, mask: ``[B, T]``; old_logp and adv are detached.
        config: ``KlCovConfig``.

    Returns:
        ``(loss, diagnostics)``; diagnostics: ``ratio_mean``, ``ratio_max``, ``approx_kl_k1``,
        ``approx_kl_k3``, ``cov_selected_frac`` (selected fraction of valid tokens),
        ``abs_kl_mean`` (token mean of |ℓ - ℓ_old|, verl's ``ppo_kl`` metric here).

    References:
        Cui et al. 2025, arXiv:2505.22617, §4 (KL-Cov). verl ``core_algos.py``
        ``compute_policy_loss_kl_cov`` (loss mode ``kl_cov``; shared/research/loss_zoo.md §1.2).

    Notes:
        k needs the valid-token count on the host (one sync per call). verl computes C on the
        CPU from the detached values; the selection is the same.

    Examples:
        >>> logp = torch.tensor([[-1.0, -2.0], [-0.5, -3.0]], requires_grad=True)
        >>> old = logp.detach() - 0.1
        >>> adv = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])   # C = [[0.625, -0.375], [-1.125, 1.375]]
        >>> loss, d = kl_cov(logp, old, adv, torch.ones(2, 2), config=KlCovConfig())
        >>> d["cov_selected_frac"]                            # k = 1: token (1, 1)
        tensor(0.2500)
    """
    old_logp, adv, m = _prepare(logp, old_logp, adv, mask)
    diag = _ratio_diagnostics(logp, old_logp, m)
    ratio = torch.exp(logp - old_logp)
    abs_kl = torch.abs(logp - old_logp)
    chosen = top_covariance_tokens(token_covariance(logp, adv, m), m, _n_selected(config.kl_cov_ratio, m))
    per_token = -adv * ratio + config.ppo_kl_coef * abs_kl * chosen.to(logp.dtype)  # (B, T)
    loss = aggregate_valid(per_token, m, **agg_fields(config))
    diag["cov_selected_frac"] = _frac(chosen, m).detach()
    diag["abs_kl_mean"] = _masked_mean(abs_kl, m).detach()
    return loss, diag


# ----------------------------------------------------------------------------- Clip-Cov


@dataclass(frozen=True, kw_only=True)
class ClipCovConfig(AggConfig):
    """Config of ``clip_cov``.

    Attributes:
        eps_low: PPO lower clip 1 - eps_low, 0 < eps_low < 1, or ``None``; verl 0.2.
        eps_high: PPO upper clip 1 + eps_high (> 0); verl 0.2.
        clip_cov_ratio: at most k = max(1, ⌊ρ·N⌋) tokens are detached (0 < ρ <= 1); verl
            ``policy_loss.clip_cov_ratio`` = 2e-4.
        clip_cov_lb, clip_cov_ub: candidates have lb < C < ub (lb < ub, finite); verl 1 and 5.
        selection: ``"random"`` (verl: k candidates drawn with ``torch.randperm`` on torch's
            *global* RNG, so the result depends on the global seed; seed it, e.g.
            ``torch.manual_seed(s)``, before the call to reproduce a verl-style implementation's
            draw) or ``"all_candidates"`` (every candidate, deterministic; the same as
            ``"random"`` whenever there are at most k candidates).
        agg: verl's default ``token-mean``.
    """

    eps_low: float | None = 0.2
    eps_high: float = 0.2
    clip_cov_ratio: float = 2e-4
    clip_cov_lb: float = 1.0
    clip_cov_ub: float = 5.0
    selection: str = "random"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_eps_low(self.eps_low)
        _check_pos("eps_high", self.eps_high)
        _check_ratio("clip_cov_ratio", self.clip_cov_ratio)
        require_finite_number("clip_cov_lb", self.clip_cov_lb)
        require_finite_number("clip_cov_ub", self.clip_cov_ub)
        require(self.clip_cov_lb < self.clip_cov_ub, "clip_cov_lb", self.clip_cov_lb,
                f"clip_cov_lb < clip_cov_ub={self.clip_cov_ub}")
        require_choice("selection", self.selection, SELECTIONS)


def clip_cov_candidates(cov: Tensor, unclipped: Tensor, m: Tensor, k: int, selection: str) -> Tensor:
    """Bool ``[B, T]`` of the detached tokens: among valid, not PPO-clipped tokens with
    lb < C < ub (``cov`` already tested: pass the window test as ``cov``), all of them
    (``"all_candidates"``) or k drawn as verl does: ``idx = nonzero`` (row-major (i, t) order),
    ``perm = torch.randperm(len(idx))`` on the global CPU generator (drawn only when there is a
    candidate), keep ``idx[perm[:k]]``."""
    cand = cov & unclipped & (m > 0)
    if selection == "all_candidates":
        return cand
    idx = torch.nonzero(cand)
    chosen = torch.zeros_like(cand)
    if len(idx) > 0:
        idx = idx[torch.randperm(len(idx))[:k]]
        chosen[idx[:, 0], idx[:, 1]] = True
    return chosen


def clip_cov(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, *, config: ClipCovConfig):
    r"""Clip-Cov: PPO clip, with the gradient of up to k moderate-covariance tokens detached.

    .. math::
        L_{it} = \max\big(-A\rho,\; -A\,\mathrm{clip}(\rho, 1-\epsilon_{low}, 1+\epsilon_{high})\big)\,(1 - S_{it})

    S: up to k = max(1, ⌊ρ_cc·N⌋) tokens among the candidates — valid, not already clipped
    (the clipped loss strictly larger), lb < C < ub — chosen per ``selection``
    (``clip_cov_candidates``; ``"random"`` reads torch's global RNG exactly as verl's
    ``torch.randperm``). The selected tokens' loss is multiplied by 0 (verl ``corr``), so
    ``w = c_it·A·ρ·1[not clipped]·(1 - S)``. Batch-coupled; by design **group locality**,
    **advantage scale equivariance** (the window lb < C < ub is not scale-invariant) and the
    **on-policy reduction to REINFORCE** (a selected token has w = 0) do not apply, nor, with
    ``selection="random"``, **batch-permutation invariance** (the draw follows row order).

    Args:
        logp, old_logp, adv, mask: ``[B, T]``; old_logp and adv are detached.
        config: ``ClipCovConfig``.

    Returns:
        ``(loss, diagnostics)``; diagnostics: ``ratio_mean``, ``ratio_max``, ``approx_kl_k1``,
        ``approx_kl_k3``, ``cov_selected_frac`` (fraction of valid tokens detached),
        ``clip_frac`` (fraction PPO-clipped).

    References:
        Cui et al. 2025, arXiv:2505.22617, §4 (Clip-Cov). verl ``core_algos.py``
        ``compute_policy_loss_clip_cov`` (loss mode ``clip_cov``; shared/research/loss_zoo.md
        §1.2). No dual-clip and no log-ratio clamp, as there.

    Examples:
        >>> logp = torch.tensor([[-1.0, -4.0], [-0.5, -3.0]], requires_grad=True)
        >>> adv = torch.tensor([[2.0, 2.0], [-2.0, -2.0]])   # C = [[2.25, -3.75], [-3.25, 1.75]]
        >>> loss, d = clip_cov(logp, logp.detach(), adv, torch.ones(2, 2),
        ...                    config=ClipCovConfig(clip_cov_ratio=1.0, selection="all_candidates"))
        >>> d["cov_selected_frac"]                            # (0, 0) and (1, 1)
        tensor(0.5000)
    """
    old_logp, adv, m = _prepare(logp, old_logp, adv, mask)
    diag = _ratio_diagnostics(logp, old_logp, m)
    ratio = torch.exp(logp - old_logp)
    loss1 = -adv * ratio
    loss2 = -adv * torch.clamp(ratio, min=_lower(config.eps_low), max=1.0 + config.eps_high)
    clipped = (loss2 > loss1).detach()
    cov = token_covariance(logp, adv, m)
    window = (cov > config.clip_cov_lb) & (cov < config.clip_cov_ub)
    chosen = clip_cov_candidates(window, ~clipped, m, _n_selected(config.clip_cov_ratio, m), config.selection)
    per_token = torch.maximum(loss1, loss2) * (~chosen).to(logp.dtype)  # (B, T)
    loss = aggregate_valid(per_token, m, **agg_fields(config))
    diag["cov_selected_frac"] = _frac(chosen, m).detach()
    diag["clip_frac"] = _frac(clipped, m).detach()
    return loss, diag
