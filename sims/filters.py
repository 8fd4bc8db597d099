"""Group filters: drop whole prompt groups before the loss.

``dynamic_sampling`` is DAPO's: a group whose rewards are all equal has all-zero (group-
centred) advantages, gives no gradient, and is dropped; DAPO then samples more groups until the
batch is full (that loop belongs to the trainer, not to the filter).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch  # noqa: F401  (the doctests use it)
from torch import Tensor

from sims._checks import check_float_tensor, require, require_finite_number

__all__ = ["DynamicSamplingConfig", "GroupFilterResult", "dynamic_sampling", "select_groups"]


@dataclass(frozen=True, kw_only=True)
class DynamicSamplingConfig:
    """Config of ``dynamic_sampling``.

    Attributes:
        atol: a group is "all equal" when max - min of its rewards <= atol (>= 0). The default 0
            means exact equality, as for binary rewards.
    """

    atol: float = 0.0

    def __post_init__(self) -> None:
        require_finite_number("atol", self.atol)
        require(self.atol >= 0, "atol", self.atol, "atol >= 0 (finite)")


@dataclass(frozen=True)
class GroupFilterResult:
    """Which groups a filter keeps.

    Attributes:
        keep: ``[G]`` bool, True for kept groups.
        n_groups: G.
        n_dropped: number of dropped groups.
    """

    keep: Tensor
    n_groups: int
    n_dropped: int

    @property
    def n_kept(self) -> int:
        return self.n_groups - self.n_dropped


def dynamic_sampling(rewards: Tensor, *, config: DynamicSamplingConfig) -> GroupFilterResult:
    """Keep the groups of ``rewards [G, K]`` whose rewards are not all equal.

    References: Yu et al. 2025, DAPO, arXiv:2503.14476, eq. 8 constraint
    0 < |{o_i : correct}| < G ("dynamic sampling").

    >>> r = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    >>> res = dynamic_sampling(r, config=DynamicSamplingConfig())
    >>> res.keep, res.n_dropped
    (tensor([ True, False, False]), 2)
    """
    check_float_tensor("rewards", rewards)
    if rewards.dim() != 2:
        raise ValueError(f"rewards has shape {tuple(rewards.shape)}; allowed: 2-D [G, K]")
    spread = rewards.max(-1).values - rewards.min(-1).values  # (G,)
    keep = spread > config.atol
    n_groups = rewards.shape[0]
    return GroupFilterResult(keep=keep, n_groups=n_groups, n_dropped=n_groups - int(keep.sum()))


def select_groups(keep: Tensor, group_size: int, *rows: Tensor | None) -> tuple[Tensor | None, ...]:
    """Keep the rows (``[B, ...]``, B = G·K) that belong to kept groups; ``None`` passes through.

    >>> x = torch.arange(6.0).reshape(6, 1)
    >>> select_groups(torch.tensor([False, True, False]), 2, x)[0].reshape(-1)
    tensor([2., 3.])
    """
    row_keep = keep.repeat_interleave(group_size)  # (B,)
    return tuple(None if x is None else x[row_keep.to(x.device)] for x in rows)
