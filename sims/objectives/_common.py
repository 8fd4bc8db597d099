"""Helpers shared by the objective families: masked means, diagnostics, input preparation."""

from __future__ import annotations

import torch
from torch import Tensor

from sims._checks import check_token_inputs, float_mask, require, require_finite_number
from sims.aggregation import masked_sum


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


def check_log_ratio_bounds(lo: float | None, hi: float | None) -> None:
    """``log_ratio_min`` / ``log_ratio_max``: each None or finite, and min < 0 < max."""
    if lo is not None:
        require_finite_number("log_ratio_min", lo)
        require(lo < 0, "log_ratio_min", lo, "None or a finite log-ratio < 0")
    if hi is not None:
        require_finite_number("log_ratio_max", hi)
        require(hi > 0, "log_ratio_max", hi, "None or a finite log-ratio > 0")


def clamp_log_ratio(x: Tensor, lo: float | None, hi: float | None) -> Tensor:
    """``clamp(x, lo, hi)`` with ``None`` bounds absent (x itself when both are None): a
    trainer's "for stability" clamp of a log-ratio, whose gradient is 0 outside [lo, hi].

    >>> clamp_log_ratio(torch.tensor([-30.0, 0.5, 30.0]), -20.0, None)
    tensor([-20.0000,   0.5000,  30.0000])
    """
    return x if lo is None and hi is None else torch.clamp(x, min=lo, max=hi)


def _lower(eps_low: float | None) -> float | None:
    return None if eps_low is None else 1.0 - eps_low
