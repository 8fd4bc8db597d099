"""Reference values of REINFORCE (TIS/MIS) and sequence-level IS on the literal 2x3 batch of ``reference`` (derived by hand).

Each test states the per-token loss, the aggregated loss and ∂loss/∂logp (= -w), then compares the
torch result in float64."""

from __future__ import annotations

import pytest

from sims import objectives as O
from tests.sims.objectives.reference import check




def test_reinforce_reference_values():
    # L = -A·ℓ, seq-mean-token-sum: (1/2)[(1 + 2 + 1) + (-0.3 - 1.5)] = 1.1; ∂/∂ℓ = -A/2
    check(O.reinforce, O.ReinforceConfig(), 1.1, [[-0.5] * 3, [0.5, 0.5, 0.0]])


def test_reinforce_token_tis_reference_values():
    # ω = min(ρ, 1.2) = [[1, 1.2, 0.5], [1.2, 0.9]]
    # loss = (1/2)[(1 + 2.4 + 0.5) + (1.2·-0.3 + 0.9·-1.5)] = (1/2)(3.9 - 1.71) = 1.095
    # ∂/∂ℓ = -ω·A/2
    diag = check(O.reinforce, O.ReinforceConfig(is_level="token", is_cap=1.2), 1.095,
                  [[-0.5, -0.6, -0.25], [0.6, 0.45, 0.0]])
    assert diag["is_trunc_frac"].item() == pytest.approx(2 / 5)  # ρ = 1.5 and ρ = 2 exceed 1.2


def test_reinforce_token_mis_reference_values():
    # ω = ρ·1[ρ <= 1.2] = [[1, 0, 0.5], [0, 0.9]]; loss = (1/2)[(1 + 0.5) + (-1.35)] = 0.075
    check(O.reinforce, O.ReinforceConfig(is_level="token", is_mode="mask", is_cap=1.2), 0.075,
           [[-0.5, 0.0, -0.25], [0.0, 0.45, 0.0]])


def test_reinforce_sequence_tis_reference_values():
    # R = [1·1.5·0.5, 2·0.9] = [0.75, 1.8]; min(R, 1.2) = [0.75, 1.2]
    # loss = (1/2)[0.75·4 + 1.2·(-1.8)] = 0.42; ∂/∂ℓ = -ω·A/2
    check(O.reinforce, O.ReinforceConfig(is_level="sequence", is_cap=1.2), 0.42,
           [[-0.375] * 3, [0.6, 0.6, 0.0]])


# ------------------------------------------------------------------ sequence IS


def test_seq_is_reference_values():
    # per-sequence L_i = -Ā_i·R_i = [-0.75, +1.8]; seq-mean-token-mean of the broadcast = mean_i L_i
    # loss = (−0.75 + 1.8)/2 = 0.525; ∂/∂ℓ_it = (1/B)·(-Ā_i R_i) = [-0.375, +0.9]
    check(O.seq_is, O.SeqIsConfig(), 0.525, [[-0.375] * 3, [0.9, 0.9, 0.0]])


def test_seq_is_truncated_reference_values():
    # min(R, 1.2) = [0.75, 1.2]: loss = (-0.75 + 1.2)/2 = 0.225; gradient of seq 1 = 1.2/2
    diag = check(O.seq_is, O.SeqIsConfig(cap=1.2), 0.225, [[-0.375] * 3, [0.6, 0.6, 0.0]])
    assert diag["is_trunc_frac"].item() == pytest.approx(2 / 5)
