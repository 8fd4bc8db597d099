"""Loss + gradient throughput of every registered objective (pytest-benchmark).

Skipped in the normal run; run with ``python -m pytest --benchmark-only tests/benchmarks``.
One batch of B = 512 sequences x T = 128 tokens, float32, CPU: the cost of one forward and one
backward with respect to ``logp``, input validation included; and the same batch through each
fused weight kernel of the Monte Carlo engine.
"""

from __future__ import annotations

import pytest
import torch

from sims.engines.weights import FUSED, fused_token_stats
from sims.registry import OBJECTIVES
from tests.batches import make_batch

B_GROUPS, K, T = 64, 8, 128


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_bench_objective_loss_and_grad(benchmark, name):
    spec = OBJECTIVES[name]
    b = make_batch(0, B_GROUPS, K, T, per_token_adv=False)
    logp, old, adv, mask = (x.float() for x in (b.logp, b.old_logp, b.adv, b.mask))
    logp.requires_grad_(True)
    cfg = spec.config_cls()
    extra = {k: old - 0.1 * mask for k in spec.inputs}  # rollout_logp

    def step():
        loss, _ = spec.loss_fn(logp, old, adv, mask, config=cfg, **extra)
        return torch.autograd.grad(loss, logp)[0]

    benchmark.extra_info["tokens"] = B_GROUPS * K * T
    grad = benchmark(step)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("name", list(FUSED))
def test_bench_fused_weight_kernel(benchmark, name):
    """The same batch through the objective's fused weight kernel (``sims.engines.weights``):
    weights, zero counts and log ratios in one pass, no validation or diagnostics."""
    entry = FUSED[name]
    b = make_batch(0, B_GROUPS, K, T, per_token_adv=False)
    logp, old, adv, mask = (x.float() for x in (b.logp, b.old_logp, b.adv, b.mask))
    cfg = OBJECTIVES[name].config_cls()
    scale = torch.ones(logp.shape[0])
    fused_token_stats(entry, cfg, logp, old, adv, mask, scale)  # compile outside the timing
    benchmark.extra_info["tokens"] = B_GROUPS * K * T
    w, *_ = benchmark(fused_token_stats, entry, cfg, logp, old, adv, mask, scale)
    assert torch.isfinite(w).all()
