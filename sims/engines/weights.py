r"""Fused gradient weights of the registry objectives (numba on the CPU, torch elsewhere).

The Monte Carlo engine needs, for every sampled token, the gradient weight
``w_it = -∂loss/∂ℓ_it`` of the chunk's estimator. The reference is one autograd call of the
*registered* torch objective (``sims.objectives``) with its input validation and diagnostics; for
the registry objectives this module computes the same weights from the same formulas (each
objective's docstring and its ``theory`` derivation) in one pass over the ``[N, T]`` tensors,
fused with the engine's per-token bookkeeping (``sims.engines.kernels``):

* ``w [N, T]``: ``c_i · w⁰_it``, with ``w⁰`` the weight under ``agg="token-sum"`` and ``c_i``
  the aggregation's per-sequence normaliser (``scale``; every aggregation is linear with a
  normaliser constant within a sequence, ``theory.aggregation``); 0 on padding;
* per sequence: valid tokens whose weight is exactly 0, valid tokens, and
  log R_i = Σ_t m_it (ℓ_it - ℓ^old_it) (float64).

The token-sum weights w⁰, with d = ℓ - ℓ^old, ρ = e^d, n_i = Σ_t m_it, Ā_i = Σ_t m A / n_i,
clip(x, lo, hi) = min(max(x, lo), hi), an absent bound ±∞:

============ ===============================================================================
objective    w⁰_it (0 in the listed zero regions)
============ ===============================================================================
reinforce    ω·A; ω = 1, min(e^λ, C) (truncate) or e^λ·1[λ <= log C] (mask), λ = d_t (token)
             or Σ_s m d_s (sequence)
seq_is       n_i·Ā_i·min(R_i, C), R_i = exp(Σ_s m d_s)
ppo_clip     M·A·ρ; 0 if A > 0, ρ > 1 + ε_hi; A < 0, ρ < 1 - ε_lo; A < 0, ρ > c (dual-clip);
             OPSM M = 1[A >= 0 or mean_t m(ℓ^old - ℓ) <= δ]
gspo         Ā_i·s_i, s_i = exp(Σ m d / n_i); 0 if Ā > 0, s > 1 + ε_hi; Ā < 0, s < 1 - ε_lo;
             Ā < 0, s > c
gspo_token   A_it·s_i; zero regions of gspo with the token's A
gmpo         Ā_i·g_i·1[not clipped], g_i = exp(Σ m d̃ / n_i), d̃ = min(d, clip(d, -ε_lo, ε_hi))
             (Ā > 0) or max(d, clip(d, -ε_lo, ε_hi)) (Ā < 0); clipped: Ā > 0, d > ε_hi or
             Ā < 0, d < -ε_lo
cispo        clip(ρ, 1 - ε_lo, 1 + ε_hi)·A
sapo         4σ(1-σ)·ρ·A, σ = σ(τ(ρ - 1)), τ = τ_pos (A > 0) or τ_neg
sgs_cispo    S·clip(ρ)·A, S = 1 - σ(k(P - τ)) (A > 0) or 1; without the stop-gradient on S,
             minus k·σ(1-σ)·P·cw_t A_t ℓ_t (token P) or k·σ(1-σ)·P/n'·Σ_s m 1[A_s > 0] cw_s A_s ℓ_s
             (sequence P: n' = 1, geometric P: n' = n_i)
dro          A - β·d
dppo_tv      A·min(ρ, C)·v, v = 1[p - p^old <= δ_hi] (A > 0) or 1[p - p^old >= -δ_lo] (A <= 0)
dppo_kl      A·min(ρ, C)·v, v = 1[D <= δ_hi or p <= p^old] (A > 0) or 1[D <= δ_lo or
             p >= p^old] (A <= 0), D the binary KL (``sims.objectives.dppo.binary_kl``)
============ ===============================================================================

The token ratio ρ = e^d is the one exponential most kernels need per token, and with libm's
scalar ``exp`` it is most of a kernel's time (7.9 against 1.6 ms per million tokens for
CISPO). A table policy has one ρ per (row, token) cell, so the engine gathers it from a
ratio table (``policies.table.score_pair``) and passes it in (``rho``); otherwise the kernel
computes it. DPPO's trust-region quantity (p - p_old, or the binary KL with two logarithms and
two ``expm1``) is such a per-cell value too (``FusedObjective.cell_values``, passed as ``aux``).

Precision: every kernel reads its inputs as float64, computes in float64 and rounds w once to
the input dtype. In float64 the weights equal the registered objective's autograd weights to
float64 rounding (tests: 1e-12 relative to the batch's largest weight, on Hypothesis batteries
covering every aggregation, every config field and every zero region). In float32 the
autograd path computes in float32, so the two paths differ by float32 rounding (about 1e-7
relative), and a token whose clipped quantity — ρ, s_i, or DPPO's p − p_old and binary KL (whose
float32 error near the bound is about 1e-7 absolute, many float32 ulps of a small δ) — lies
within float32 rounding of its bound may fall on either side of it. With a float32 new policy and
a float64 old one, ρ comes from the float64 tables while d is taken after ``old_logp`` is cast to
float32: the two differ by float32 rounding too.
No value is clamped: a ratio that overflows is ``inf`` as in the objective.

Which objective/config combinations are fused is ``FUSED`` (every config of each listed
objective); ``NOT_FUSED`` gives, for each other registry objective, the reason. ``fused_for``
decides for an ``ObjectiveSpec`` and a config, and says why when it answers no: only the
registered spec itself (not a user variant or plugin with the same name) with a config of
exactly the registered class is fused. The engine reports the path it used
(``MCResult.weight_path``); ``MCConfig(weights="autograd")`` forces the reference path.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

from sims import objectives as O
from sims.aggregation import AggConfig
from sims.objectives.dppo import binary_kl

INF = math.inf

P_MODE_CODES = {"token": 0, "sequence": 1, "geometric": 2}


# ----------------------------------------------------------------------------- config -> parameters


def _lower(eps_low: float | None) -> float:
    return -INF if eps_low is None else 1.0 - eps_low


def _or_inf(x: float | None) -> float:
    return INF if x is None else float(x)


def _log_or_inf(x: float | None) -> float:
    return INF if x is None else math.log(x)


def _reinforce_params(c) -> tuple[float, ...]:
    level = {None: 0, "token": 1, "sequence": 2}[c.is_level]
    return (level, {"truncate": 0, "mask": 1}[c.is_mode], math.log(c.is_cap))


def _log_ratio_bounds(c) -> tuple[float, float]:
    """The objective's "for stability" log-ratio clamp [log_ratio_min, log_ratio_max] (±inf when
    absent, and for a config class without the fields)."""
    lo, hi = getattr(c, "log_ratio_min", None), getattr(c, "log_ratio_max", None)
    return (-INF if lo is None else lo, _or_inf(hi))


def _ppo_params(c) -> tuple[float, ...]:
    return (_lower(c.eps_low), 1.0 + c.eps_high, _or_inf(c.dual_clip_c), _or_inf(c.opsm_delta),
            *_log_ratio_bounds(c))


def _gspo_params(c) -> tuple[float, ...]:
    return (_lower(c.eps_low), 1.0 + c.eps_high, _or_inf(c.dual_clip_c), *_log_ratio_bounds(c))


def _sapo_params(c) -> tuple[float, ...]:
    return (c.tau_pos, c.tau_neg, *_log_ratio_bounds(c))


def _gmpo_params(c) -> tuple[float, ...]:
    return (-INF if c.eps_low is None else -c.eps_low, c.eps_high)


def _cispo_params(c) -> tuple[float, ...]:
    return (_lower(c.eps_low), 1.0 + c.eps_high)


def _sgs_params(c) -> tuple[float, ...]:
    return (_lower(c.eps_low), 1.0 + c.eps_high, c.k, c.tau, P_MODE_CODES[c.p_mode], float(c.stop_grad_s))


def _dppo_params(c) -> tuple[float, ...]:
    return (c.delta_low, c.delta_high, math.log(c.is_cap))


@dataclass(frozen=True)
class FusedObjective:
    """A registry objective with a fused weight kernel.

    Attributes:
        name: the registry name.
        loss_fn, config_cls: the registered objective and config class the kernel reproduces.
        fields: the config fields the kernel reads (besides the aggregation's); a config with
            any other field (one added to the objective later) is not fused.
        kernel: its numba kernel ``(p, logp, old_logp, rho, aux, adv, mask, scale, w, n_zero,
            n_valid, log_ratio)``, writing the last four (``fused_token_stats_cpu``; ``rho`` the
            token ratios ``[N, T]`` and ``aux`` the token's ``cell_values``, each an empty
            ``(0, 0)`` array when the kernel computes them).
        params: ``fn(config) -> tuple of floats``, the kernel's parameter vector (None bounds as ±inf).
        torch_weights: ``fn(d, lp, lo, a, m, n, sd, sa, sl, p) -> w⁰ [N, T]`` in torch (float64
            tensors; ``n, sd, sa, sl`` the ``[N, 1]`` row sums), the non-CPU path.
        configs: which configs are fused (prose).
    """

    name: str
    loss_fn: Callable[..., Any]
    config_cls: type
    fields: tuple[str, ...]
    kernel: Callable[..., None]
    params: Callable[[Any], tuple[float, ...]]
    torch_weights: Callable[..., Tensor]
    configs: str = "every config"
    cell_values: Callable[[Tensor, Tensor], Tensor] | None = None
    """``fn(ℓ, ℓ^old) -> [..]`` (float64, elementwise): the per-token quantity besides ρ that the
    kernel would compute with transcendental functions, given per (row, token) cell of a table
    policy's log-probability tables so that the engine gathers it while sampling (``aux``)."""


# ----------------------------------------------------------------------------- numba: one row each


@njit(inline="always")
def _adv(adv, i, t):
    """A_it as float64: ``adv`` is ``[N, T]`` or ``[N, 1]`` (one advantage per sequence)."""
    return np.float64(adv[i, t if adv.shape[1] > 1 else 0])


@njit(inline="always")
def _ratio(rho, i, t, d):
    """ρ_it = e^d: read from ``rho`` when it is given (``[N, T]`` float64, e.g. gathered from a
    table policy's ratio table), computed otherwise (``rho`` of shape ``(0, 0)``)."""
    return rho[i, t] if rho.shape[0] != 0 else math.exp(d)


@njit(inline="always")
def _capped_ratio(rho, i, t, d, log_cap):
    """e^min(d, log C) = min(ρ, C) with the cap applied in log space (as the objectives do)."""
    return _ratio(rho, i, t, d) if d <= log_cap else math.exp(log_cap)


@njit(inline="always")
def _clip(x, lo, hi):
    return min(max(x, lo), hi)


@njit(inline="always")
def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


@njit(inline="always")
def _row_reinforce(i, lp, lo, rho, aux, adv, mask, p, w, c, n, sd, sa, sl):
    level, mode, log_cap = p[0], p[1], p[2]
    for t in range(lp.shape[1]):
        if mask[i, t] != 0:
            omega = 1.0
            if level != 0:
                if level == 2:
                    lam = sd
                    omega = math.exp(min(lam, log_cap))
                else:
                    lam = np.float64(lp[i, t]) - np.float64(lo[i, t])
                    omega = _capped_ratio(rho, i, t, lam, log_cap)
                if mode == 1 and lam > log_cap:
                    omega = 0.0
            w[i, t] = c * omega * _adv(adv, i, t)


@njit(inline="always")
def _row_seq_is(i, lp, lo, rho, aux, adv, mask, p, w, c, n, sd, sa, sl):
    x = c * sa * math.exp(min(sd, p[0]))  # n_i·Ā_i = Σ_t m A
    for t in range(lp.shape[1]):
        if mask[i, t] != 0:
            w[i, t] = x


@njit(inline="always")
def _row_ppo_clip(i, lp, lo, rho, aux, adv, mask, p, w, c, n, sd, sa, sl):
    low, high, dual, delta, lr_lo, lr_hi = p[0], p[1], p[2], p[3], p[4], p[5]
    opsm_kl = -sd / n  # mean_t m(ℓ^old - ℓ)
    for t in range(lp.shape[1]):
        if mask[i, t] != 0:
            a = _adv(adv, i, t)
            d = np.float64(lp[i, t]) - np.float64(lo[i, t])
            r = _ratio(rho, i, t, d)
            x = a * r
            if (a > 0 and r > high) or (a < 0 and r < low) or (a < 0 and r > dual):
                x = 0.0
            if d < lr_lo or d > lr_hi:  # the log-ratio clamp binds: ρ is a constant
                x = 0.0
            if a < 0 and opsm_kl > delta:
                x = 0.0
            w[i, t] = c * x


@njit(inline="always")
def _gspo_zero(a, s, low, high, dual):
    return (a > 0 and s > high) or (a < 0 and s < low) or (a < 0 and s > dual)


@njit(inline="always")
def _row_gspo(i, lp, lo, rho, aux, adv, mask, p, w, c, n, sd, sa, sl):
    s = math.exp(sd / n)
    a_bar = sa / n
    clamped = sd / n < p[3] or sd / n > p[4]  # the log-ratio clamp of log s binds
    x = 0.0 if clamped or _gspo_zero(a_bar, s, p[0], p[1], p[2]) else c * a_bar * s
    for t in range(lp.shape[1]):
        if mask[i, t] != 0:
            w[i, t] = x


@njit(inline="always")
def _row_gspo_token(i, lp, lo, rho, aux, adv, mask, p, w, c, n, sd, sa, sl):
    s = math.exp(sd / n)
    clamped = sd / n < p[3] or sd / n > p[4]  # the log-ratio clamp of log ŝ binds
    for t in range(lp.shape[1]):
        if mask[i, t] != 0:
            a = _adv(adv, i, t)
            w[i, t] = 0.0 if clamped or _gspo_zero(a, s, p[0], p[1], p[2]) else c * a * s


@njit(inline="always")
def _row_gmpo(i, lp, lo, rho, aux, adv, mask, p, w, c, n, sd, sa, sl):
    low, high = p[0], p[1]
    a_bar = sa / n
    total = 0.0  # Σ_t m d̃
    for t in range(lp.shape[1]):
        if mask[i, t] != 0:
            d = np.float64(lp[i, t]) - np.float64(lo[i, t])
            dc = _clip(d, low, high)
            if a_bar > 0:
                total += min(d, dc)
            elif a_bar < 0:
                total += max(d, dc)
    x = c * a_bar * math.exp(total / n)
    for t in range(lp.shape[1]):
        if mask[i, t] != 0:
            d = np.float64(lp[i, t]) - np.float64(lo[i, t])
            clipped = (a_bar > 0 and d > high) or (a_bar < 0 and d < low)
            w[i, t] = 0.0 if clipped else x


@njit(inline="always")
def _row_cispo(i, lp, lo, rho, aux, adv, mask, p, w, c, n, sd, sa, sl):
    for t in range(lp.shape[1]):
        if mask[i, t] != 0:
            r = _ratio(rho, i, t, np.float64(lp[i, t]) - np.float64(lo[i, t]))
            w[i, t] = c * _clip(r, p[0], p[1]) * _adv(adv, i, t)


@njit(inline="always")
def _row_sapo(i, lp, lo, rho, aux, adv, mask, p, w, c, n, sd, sa, sl):
    for t in range(lp.shape[1]):
        if mask[i, t] != 0:
            a = _adv(adv, i, t)
            d = np.float64(lp[i, t]) - np.float64(lo[i, t])
            r = _ratio(rho, i, t, d)
            sig = _sigmoid((p[0] if a > 0 else p[1]) * (r - 1.0))
            clamped = d < p[2] or d > p[3]  # the log-ratio clamp binds: the gate is a constant
            w[i, t] = 0.0 if clamped else c * 4.0 * sig * (1.0 - sig) * r * a


@njit(inline="always")
def _row_sgs_cispo(i, lp, lo, rho, aux, adv, mask, p, w, c, n, sd, sa, sl):
    low, high, k, tau, p_mode, stop = p[0], p[1], p[2], p[3], p[4], p[5]
    p_row = math.exp(sl) if p_mode == 1 else math.exp(sl / n)  # sequence / geometric P
    sig_row = _sigmoid(k * (p_row - tau))
    q = 0.0  # Σ_s m 1[A_s > 0] cw_s A_s ℓ_s (the S-gradient term of sequence/geometric P)
    if stop == 0 and p_mode != 0:
        for t in range(lp.shape[1]):
            a = _adv(adv, i, t)
            if mask[i, t] != 0 and a > 0:
                x = np.float64(lp[i, t])
                q += _clip(_ratio(rho, i, t, x - np.float64(lo[i, t])), low, high) * a * x
        q *= k * sig_row * (1.0 - sig_row) * p_row / (1.0 if p_mode == 1 else n)
    for t in range(lp.shape[1]):
        if mask[i, t] != 0:
            a = _adv(adv, i, t)
            x = np.float64(lp[i, t])
            cw = _clip(_ratio(rho, i, t, x - np.float64(lo[i, t])), low, high)
            if p_mode == 0:
                pt = math.exp(x)
                sig = _sigmoid(k * (pt - tau))
            else:
                pt = p_row
                sig = sig_row
            s = 1.0 - sig if a > 0 else 1.0
            v = s * cw * a
            if stop == 0:
                if p_mode == 0:
                    if a > 0:
                        v -= k * sig * (1.0 - sig) * pt * cw * a * x
                else:
                    v -= q
            w[i, t] = c * v


@njit(inline="always")
def _row_dro(i, lp, lo, rho, aux, adv, mask, p, w, c, n, sd, sa, sl):
    for t in range(lp.shape[1]):
        if mask[i, t] != 0:
            w[i, t] = c * (_adv(adv, i, t) - p[0] * (np.float64(lp[i, t]) - np.float64(lo[i, t])))


@njit(inline="always")
def _binary_kl(x, y):
    """D(p_old || p) from ℓ = x, ℓ^old = y (``sims.objectives.dppo.binary_kl``)."""
    q_old = -math.expm1(y)
    rest = q_old * (math.log(q_old) - np.log(-math.expm1(x))) if q_old > 0 else 0.0
    return math.exp(y) * (y - x) + rest


@njit(inline="always")
def _row_dppo(i, lp, lo, rho, aux, adv, mask, p, w, c, n, sd, sa, sl, kl_region):
    d_low, d_high, log_cap = p[0], p[1], p[2]
    for t in range(lp.shape[1]):
        if mask[i, t] != 0:
            a = _adv(adv, i, t)
            x, y = np.float64(lp[i, t]), np.float64(lo[i, t])
            if kl_region:  # the binary KL, from the cell-value table when given (``cell_values``)
                div = aux[i, t] if aux.shape[0] != 0 else _binary_kl(x, y)
                keep = (div <= d_high or x <= y) if a > 0 else (div <= d_low or x >= y)
            else:  # p - p_old, likewise
                diff = aux[i, t] if aux.shape[0] != 0 else math.exp(x) - math.exp(y)
                keep = diff <= d_high if a > 0 else diff >= -d_low
            w[i, t] = c * a * _capped_ratio(rho, i, t, x - y, log_cap) if keep else 0.0


@njit(inline="always")
def _begin(i, lp, lo, adv, mask, scale, w):
    """Zero row i of ``w``; its valid count n, Σ m d, Σ m A, Σ m ℓ (float64) and c_i."""
    n = 0
    sd = 0.0
    sa = 0.0
    sl = 0.0
    for t in range(lp.shape[1]):
        w[i, t] = 0.0
        if mask[i, t] != 0:
            n += 1
            x = np.float64(lp[i, t])
            sd += x - np.float64(lo[i, t])
            sa += _adv(adv, i, t)
            sl += x
    return n, sd, sa, sl, np.float64(scale[i])


@njit(inline="always")
def _end(i, mask, w, n, sd, n_zero, n_valid, log_ratio):
    """The bookkeeping of row i: zero-weight and valid counts, log R_i."""
    zeros = 0
    for t in range(w.shape[1]):
        if mask[i, t] != 0:
            zeros += w[i, t] == 0
    n_zero[i] = zeros
    n_valid[i] = n
    log_ratio[i] = sd


# One parallel kernel per objective (``_begin``, the objective's row, ``_end``), compiled on first
# use for each dtype and cached on disk: a single kernel dispatching over all of them takes ten
# times longer to compile than the one a run needs.

@njit(parallel=True, cache=True)
def _k_reinforce(p, lp, lo, rho, aux, adv, mask, scale, w, n_zero, n_valid, log_ratio):
    for i in prange(lp.shape[0]):
        n, sd, sa, sl, c = _begin(i, lp, lo, adv, mask, scale, w)
        _row_reinforce(i, lp, lo, rho, aux, adv, mask, p, w, c, n, sd, sa, sl)
        _end(i, mask, w, n, sd, n_zero, n_valid, log_ratio)


@njit(parallel=True, cache=True)
def _k_seq_is(p, lp, lo, rho, aux, adv, mask, scale, w, n_zero, n_valid, log_ratio):
    for i in prange(lp.shape[0]):
        n, sd, sa, sl, c = _begin(i, lp, lo, adv, mask, scale, w)
        _row_seq_is(i, lp, lo, rho, aux, adv, mask, p, w, c, n, sd, sa, sl)
        _end(i, mask, w, n, sd, n_zero, n_valid, log_ratio)


@njit(parallel=True, cache=True)
def _k_ppo_clip(p, lp, lo, rho, aux, adv, mask, scale, w, n_zero, n_valid, log_ratio):
    for i in prange(lp.shape[0]):
        n, sd, sa, sl, c = _begin(i, lp, lo, adv, mask, scale, w)
        _row_ppo_clip(i, lp, lo, rho, aux, adv, mask, p, w, c, n, sd, sa, sl)
        _end(i, mask, w, n, sd, n_zero, n_valid, log_ratio)


@njit(parallel=True, cache=True)
def _k_gspo(p, lp, lo, rho, aux, adv, mask, scale, w, n_zero, n_valid, log_ratio):
    for i in prange(lp.shape[0]):
        n, sd, sa, sl, c = _begin(i, lp, lo, adv, mask, scale, w)
        _row_gspo(i, lp, lo, rho, aux, adv, mask, p, w, c, n, sd, sa, sl)
        _end(i, mask, w, n, sd, n_zero, n_valid, log_ratio)


@njit(parallel=True, cache=True)
def _k_gspo_token(p, lp, lo, rho, aux, adv, mask, scale, w, n_zero, n_valid, log_ratio):
    for i in prange(lp.shape[0]):
        n, sd, sa, sl, c = _begin(i, lp, lo, adv, mask, scale, w)
        _row_gspo_token(i, lp, lo, rho, aux, adv, mask, p, w, c, n, sd, sa, sl)
        _end(i, mask, w, n, sd, n_zero, n_valid, log_ratio)


@njit(parallel=True, cache=True)
def _k_gmpo(p, lp, lo, rho, aux, adv, mask, scale, w, n_zero, n_valid, log_ratio):
    for i in prange(lp.shape[0]):
        n, sd, sa, sl, c = _begin(i, lp, lo, adv, mask, scale, w)
        _row_gmpo(i, lp, lo, rho, aux, adv, mask, p, w, c, n, sd, sa, sl)
        _end(i, mask, w, n, sd, n_zero, n_valid, log_ratio)


@njit(parallel=True, cache=True)
def _k_cispo(p, lp, lo, rho, aux, adv, mask, scale, w, n_zero, n_valid, log_ratio):
    for i in prange(lp.shape[0]):
        n, sd, sa, sl, c = _begin(i, lp, lo, adv, mask, scale, w)
        _row_cispo(i, lp, lo, rho, aux, adv, mask, p, w, c, n, sd, sa, sl)
        _end(i, mask, w, n, sd, n_zero, n_valid, log_ratio)


@njit(parallel=True, cache=True)
def _k_sapo(p, lp, lo, rho, aux, adv, mask, scale, w, n_zero, n_valid, log_ratio):
    for i in prange(lp.shape[0]):
        n, sd, sa, sl, c = _begin(i, lp, lo, adv, mask, scale, w)
        _row_sapo(i, lp, lo, rho, aux, adv, mask, p, w, c, n, sd, sa, sl)
        _end(i, mask, w, n, sd, n_zero, n_valid, log_ratio)


@njit(parallel=True, cache=True)
def _k_sgs_cispo(p, lp, lo, rho, aux, adv, mask, scale, w, n_zero, n_valid, log_ratio):
    for i in prange(lp.shape[0]):
        n, sd, sa, sl, c = _begin(i, lp, lo, adv, mask, scale, w)
        _row_sgs_cispo(i, lp, lo, rho, aux, adv, mask, p, w, c, n, sd, sa, sl)
        _end(i, mask, w, n, sd, n_zero, n_valid, log_ratio)


@njit(parallel=True, cache=True)
def _k_dro(p, lp, lo, rho, aux, adv, mask, scale, w, n_zero, n_valid, log_ratio):
    for i in prange(lp.shape[0]):
        n, sd, sa, sl, c = _begin(i, lp, lo, adv, mask, scale, w)
        _row_dro(i, lp, lo, rho, aux, adv, mask, p, w, c, n, sd, sa, sl)
        _end(i, mask, w, n, sd, n_zero, n_valid, log_ratio)


@njit(parallel=True, cache=True)
def _k_dppo_tv(p, lp, lo, rho, aux, adv, mask, scale, w, n_zero, n_valid, log_ratio):
    for i in prange(lp.shape[0]):
        n, sd, sa, sl, c = _begin(i, lp, lo, adv, mask, scale, w)
        _row_dppo(i, lp, lo, rho, aux, adv, mask, p, w, c, n, sd, sa, sl, False)
        _end(i, mask, w, n, sd, n_zero, n_valid, log_ratio)


@njit(parallel=True, cache=True)
def _k_dppo_kl(p, lp, lo, rho, aux, adv, mask, scale, w, n_zero, n_valid, log_ratio):
    for i in prange(lp.shape[0]):
        n, sd, sa, sl, c = _begin(i, lp, lo, adv, mask, scale, w)
        _row_dppo(i, lp, lo, rho, aux, adv, mask, p, w, c, n, sd, sa, sl, True)
        _end(i, mask, w, n, sd, n_zero, n_valid, log_ratio)


# ----------------------------------------------------------------------------- torch: whole batch


def _where(cond: Tensor, x: Tensor) -> Tensor:
    return torch.where(cond, torch.zeros_like(x), x)


def _t_reinforce(d, lp, lo, a, m, n, sd, sa, sl, p):
    level, mode, log_cap = p
    if level == 0:
        return a.clone()
    lam = sd.expand_as(d) if level == 2 else d
    omega = torch.exp(torch.clamp(lam, max=log_cap))
    return (_where(lam > log_cap, omega) if mode == 1 else omega) * a


def _t_seq_is(d, lp, lo, a, m, n, sd, sa, sl, p):
    return (sa * torch.exp(torch.clamp(sd, max=p[0]))).expand_as(d)


def _t_ppo_clip(d, lp, lo, a, m, n, sd, sa, sl, p):
    low, high, dual, delta, lr_lo, lr_hi = p
    rho = torch.exp(d)
    zero = (a > 0) & (rho > high) | (a < 0) & ((rho < low) | (rho > dual)) | (a < 0) & (-sd / n > delta)
    return _where(zero | (d < lr_lo) | (d > lr_hi), a * rho)


def _t_gspo(d, lp, lo, a, m, n, sd, sa, sl, p):
    s, a_bar = torch.exp(sd / n), sa / n
    zero = (a_bar > 0) & (s > p[1]) | (a_bar < 0) & ((s < p[0]) | (s > p[2])) | (sd / n < p[3]) | (sd / n > p[4])
    return _where(zero, a_bar * s).expand_as(d)


def _t_gspo_token(d, lp, lo, a, m, n, sd, sa, sl, p):
    s = torch.exp(sd / n)
    zero = (a > 0) & (s > p[1]) | (a < 0) & ((s < p[0]) | (s > p[2])) | (sd / n < p[3]) | (sd / n > p[4])
    return _where(zero, a * s)


def _t_gmpo(d, lp, lo, a, m, n, sd, sa, sl, p):
    low, high = p
    a_bar = sa / n
    dc = torch.clamp(d, min=low, max=high)
    d_tilde = torch.where(a_bar > 0, torch.minimum(d, dc), torch.where(a_bar < 0, torch.maximum(d, dc), 0.0))
    g = torch.exp((d_tilde * m).sum(-1, keepdim=True) / n)
    clipped = (a_bar > 0) & (d > high) | (a_bar < 0) & (d < low)
    return _where(clipped, (a_bar * g).expand_as(d))


def _t_cispo(d, lp, lo, a, m, n, sd, sa, sl, p):
    return torch.clamp(torch.exp(d), min=p[0], max=p[1]) * a


def _t_sapo(d, lp, lo, a, m, n, sd, sa, sl, p):
    rho = torch.exp(d)
    sig = torch.sigmoid(torch.where(a > 0, torch.full_like(a, p[0]), torch.full_like(a, p[1])) * (rho - 1.0))
    return _where((d < p[2]) | (d > p[3]), 4.0 * sig * (1.0 - sig) * rho * a)


def _t_sgs_cispo(d, lp, lo, a, m, n, sd, sa, sl, p):
    low, high, k, tau, p_mode, stop = p
    cw = torch.clamp(torch.exp(d), min=low, max=high)
    conf = torch.exp(lp) if p_mode == 0 else torch.exp(sl if p_mode == 1 else sl / n).expand_as(d)
    sig = torch.sigmoid(k * (conf - tau))
    pos = a > 0
    v = torch.where(pos, 1.0 - sig, 1.0) * cw * a
    if stop:
        return v
    grad_s = k * sig * (1.0 - sig) * conf  # -∂S/∂ℓ (token P) per unit of ∂P/∂ℓ
    if p_mode == 0:
        return v - torch.where(pos, grad_s * cw * a * lp, 0.0)
    q = (torch.where(pos, cw * a * lp, 0.0) * m).sum(-1, keepdim=True)
    return v - grad_s * q / (1.0 if p_mode == 1 else n)


def _t_dro(d, lp, lo, a, m, n, sd, sa, sl, p):
    return a - p[0] * d


def _t_binary_kl(lp, lo):
    q_old = -torch.expm1(lo)
    rest = torch.where(q_old > 0, q_old * (torch.log(q_old) - torch.log(-torch.expm1(lp))), 0.0)
    return torch.exp(lo) * (lo - lp) + rest


def _t_dppo(d, lp, lo, a, m, n, sd, sa, sl, p, kl_region):
    d_low, d_high, log_cap = p
    if kl_region:
        div = _t_binary_kl(lp, lo)
        keep = torch.where(a > 0, (div <= d_high) | (lp <= lo), (div <= d_low) | (lp >= lo))
    else:
        diff = torch.exp(lp) - torch.exp(lo)
        keep = torch.where(a > 0, diff <= d_high, diff >= -d_low)
    return _where(~keep, a * torch.exp(torch.clamp(d, max=log_cap)))


def _t_dppo_tv(*args):
    return _t_dppo(*args, kl_region=False)


def _t_dppo_kl(*args):
    return _t_dppo(*args, kl_region=True)


# ----------------------------------------------------------------------------- the registry

_EPS = ("eps_low", "eps_high")
_CLAMP = ("log_ratio_min", "log_ratio_max")

FUSED: dict[str, FusedObjective] = {f.name: f for f in (
    FusedObjective("reinforce", O.reinforce, O.ReinforceConfig, ("is_level", "is_mode", "is_cap"),
                   _k_reinforce, _reinforce_params, _t_reinforce),
    FusedObjective("seq_is", O.seq_is, O.SeqIsConfig, ("cap",), _k_seq_is, lambda c: (_log_or_inf(c.cap),),
                   _t_seq_is),
    FusedObjective("ppo_clip", O.ppo_clip, O.PpoClipConfig, (*_EPS, "dual_clip_c", "opsm_delta", *_CLAMP),
                   _k_ppo_clip, _ppo_params, _t_ppo_clip,
                   "every config; OPSM with the sampler's log-probs = old_logp (the engine has no rollout_logp)"),
    FusedObjective("gspo", O.gspo, O.GspoConfig, (*_EPS, "dual_clip_c", *_CLAMP), _k_gspo, _gspo_params,
                   _t_gspo),
    FusedObjective("gspo_token", O.gspo_token, O.GspoConfig, (*_EPS, "dual_clip_c", *_CLAMP), _k_gspo_token,
                   _gspo_params, _t_gspo_token),
    FusedObjective("gmpo", O.gmpo, O.GmpoConfig, _EPS, _k_gmpo, _gmpo_params, _t_gmpo),
    FusedObjective("cispo", O.cispo, O.CispoConfig, _EPS, _k_cispo, _cispo_params, _t_cispo),
    FusedObjective("sapo", O.sapo, O.SapoConfig, ("tau_pos", "tau_neg", *_CLAMP), _k_sapo, _sapo_params,
                   _t_sapo),
    FusedObjective("sgs_cispo", O.sgs_cispo, O.SgsCispoConfig, (*_EPS, "k", "tau", "p_mode", "stop_grad_s"),
                   _k_sgs_cispo, _sgs_params, _t_sgs_cispo,
                   "every config (all p_modes, with and without the stop-gradient on S)"),
    FusedObjective("dro", O.dro, O.DroConfig, ("beta",), _k_dro, lambda c: (c.beta,), _t_dro),
    FusedObjective("dppo_tv", O.dppo_tv, O.DppoConfig, ("delta_low", "delta_high", "is_cap"), _k_dppo_tv,
                   _dppo_params, _t_dppo_tv, cell_values=lambda lp, lo: torch.exp(lp) - torch.exp(lo)),
    FusedObjective("dppo_kl", O.dppo_kl, O.DppoConfig, ("delta_low", "delta_high", "is_cap"), _k_dppo_kl,
                   _dppo_params, _t_dppo_kl, cell_values=binary_kl),
)}

NOT_FUSED: dict[str, str] = {
    "kl_cov": "batch-coupled (a batch covariance selects the tokens): the engine refuses it",
    "clip_cov": "batch-coupled (a batch covariance selects the tokens): the engine refuses it",
    "ppo_clip_rollout_is": "needs rollout_logp, which the engine cannot supply: the engine refuses it",
}


def fused_for(spec, config) -> tuple[FusedObjective | None, str]:
    """``(entry, "")`` when the engine may use the fused kernel for ``spec`` (an ``ObjectiveSpec``)
    with ``config``, else ``(None, reason)``. Fused only when the spec's name has a kernel, its
    loss function is the registered one (the same function object: a user variant or a plugin
    that wraps or replaces it is not), the config is exactly the registered class (not a
    subclass), and the config has no field the kernel does not read."""
    entry = FUSED.get(spec.name)
    if entry is None:
        return None, NOT_FUSED.get(spec.name, f"no fused kernel for objective {spec.name!r}")
    if spec.loss_fn is not entry.loss_fn:
        return None, f"objective {spec.name!r} has another loss function than the registered one"
    if type(config) is not entry.config_cls:
        return None, f"config {type(config).__name__} is not exactly {entry.config_cls.__name__}"
    agg_fields = {f.name for f in dataclasses.fields(AggConfig)}
    unknown = sorted({f.name for f in dataclasses.fields(config)} - agg_fields - set(entry.fields))
    if unknown:
        return None, f"the kernel does not read the config field(s) {', '.join(unknown)}"
    return entry, ""


def fused_token_stats(entry: FusedObjective, config, logp: Tensor, old_logp: Tensor, adv: Tensor,
                      mask: Tensor, scale: Tensor, rho: Tensor | None = None,
                      out: Tensor | None = None, aux: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(w [N, T], zero-weight count [N], valid count [N], log R [N] float64)``, the values of
    ``sims.engines.kernels.token_stats`` after an autograd call of the objective with
    ``agg="token-sum"`` (module docstring): ``w = scale_i · w⁰``. ``config``'s own aggregation is
    not read (``scale`` is the normaliser). The numba kernel on the CPU, ``fused_token_stats_torch``
    elsewhere. Inputs are the engine's: ``[N, T]`` tensors of one dtype (``adv`` may be a view
    expanded along T), a 0/1 mask with a valid token in every row; they are not validated here.
    ``rho``, when given, is ρ = e^(ℓ - ℓ^old) per token in float64 (``[N, T]``; a table policy
    gathers it from its ratio table, ``policies.table.score_pair``, so no token pays for an
    exponential): the numba kernels read it wherever they need ρ; the torch path computes ρ.
    ``out``, a contiguous ``[N, T]`` CPU tensor of ``logp``'s dtype, receives ``w`` on the CPU (a
    caller streaming chunks reuses it). ``aux``, likewise, is ``entry.cell_values(ℓ, ℓ^old)`` per
    token in float64, read instead of computing it."""
    if logp.device.type == "cpu":
        return fused_token_stats_cpu(entry, config, logp, old_logp, adv, mask, scale, rho, out, aux)
    return fused_token_stats_torch(entry, config, logp, old_logp, adv, mask, scale)


def fused_token_stats_cpu(entry, config, logp, old_logp, adv, mask, scale, rho=None, out=None, aux=None):
    """``fused_token_stats`` by the numba kernel (one pass per row, parallel over rows)."""
    n, horizon = logp.shape
    w = torch.empty(n, horizon, dtype=logp.dtype) if out is None else out
    if w.shape != (n, horizon) or w.dtype != logp.dtype or not w.is_contiguous() or w.device.type != "cpu":
        raise ValueError(f"out is a {w.dtype} tensor of shape {tuple(w.shape)}; allowed: a contiguous "
                         f"CPU [{n}, {horizon}] tensor of logp's dtype {logp.dtype}")
    n_zero = torch.empty(n, dtype=torch.int64)
    n_valid = torch.empty(n, dtype=torch.int64)
    log_ratio = torch.empty(n, dtype=torch.float64)
    p = np.asarray(entry.params(config), dtype=np.float64)
    # contiguous arrays, so each kernel is compiled once per dtype rather than once per memory
    # layout too (a no-op for contiguous inputs); advantages expanded along T (one per sequence,
    # as the engine's) go as their [N, 1] column, which the kernels read as A_it for every t
    if adv.shape[1] > 1 and adv.stride(1) == 0:
        adv = adv[:, :1]
    for name, x in (("rho", rho), ("aux", aux)):  # the kernels do not check bounds
        if x is not None and x.shape != logp.shape:
            raise ValueError(f"{name} has shape {tuple(x.shape)}; allowed: None or logp's shape {tuple(logp.shape)}")
    none = torch.empty(0, 0, dtype=torch.float64)
    rho, aux = (none if x is None else x.to(torch.float64) for x in (rho, aux))
    arrays = (logp, old_logp, rho, aux, adv, mask, scale.to(torch.float64))
    entry.kernel(p, *(x.detach().contiguous().numpy() for x in arrays), w.numpy(), n_zero.numpy(),
                 n_valid.numpy(), log_ratio.numpy())
    return w, n_zero, n_valid, log_ratio


def fused_token_stats_torch(entry, config, logp, old_logp, adv, mask, scale):
    """``fused_token_stats`` with torch operations in float64 (any device)."""
    lp, lo, a = (x.detach().double() for x in (logp, old_logp, adv))
    m = mask.double()
    d = lp - lo
    n = m.sum(-1, keepdim=True)
    sd, sa, sl = ((d * m).sum(-1, keepdim=True), (a * m).sum(-1, keepdim=True),
                  (lp * m).sum(-1, keepdim=True))
    w0 = entry.torch_weights(d, lp, lo, a, m, n, sd, sa, sl, entry.params(config))
    valid = mask != 0
    w = torch.where(valid, scale.double()[:, None] * w0, 0.0).to(logp.dtype)
    return w, ((w == 0) & valid).sum(-1), valid.sum(-1), sd[:, 0]
