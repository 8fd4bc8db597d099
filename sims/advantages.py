r"""Advantage estimators: pure functions of per-sequence rewards with group structure.

Every estimator has the signature ``fn(rewards, *, config) -> adv`` with ``rewards`` and ``adv``
of shape ``[G, K]`` (G prompts, K samples each; row g is one group). ``broadcast_to_tokens``
turns ``[G, K]`` advantages into the ``[B, T]`` tensor the objectives take (B = G·K, row-major).

Notation: r_gk the reward of sample k of prompt g, μ_g = mean_k r_gk, σ_g the group std
(population: divide by K; sample: divide by K - 1), ε the small constant of the config.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sims._checks import check_float_tensor, check_mask, require, require_choice, require_finite_number

__all__ = [
    "NoConfig", "StdConfig", "ThresholdConfig",
    "raw_advantages", "group_mean_advantages", "grpo_advantages", "rloo_advantages",
    "batch_std_advantages", "nsr_advantages", "psr_advantages", "broadcast_to_tokens",
]


@dataclass(frozen=True)
class NoConfig:
    """Config of an estimator with no settings."""


@dataclass(frozen=True, kw_only=True)
class StdConfig:
    """How a standard deviation is computed and where its epsilon goes.

    Attributes:
        std: ``"sample"`` (divide by n - 1; verl and TRL) or ``"population"`` (divide by n).
        eps: the small constant ε >= 0 (verl 1e-6, TRL 1e-4). With ε = 0 a zero std is an error.
        eps_placement: ``"std"`` -> (r - μ)/(σ + ε) (verl, TRL); ``"var"`` -> (r - μ)/sqrt(σ² + ε).
    """

    std: str = "sample"
    eps: float = 1e-6
    eps_placement: str = "std"

    def __post_init__(self) -> None:
        require_choice("std", self.std, ("sample", "population"))
        require_finite_number("eps", self.eps)
        require(self.eps >= 0, "eps", self.eps, "eps >= 0 (finite)")
        require_choice("eps_placement", self.eps_placement, ("std", "var"))


@dataclass(frozen=True, kw_only=True)
class ThresholdConfig:
    """Which rewards count as correct, for NSR / PSR.

    Attributes:
        threshold: a sample is correct iff its reward > threshold. The default 0.5 separates
            both {0, 1} and {-1, +1} rewards.
    """

    threshold: float = 0.5

    def __post_init__(self) -> None:
        require_finite_number("threshold", self.threshold)


def _check_rewards(rewards: Tensor, min_k: int = 1) -> None:
    check_float_tensor("rewards", rewards)
    if rewards.dim() != 2 or rewards.shape[0] < 1:
        raise ValueError(f"rewards has shape {tuple(rewards.shape)}; allowed: 2-D [G, K] with G >= 1")
    require(rewards.shape[1] >= min_k, "rewards.shape[1] (K)", rewards.shape[1],
            f"K >= {min_k} samples per group for this estimator")


def _std(x: Tensor, *, config: StdConfig, dim: int | None) -> Tensor:
    """σ + ε or sqrt(σ² + ε) over ``dim`` (all elements if None), keeping dims."""
    correction = 1 if config.std == "sample" else 0
    if dim is None:
        var = x.reshape(-1).var(correction=correction).reshape(1, 1)
    else:
        var = x.var(dim=dim, correction=correction, keepdim=True)
    if config.eps_placement == "std":
        denom = var.sqrt() + config.eps
    else:
        denom = (var + config.eps).sqrt()
    if not bool((denom > 0).all()):
        bad = (denom <= 0).nonzero()[0, 0].item()
        raise ValueError(
            f"eps={config.eps!r} is invalid here: group {bad} has zero reward std, so the "
            "advantage would be 0/0; allowed: eps > 0, or drop equal-reward groups first "
            "(dynamic sampling)"
        )
    return denom


def raw_advantages(rewards: Tensor, *, config: NoConfig) -> Tensor:
    r"""Raw reward as advantage: A_gk = r_gk (REINFORCE without baseline).

    References: Williams 1992, "Simple statistical gradient-following algorithms", Machine Learning 8.

    >>> raw_advantages(torch.tensor([[1.0, 0.0]]), config=NoConfig())
    tensor([[1., 0.]])
    """
    _check_rewards(rewards)
    return rewards.clone()


def group_mean_advantages(rewards: Tensor, *, config: NoConfig) -> Tensor:
    r"""Group-mean baseline: A_gk = r_gk - μ_g (Dr.GRPO's mean-only advantage).

    In expectation the gradient is (K-1)/K times the true one: the mean includes the sample.

    References: Liu et al. 2025, "Understanding R1-Zero-Like Training", arXiv:2503.20783 (Dr. GRPO).

    >>> group_mean_advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0]]), config=NoConfig())
    tensor([[ 0.7500, -0.2500, -0.2500, -0.2500]])
    """
    _check_rewards(rewards)
    return rewards - rewards.mean(-1, keepdim=True)


def grpo_advantages(rewards: Tensor, *, config: StdConfig) -> Tensor:
    r"""GRPO z-score: A_gk = (r_gk - μ_g)/(σ_g + ε) (or /sqrt(σ_g² + ε), per ``eps_placement``).

    References: Shao et al. 2024, DeepSeekMath, arXiv:2402.03300, §4.1.2 (outcome supervision).

    >>> grpo_advantages(torch.tensor([[1.0, 0.0]]), config=StdConfig(std="population", eps=0.0))
    tensor([[ 1., -1.]])
    """
    _check_rewards(rewards, min_k=2 if config.std == "sample" else 1)
    centred = rewards - rewards.mean(-1, keepdim=True)
    return centred / _std(rewards, config=config, dim=-1)


def rloo_advantages(rewards: Tensor, *, config: NoConfig) -> Tensor:
    r"""RLOO leave-one-out: A_gk = r_gk - mean_{j≠k} r_gj = K/(K-1)·(r_gk - μ_g). Needs K >= 2.

    References: Ahmadian et al. 2024, "Back to Basics", arXiv:2402.14740 (RLOO estimator);
    Kool et al. 2019, "Buy 4 REINFORCE Samples, Get a Baseline for Free!".

    >>> rloo_advantages(torch.tensor([[1.0, 0.0, 0.0]]), config=NoConfig())
    tensor([[ 1.0000, -0.5000, -0.5000]])
    """
    _check_rewards(rewards, min_k=2)
    k = rewards.shape[1]
    return (rewards - rewards.mean(-1, keepdim=True)) * (k / (k - 1))


def batch_std_advantages(rewards: Tensor, *, config: StdConfig) -> Tensor:
    r"""Group mean, batch std (LitePPO; TRL ``scale_rewards="batch"``): (r_gk - μ_g)/(σ_batch + ε).

    σ_batch is the std of all G·K rewards.

    References: Liu et al. 2025, "Part I: Tricks or Traps? A Deep Dive into RL for LLM
    Reasoning" (LitePPO), arXiv:2508.08221; Hu et al. 2025, REINFORCE++, arXiv:2501.03262.

    >>> batch_std_advantages(torch.tensor([[1.0, 0.0], [1.0, 1.0]]),
    ...                      config=StdConfig(std="population", eps=0.0))
    tensor([[ 1.1547, -1.1547],
            [ 0.0000,  0.0000]])
    """
    _check_rewards(rewards)
    require(config.std == "population" or rewards.numel() >= 2, "std", config.std,
            "'population' when the batch has a single reward")
    centred = rewards - rewards.mean(-1, keepdim=True)
    return centred / _std(rewards, config=config, dim=None)


def nsr_advantages(rewards: Tensor, *, config: ThresholdConfig) -> Tensor:
    r"""Negative-sample reinforcement: A = -1 on incorrect samples (r <= threshold), 0 otherwise.

    The gradient is -∇P(incorrect) = ∇P(correct) for binary rewards: it keeps only negative
    samples, with no baseline and no std.

    References: Zhu et al. 2025, "The Surprising Effectiveness of Negative Reinforcement in LLM
    Reasoning", arXiv:2506.01347 (L_NSR of the PSR/NSR decomposition).

    >>> nsr_advantages(torch.tensor([[1.0, 0.0]]), config=ThresholdConfig())
    tensor([[ 0., -1.]])
    """
    _check_rewards(rewards)
    incorrect = rewards <= config.threshold
    return torch.where(incorrect, -torch.ones_like(rewards), torch.zeros_like(rewards))


def psr_advantages(rewards: Tensor, *, config: ThresholdConfig) -> Tensor:
    r"""Positive-sample reinforcement: A = +1 on correct samples (r > threshold), 0 otherwise.

    References: Zhu et al. 2025, arXiv:2506.01347 (L_PSR of the PSR/NSR decomposition).

    >>> psr_advantages(torch.tensor([[1.0, 0.0]]), config=ThresholdConfig())
    tensor([[1., 0.]])
    """
    _check_rewards(rewards)
    return (rewards > config.threshold).to(rewards.dtype)


def broadcast_to_tokens(adv: Tensor, mask: Tensor) -> Tensor:
    """Per-sequence advantages ``[G, K]`` (or ``[B]``) -> ``[B, T]``, zero on padding.

    >>> broadcast_to_tokens(torch.tensor([[1.0, -1.0]]), torch.tensor([[1.0, 1.0], [1.0, 0.0]]))
    tensor([[ 1.,  1.],
            [-1.,  0.]])
    """
    check_float_tensor("adv", adv)
    check_mask(mask)
    flat = adv.reshape(-1)  # (B,)
    if flat.shape[0] != mask.shape[0]:
        raise ValueError(f"adv has {flat.shape[0]} sequences; allowed: {mask.shape[0]} (mask rows)")
    return torch.where(mask != 0, flat[:, None].expand(mask.shape), torch.zeros_like(flat)[:, None])
