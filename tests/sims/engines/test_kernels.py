"""sims.engines.kernels: the fused token statistics against their torch reference."""

from __future__ import annotations

import pytest
import torch

from sims.engines.kernels import token_stats_cpu, token_stats_torch


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_token_stats_kernel_equals_the_torch_reference(dtype):
    g = torch.Generator().manual_seed(0)
    n, t = 50, 9
    grad = torch.randn(n, t, generator=g, dtype=dtype)
    grad[grad.abs() < 0.3] = 0.0  # exact zeros, some on valid tokens
    lengths = torch.randint(1, t + 1, (n,), generator=g)
    mask = (torch.arange(t)[None, :] < lengths[:, None]).to(dtype)
    logp = -torch.rand(n, t, generator=g, dtype=dtype) * 3
    old_logp = -torch.rand(n, t, generator=g, dtype=dtype) * 3
    scale = torch.rand(n, generator=g, dtype=dtype) + 0.5
    fast = token_stats_cpu(grad, scale, mask, logp, old_logp)
    ref = token_stats_torch(grad, scale, mask, logp, old_logp)
    assert torch.equal(fast[0], ref[0])  # w = -c·grad, elementwise: bit-identical
    assert torch.equal(fast[1], ref[1]) and torch.equal(fast[2], ref[2])
    assert torch.equal(fast[2], lengths)
    assert int(fast[1].sum()) > 0  # the case has zero weights on valid tokens
    torch.testing.assert_close(fast[3], ref[3], rtol=1e-12, atol=1e-12)


def test_zero_counts_ignore_padding():
    grad = torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    w, n_zero, n_valid, log_r = token_stats_cpu(grad, torch.ones(2), mask, torch.zeros(2, 3),
                                                 torch.full((2, 3), -0.5))
    assert n_zero.tolist() == [1, 2] and n_valid.tolist() == [2, 3]
    assert log_r.tolist() == [1.0, 1.5]
    assert torch.equal(w, -grad)
