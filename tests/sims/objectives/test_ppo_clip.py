"""Reference values of PPO clip (clip-higher, lower bound, dual-clip) on the literal 2x3 batch of ``reference`` (derived by hand).

Each test states the per-token loss, the aggregated loss and ∂loss/∂logp (= -w), then compares the
torch result in float64."""

from __future__ import annotations

import math

import pytest

from sims import objectives as O
from tests.sims.objectives.reference import check


def test_ppo_clip_reference_values():
    # L = max(-Aρ, -A·clip(ρ, 0.8, 1.2)), token-mean over 5 tokens
    # seq 0 (A=1):  ρ=1 -> -1 (∂ -1); ρ=1.5 -> -1.2 clipped (∂ 0); ρ=0.5 -> max(-0.5, -0.8) = -0.5 (∂ -0.5)
    # seq 1 (A=-1): ρ=2 -> max(2, 1.2) = 2 (∂ +2, the unbounded side); ρ=0.9 -> 0.9 (∂ +0.9)
    # loss = (-1 - 1.2 - 0.5 + 2 + 0.9)/5 = 0.04
    diag = check(O.ppo_clip, O.PpoClipConfig(), 0.04, [[-0.2, 0.0, -0.1], [0.4, 0.18, 0.0]])
    assert diag["clip_frac_high"].item() == pytest.approx(1 / 5)
    assert diag["clip_frac_low"].item() == 0.0


def test_ppo_clip_higher_reference_values():
    # eps_high = 0.6: ρ = 1.5 is now inside -> L = -1.5, ∂ = -1.5; loss = (-1 - 1.5 - 0.5 + 2 + 0.9)/5
    check(O.ppo_clip, O.PpoClipConfig(eps_high=0.6), -0.02, [[-0.2, -0.3, -0.1], [0.4, 0.18, 0.0]])


def test_ppo_clip_lower_bound_reference_values():
    # eps_low = 0.05: seq 1, ρ = 0.9 < 0.95 with A < 0 -> L = max(0.9, 0.95) = 0.95, ∂ = 0
    # loss = (-1 - 1.2 - 0.5 + 2 + 0.95)/5 = 0.05
    diag = check(O.ppo_clip, O.PpoClipConfig(eps_low=0.05), 0.05, [[-0.2, 0.0, -0.1], [0.4, 0.0, 0.0]])
    assert diag["clip_frac_low"].item() == pytest.approx(1 / 5)


def test_ppo_clip_dual_clip_reference_values():
    # c = 1.5: seq 1, ρ = 2 with A < 0 -> min(2, -c·A = 1.5) = 1.5, ∂ = 0
    # loss = (-1 - 1.2 - 0.5 + 1.5 + 0.9)/5 = -0.06
    diag = check(O.ppo_clip, O.PpoClipConfig(dual_clip_c=1.5), -0.06,
                  [[-0.2, 0.0, -0.1], [0.0, 0.18, 0.0]])
    assert diag["dual_clip_frac"].item() == pytest.approx(1 / 5)


def test_ppo_clip_log_ratio_clamp_reference_values():
    # log-ratio clamped to [-0.5, 0.5] (verl's ±20 convention, scaled down to reach the batch):
    # seq 0 token 2: log ρ = log 0.5 < -0.5 -> ρ = e^-0.5 (constant), L = max(-e^-0.5, -0.8) = -e^-0.5, ∂ = 0
    # seq 1 token 0: log ρ = log 2 > 0.5 -> ρ = e^0.5, A = -1: L = max(e^0.5, 1.2) = e^0.5, ∂ = 0
    # the other tokens as in the plain reference: -1 (∂ -1), -1.2 (∂ 0), 0.9 (∂ +0.9)
    loss = (-1 - 1.2 - math.exp(-0.5) + math.exp(0.5) + 0.9) / 5
    check(O.ppo_clip, O.PpoClipConfig(log_ratio_min=-0.5, log_ratio_max=0.5), loss,
          [[-0.2, 0.0, 0.0], [0.0, 0.18, 0.0]])


def test_ppo_clip_log_ratio_bounds_are_validated():
    with pytest.raises(ValueError, match="log_ratio_min"):
        O.PpoClipConfig(log_ratio_min=1.0)
    with pytest.raises(ValueError, match="log_ratio_max"):
        O.PpoClipConfig(log_ratio_max=float("inf"))
