"""Aggregations: how a per-token loss matrix ``[B, T]`` becomes the scalar loss.

Names follow verl's ``loss_agg_mode`` (``verl/trainer/ppo/core_algos.py::agg_loss``), plus the
DAPO paper's per-group form. With ``L`` the per-token loss, ``m`` the mask, ``T_i = Σ_t m_it``
the length of sequence ``i``, ``B`` the number of sequences, ``G`` the number of groups of
``K = group_size`` consecutive sequences and ``N_g`` the valid tokens of group ``g``:

====================== ===================================================== ======================
mode                   loss                                                  paper form
====================== ===================================================== ======================
token-mean             Σ_it m·L / Σ_it m                                     DAPO (batch-level)
seq-mean-token-mean    (1/B) Σ_i (Σ_t m·L) / T_i                             GRPO, GSPO, SAPO
seq-mean-token-sum     (1/B) Σ_i Σ_t m·L                                     REINFORCE, seq. IS
seq-mean-token-sum-norm (1/B) Σ_i Σ_t m·L / max_len                          Dr.GRPO
prompt-token-mean      (1/G) Σ_g (Σ_{i∈g,t} m·L) / N_g                       DAPO paper, eq. 8
token-sum              Σ_it m·L                                              unnormalised sum
====================== ===================================================== ======================

Each normaliser depends only on valid tokens, never on the padded width ``T``, so padding with
``mask = 0`` leaves every mode unchanged. ``max_len`` (the generation budget) is an explicit
argument; ``group_size`` says how the batch is grouped (rows ``g·K .. g·K+K-1`` form group ``g``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from sims._checks import check_float_tensor, check_mask, float_mask, require, require_choice


@dataclass(frozen=True)
class AggregationSpec:
    """One aggregation mode: its formula (for the glossary and ``pgverify list``) and reference."""

    name: str
    formula: str
    reference: str


AGGREGATIONS: dict[str, AggregationSpec] = {
    "token-mean": AggregationSpec(
        "token-mean",
        "sum_it m*L / sum_it m",
        "Yu et al. 2025, DAPO, arXiv:2503.14476 (token-level loss, batch form); verl token-mean",
    ),
    "seq-mean-token-mean": AggregationSpec(
        "seq-mean-token-mean",
        "(1/B) sum_i (sum_t m*L) / T_i",
        "Shao et al. 2024, DeepSeekMath (GRPO), arXiv:2402.03300, eq. 3",
    ),
    "seq-mean-token-sum": AggregationSpec(
        "seq-mean-token-sum",
        "(1/B) sum_i sum_t m*L",
        "Williams 1992, REINFORCE (whole-sequence score); verl seq-mean-token-sum",
    ),
    "seq-mean-token-sum-norm": AggregationSpec(
        "seq-mean-token-sum-norm",
        "(1/B) sum_i sum_t m*L / max_len",
        "Liu et al. 2025, Dr. GRPO, arXiv:2503.20783 (constant normaliser MAX_TOKENS)",
    ),
    "prompt-token-mean": AggregationSpec(
        "prompt-token-mean",
        "(1/G) sum_g (sum_{i in g, t} m*L) / N_g",
        "Yu et al. 2025, DAPO, arXiv:2503.14476, eq. 8 (1/sum_i |o_i| within each group)",
    ),
    "token-sum": AggregationSpec(
        "token-sum",
        "sum_it m*L",
        "verl token-sum (unnormalised)",
    ),
}


@dataclass(frozen=True, kw_only=True)
class AggConfig:
    """The aggregation fields every objective config carries.

    Attributes:
        agg: aggregation mode, a key of ``AGGREGATIONS``.
        max_len: constant normaliser of ``seq-mean-token-sum-norm`` (the generation budget);
            required by that mode, ignored by the others.
        group_size: samples per prompt ``K`` for ``prompt-token-mean``; required by that mode,
            ignored by the others. ``B`` must be a multiple of it.
    """

    agg: str = "token-mean"
    max_len: int | None = None
    group_size: int | None = None

    def __post_init__(self) -> None:
        require_choice("agg", self.agg, AGGREGATIONS)
        if self.max_len is not None:
            require(_is_pos_int(self.max_len), "max_len", self.max_len, "a positive int or None")
        if self.group_size is not None:
            require(_is_pos_int(self.group_size), "group_size", self.group_size, "a positive int or None")


def _is_pos_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 1


def agg_fields(config: AggConfig) -> dict:
    """The aggregation keyword arguments of a config, for ``aggregate(..., **agg_fields(c))``."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(AggConfig)}


