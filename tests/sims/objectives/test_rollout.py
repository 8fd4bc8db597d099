"""Reference values of the rollout-correction weight and of PPO x rollout IS, and of OPSM in
``ppo_clip``, on the literal 2x3 batch of ``reference`` (derived by hand).

The rollout log-probs are chosen so that w = π_old/π_roll = [[1, 3, 2], [1.5, 0.5]] on the
valid tokens (sequence products W = [6, 0.75]); PPO's per-token loss on the batch is
[[-1, -1.2 (clipped), -0.5], [2, 0.9]] with ∂/∂ℓ = -A·ρ·1[not clipped] = [[-1, 0, -0.5], [2, 0.9]]."""

from __future__ import annotations

import math

import pytest
import torch

from sims import objectives as O
from tests.sims.objectives.reference import ATOL_F64, batch, check

W = torch.tensor([[1.0, 3.0, 2.0], [1.5, 0.5, 1.0]], dtype=torch.float64)


def rollout_logp():
    _, old, _, _ = batch()
    return old - torch.log(W)


def _weight(**kw):
    _, old, _, mask = batch()
    return O.rollout_is_weight(old, rollout_logp(), mask, **kw)


@pytest.mark.parametrize(("kw", "expected"), [
    (dict(), [[1, 2, 2], [1.5, 0.5, 0]]),                                    # TIS min(w, 2)
    (dict(lo=0.8, hi=2.5), [[1, 2.5, 2], [1.5, 0.8, 0]]),                    # clip(w, 0.8, 2.5)
    (dict(mode="mask", hi=2.5), [[1, 0, 2], [1.5, 0.5, 0]]),                 # MIS w·1[w <= 2.5]
    (dict(mode="band", lo=0.8, hi=2.5), [[1, 0, 2], [1.5, 0, 0]]),           # IcePop band
    (dict(level="sequence"), [[2, 2, 2], [0.75, 0.75, 0]]),                  # min(W, 2)
    (dict(level="sequence", mode="mask"), [[0, 0, 0], [0.75, 0.75, 0]]),     # W·1[W <= 2]
    (dict(level="sequence", mode="band", lo=0.8, hi=7.0), [[6, 6, 6], [0, 0, 0]]),
])
def test_rollout_is_weight_reference_values(kw, expected):
    got = _weight(**kw)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), atol=ATOL_F64, rtol=0)
    assert not got.requires_grad


def test_rollout_is_weight_of_a_huge_product_is_its_truncated_value():
    old = torch.zeros(1, 200, dtype=torch.float64)
    roll = torch.full((1, 200), -5.0, dtype=torch.float64)  # W = e^1000: inf in float64
    w = O.rollout_is_weight(old, roll, torch.ones(1, 200), level="sequence")
    assert torch.equal(w, torch.full_like(w, 2.0))
    assert torch.equal(O.rollout_is_weight(old, roll, torch.ones(1, 200), level="sequence", mode="mask"),
                       torch.zeros_like(w))


@pytest.mark.parametrize(("kw", "field"), [
    (dict(level="batch"), "level"), (dict(mode="clip"), "mode"), (dict(hi=0.0), "hi"),
    (dict(mode="band"), "lo"), (dict(mode="mask", lo=0.5), "lo"), (dict(lo=3.0), "lo"),
])
def test_rollout_is_weight_rejects_bad_parameters(kw, field):
    with pytest.raises(ValueError, match=field):
        _weight(**kw)


def _rollout_check(config, loss, grad, roll=None, adv=None):
    logp, old, default_adv, mask = batch()
    logp = logp.clone().requires_grad_(True)
    got, diag = O.ppo_clip_rollout_is(logp, old, default_adv if adv is None else adv, mask, config=config,
                                      rollout_logp=rollout_logp() if roll is None else roll)
    (g,) = torch.autograd.grad(got, logp)
    assert got.item() == pytest.approx(loss, abs=ATOL_F64)
    torch.testing.assert_close(g, torch.tensor(grad, dtype=torch.float64), atol=ATOL_F64, rtol=0)
    return diag


def test_ppo_clip_rollout_is_reference_values():
    # ω = min(w, 2) = [[1, 2, 2], [1.5, 0.5]] times PPO's clipped loss (after clipping, as verl)
    # loss = (-1 - 2.4 - 1 + 3 + 0.45)/5 = -0.19; ∂ = ω·[[-1, 0, -0.5], [2, 0.9]]/5
    diag = _rollout_check(O.PpoClipRolloutIsConfig(), -0.19, [[-0.2, 0.0, -0.2], [0.6, 0.09, 0.0]])
    assert diag["rollout_is_weight_mean"].item() == pytest.approx(7.0 / 5)
    assert diag["rollout_is_clip_frac"].item() == pytest.approx(1 / 5)  # w = 3 truncated


