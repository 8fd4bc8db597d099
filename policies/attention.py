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

Why kernels: at the lockstep trainer's sizes (l = 3 queries, 6 keys, D = 16) ATen spent about
half of a training step's forward and backward on the attention's tiny batched matrix products
(below 400 multiply-adds per matrix ATen's CPU bmm runs a scalar loop), transposes and softmax
passes. The forward is two kernels — the scores of the visible keys, then Σ p v — around torch's
softmax (whose vectorised exp is 40x faster than the kernels' scalar one); the backward is one
kernel that reuses the softmax weights. Their reference is ``attend_torch`` (tests: equal to
float64 rounding, values and all five gradients). The kernels parallelise over groups, each
written by one thread in a fixed order, so results do not depend on the thread count; the dot
products over D are reassociated (``FASTMATH``) so that they vectorise.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numba import njit, prange
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["attend", "attend_torch"]


FASTMATH = {"reassoc", "contract", "nsz"}  # lets LLVM vectorise the width-D dot products (sums reassociated)


@njit(inline="always", fastmath=FASTMATH)
def _score(q, n, i, h, keys, r, j, scale):
    acc = 0.0
    for d in range(q.shape[3]):
        acc += q[n, i, h, d] * keys[r, j, h, d]
    return acc * scale


@njit(inline="always", fastmath=FASTMATH)
def _add_value(out, n, i, h, p, values, r, j):
    for d in range(out.shape[3]):
        out[n, i, h, d] += p * values[r, j, h, d]


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _scores(q, kp, ko, repeats, scale, out):
    """``out [N, l, H, Lp + Lo]``: q·k/√D for the visible keys (prefix, then own), −inf for the
    others."""
    length, n_heads = q.shape[1], q.shape[2]
    n_prefix, n_own = kp.shape[1], ko.shape[1]
    for m in prange(kp.shape[0]):
        for n in range(m * repeats, (m + 1) * repeats):
            for i in range(length):
                n_seen = n_own - length + i + 1  # own keys 0 .. n_seen − 1 are visible
                for h in range(n_heads):
                    for j in range(n_prefix):
                        out[n, i, h, j] = _score(q, n, i, h, kp, m, j, scale)
                    for j in range(n_own):
                        out[n, i, h, n_prefix + j] = _score(q, n, i, h, ko, n, j, scale) if j < n_seen else -np.inf


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _weighted_values(prob, vp, vo, repeats, out):
    """``out [N, l, H, D]``: Σ_j p_j v_j over the prefix and own values."""
    length, n_heads, width = out.shape[1], out.shape[2], out.shape[3]
    n_prefix, n_own = vp.shape[1], vo.shape[1]
    for m in prange(vp.shape[0]):
        for n in range(m * repeats, (m + 1) * repeats):
            for i in range(length):
                n_seen = n_own - length + i + 1
                for h in range(n_heads):
                    for d in range(width):
                        out[n, i, h, d] = 0.0
                    for j in range(n_prefix):
                        _add_value(out, n, i, h, prob[n, i, h, j], vp, m, j)
                    for j in range(n_seen):
                        _add_value(out, n, i, h, prob[n, i, h, n_prefix + j], vo, n, j)


def _softmax_(z: Tensor) -> Tensor:
    """In-place softmax over the last axis (torch's vectorised exp; the kernels' scalar exp cost
    more than the scores and values together)."""
    z.sub_(z.amax(-1, keepdim=True)).exp_()
    return z.div_(z.sum(-1, keepdim=True))


@njit(inline="always", fastmath=FASTMATH)
def _key_gradient(q, g, n, i, h, keys, values, gkeys, gvalues, r, j, p, delta, scale, gq):
    """One key's share of the backward pass (module doc), accumulated in place."""
    width = q.shape[3]
    gp = 0.0
    for d in range(width):
        gp += g[n, i, h, d] * values[r, j, h, d]
    gs = p * (gp - delta) * scale
    for d in range(width):
        gvalues[r, j, h, d] += p * g[n, i, h, d]
        gq[n, i, h, d] += gs * keys[r, j, h, d]
        gkeys[r, j, h, d] += gs * q[n, i, h, d]


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _backward(q, kp, vp, ko, vo, repeats, scale, out, prob, g, gq, gkp, gvp, gko, gvo):
    length, n_heads, width = q.shape[1], q.shape[2], q.shape[3]
    n_prefix, n_own = kp.shape[1], ko.shape[1]
    for m in prange(kp.shape[0]):
        gkp[m] = 0.0
        gvp[m] = 0.0
        for n in range(m * repeats, (m + 1) * repeats):
            gq[n] = 0.0
            gko[n] = 0.0
            gvo[n] = 0.0
            for i in range(length):
                n_seen = n_own - length + i + 1
                for h in range(n_heads):
                    delta = 0.0
                    for d in range(width):
                        delta += g[n, i, h, d] * out[n, i, h, d]
                    for j in range(n_prefix):
                        _key_gradient(q, g, n, i, h, kp, vp, gkp, gvp, m, j, prob[n, i, h, j], delta, scale, gq)
                    for j in range(n_seen):
                        _key_gradient(q, g, n, i, h, ko, vo, gko, gvo, n, j, prob[n, i, h, n_prefix + j], delta,
                                      scale, gq)


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
    return [x.detach().contiguous().numpy() for x in xs]


class _Attend(torch.autograd.Function):
    """The CPU kernels as one differentiable op, with a vmap rule (seed axis folded into rows)."""

    @staticmethod
    def forward(q, kp, vp, ko, vo, repeats):
        out = torch.empty(q.shape, dtype=q.dtype)
        prob = torch.empty(*q.shape[:3], kp.shape[1] + ko.shape[1], dtype=q.dtype)
        q_, kp_, vp_, ko_, vo_ = _arrays(q, kp, vp, ko, vo)
        _scores(q_, kp_, ko_, repeats, 1 / math.sqrt(q.shape[-1]), prob.numpy())
        _weighted_values(_softmax_(prob).numpy(), vp_, vo_, repeats, out.numpy())
        return out, prob

    @staticmethod
    def setup_context(ctx, inputs, output):
        q, kp, vp, ko, vo, repeats = inputs
        ctx.save_for_backward(q, kp, vp, ko, vo, *output)
        ctx.repeats = repeats
        ctx.mark_non_differentiable(output[1])

    @staticmethod
    @once_differentiable
    def backward(ctx, g, _):
        q, kp, vp, ko, vo, out, prob = ctx.saved_tensors
        grads = [torch.empty(x.shape, dtype=x.dtype) for x in (q, kp, vp, ko, vo)]
        _backward(*_arrays(q, kp, vp, ko, vo), ctx.repeats, 1 / math.sqrt(q.shape[-1]), *_arrays(out, prob),
                  g.contiguous().numpy(), *(x.numpy() for x in grads))
        return (*grads, None)

    @staticmethod
    def vmap(info, in_dims, q, kp, vp, ko, vo, repeats):
        def rows(x, dim):
            x = x.expand(info.batch_size, *x.shape) if dim is None else x.movedim(dim, 0)
            return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])

        args = [rows(x, dim).contiguous() for x, dim in zip((q, kp, vp, ko, vo), in_dims[:5])]
        out, prob = _Attend.apply(*args, repeats)
        b = info.batch_size
        return tuple(x.reshape(b, x.shape[0] // b, *x.shape[1:]) for x in (out, prob)), (0, 0)


def attend(q: Tensor, kp: Tensor, vp: Tensor, ko: Tensor, vo: Tensor, repeats: int) -> Tensor:
    """``attend_torch``'s value by the fused kernels on the CPU (float32 or float64), differentiable
    in all five tensors and vmappable; ``attend_torch`` itself on other devices and dtypes."""
    n, length, heads, width = q.shape
    if kp.shape[0] * repeats != n or kp.shape[2:] != (heads, width) or ko.shape[1] < length or \
            ko.shape[0] != n or ko.shape[2:] != (heads, width) or vp.shape != kp.shape or vo.shape != ko.shape or \
            any(x.dtype != q.dtype for x in (kp, vp, ko, vo)):
        raise ValueError(f"attention shapes q {tuple(q.shape)}, kp {tuple(kp.shape)}, vp {tuple(vp.shape)}, "
                         f"ko {tuple(ko.shape)}, vo {tuple(vo.shape)} with repeats={repeats} do not fit; allowed: "
                         "q [N, l, H, D], kp and vp [N / repeats, Lp, H, D], ko and vo [N, Lo, H, D] with Lo >= l, "
                         "one dtype")
    if q.device.type != "cpu" or q.dtype not in (torch.float32, torch.float64):
        return attend_torch(q, kp, vp, ko, vo, repeats)
    # contiguous before the op, so that the tensors saved for the backward pass are too (the
    # kernels' loops vectorise over the head width only on contiguous rows)
    return _Attend.apply(q.contiguous(), kp.contiguous(), vp.contiguous(), ko.contiguous(), vo.contiguous(),
                         repeats)[0]
