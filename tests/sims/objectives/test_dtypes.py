"""Reference values of every objective in float32 and on each device (against float64 on the CPU) on the literal 2x3 batch of ``reference`` (derived by hand).

Each test states the per-token loss, the aggregated loss and ∂loss/∂logp (= -w), then compares the
torch result in float64."""

from __future__ import annotations

import pytest
import torch

from tests.sims.objectives.reference import batch




DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["reinforce", "seq_is", "ppo_clip", "gspo", "gspo_token", "gmpo",
                                  "cispo", "sapo", "sgs_cispo", "dro", "dppo_tv", "dppo_kl", "kl_cov",
                                  "clip_cov", "ppo_clip_rollout_is"])
def test_objective_float32_and_device_match_float64_cpu(name, device):
    from sims.registry import OBJECTIVES

    spec = OBJECTIVES[name]
    cfg = spec.config_cls()
    logp, old, adv, mask = batch()
    results = []
    for dtype, dev in ((torch.float64, "cpu"), (torch.float32, device)):
        lp = logp.to(dtype=dtype, device=dev).requires_grad_(True)
        extra = {k: (old - 0.2 * mask).to(dtype=dtype, device=dev) for k in spec.inputs}  # rollout_logp
        torch.manual_seed(0)  # clip_cov's draw reads the global RNG
        loss, _ = spec.loss_fn(lp, old.to(dtype=dtype, device=dev), adv.to(dtype=dtype, device=dev),
                               mask.to(dtype=dtype, device=dev), config=cfg, **extra)
        (g,) = torch.autograd.grad(loss, lp)
        assert loss.dtype == dtype and loss.device.type == dev
        results.append((loss.double().cpu(), g.double().cpu()))
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-5, rtol=1e-5)  # float32 rounding
    torch.testing.assert_close(results[1][1], results[0][1], atol=1e-5, rtol=1e-5)
