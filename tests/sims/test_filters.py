"""Dynamic sampling drops exactly the groups whose rewards are all equal."""

from __future__ import annotations

import pytest
import torch

from sims.filters import DynamicSamplingConfig, dynamic_sampling, select_groups


def test_dynamic_sampling_drops_equal_reward_groups():
    r = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    res = dynamic_sampling(r, config=DynamicSamplingConfig())
    assert res.keep.tolist() == [True, False, False, True]
    assert (res.n_groups, res.n_dropped, res.n_kept) == (4, 2, 2)


def test_dynamic_sampling_tolerance_for_continuous_rewards():
    r = torch.tensor([[0.5, 0.5 + 1e-9], [0.2, 0.7]], dtype=torch.float64)
    assert dynamic_sampling(r, config=DynamicSamplingConfig()).keep.tolist() == [True, True]
    assert dynamic_sampling(r, config=DynamicSamplingConfig(atol=1e-6)).keep.tolist() == [False, True]


def test_select_groups_keeps_whole_groups():
    x = torch.arange(8.0).reshape(8, 1)
    kept, none = select_groups(torch.tensor([True, False, False, True]), 2, x, None)
    assert kept.reshape(-1).tolist() == [0.0, 1.0, 6.0, 7.0]
    assert none is None


def test_dynamic_sampling_bad_input():
    with pytest.raises(ValueError, match="atol=-1.0 is invalid"):
        DynamicSamplingConfig(atol=-1.0)
    with pytest.raises(ValueError, match="rewards has shape"):
        dynamic_sampling(torch.ones(3), config=DynamicSamplingConfig())
