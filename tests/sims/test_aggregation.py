"""Reference values of every aggregation, and the per-token normaliser it induces."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given

from sims.aggregation import AGGREGATIONS, aggregate, token_weights
from tests.batches import batch_params, make_batch

# Two groups of two sequences, lengths 3, 1, 2, 2 (N = 8 tokens, padded to width 4).
L = torch.tensor([[1.0, 2.0, 3.0, 9.0],
                  [4.0, 9.0, 9.0, 9.0],
                  [5.0, 6.0, 9.0, 9.0],
                  [7.0, 8.0, 9.0, 9.0]], dtype=torch.float64)
M = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0]], dtype=torch.float64)

# Hand-derived (the padding value 9 never enters):
#   token sums per sequence: 6, 4, 11, 15 -> total 36 over N = 8 tokens; lengths 3, 1, 2, 2
EXPECTED = {
    "token-mean": 36 / 8,
    "seq-mean-token-mean": (6 / 3 + 4 / 1 + 11 / 2 + 15 / 2) / 4,
    "seq-mean-token-sum": 36 / 4,
    "seq-mean-token-sum-norm": 36 / (4 * 5),  # max_len = 5, the generation budget
    "prompt-token-mean": ((6 + 4) / 4 + (11 + 15) / 4) / 2,  # group tokens N_g = 4, 4
    "token-sum": 36.0,
}


def test_every_aggregation_has_a_reference_value():
    assert set(EXPECTED) == set(AGGREGATIONS)


@pytest.mark.parametrize("agg", list(AGGREGATIONS))
def test_aggregate_reference_values(agg):
    got = aggregate(L, M, agg=agg, max_len=5, group_size=2)
    assert got.item() == pytest.approx(EXPECTED[agg], abs=1e-12)


def test_dr_grpo_normaliser_comes_from_max_len_not_padded_width():
    wide = torch.cat([L, torch.zeros(4, 6, dtype=L.dtype)], dim=1)
    mask = torch.cat([M, torch.zeros(4, 6, dtype=M.dtype)], dim=1)
    got = aggregate(wide, mask, agg="seq-mean-token-sum-norm", max_len=5)
    assert got.item() == pytest.approx(EXPECTED["seq-mean-token-sum-norm"])


def test_prompt_token_mean_differs_from_batch_token_mean():
    # DAPO's per-group form is not verl's batch token-mean when groups have different token counts
    m = M.clone()
    m[3, 1] = 0  # group 1 now has 3 tokens
    per_group = aggregate(L, m, agg="prompt-token-mean", group_size=2).item()
    batch = aggregate(L, m, agg="token-mean").item()
    assert per_group == pytest.approx(((6 + 4) / 4 + (11 + 7) / 3) / 2)
    assert batch == pytest.approx(28 / 7)
    assert per_group != pytest.approx(batch)


@pytest.mark.parametrize("agg", list(AGGREGATIONS))
@given(params=batch_params)
def test_token_weights_reproduce_aggregate(agg, params):
    # aggregation is linear: aggregate(L) == Σ c·L with c = token_weights(mask)
    seed, n_groups, group_size, width = params
    b = make_batch(seed, n_groups, group_size, width, per_token_adv=True)
    kw = dict(agg=agg, max_len=width, group_size=group_size)
    c = token_weights(b.mask, **kw)
    torch.testing.assert_close((c * b.adv).sum(), aggregate(b.adv, b.mask, **kw), atol=1e-12, rtol=1e-12)


def test_token_weights_closed_forms():
    n, lengths = 8.0, torch.tensor([3.0, 1.0, 2.0, 2.0], dtype=torch.float64)
    expected = {
        "token-mean": torch.full((4,), 1 / n, dtype=torch.float64),
        "seq-mean-token-mean": 1 / (4 * lengths),
        "seq-mean-token-sum": torch.full((4,), 1 / 4, dtype=torch.float64),
        "seq-mean-token-sum-norm": torch.full((4,), 1 / 20, dtype=torch.float64),
        "prompt-token-mean": torch.full((4,), 1 / 8, dtype=torch.float64),  # 1/(G·N_g) = 1/(2·4)
        "token-sum": torch.ones(4, dtype=torch.float64),
    }
    for agg, per_seq in expected.items():
        c = token_weights(M, agg=agg, max_len=5, group_size=2)
        torch.testing.assert_close(c, per_seq[:, None] * M, atol=1e-15, rtol=0)
