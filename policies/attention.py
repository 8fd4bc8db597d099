r"""Causal attention over a group-shared prompt prefix: fused CPU kernels (numba) for the forward
and backward pass, their torch reference, and the autograd.Function that joins them (usable
under ``torch.func.vmap``, the lockstep trainer's seed axis).

Sequence n (of N) belongs to group m = n // ``repeats`` (a GRPO group: K samples of one prompt).
Its ``l`` new queries ``q[n, i]`` sit at own positions Lo − l + i and attend to

* the Lp prefix keys of its group, ``kp[m, 0..Lp−1]`` (the prompt and SEP, computed once per group),
* its own keys ``ko[n, 0..Lo − l + i]`` (the response so far, causal),

for each of H heads of width D:

.. math::
    s_{j} = \frac{q\cdot k_j}{\sqrt{D}},\qquad p = \mathrm{softmax}(s),\qquad o = \sum_j p_j v_j,

and the backward pass, with g = ∂L/∂o and δ = g·o: ∂L/∂v_j = p_j g, ∂L/∂s_j = p_j (g·v_j − δ),
∂L/∂q = Σ_j (∂L/∂s_j) k_j/√D, ∂L/∂k_j = (∂L/∂s_j) q/√D (the prefix keys and values summed over
the group's sequences). The layout is position-major, ``[rows, positions, H, D]``, which is the
projection's output reshaped — no transposes, no repeated prefix, no concatenation.

Why a kernel: at the lockstep trainer's sizes (l = 3 queries, 6 keys, D = 16) ATen spends about
half of a training step's forward and backward on the attention's tiny batched matrix products,
transposes and softmax passes; the kernel does each (sequence, query, head) in one loop nest.
Its reference is ``attend_torch`` (tests: equal to float64 rounding, values and all five
gradients). The kernel parallelises over groups, each written by one thread in a fixed order,
so results do not depend on the thread count.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

__all__ = ["attend", "attend_torch"]


@njit(inline="always")
def _dot(a, b):
    acc = 0.0
    for d in range(a.shape[0]):
        acc += a[d] * b[d]
    return acc


@njit(parallel=True, cache=True)
def _forward(q, kp, vp, ko, vo, repeats, scale, out, lse):
    n_rows, length, n_heads, width = q.shape
    n_prefix, n_own = kp.shape[1], ko.shape[1]
    for m in prange(kp.shape[0]):
        s = np.empty(n_prefix + n_own)
        for n in range(m * repeats, (m + 1) * repeats):
            for i in range(length):
                last = n_own - length + i
                for h in range(n_heads):
                    qv = q[n, i, h]
                    top = -np.inf
                    for j in range(n_prefix):
                        s[j] = scale * _dot(qv, kp[m, j, h])
                        top = max(top, s[j])
                    for j in range(last + 1):
                        s[n_prefix + j] = scale * _dot(qv, ko[n, j, h])
                        top = max(top, s[n_prefix + j])
                    total = 0.0
                    for j in range(n_prefix + last + 1):
                        s[j] = math.exp(s[j] - top)
                        total += s[j]
                    o = out[n, i, h]
                    for d in range(width):
                        acc = 0.0
                        for j in range(n_prefix):
                            acc += s[j] * vp[m, j, h, d]
                        for j in range(last + 1):
                            acc += s[n_prefix + j] * vo[n, j, h, d]
                        o[d] = acc / total
                    lse[n, i, h] = top + math.log(total)


@njit(parallel=True, cache=True)
def _backward(q, kp, vp, ko, vo, repeats, scale, out, lse, g, gq, gkp, gvp, gko, gvo):
    n_rows, length, n_heads, width = q.shape
    n_prefix, n_own = kp.shape[1], ko.shape[1]
    for m in prange(kp.shape[0]):
        gkp[m] = 0.0
        gvp[m] = 0.0
        for n in range(m * repeats, (m + 1) * repeats):
            gq[n] = 0.0
            gko[n] = 0.0
            gvo[n] = 0.0
            for i in range(length):
                last = n_own - length + i
                for h in range(n_heads):
                    qv, gv = q[n, i, h], g[n, i, h]
                    delta = _dot(gv, out[n, i, h])
                    for j in range(n_prefix + last + 1):
                        if j < n_prefix:
                            k, v, gk, gvv = kp[m, j, h], vp[m, j, h], gkp[m, j, h], gvp[m, j, h]
                        else:
                            k, v = ko[n, j - n_prefix, h], vo[n, j - n_prefix, h]
                            gk, gvv = gko[n, j - n_prefix, h], gvo[n, j - n_prefix, h]
                        p = math.exp(scale * _dot(qv, k) - lse[n, i, h])
                        gs = p * (_dot(gv, v) - delta) * scale
                        for d in range(width):
                            gvv[d] += p * gv[d]
                            gq[n, i, h, d] += gs * k[d]
                            gk[d] += gs * qv[d]


def attend_torch(q: Tensor, kp: Tensor, vp: Tensor, ko: Tensor, vo: Tensor, repeats: int) -> Tensor:
    """The reference (module doc): ``[N, l, H, D]`` attention outputs from ``q [N, l, H, D]``,
    prefix keys/values ``[N / repeats, Lp, H, D]`` and own keys/values ``[N, Lo, H, D]``, Lo >= l."""
    length, n_own, width = q.shape[1], ko.shape[1], q.shape[-1]
    k = torch.cat([kp.repeat_interleave(repeats, 0), ko], 1).transpose(1, 2)  # [N, H, Lp + Lo, D]
    v = torch.cat([vp.repeat_interleave(repeats, 0), vo], 1).transpose(1, 2)
    scores = q.transpose(1, 2) @ k.transpose(-1, -2) / math.sqrt(width)  # [N, H, l, Lp + Lo]
    future = torch.zeros(length, kp.shape[1] + n_own, dtype=torch.bool, device=q.device)
    future[:, kp.shape[1]:] = torch.ones(length, n_own, dtype=torch.bool, device=q.device).triu(n_own - length + 1)
    return (torch.softmax(scores.masked_fill(future, float("-inf")), -1) @ v).transpose(1, 2)


def _arrays(*xs: Tensor) -> list[np.ndarray]:
    return [x.detach().numpy() for x in xs]


class _Attend(torch.autograd.Function):
    """The CPU kernels as one differentiable op, with a vmap rule (seed axis folded into rows)."""

    @staticmethod
    def forward(q, kp, vp, ko, vo, repeats):
        out = torch.empty(q.shape, dtype=q.dtype)
        lse = torch.empty(q.shape[:3], dtype=q.dtype)
        _forward(*_arrays(q, kp, vp, ko, vo), repeats, 1 / math.sqrt(q.shape[-1]), out.numpy(), lse.numpy())
        return out, lse

    @staticmethod
    def setup_context(ctx, inputs, output):
        q, kp, vp, ko, vo, repeats = inputs
        ctx.save_for_backward(q, kp, vp, ko, vo, *output)
        ctx.repeats = repeats
        ctx.mark_non_differentiable(output[1])

    @staticmethod
    def backward(ctx, g, _):
        q, kp, vp, ko, vo, out, lse = ctx.saved_tensors
        grads = [torch.empty(x.shape, dtype=x.dtype) for x in (q, kp, vp, ko, vo)]
        _backward(*_arrays(q, kp, vp, ko, vo), ctx.repeats, 1 / math.sqrt(q.shape[-1]), *_arrays(out, lse),
                  g.contiguous().numpy(), *(x.numpy() for x in grads))
        return (*grads, None)

    @staticmethod
    def vmap(info, in_dims, q, kp, vp, ko, vo, repeats):
        def rows(x, dim):
            x = x.expand(info.batch_size, *x.shape) if dim is None else x.movedim(dim, 0)
            return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])

        args = [rows(x, dim) for x, dim in zip((q, kp, vp, ko, vo), in_dims[:5])]
        out, lse = _Attend.apply(*args, repeats)
        b = info.batch_size
        return tuple(x.reshape(b, x.shape[0] // b, *x.shape[1:]) for x in (out, lse)), (0, 0)


def attend(q: Tensor, kp: Tensor, vp: Tensor, ko: Tensor, vo: Tensor, repeats: int) -> Tensor:
    """``attend_torch``'s value by the fused kernels on the CPU (float32 or float64), differentiable
    in all five tensors and vmappable; ``attend_torch`` itself on other devices and dtypes."""
    if q.device.type != "cpu" or q.dtype not in (torch.float32, torch.float64):
        return attend_torch(q, kp, vp, ko, vo, repeats)
    return _Attend.apply(q, kp, vp, ko, vo, repeats)[0]
