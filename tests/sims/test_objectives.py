"""Reference values for every objective on one literal 2x3 batch, derived by hand.

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

from sims import objectives as O

ATOL_F64 = 1e-12  # float64 arithmetic on O(1) numbers: a few ulps


def _batch():
    logp = torch.tensor([[-1.0, -2.0, -1.0], [-0.3, -1.5, 0.0]], dtype=torch.float64)
    log_ratio = torch.log(torch.tensor([[1.0, 1.5, 0.5], [2.0, 0.9, 1.0]], dtype=torch.float64))
    old_logp = logp - log_ratio
    adv = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
    return logp, old_logp, adv, mask


def _loss_and_grad(fn, config, adv=None):
    logp, old_logp, default_adv, mask = _batch()
    logp = logp.clone().requires_grad_(True)
    loss, diag = fn(logp, old_logp, default_adv if adv is None else adv, mask, config=config)
    (grad,) = torch.autograd.grad(loss, logp)
    return loss.item(), grad, diag


def _check(fn, config, loss, grad, adv=None):
    got_loss, got_grad, diag = _loss_and_grad(fn, config, adv)
    assert got_loss == pytest.approx(loss, abs=ATOL_F64)
    torch.testing.assert_close(got_grad, torch.tensor(grad, dtype=torch.float64), atol=ATOL_F64, rtol=0)
    return diag


# ------------------------------------------------------------------ REINFORCE


def test_reinforce_reference_values():
    # L = -A·ℓ, seq-mean-token-sum: (1/2)[(1 + 2 + 1) + (-0.3 - 1.5)] = 1.1; ∂/∂ℓ = -A/2
    _check(O.reinforce, O.ReinforceConfig(), 1.1, [[-0.5] * 3, [0.5, 0.5, 0.0]])


def test_reinforce_token_tis_reference_values():
    # ω = min(ρ, 1.2) = [[1, 1.2, 0.5], [1.2, 0.9]]
    # loss = (1/2)[(1 + 2.4 + 0.5) + (1.2·-0.3 + 0.9·-1.5)] = (1/2)(3.9 - 1.71) = 1.095
    # ∂/∂ℓ = -ω·A/2
    diag = _check(O.reinforce, O.ReinforceConfig(is_level="token", is_cap=1.2), 1.095,
                  [[-0.5, -0.6, -0.25], [0.6, 0.45, 0.0]])
    assert diag["is_trunc_frac"].item() == pytest.approx(2 / 5)  # ρ = 1.5 and ρ = 2 exceed 1.2


def test_reinforce_token_mis_reference_values():
    # ω = ρ·1[ρ <= 1.2] = [[1, 0, 0.5], [0, 0.9]]; loss = (1/2)[(1 + 0.5) + (-1.35)] = 0.075
    _check(O.reinforce, O.ReinforceConfig(is_level="token", is_mode="mask", is_cap=1.2), 0.075,
           [[-0.5, 0.0, -0.25], [0.0, 0.45, 0.0]])


def test_reinforce_sequence_tis_reference_values():
    # R = [1·1.5·0.5, 2·0.9] = [0.75, 1.8]; min(R, 1.2) = [0.75, 1.2]
    # loss = (1/2)[0.75·4 + 1.2·(-1.8)] = 0.42; ∂/∂ℓ = -ω·A/2
    _check(O.reinforce, O.ReinforceConfig(is_level="sequence", is_cap=1.2), 0.42,
           [[-0.375] * 3, [0.6, 0.6, 0.0]])


# ------------------------------------------------------------------ sequence IS


def test_seq_is_reference_values():
    # per-sequence L_i = -Ā_i·R_i = [-0.75, +1.8]; seq-mean-token-mean of the broadcast = mean_i L_i
    # loss = (−0.75 + 1.8)/2 = 0.525; ∂/∂ℓ_it = (1/B)·(-Ā_i R_i) = [-0.375, +0.9]
    _check(O.seq_is, O.SeqIsConfig(), 0.525, [[-0.375] * 3, [0.9, 0.9, 0.0]])


def test_seq_is_truncated_reference_values():
    # min(R, 1.2) = [0.75, 1.2]: loss = (-0.75 + 1.2)/2 = 0.225; gradient of seq 1 = 1.2/2
    diag = _check(O.seq_is, O.SeqIsConfig(cap=1.2), 0.225, [[-0.375] * 3, [0.6, 0.6, 0.0]])
    assert diag["is_trunc_frac"].item() == pytest.approx(2 / 5)


# ------------------------------------------------------------------ PPO clip


def test_ppo_clip_reference_values():
    # L = max(-Aρ, -A·clip(ρ, 0.8, 1.2)), token-mean over 5 tokens
    # seq 0 (A=1):  ρ=1 -> -1 (∂ -1); ρ=1.5 -> -1.2 clipped (∂ 0); ρ=0.5 -> max(-0.5, -0.8) = -0.5 (∂ -0.5)
    # seq 1 (A=-1): ρ=2 -> max(2, 1.2) = 2 (∂ +2, the unbounded side); ρ=0.9 -> 0.9 (∂ +0.9)
    # loss = (-1 - 1.2 - 0.5 + 2 + 0.9)/5 = 0.04
    diag = _check(O.ppo_clip, O.PpoClipConfig(), 0.04, [[-0.2, 0.0, -0.1], [0.4, 0.18, 0.0]])
    assert diag["clip_frac_high"].item() == pytest.approx(1 / 5)
    assert diag["clip_frac_low"].item() == 0.0


def test_ppo_clip_higher_reference_values():
    # eps_high = 0.6: ρ = 1.5 is now inside -> L = -1.5, ∂ = -1.5; loss = (-1 - 1.5 - 0.5 + 2 + 0.9)/5
    _check(O.ppo_clip, O.PpoClipConfig(eps_high=0.6), -0.02, [[-0.2, -0.3, -0.1], [0.4, 0.18, 0.0]])


def test_ppo_clip_lower_bound_reference_values():
    # eps_low = 0.05: seq 1, ρ = 0.9 < 0.95 with A < 0 -> L = max(0.9, 0.95) = 0.95, ∂ = 0
    # loss = (-1 - 1.2 - 0.5 + 2 + 0.95)/5 = 0.05
    diag = _check(O.ppo_clip, O.PpoClipConfig(eps_low=0.05), 0.05, [[-0.2, 0.0, -0.1], [0.4, 0.0, 0.0]])
    assert diag["clip_frac_low"].item() == pytest.approx(1 / 5)


def test_ppo_clip_dual_clip_reference_values():
    # c = 1.5: seq 1, ρ = 2 with A < 0 -> min(2, -c·A = 1.5) = 1.5, ∂ = 0
    # loss = (-1 - 1.2 - 0.5 + 1.5 + 0.9)/5 = -0.06
    diag = _check(O.ppo_clip, O.PpoClipConfig(dual_clip_c=1.5), -0.06,
                  [[-0.2, 0.0, -0.1], [0.0, 0.18, 0.0]])
    assert diag["dual_clip_frac"].item() == pytest.approx(1 / 5)


# ------------------------------------------------------------------ GSPO / GMPO


S0, S1 = 0.75 ** (1 / 3), 1.8 ** 0.5  # geometric-mean ratios of the two sequences


def test_gspo_reference_values():
    # s = [0.75^(1/3), 1.8^(1/2)]; default eps (3e-4, 4e-4) do not bind here: A>0 with s<1, A<0 with s>1
    # L_i = -Ā_i s_i; loss = (-s0 + s1)/2; ∂/∂ℓ_it = (1/B)(-Ā_i s_i / T_i) = [-s0/6, +s1/4]
    _check(O.gspo, O.GspoConfig(), (-S0 + S1) / 2, [[-S0 / 6] * 3, [S1 / 4, S1 / 4, 0.0]])


def test_gspo_clipped_reference_values():
    # flipped advantages, eps (0.05, 0.2): seq 0 (A=-1, s0=0.9086 < 0.95) -> L = max(s0, 0.95) = 0.95,
    # seq 1 (A=+1, s1=1.342 > 1.2) -> L = max(-s1, -1.2) = -1.2: both clipped, zero gradient
    adv = -_batch()[2]
    diag = _check(O.gspo, O.GspoConfig(eps_low=0.05, eps_high=0.2), (0.95 - 1.2) / 2,
                  [[0.0] * 3, [0.0] * 3], adv=adv)
    assert diag["clip_frac_low"].item() == pytest.approx(3 / 5)
    assert diag["clip_frac_high"].item() == pytest.approx(2 / 5)


def test_gspo_token_reference_values():
    # same value and gradient as gspo when A is per sequence: ∂/∂ℓ_it = c_it·(-A s_i) = (1/(B T_i))(-A s_i)
    _check(O.gspo_token, O.GspoConfig(), (-S0 + S1) / 2, [[-S0 / 6] * 3, [S1 / 4, S1 / 4, 0.0]])


def test_gmpo_reference_values():
    # d = log ρ; eps = 0.4 in log space.
    # seq 0 (A>0): d̃ = min(d, clip(d)) = [0, 0.4 (clipped: ln 1.5 = 0.405 > 0.4), ln 0.5 (unclipped)]
    #   g0 = exp((0 + 0.4 + ln 0.5)/3); ∂/∂ℓ = (1/2)(-g0/3) on tokens 0 and 2, 0 on token 1
    # seq 1 (A<0): d̃ = max(d, clip(d)) = [ln 2, ln 0.9] (both unclipped); g1 = sqrt(1.8)
    #   ∂/∂ℓ = (1/2)(+g1/2)
    g0 = math.exp((0.4 + math.log(0.5)) / 3)
    g1 = math.sqrt(1.8)
    diag = _check(O.gmpo, O.GmpoConfig(), (-g0 + g1) / 2,
                  [[-g0 / 6, 0.0, -g0 / 6], [g1 / 4, g1 / 4, 0.0]])
    assert diag["clip_frac_high"].item() == pytest.approx(1 / 5)


# ------------------------------------------------------------------ CISPO family


def test_cispo_minimax_reference_values():
    # default cap 5, no lower bound: ω = ρ. L = -ω·A·ℓ
    # seq 0: 1 + 3 + 0.5 = 4.5; seq 1: 2·(-0.3) + 0.9·(-1.5) = -1.95; loss = 2.55/5 = 0.51
    # ∂/∂ℓ = -ω·A/5
    _check(O.cispo, O.CispoConfig(), 0.51, [[-0.2, -0.3, -0.1], [0.4, 0.18, 0.0]])


def test_cispo_verl_convention_reference_values():
    # ω = clip(ρ, 0.8, 1.2) = [[1, 1.2, 0.8], [1.2, 0.9]]
    # seq 0: 1 + 2.4 + 0.8 = 4.2; seq 1: -0.36 - 1.35 = -1.71; loss = 2.49/5 = 0.498
    diag = _check(O.cispo, O.CispoConfig.verl(0.2, 0.2), 0.498,
                  [[-0.2, -0.24, -0.16], [0.24, 0.18, 0.0]])
    assert diag["clip_frac_low"].item() == pytest.approx(1 / 5)
    assert diag["clip_frac_high"].item() == pytest.approx(2 / 5)


def test_cispo_trl_absolute_cap_reference_values():
    # TRL's unset default epsilon_high = 0.2 is an absolute cap: ω = min(ρ, 0.2) = 0.2 everywhere
    # loss = 0.2·(4 - 1.8)/5 = 0.088; ∂/∂ℓ = -0.2·A/5
    _check(O.cispo, O.CispoConfig.trl(0.2), 0.088, [[-0.04] * 3, [0.04, 0.04, 0.0]])


def test_cispo_gradient_is_capped_not_dropped():
    # A > 0 and ρ = 1.5 above 1 + eps_high = 1.2: PPO's gradient is 0, CISPO's is -1.2·A/5 (nonzero)
    _, g_ppo, _ = _loss_and_grad(O.ppo_clip, O.PpoClipConfig())
    _, g_cispo, _ = _loss_and_grad(O.cispo, O.CispoConfig.verl(0.2, 0.2))
    assert g_ppo[0, 1].item() == 0.0
    assert g_cispo[0, 1].item() == pytest.approx(-1.2 / 5)


def _sig(x):
    return 1.0 / (1.0 + math.exp(-x))


def test_sapo_reference_values():
    # f_τ(ρ) = (4/τ)σ(τ(ρ-1)), τ = 1 for A > 0, 1.05 for A < 0; L = -f·A; seq-mean-token-mean
    # ∂L/∂ℓ = -A·4σ(1-σ)·ρ
    rho = [[1.0, 1.5, 0.5], [2.0, 0.9]]
    tau = [1.0, 1.05]
    a = [1.0, -1.0]
    per_tok = [[-(4 / tau[i]) * _sig(tau[i] * (r - 1)) * a[i] for r in rho[i]] for i in range(2)]
    loss = (sum(per_tok[0]) / 3 + sum(per_tok[1]) / 2) / 2
    grad = [[-a[i] * 4 * _sig(tau[i] * (r - 1)) * (1 - _sig(tau[i] * (r - 1))) * r / (2 * len(rho[i]))
             for r in rho[i]] for i in range(2)]
    _check(O.sapo, O.SapoConfig(), loss, [grad[0], grad[1] + [0.0]])


def test_sgs_cispo_token_mode_stop_gradient_reference_values():
    # p_mode token: P = e^ℓ; S = 1 - σ(10(P - 0.5)) on seq 0 (A > 0), S = 1 on seq 1.
    # ω = ρ (cap 5). L = -S·ω·A·ℓ, token-mean; with sg(S): ∂/∂ℓ = -S·ω·A/5
    logp = [[-1.0, -2.0, -1.0], [-0.3, -1.5]]
    rho = [[1.0, 1.5, 0.5], [2.0, 0.9]]
    s0 = [1 - _sig(10 * (math.exp(l) - 0.5)) for l in logp[0]]
    loss = (sum(-s * r * l for s, r, l in zip(s0, rho[0], logp[0]))
            + sum(r * l for r, l in zip(rho[1], logp[1]))) / 5
    grad = [[-s * r / 5 for s, r in zip(s0, rho[0])], [r / 5 for r in rho[1]] + [0.0]]
    diag = _check(O.sgs_cispo, O.SgsCispoConfig(p_mode="token"), loss, grad)
    assert diag["sgs_scale_mean"].item() == pytest.approx((sum(s0) + 2) / 5)


def test_sgs_cispo_sequence_mode_without_stop_gradient_reference_values():
    # p_mode sequence: P_0 = exp(-4) for seq 0; S_0 = 1 - σ(10(P_0 - 0.5)).
    # Without sg, ∂/∂ℓ_0t Σ_s(-S_0 ω_s ℓ_s)/5 = -(S_0 ω_t + (dS_0/dℓ_0t) Σ_s ω_s ℓ_s)/5,
    # dS_0/dℓ_0t = -10·σ(1-σ)·P_0 (P_0 = exp(Σ ℓ) so dP_0/dℓ_t = P_0).
    p0 = math.exp(-4.0)
    z = _sig(10 * (p0 - 0.5))
    s0 = 1 - z
    ds = -10 * z * (1 - z) * p0
    rho0, l0 = [1.0, 1.5, 0.5], [-1.0, -2.0, -1.0]
    sum_wl = sum(r * l for r, l in zip(rho0, l0))  # -4.5
    loss = (-s0 * sum_wl + (2.0 * -0.3 + 0.9 * -1.5)) / 5
    grad = [[-(s0 * r + ds * sum_wl) / 5 for r in rho0], [2.0 / 5, 0.9 / 5, 0.0]]
    _check(O.sgs_cispo, O.SgsCispoConfig(p_mode="sequence", stop_grad_s=False), loss, grad)


def test_sgs_cispo_geometric_mode_scale():
    # p_mode geometric: P_0 = exp(mean ℓ) = exp(-4/3); only the scale of seq 0 changes
    s0 = 1 - _sig(10 * (math.exp(-4 / 3) - 0.5))
    _, grad, _ = _loss_and_grad(O.sgs_cispo, O.SgsCispoConfig(p_mode="geometric"))
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


# ------------------------------------------------------------------ dtypes and devices


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["reinforce", "seq_is", "ppo_clip", "gspo", "gspo_token", "gmpo",
                                  "cispo", "sapo", "sgs_cispo"])
def test_objective_float32_and_device_match_float64_cpu(name, device):
    from sims.registry import OBJECTIVES

    spec = OBJECTIVES[name]
    cfg = spec.config_cls()
    logp, old, adv, mask = _batch()
    results = []
    for dtype, dev in ((torch.float64, "cpu"), (torch.float32, device)):
        lp = logp.to(dtype=dtype, device=dev).requires_grad_(True)
        loss, _ = spec.loss_fn(lp, old.to(dtype=dtype, device=dev), adv.to(dtype=dtype, device=dev),
                               mask.to(dtype=dtype, device=dev), config=cfg)
        (g,) = torch.autograd.grad(loss, lp)
        assert loss.dtype == dtype and loss.device.type == dev
        results.append((loss.double().cpu(), g.double().cpu()))
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-5, rtol=1e-5)  # float32 rounding
    torch.testing.assert_close(results[1][1], results[0][1], atol=1e-5, rtol=1e-5)
