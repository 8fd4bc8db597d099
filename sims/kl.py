r"""KL estimators k1, k2, k3 as per-token penalties against a reference policy.

With x_t = ℓ_t - ℓ^ref_t (ℓ the log-prob of the sampled token under the current policy) and
r_t = π_ref/π_θ = e^{-x_t}, the per-token estimators of KL(π_θ ‖ π_ref) are

====  =====================  ==============================  =====================================
name  value k(x)             ∂k/∂ℓ (gradient weight factor)  bias as a gradient (samples from π_θ)
====  =====================  ==============================  =====================================
k1    x                      1                               E[∇k1] = 0: no KL signal
k2    x²/2                   x                               E[∇k2] = ∇KL(π_θ‖π_ref) (one step)
k3    e^{-x} - 1 + x         1 - e^{-x}                      E[∇k3] = ∇KL(π_ref‖π_θ) (forward)
====  =====================  ==============================  =====================================

They are used two ways: **as a loss** (``kl_penalty``: aggregated and added to the policy loss
with a coefficient, GRPO-style, gradient through ℓ) and **in the reward** (``kl_in_reward``:
the summed, detached penalty is subtracted from each sequence's reward before advantages,
RLOO/PPO-RLHF style).

References: Schulman 2020, "Approximating KL Divergence" (blog; k1, k2, k3); verl
``kl_penalty`` (``kl``/``mse``/``low_var_kl``); Shah et al. 2025, "A Comedy of Estimators",
arXiv:2512.21852 (loss vs reward placement).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sims._checks import check_float_tensor, check_token_tensors, float_mask, require, require_choice, require_finite_number
from sims.aggregation import AggConfig, agg_fields, aggregate

__all__ = ["KL_ESTIMATOR_NAMES", "kl_values", "KLConfig", "kl_penalty", "kl_in_reward"]

KL_ESTIMATOR_NAMES = ("k1", "k2", "k3")


def kl_values(logp: Tensor, ref_logp: Tensor, *, estimator: str) -> Tensor:
    """Per-token KL estimate k(x), x = logp - ref_logp, for ``estimator`` in k1, k2, k3.

    >>> x = torch.tensor([[0.0, 1.0]])
    >>> kl_values(x, torch.zeros(1, 2), estimator="k2")
    tensor([[0.0000, 0.5000]])
    """
    require_choice("estimator", estimator, KL_ESTIMATOR_NAMES)
    x = logp - ref_logp
    if estimator == "k1":
        return x
    if estimator == "k2":
        return 0.5 * x * x
    return torch.expm1(-x) + x


@dataclass(frozen=True, kw_only=True)
class KLConfig(AggConfig):
    """Config of ``kl_penalty``.

    Attributes:
        estimator: ``"k1"``, ``"k2"`` or ``"k3"`` (GRPO uses k3, verl's ``low_var_kl``).
        is_correction: multiply each token's estimator by the importance ratio π_θ/π_old, *not*
            detached (DeepSeek-V3.2's unbiased KL; TRL ``use_bias_correction_kl``, OpenRLHF
            ``unbiased_gradient``): the tokens were sampled from π_old, not π_θ, and the gradient of
            ρ·k adds the score-function term ρ·k·∇ℓ. Needs ``old_logp``.
        agg: aggregation, normally the same as the policy loss's.
    """

    estimator: str = "k3"
    is_correction: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        require_choice("estimator", self.estimator, KL_ESTIMATOR_NAMES)
        require_choice("is_correction", self.is_correction, (False, True))


def kl_penalty(logp: Tensor, ref_logp: Tensor, mask: Tensor, *, config: KLConfig, old_logp: Tensor | None = None):
    r"""KL penalty as a loss term: ``aggregate(k(ℓ - ℓ_ref))`` (multiply by β outside).

    .. math::
        L = \mathrm{agg}\big(k(\ell_{it}-\ell^{ref}_{it})\big),\qquad
        w_{it} = -c_{it}\,k'(\ell_{it}-\ell^{ref}_{it})

    (k1' = 1, k2' = x, k3' = 1 - e^{-x}); ``ref_logp`` is detached. With ``is_correction`` (tokens
    sampled from π_old), ``L = agg(ρ·k(x))`` with ρ = e^{ℓ - ℓ_old} not detached, so
    ``w = -c·ρ·(k(x) + k'(x))``; for k3, k3 + k3' = x, so ∇(ρ·k3) = ρ·k1·∇ℓ, whose expectation under
    π_old is ∇KL(π_θ‖π_ref) (DeepSeek-V3.2's unbiased KL; for k2 it is not: slime #1039).

    Args:
        logp, ref_logp, mask: ``[B, T]``.
        config: ``KLConfig``.
        old_logp: ``[B, T]`` log-probs of the sampling policy (detached); required by
            ``is_correction``, else unused.

    Returns:
        ``(loss, diagnostics)``; diagnostics: ``kl_k1``, ``kl_k2``, ``kl_k3`` (token means of
        each estimator's value, detached).

    References:
        Shao et al. 2024, DeepSeekMath, arXiv:2402.03300, eq. 4 (k3 in the GRPO loss).

    Examples:
        >>> logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
        >>> loss, d = kl_penalty(logp, logp.detach(), torch.ones(1, 2), config=KLConfig())
        >>> loss.item(), d["kl_k3"].item()
        (0.0, 0.0)
    """
    check_token_tensors(mask, logp=logp, ref_logp=ref_logp)
    ref_logp = ref_logp.detach()
    m = float_mask(mask, logp)
    values = kl_values(logp, ref_logp, estimator=config.estimator)
    if config.is_correction:
        if old_logp is None:
            raise ValueError("old_logp=None is invalid with is_correction=True; allowed: the sampling policy's "
                             "[B, T] log-probs")
        check_token_tensors(mask, old_logp=old_logp)
        values = torch.exp(logp - old_logp.detach()) * values
    loss = aggregate(values, m, **agg_fields(config))
    diag = {
        f"kl_{name}": ((kl_values(logp.detach(), ref_logp, estimator=name) * m).sum() / m.sum())
        for name in KL_ESTIMATOR_NAMES
    }
    return loss, diag


def kl_in_reward(
    rewards: Tensor, old_logp: Tensor, ref_logp: Tensor, mask: Tensor, *, estimator: str, beta: float
) -> Tensor:
    r"""KL penalty in the reward: r_i - β·Σ_t m_it·k(ℓ^old_it - ℓ^ref_it), detached.

    Args:
        rewards: per-sequence rewards, ``[G, K]`` or ``[B]`` (B = G·K rows of the token tensors).
        old_logp: ``[B, T]`` log-probs of the policy that sampled the tokens.
        ref_logp: ``[B, T]`` reference log-probs.
        mask: ``[B, T]``.
        estimator: ``"k1"`` (verl ``kl``, TRL RLOO), ``"k2"`` or ``"k3"``.
        beta: coefficient β >= 0.

    Returns:
        Shaped rewards with the shape of ``rewards``.

    References:
        Ouyang et al. 2022, InstructGPT, arXiv:2203.02155, eq. 2 (per-token KL in the reward);
        verl ``compute_rewards``; TRL ``RLOOTrainer``.

    Examples:
        >>> old = torch.tensor([[-1.0, -1.0]]); ref = torch.tensor([[-2.0, -1.5]])
        >>> kl_in_reward(torch.tensor([1.0]), old, ref, torch.ones(1, 2), estimator="k1", beta=0.1)
        tensor([0.8500])
    """
    require_choice("estimator", estimator, KL_ESTIMATOR_NAMES)
    require_finite_number("beta", beta)
    require(beta >= 0, "beta", beta, "beta >= 0 (finite)")
    check_float_tensor("rewards", rewards)
    check_token_tensors(mask, old_logp=old_logp, ref_logp=ref_logp)
    if rewards.numel() != old_logp.shape[0]:
        raise ValueError(
            f"rewards has {rewards.numel()} sequences; allowed: {old_logp.shape[0]} (rows of old_logp)"
        )
    m = float_mask(mask, old_logp)
    per_seq = (kl_values(old_logp.detach(), ref_logp.detach(), estimator=estimator) * m).sum(-1)
    return rewards - beta * per_seq.reshape(rewards.shape).to(rewards.dtype)