def test_ppo_clip_rollout_is_band_reference_values():
    # band [0.8, 2.5]: ω = [[1, 0, 2], [1.5, 0]]: loss = (-1 - 1 + 3)/5 = 0.2
    _rollout_check(O.PpoClipRolloutIsConfig(rollout_is_mode="band", rollout_is_lo=0.8, rollout_is_hi=2.5),
                   0.2, [[-0.2, 0.0, -0.2], [0.6, 0.0, 0.0]])


def test_ppo_clip_rollout_is_with_weight_one_is_ppo_clip():
    # π_roll = π_old: ω = 1 and the loss is ppo_clip's (0.04, test_ppo_clip)
    _, old, _, _ = batch()
    _rollout_check(O.PpoClipRolloutIsConfig(), 0.04, [[-0.2, 0.0, -0.1], [0.4, 0.18, 0.0]], roll=old)


def test_ppo_clip_rollout_is_requires_rollout_logp():
    logp, old, adv, mask = batch()
    with pytest.raises(TypeError, match="rollout_logp"):
        O.ppo_clip_rollout_is(logp, old, adv, mask, config=O.PpoClipRolloutIsConfig())


# ------------------------------------------------------------------ OPSM (ppo_clip.opsm_delta)

ADV_NEG = torch.tensor([[-1.0, -1.0, -1.0], [-1.0, -1.0, 0.0]], dtype=torch.float64)


def test_opsm_masks_a_negative_sequence_beyond_delta():
    # A = -1 everywhere. PPO per token: [[1, 1.5, 0.8 (clipped)], [2, 0.9]]; ∂ = [[1, 1.5, 0], [2, 0.9]]
    # mean_t(ℓ_old - ℓ) = -mean log ρ: seq 0 -ln(0.75)/3 = 0.0959 > δ = 0.05 -> masked; seq 1
    # -ln(1.8)/2 < 0 -> kept. Masked tokens stay in the denominator: loss = (2 + 0.9)/5 = 0.58
    diag = check(O.ppo_clip, O.PpoClipConfig(opsm_delta=0.05), 0.58, [[0.0, 0.0, 0.0], [0.4, 0.18, 0.0]],
                 adv=ADV_NEG)
    assert diag["opsm_masked_frac"].item() == pytest.approx(3 / 5)


def test_opsm_keeps_it_within_delta_and_off():
    # δ = 0.1 >= 0.0959: nothing masked, loss = (1 + 1.5 + 0.8 + 2 + 0.9)/5 = 1.24, as without OPSM
    grad = [[0.2, 0.3, 0.0], [0.4, 0.18, 0.0]]
    check(O.ppo_clip, O.PpoClipConfig(opsm_delta=0.1), 1.24, grad, adv=ADV_NEG)
    check(O.ppo_clip, O.PpoClipConfig(), 1.24, grad, adv=ADV_NEG)
    assert -math.log(0.75) / 3 == pytest.approx(0.0958940, abs=1e-7)


def test_opsm_reads_rollout_logp_when_given():
    # ℓ_samp = ℓ + 0.2 on valid tokens: mean(ℓ_samp - ℓ) = 0.2 > δ = 0.1 for both sequences; only
    # seq 1 has A < 0, so it is masked: loss = (-1 - 1.2 - 0.5)/5 = -0.54 (vs 0.04 without OPSM)
    logp, old, adv, mask = batch()
    samp = (logp + 0.2) * mask
    x = logp.clone().requires_grad_(True)
    loss, diag = O.ppo_clip(x, old, adv, mask, config=O.PpoClipConfig(opsm_delta=0.1), rollout_logp=samp)
    (g,) = torch.autograd.grad(loss, x)
    assert loss.item() == pytest.approx(-0.54, abs=ATOL_F64)
    torch.testing.assert_close(g, torch.tensor([[-0.2, 0.0, -0.1], [0.0, 0.0, 0.0]], dtype=torch.float64),
                               atol=ATOL_F64, rtol=0)
    # ... and ppo_clip_rollout_is with ω = 1 (π_roll = π_old) but ℓ_samp = ℓ^roll applies the same mask
    loss2, _ = O.ppo_clip_rollout_is(logp, old, adv, mask, config=O.PpoClipRolloutIsConfig(opsm_delta=0.1),
                                     rollout_logp=old)
    assert loss2.item() == pytest.approx(0.04, abs=ATOL_F64)  # old: mean(ℓ_old - ℓ) < 0.1 for seq 1


def test_ppo_clip_refuses_rollout_logp_without_opsm():
    logp, old, adv, mask = batch()
    with pytest.raises(ValueError, match="rollout_logp"):
        O.ppo_clip(logp, old, adv, mask, config=O.PpoClipConfig(), rollout_logp=old)


@pytest.mark.parametrize("bad", [-0.1, math.inf])
def test_opsm_delta_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="opsm_delta"):
        O.PpoClipConfig(opsm_delta=bad)
