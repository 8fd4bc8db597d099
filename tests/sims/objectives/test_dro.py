"""Reference values of DRO / Kimi-1.5 on the literal 2x3 batch of ``reference`` (derived by hand).

L = -(ℓ·A - ½β(ℓ - ℓ_old)²), d = ℓ - ℓ_old = log ρ = [[0, ln 1.5, ln 0.5], [ln 2, ln 0.9]];
w = A - β·d; token-mean over N = 5."""

from __future__ import annotations

import math

import pytest

from sims import objectives as O
from tests.sims.objectives.reference import check

D = [[0.0, math.log(1.5), math.log(0.5)], [math.log(2.0), math.log(0.9)]]
A = [[1.0, 1.0, 1.0], [-1.0, -1.0]]


def _expected(beta):
    # Σ -ℓA = (1 + 2 + 1) + (-0.3 - 1.5) = 2.2; penalty ½β Σ d²
    loss = (2.2 + 0.5 * beta * sum(x * x for row in D for x in row)) / 5
    grad = [[-(a - beta * d) / 5 for a, d in zip(ra, rd)] for ra, rd in zip(A, D)]
    grad[1].append(0.0)
    return loss, grad


@pytest.mark.parametrize("beta", [1.0, 0.25])
def test_dro_reference_values(beta):
    loss, grad = _expected(beta)
    diag = check(O.dro, O.DroConfig(beta=beta), loss, grad)
    assert diag["penalty_mean"].item() == pytest.approx(0.5 * beta * sum(x * x for r in D for x in r) / 5)


def test_dro_zero_advantage_weight_is_the_penalty():
    # A = 0: w = -β·d, not 0 (why the zero-advantage property is exempt for dro)
    import torch
    adv = torch.zeros(2, 3, dtype=torch.float64)
    check(O.dro, O.DroConfig(beta=1.0), 0.5 * sum(x * x for r in D for x in r) / 5,
          [[d / 5 for d in D[0]], [D[1][0] / 5, D[1][1] / 5, 0.0]], adv=adv)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan])
def test_dro_config_rejects_bad_beta(bad):
    with pytest.raises(ValueError, match="beta"):
        O.DroConfig(beta=bad)
