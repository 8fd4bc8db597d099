"""Reference values of GSPO, GSPO-token and GMPO on the literal 2x3 batch of ``reference`` (derived by hand).

Each test states the per-token loss, the aggregated loss and ∂loss/∂logp (= -w), then compares the
torch result in float64."""

from __future__ import annotations

import math

import pytest

from sims import objectives as O
from tests.sims.objectives.reference import batch, check

S0, S1 = 0.75 ** (1 / 3), 1.8 ** 0.5  # geometric-mean ratios of the two sequences


def test_gspo_reference_values():
    # s = [0.75^(1/3), 1.8^(1/2)]; default eps (3e-4, 4e-4) do not bind here: A>0 with s<1, A<0 with s>1
    # L_i = -Ā_i s_i; loss = (-s0 + s1)/2; ∂/∂ℓ_it = (1/B)(-Ā_i s_i / T_i) = [-s0/6, +s1/4]
    check(O.gspo, O.GspoConfig(), (-S0 + S1) / 2, [[-S0 / 6] * 3, [S1 / 4, S1 / 4, 0.0]])


def test_gspo_clipped_reference_values():
    # flipped advantages, eps (0.05, 0.2): seq 0 (A=-1, s0=0.9086 < 0.95) -> L = max(s0, 0.95) = 0.95,
    # seq 1 (A=+1, s1=1.342 > 1.2) -> L = max(-s1, -1.2) = -1.2: both clipped, zero gradient
    adv = -batch()[2]
    diag = check(O.gspo, O.GspoConfig(eps_low=0.05, eps_high=0.2), (0.95 - 1.2) / 2,
                  [[0.0] * 3, [0.0] * 3], adv=adv)
    assert diag["clip_frac_low"].item() == pytest.approx(3 / 5)
    assert diag["clip_frac_high"].item() == pytest.approx(2 / 5)


def test_gspo_token_reference_values():
    # same value and gradient as gspo when A is per sequence: ∂/∂ℓ_it = c_it·(-A s_i) = (1/(B T_i))(-A s_i)
    check(O.gspo_token, O.GspoConfig(), (-S0 + S1) / 2, [[-S0 / 6] * 3, [S1 / 4, S1 / 4, 0.0]])


def test_gmpo_reference_values():
    # d = log ρ; eps = 0.4 in log space.
    # seq 0 (A>0): d̃ = min(d, clip(d)) = [0, 0.4 (clipped: ln 1.5 = 0.405 > 0.4), ln 0.5 (unclipped)]
    #   g0 = exp((0 + 0.4 + ln 0.5)/3); ∂/∂ℓ = (1/2)(-g0/3) on tokens 0 and 2, 0 on token 1
    # seq 1 (A<0): d̃ = max(d, clip(d)) = [ln 2, ln 0.9] (both unclipped); g1 = sqrt(1.8)
    #   ∂/∂ℓ = (1/2)(+g1/2)
    g0 = math.exp((0.4 + math.log(0.5)) / 3)
    g1 = math.sqrt(1.8)
    diag = check(O.gmpo, O.GmpoConfig(), (-g0 + g1) / 2,
                  [[-g0 / 6, 0.0, -g0 / 6], [g1 / 4, g1 / 4, 0.0]])
    assert diag["clip_frac_high"].item() == pytest.approx(1 / 5)


# ------------------------------------------------------------------ GSPO dual-clip

S0, S1 = 0.75 ** (1 / 3), 1.8 ** 0.5  # s_i = (Π ρ)^{1/T_i}: 0.908560, 1.341641


@pytest.mark.parametrize("fn", [O.gspo, O.gspo_token])
def test_gspo_dual_clip_reference_values(fn):
    # eps 0.5 (both s inside the clip range). Ā = [1, -1]. Seq 1: L = max(s1, clip(s1)) = s1 = 1.3416
    # > c = 1.3 -> min(L, -c·Ā) = 1.3, ∂ = 0. Seq 0: L = -s0, w = s0/(B·T_0) = s0/6.
    # loss = (-s0 + 1.3)/2 (seq-mean-token-mean)
    cfg = O.GspoConfig(eps_low=0.5, eps_high=0.5, dual_clip_c=1.3)
    diag = check(fn, cfg, (-S0 + 1.3) / 2, [[-S0 / 6] * 3, [0.0, 0.0, 0.0]])
    assert diag["dual_clip_frac"].item() == pytest.approx(2 / 5)


@pytest.mark.parametrize("fn", [O.gspo, O.gspo_token])
def test_gspo_without_dual_clip_keeps_the_negative_sequence(fn):
    # c off (or c = 1.5 > s1): seq 1 keeps w = Ā·s1/(B·T_1) = -s1/4
    expected = ((-S0 + S1) / 2, [[-S0 / 6] * 3, [S1 / 4, S1 / 4, 0.0]])
    check(fn, O.GspoConfig(eps_low=0.5, eps_high=0.5), *expected)
    check(fn, O.GspoConfig(eps_low=0.5, eps_high=0.5, dual_clip_c=1.5), *expected)


@pytest.mark.parametrize("bad", [1.0, 0.5, float("inf")])
def test_gspo_dual_clip_rejects_c_at_most_one(bad):
    with pytest.raises(ValueError, match="dual_clip_c"):
        O.GspoConfig(dual_clip_c=bad)


def test_gspo_log_ratio_clamp_reference_values():
    # verl's upper clamp of log s (at 10), scaled to 0.2: seq 1 has log s1 = log(1.8)/2 = 0.294 > 0.2,
    # so s1 = e^0.2 is a constant (∂ 0); seq 0 (log s0 = -0.096) is unchanged
    for fn in (O.gspo, O.gspo_token):
        check(fn, O.GspoConfig(log_ratio_max=0.2), (-S0 + math.exp(0.2)) / 2, [[-S0 / 6] * 3, [0.0, 0.0, 0.0]])
