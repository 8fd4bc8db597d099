"""Reference values of SAPO on the literal 2x3 batch of ``reference`` (derived by hand).

Each test states the per-token loss, the aggregated loss and ∂loss/∂logp (= -w), then compares the
torch result in float64."""

from __future__ import annotations

import math

from sims import objectives as O
from tests.sims.objectives.reference import check, sig


def test_sapo_reference_values():
    # f_τ(ρ) = (4/τ)σ(τ(ρ-1)), τ = 1 for A > 0, 1.05 for A < 0; L = -f·A; seq-mean-token-mean
    # ∂L/∂ℓ = -A·4σ(1-σ)·ρ
    rho = [[1.0, 1.5, 0.5], [2.0, 0.9]]
    tau = [1.0, 1.05]
    a = [1.0, -1.0]
    per_tok = [[-(4 / tau[i]) * sig(tau[i] * (r - 1)) * a[i] for r in rho[i]] for i in range(2)]
    loss = (sum(per_tok[0]) / 3 + sum(per_tok[1]) / 2) / 2
    grad = [[-a[i] * 4 * sig(tau[i] * (r - 1)) * (1 - sig(tau[i] * (r - 1))) * r / (2 * len(rho[i]))
             for r in rho[i]] for i in range(2)]
    check(O.sapo, O.SapoConfig(), loss, [grad[0], grad[1] + [0.0]])


def test_sapo_log_ratio_clamp_reference_values():
    # verl's ±20 clamp scaled to ±0.5: seq 0 token 2 (log ρ = log 0.5) and seq 1 token 0 (log ρ = log 2)
    # have ρ = e^∓0.5 as constants (∂ 0); the other tokens as in the plain reference
    rho = [[1.0, 1.5, math.exp(-0.5)], [math.exp(0.5), 0.9]]
    tau = [1.0, 1.05]
    a = [1.0, -1.0]
    per_tok = [[-(4 / tau[i]) * sig(tau[i] * (r - 1)) * a[i] for r in rho[i]] for i in range(2)]
    loss = (sum(per_tok[0]) / 3 + sum(per_tok[1]) / 2) / 2
    grad = [[-a[i] * 4 * sig(tau[i] * (r - 1)) * (1 - sig(tau[i] * (r - 1))) * r / (2 * len(rho[i]))
             for r in rho[i]] for i in range(2)]
    grad[0][2] = grad[1][0] = 0.0
    check(O.sapo, O.SapoConfig(log_ratio_min=-0.5, log_ratio_max=0.5), loss, [grad[0], grad[1] + [0.0]])