def aggregate(
    loss_mat: Tensor,
    mask: Tensor,
    *,
    agg: str,
    max_len: int | None = None,
    group_size: int | None = None,
) -> Tensor:
    """Reduce a per-token loss ``[B, T]`` to a scalar with aggregation mode ``agg``.

    Args:
        loss_mat: ``[B, T]`` per-token loss; values on padding are ignored (must be finite).
        mask: ``[B, T]`` 1 on valid tokens, 0 on padding; every row needs a valid token.
        agg: a key of ``AGGREGATIONS`` (formulas in the module docstring).
        max_len: required for ``seq-mean-token-sum-norm``; must be >= every sequence length.
        group_size: required for ``prompt-token-mean``; ``B`` must be a multiple of it.

    Returns:
        0-d tensor.

    Examples:
        >>> L = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]])
        >>> m = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
        >>> aggregate(L, m, agg="token-mean")            # (1 + 2 + 3) / 3
        tensor(2.)
        >>> aggregate(L, m, agg="seq-mean-token-mean")   # (3/2 + 3/1) / 2
        tensor(2.2500)
        >>> aggregate(L, m, agg="seq-mean-token-sum-norm", max_len=4)  # (3 + 3) / (2 * 4)
        tensor(0.7500)
    """
    require_choice("agg", agg, AGGREGATIONS)
    check_float_tensor("loss_mat", loss_mat)
    check_mask(mask, loss_mat.shape)
    return _reduce(loss_mat, float_mask(mask, loss_mat), agg, max_len, group_size)


def aggregate_valid(loss_mat: Tensor, m: Tensor, *, agg: str, max_len: int | None = None,
                    group_size: int | None = None) -> Tensor:
    """``aggregate`` for a mask the caller has already validated and converted (``m`` of
    ``loss_mat``'s dtype, 0/1, a valid token in every row): the objectives call it after
    validating their inputs, so the mask is checked once per loss. ``agg`` and the finiteness
    of ``loss_mat`` are still checked."""
    require_choice("agg", agg, AGGREGATIONS)
    check_float_tensor("loss_mat", loss_mat)
    return _reduce(loss_mat, m, agg, max_len, group_size)


def masked_sum(x: Tensor, m: Tensor) -> Tensor:
    """Σ x·m over all elements: one ``torch.dot`` pass for float32/float64 (a BLAS call, no ``x·m``
    tensor); a product and a sum for other dtypes (whose dot would accumulate in that precision)."""
    if x.dtype == m.dtype and x.dtype in (torch.float32, torch.float64):
        return torch.dot(x.reshape(-1), m.reshape(-1))
    return (x * m).sum()


def _reduce(loss_mat: Tensor, m: Tensor, agg: str, max_len: int | None, group_size: int | None) -> Tensor:
    n_seq = loss_mat.shape[0]
    if agg == "token-sum":
        return masked_sum(loss_mat, m)
    if agg == "token-mean":
        return masked_sum(loss_mat, m) / m.sum()
    if agg == "seq-mean-token-sum":
        return masked_sum(loss_mat, m) / n_seq
    masked = loss_mat * m  # (B, T)
    lengths = m.sum(-1)  # (B,)
    if agg == "seq-mean-token-mean":
        return (masked.sum(-1) / lengths).sum() / n_seq
    if agg == "seq-mean-token-sum-norm":
        require(max_len is not None, "max_len", max_len,
                "a positive int (the generation budget) when agg='seq-mean-token-sum-norm'")
        require(_is_pos_int(max_len), "max_len", max_len, "a positive int")
        longest = int(lengths.max().item())
        require(max_len >= longest, "max_len", max_len,
                f">= the longest sequence in the batch ({longest} valid tokens)")
        return masked.sum() / (n_seq * max_len)
    if agg == "prompt-token-mean":
        require(group_size is not None, "group_size", group_size,
                "a positive int (samples per prompt K) when agg='prompt-token-mean'")
        require(_is_pos_int(group_size) and n_seq % group_size == 0, "group_size", group_size,
                f"a positive divisor of the batch size B={n_seq}")
        per_group = masked.sum(-1).reshape(-1, group_size).sum(-1)  # (G,)
        tokens = lengths.reshape(-1, group_size).sum(-1)  # (G,)
        return (per_group / tokens).mean()
    raise AssertionError(agg)  # unreachable: agg was checked against AGGREGATIONS


def token_weights(
    mask: Tensor, *, agg: str, max_len: int | None = None, group_size: int | None = None
) -> Tensor:
    """Per-token normaliser ``c_it = ∂ aggregate(L) / ∂ L_it`` as a ``[B, T]`` tensor (0 on padding).

    Every aggregation is linear in ``L``, so ``aggregate(L) = Σ c·L``; this is the factor an
    aggregation contributes to the gradient weight.

    >>> m = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    >>> token_weights(m, agg="seq-mean-token-mean")
    tensor([[0.2500, 0.2500, 0.0000],
            [0.5000, 0.0000, 0.0000]])
    """
    dtype = mask.dtype if mask.is_floating_point() else torch.float64
    ones = torch.ones(mask.shape, dtype=dtype, device=mask.device, requires_grad=True)
    loss = aggregate(ones, mask, agg=agg, max_len=max_len, group_size=group_size)
    (grad,) = torch.autograd.grad(loss, ones)
    return grad * float_mask(mask, grad)
