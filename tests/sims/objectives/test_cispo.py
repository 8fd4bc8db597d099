"""Reference values of CISPO and SGS-CISPO on the literal 2x3 batch of ``reference`` (derived by hand).

Each test states the per-token loss, the aggregated loss and ∂loss/∂logp (= -w), then compares the
torch result in float64."""

from __future__ import annotations

import math

import pytest
import torch

from sims import objectives as O
from tests.sims.objectives.reference import ATOL_F64, check, loss_and_grad, sig




def test_cispo_minimax_reference_values():
    # default cap 5, no lower bound: ω = ρ. L = -ω·A·ℓ
    # seq 0: 1 + 3 + 0.5 = 4.5; seq 1: 2·(-0.3) + 0.9·(-1.5) = -1.95; loss = 2.55/5 = 0.51
    # ∂/∂ℓ = -ω·A/5
    check(O.cispo, O.CispoConfig(), 0.51, [[-0.2, -0.3, -0.1], [0.4, 0.18, 0.0]])


def test_cispo_verl_convention_reference_values():
    # ω = clip(ρ, 0.8, 1.2) = [[1, 1.2, 0.8], [1.2, 0.9]]
    # seq 0: 1 + 2.4 + 0.8 = 4.2; seq 1: -0.36 - 1.35 = -1.71; loss = 2.49/5 = 0.498
    diag = check(O.cispo, O.CispoConfig.verl(0.2, 0.2), 0.498,
                  [[-0.2, -0.24, -0.16], [0.24, 0.18, 0.0]])
    assert diag["clip_frac_low"].item() == pytest.approx(1 / 5)
    assert diag["clip_frac_high"].item() == pytest.approx(2 / 5)


def test_cispo_trl_absolute_cap_reference_values():
    # TRL's unset default epsilon_high = 0.2 is an absolute cap: ω = min(ρ, 0.2) = 0.2 everywhere
    # loss = 0.2·(4 - 1.8)/5 = 0.088; ∂/∂ℓ = -0.2·A/5
    check(O.cispo, O.CispoConfig.trl(0.2), 0.088, [[-0.04] * 3, [0.04, 0.04, 0.0]])


def test_cispo_gradient_is_capped_not_dropped():
    # A > 0 and ρ = 1.5 above 1 + eps_high = 1.2: PPO's gradient is 0, CISPO's is -1.2·A/5 (nonzero)
    _, g_ppo, _ = loss_and_grad(O.ppo_clip, O.PpoClipConfig())
    _, g_cispo, _ = loss_and_grad(O.cispo, O.CispoConfig.verl(0.2, 0.2))
    assert g_ppo[0, 1].item() == 0.0
    assert g_cispo[0, 1].item() == pytest.approx(-1.2 / 5)


def test_sgs_cispo_token_mode_stop_gradient_reference_values():
    # p_mode token: P = e^ℓ; S = 1 - σ(10(P - 0.5)) on seq 0 (A > 0), S = 1 on seq 1.
    # ω = ρ (cap 5). L = -S·ω·A·ℓ, token-mean; with sg(S): ∂/∂ℓ = -S·ω·A/5
    logp = [[-1.0, -2.0, -1.0], [-0.3, -1.5]]
    rho = [[1.0, 1.5, 0.5], [2.0, 0.9]]
    s0 = [1 - sig(10 * (math.exp(l) - 0.5)) for l in logp[0]]
    loss = (sum(-s * r * l for s, r, l in zip(s0, rho[0], logp[0]))
            + sum(r * l for r, l in zip(rho[1], logp[1]))) / 5
    grad = [[-s * r / 5 for s, r in zip(s0, rho[0])], [r / 5 for r in rho[1]] + [0.0]]
    diag = check(O.sgs_cispo, O.SgsCispoConfig(p_mode="token"), loss, grad)
    assert diag["sgs_scale_mean"].item() == pytest.approx((sum(s0) + 2) / 5)


def test_sgs_cispo_sequence_mode_without_stop_gradient_reference_values():
    # p_mode sequence: P_0 = exp(-4) for seq 0; S_0 = 1 - σ(10(P_0 - 0.5)).
    # Without sg, ∂/∂ℓ_0t Σ_s(-S_0 ω_s ℓ_s)/5 = -(S_0 ω_t + (dS_0/dℓ_0t) Σ_s ω_s ℓ_s)/5,
    # dS_0/dℓ_0t = -10·σ(1-σ)·P_0 (P_0 = exp(Σ ℓ) so dP_0/dℓ_t = P_0).
    p0 = math.exp(-4.0)
    z = sig(10 * (p0 - 0.5))
    s0 = 1 - z
    ds = -10 * z * (1 - z) * p0
    rho0, l0 = [1.0, 1.5, 0.5], [-1.0, -2.0, -1.0]
    sum_wl = sum(r * l for r, l in zip(rho0, l0))  # -4.5
    loss = (-s0 * sum_wl + (2.0 * -0.3 + 0.9 * -1.5)) / 5
    grad = [[-(s0 * r + ds * sum_wl) / 5 for r in rho0], [2.0 / 5, 0.9 / 5, 0.0]]
    check(O.sgs_cispo, O.SgsCispoConfig(p_mode="sequence", stop_grad_s=False), loss, grad)


def test_sgs_cispo_geometric_mode_scale():
    # p_mode geometric: P_0 = exp(mean ℓ) = exp(-4/3); only the scale of seq 0 changes
    s0 = 1 - sig(10 * (math.exp(-4 / 3) - 0.5))
    _, grad, _ = loss_and_grad(O.sgs_cispo, O.SgsCispoConfig(p_mode="geometric"))
    torch.testing.assert_close(grad[0], torch.tensor([-s0 / 5, -1.5 * s0 / 5, -0.5 * s0 / 5],
                                                     dtype=torch.float64), atol=ATOL_F64, rtol=0)


def test_sgs_scale_limits_of_k():
    # k = 0: S = 1 - σ(0) = 1/2 for A > 0, whatever P; large k: S -> 1[P < τ]
    logp = torch.log(torch.tensor([[0.2, 0.8]], dtype=torch.float64))
    adv = torch.ones(1, 2, dtype=torch.float64)
    s_k0 = O.sgs_scale(logp, adv, torch.ones(1, 2), k=0.0, tau=0.5, p_mode="token")
    s_big = O.sgs_scale(logp, adv, torch.ones(1, 2), k=1e4, tau=0.5, p_mode="token")
    torch.testing.assert_close(s_k0, torch.full((1, 2), 0.5, dtype=torch.float64))
    torch.testing.assert_close(s_big, torch.tensor([[1.0, 0.0]], dtype=torch.float64))
