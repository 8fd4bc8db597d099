"""Reference values of DPPO (binary TV and binary KL trust regions) on the literal 2x3 batch of
``reference`` (derived by hand).

On that batch p = e^ℓ and p_old = p/ρ, so p - p_old = [[0, 0.0451, -0.3679], [0.3704, -0.0248]];
the binary KL D(p_old || p) = [[0, 0.00969, 0.280], [0.302, 0.00173]] (computed in ``_d`` below
from the definition). Tokens with A > 0 are row 0, A < 0 row 1; N = 5, token-mean."""

from __future__ import annotations

import math

import pytest
import torch

from sims import objectives as O
from tests.sims.objectives.reference import batch, check


def _d(p_old: float, p: float) -> float:
    return p_old * math.log(p_old / p) + (1 - p_old) * math.log((1 - p_old) / (1 - p))


def test_the_batch_probabilities_are_as_stated():
    logp, old, _, _ = batch()
    p, q = torch.exp(logp), torch.exp(old)
    assert (p - q)[0, 1].item() == pytest.approx(0.045112, abs=1e-6)
    assert (p - q)[1, 1].item() == pytest.approx(-0.024792, abs=1e-6)
    assert _d(q[0, 1].item(), p[0, 1].item()) == pytest.approx(0.009686, abs=1e-6)
    assert _d(q[1, 1].item(), p[1, 1].item()) == pytest.approx(0.001729, abs=1e-6)
    torch.testing.assert_close(O.binary_kl(logp, old)[:, :2],
                               torch.tensor([[_d(q[i, t].item(), p[i, t].item()) for t in range(2)]
                                             for i in range(2)], dtype=torch.float64))


def test_dppo_tv_default_keeps_every_token():
    # |p - p_old| <= 0.2 on the A-side of every token; w = A·min(ρ, 3) = A·ρ
    # loss = (1·1 + 1.5·2 + 0.5·1 - 2·0.3 - 0.9·1.5)/5 = (4.5 - 1.95)/5 = 0.51
    diag = check(O.dppo_tv, O.DppoConfig(), 0.51, [[-0.2, -0.3, -0.1], [0.4, 0.18, 0.0]])
    assert diag["trust_masked_frac"].item() == 0.0


def test_dppo_tv_reference_values():
    # δ_hi = 0.04: (0,1) has p - p_old = 0.0451 > 0.04 with A > 0 -> dropped
    # δ_lo = 0.02: (1,1) has p - p_old = -0.0248 < -0.02 with A < 0 -> dropped
    # (0,2) moved down by 0.368 with A > 0, (1,0) up by 0.370 with A < 0: against A, kept
    # L = -A·ρ·ℓ on the kept: 1 + 0.5 - 0.6 = 0.9; loss 0.18; w = [[1, 0, 0.5], [-2, 0]]
    diag = check(O.dppo_tv, O.DppoConfig(delta_low=0.02, delta_high=0.04), 0.18,
                 [[-0.2, 0.0, -0.1], [0.4, 0.0, 0.0]])
    assert diag["trust_masked_frac"].item() == pytest.approx(2 / 5)


def test_dppo_truncated_is_weight_reference_values():
    # C = 1.2: min(ρ, C) = [[1, 1.2, 0.5], [1.2, 0.9]], all kept
    # loss = (1 + 2.4 + 0.5 - 0.36 - 1.35)/5 = 0.438; w = A·min(ρ, C)
    diag = check(O.dppo_tv, O.DppoConfig(is_cap=1.2), 0.438, [[-0.2, -0.24, -0.1], [0.24, 0.18, 0.0]])
    assert diag["is_trunc_frac"].item() == pytest.approx(2 / 5)


def test_dppo_kl_reference_values():
    # δ_hi = 0.005 < D(0,1) = 0.00969 with p > p_old, A > 0 -> dropped;
    # δ_lo = 0.001 < D(1,1) = 0.00173 with p < p_old, A < 0 -> dropped;
    # D(0,2) = 0.280 and D(1,0) = 0.302 exceed both, but those tokens moved against A: kept.
    # Same kept set as the TV test: loss 0.18
    diag = check(O.dppo_kl, O.DppoConfig(delta_low=0.001, delta_high=0.005), 0.18,
                 [[-0.2, 0.0, -0.1], [0.4, 0.0, 0.0]])
    assert diag["trust_masked_frac"].item() == pytest.approx(2 / 5)


def test_dppo_tv_and_kl_differ_at_the_same_threshold():
    # δ = 0.02: TV drops (0,1) and (1,1); the binary KL of both is below 0.02, so KL keeps all
    check(O.dppo_tv, O.DppoConfig(delta_low=0.02, delta_high=0.02), 0.18,
          [[-0.2, 0.0, -0.1], [0.4, 0.0, 0.0]])
    check(O.dppo_kl, O.DppoConfig(delta_low=0.02, delta_high=0.02), 0.51,
          [[-0.2, -0.3, -0.1], [0.4, 0.18, 0.0]])


def test_dppo_mask_depends_on_probabilities_not_only_the_ratio():
    # the same ratio ρ = 1.5 (A > 0): kept for a rare token (p_old = 0.01 -> +0.005), dropped for a
    # common one (p_old = 0.6 -> +0.3 > δ_hi = 0.2)
    logp = torch.log(torch.tensor([[0.015, 0.9]], dtype=torch.float64)).requires_grad_(True)
    old = torch.log(torch.tensor([[0.01, 0.6]], dtype=torch.float64))
    loss, _ = O.dppo_tv(logp, old, torch.ones(1, 2, dtype=torch.float64), torch.ones(1, 2, dtype=torch.float64),
                        config=O.DppoConfig())
    (g,) = torch.autograd.grad(loss, logp)
    assert g[0, 0].item() == pytest.approx(-1.5 / 2) and g[0, 1].item() == 0.0


def test_binary_kl_edge_cases_are_finite_or_inf_never_nan():
    # p_old = 1 (0·log 0 = 0): D = -log p; p = 1 > p_old: +inf; p = p_old: 0
    logp = torch.tensor([[-0.5, 0.0, -0.7]], dtype=torch.float64)
    old = torch.tensor([[0.0, -0.5, -0.7]], dtype=torch.float64)
    d = O.binary_kl(logp, old)
    assert d[0, 0].item() == pytest.approx(0.5) and d[0, 1].item() == math.inf and d[0, 2].item() == 0.0


@pytest.mark.parametrize("field", ["delta_low", "delta_high", "is_cap"])
@pytest.mark.parametrize("bad", [0.0, -0.1, math.inf])
def test_dppo_config_rejects_bad_values(field, bad):
    with pytest.raises(ValueError, match=field):
        O.DppoConfig(**{field: bad})
