"""The literal batch of the objectives' reference-value tests, and their helpers.

Reference values for every objective on one literal 2x3 batch, derived by hand.

The batch (float64):

    logp      = [[-1.0, -2.0, -1.0], [-0.3, -1.5, 0.0 (pad)]]
    ratio ρ   = [[ 1.0,  1.5,  0.5], [ 2.0,  0.9, 1.0 (pad)]]   (old_logp = logp - log ρ)
    adv A     = [[ 1,    1,    1  ], [-1,   -1,   0 (pad)]]
    mask      = [[ 1,    1,    1  ], [ 1,    1,   0      ]]     N = 5 tokens, T_0 = 3, T_1 = 2

Each test states the per-token loss, the aggregated loss and ∂loss/∂logp (= -w, the negative
gradient weight) worked out by hand, then compares the torch result in float64.
"""

from __future__ import annotations

import math

import pytest
import torch

ATOL_F64 = 1e-12  # float64 arithmetic on O(1) numbers: a few ulps


def batch():
    logp = torch.tensor([[-1.0, -2.0, -1.0], [-0.3, -1.5, 0.0]], dtype=torch.float64)
    log_ratio = torch.log(torch.tensor([[1.0, 1.5, 0.5], [2.0, 0.9, 1.0]], dtype=torch.float64))
    old_logp = logp - log_ratio
    adv = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
    return logp, old_logp, adv, mask


def loss_and_grad(fn, config, adv=None):
    logp, old_logp, default_adv, mask = batch()
    logp = logp.clone().requires_grad_(True)
    loss, diag = fn(logp, old_logp, default_adv if adv is None else adv, mask, config=config)
    (grad,) = torch.autograd.grad(loss, logp)
    return loss.item(), grad, diag


def check(fn, config, loss, grad, adv=None):
    got_loss, got_grad, diag = loss_and_grad(fn, config, adv)
    assert got_loss == pytest.approx(loss, abs=ATOL_F64)
    torch.testing.assert_close(got_grad, torch.tensor(grad, dtype=torch.float64), atol=ATOL_F64, rtol=0)
    return diag


def sig(x: float) -> float:
    """The logistic sigmoid 1 / (1 + e^-x)."""
    return 1.0 / (1.0 + math.exp(-x))
