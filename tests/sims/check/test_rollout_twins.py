"""The zoo's rollout-correction entries (``correct.CORRECT_ROLLOUT``, ``planted.PLANTED_ROLLOUT``):
objectives that take ``rollout_logp`` (``ObjectiveSpec.inputs``). Until ``pgverify check`` supplies
rollout log-probs to a spec, the correct twin is compared here with its registry spec directly —
the same gradient weights to 1e-10 on random float64 batches with a training/rollout mismatch —
and the planted bug must differ from it on some of them."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings

from sims.registry import OBJECTIVES
from tests.batches import batch_params, make_batch
from tests.sims.check.correct import CORRECT_ROLLOUT
from tests.sims.check.planted import PLANTED_ROLLOUT


def _weights(fn, b):
    logp = b.logp.clone().requires_grad_(True)
    out = fn(logp, b.old_logp, b.adv, b.mask, rollout_logp=b.rollout_logp)
    loss = out[0] if isinstance(out, tuple) else out
    return loss.detach(), torch.autograd.grad(loss, logp)[0]


def _spec_fn(name, params):
    spec = OBJECTIVES[name]
    cfg = spec.config_cls(**params)
    return lambda *a, **kw: spec.loss_fn(*a, config=cfg, **kw)


@pytest.mark.parametrize("v", CORRECT_ROLLOUT, ids=[v.name for v in CORRECT_ROLLOUT])
@settings(max_examples=50)
@given(params=batch_params)
def test_correct_rollout_twin_equals_its_spec(v, params):
    seed, g, k, t = params
    b = make_batch(seed, g, k, t, per_token_adv=True, rollout=True)
    loss, w = _weights(lambda *a, **kw: v.fn(*a, **kw, **v.params), b)
    loss_s, w_s = _weights(_spec_fn(v.spec, v.spec_params), b)
    torch.testing.assert_close(loss, loss_s, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(w, w_s, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("v", PLANTED_ROLLOUT, ids=[v.name for v in PLANTED_ROLLOUT])
def test_planted_rollout_bug_differs_from_its_spec(v):
    differs = 0
    for seed in range(20):
        b = make_batch(seed, 2, 3, 5, per_token_adv=True, rollout=True)
        w = _weights(v.fn, b)[1]
        w_s = _weights(_spec_fn(v.spec, v.spec_params), b)[1]
        differs += not torch.allclose(w, w_s, atol=1e-10, rtol=1e-6)
    assert differs >= 10
