r"""The Monte Carlo engine's per-token bookkeeping, fused (numba on the CPU, torch elsewhere).

After the autograd call, ``sims.engines.montecarlo`` needs, per chunk of replicas, three things from
the ``[N, T]`` tensors, each one pass in the fused kernel instead of about ten in eager torch:

* the gradient weights under the chosen aggregation, w_it = -c_i ∂L_sum/∂ℓ_it, where c_i is
  the aggregation's per-sequence normaliser (``sims.engines.montecarlo._normaliser``);
* per sequence, the number of valid tokens whose weight is exactly 0, and the number of valid
  tokens (for the zero-weight fraction);
* per sequence, log R_i = Σ_t m_it (ℓ_it - ℓ^old_it), the log sequence importance ratio (for
  the effective sample size), summed in float64.

``token_stats_cpu`` and ``token_stats_torch`` compute the same values (the sums in a different
order); the tests compare them.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange
from torch import Tensor


@njit(parallel=True, cache=True)
def _token_stats(grad, scale, mask, logp, old_logp, w, n_zero, n_valid, log_ratio):
    n, horizon = grad.shape
    for i in prange(n):
        c = scale[i]
        zeros = 0
        valid = 0
        lr = 0.0
        for t in range(horizon):
            x = -grad[i, t] * c
            w[i, t] = x
            if mask[i, t] != 0:
                valid += 1
                zeros += x == 0
                lr += np.float64(logp[i, t]) - np.float64(old_logp[i, t])
        n_zero[i] = zeros
        n_valid[i] = valid
        log_ratio[i] = lr


def token_stats(grad: Tensor, scale: Tensor, mask: Tensor, logp: Tensor,
                old_logp: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(w [N, T], zero-weight count [N], valid count [N], log R [N] float64)`` from
    ``grad = ∂L_sum/∂ℓ`` and the per-sequence normaliser ``scale [N]`` (module docstring)."""
    if grad.device.type == "cpu":
        return token_stats_cpu(grad, scale, mask, logp, old_logp)
    return token_stats_torch(grad, scale, mask, logp, old_logp)


def token_stats_cpu(grad, scale, mask, logp, old_logp):
    """``token_stats`` by the numba kernel (one pass, parallel over sequences)."""
    n, horizon = grad.shape
    w = torch.empty(n, horizon, dtype=grad.dtype)
    n_zero = torch.empty(n, dtype=torch.int64)
    n_valid = torch.empty(n, dtype=torch.int64)
    log_ratio = torch.empty(n, dtype=torch.float64)
    arrays = (grad, scale.to(grad.dtype), mask, logp, old_logp)
    _token_stats(*(x.detach().numpy() for x in arrays), w.numpy(), n_zero.numpy(), n_valid.numpy(),
                 log_ratio.numpy())
    return w, n_zero, n_valid, log_ratio


def token_stats_torch(grad, scale, mask, logp, old_logp):
    """``token_stats`` with torch operations (any device; the reference of the kernel)."""
    w = -grad * scale.to(grad.dtype)[:, None]
    valid = mask != 0
    log_ratio = ((logp.detach().double() - old_logp.double()) * valid).sum(-1)
    return w, ((w == 0) & valid).sum(-1), valid.sum(-1), log_ratio
