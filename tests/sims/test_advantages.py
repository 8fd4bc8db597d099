"""Reference values of every advantage estimator, and their identities."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sims import advantages as A
from sims.registry import ADVANTAGES

# Two groups of K = 4 binary rewards: pass rates 1/2 and 3/4.
R = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 0.0]], dtype=torch.float64)
EXACT = A.StdConfig(std="sample", eps=0.0)


def _close(got, expected):
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), atol=1e-12, rtol=0)


def test_raw_reference_values():
    _close(A.raw_advantages(R, config=A.NoConfig()), R.tolist())


def test_group_mean_reference_values():
    # means 0.5 and 0.75
    _close(A.group_mean_advantages(R, config=A.NoConfig()),
           [[0.5, -0.5, -0.5, 0.5], [0.25, 0.25, 0.25, -0.75]])


def test_grpo_sample_std_reference_values():
    # group 0: sample var = 4·0.25/3 = 1/3 -> A = ±0.5·sqrt(3)
    # group 1: deviations (0.25, 0.25, 0.25, -0.75), sample var = 0.75/3 = 0.25 -> std 0.5
    h = 0.5 * math.sqrt(3)
    _close(A.grpo_advantages(R, config=EXACT), [[h, -h, -h, h], [0.5, 0.5, 0.5, -1.5]])


def test_grpo_population_std_reference_values():
    # group 0: var 0.25 -> std 0.5 -> ±1; group 1: var 0.1875 -> A = 0.25/sqrt(0.1875), -0.75/sqrt(0.1875)
    s = math.sqrt(0.1875)
    got = A.grpo_advantages(R, config=A.StdConfig(std="population", eps=0.0))
    _close(got, [[1.0, -1.0, -1.0, 1.0], [0.25 / s, 0.25 / s, 0.25 / s, -0.75 / s]])


def test_grpo_epsilon_placement():
    # eps on the std: 0.5/(0.5 + 0.1); eps on the variance: 0.5/sqrt(0.25 + 0.1)  (group 0, population)
    r = R[:1]
    on_std = A.grpo_advantages(r, config=A.StdConfig(std="population", eps=0.1, eps_placement="std"))
    on_var = A.grpo_advantages(r, config=A.StdConfig(std="population", eps=0.1, eps_placement="var"))
    assert on_std[0, 0].item() == pytest.approx(0.5 / 0.6)
    assert on_var[0, 0].item() == pytest.approx(0.5 / math.sqrt(0.35))


def test_grpo_zero_std_group_is_zero_with_eps_and_an_error_without():
    r = torch.tensor([[1.0, 1.0, 1.0]], dtype=torch.float64)
    _close(A.grpo_advantages(r, config=A.StdConfig()), [[0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match=r"eps=0.0 is invalid here: group 0 has zero reward std"):
        A.grpo_advantages(r, config=EXACT)


def test_rloo_reference_values():
    # A_i = r_i - mean_{j≠i} r_j: group 0: 1 - 1/3 = 2/3, 0 - 2/3 = -2/3; group 1: 1 - 2/3, 0 - 1
    _close(A.rloo_advantages(R, config=A.NoConfig()),
           [[2 / 3, -2 / 3, -2 / 3, 2 / 3], [1 / 3, 1 / 3, 1 / 3, -1.0]])


@given(seed=st.integers(0, 2**31 - 1), g=st.integers(1, 4), k=st.integers(2, 6))
def test_rloo_equals_leave_one_out_loop(seed, g, k):
    r = torch.randn(g, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    loop = torch.stack([torch.stack([r[i, j] - torch.cat([r[i, :j], r[i, j + 1:]]).mean()
                                     for j in range(k)]) for i in range(g)])
    torch.testing.assert_close(A.rloo_advantages(r, config=A.NoConfig()), loop, atol=1e-12, rtol=0)
    # and the identity RLOO = K/(K-1)·(group-mean advantage)
    torch.testing.assert_close(A.rloo_advantages(r, config=A.NoConfig()),
                               k / (k - 1) * A.group_mean_advantages(r, config=A.NoConfig()),
                               atol=1e-12, rtol=0)


def test_batch_std_reference_values():
    # all 8 rewards: mean 0.625, sample var = (8/7)·0.625·0.375 -> std sqrt(15/56)
    s = math.sqrt(15 / 56)
    got = A.batch_std_advantages(R, config=EXACT)
    _close(got, [[0.5 / s, -0.5 / s, -0.5 / s, 0.5 / s], [0.25 / s, 0.25 / s, 0.25 / s, -0.75 / s]])


def test_nsr_and_psr_reference_values():
    _close(A.nsr_advantages(R, config=A.ThresholdConfig()),
           [[0.0, -1.0, -1.0, 0.0], [0.0, 0.0, 0.0, -1.0]])
    _close(A.psr_advantages(R, config=A.ThresholdConfig()), R.tolist())
    pm = torch.tensor([[1.0, -1.0]], dtype=torch.float64)  # {-1, +1} rewards, threshold 0
    _close(A.nsr_advantages(pm, config=A.ThresholdConfig(threshold=0.0)), [[0.0, -1.0]])


def test_estimators_that_need_two_samples_reject_one():
    one = torch.tensor([[1.0], [0.0]], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"rewards.shape\[1\] \(K\)=1 is invalid; allowed: K >= 2"):
        A.rloo_advantages(one, config=A.NoConfig())
    with pytest.raises(ValueError, match=r"K >= 2"):
        A.grpo_advantages(one, config=A.StdConfig(std="sample"))
    _close(A.grpo_advantages(one, config=A.StdConfig(std="population")), [[0.0], [0.0]])


@pytest.mark.parametrize("name", list(ADVANTAGES))
def test_every_estimator_validates_rewards(name):
    spec = ADVANTAGES[name]
    with pytest.raises(ValueError, match="rewards has shape"):
        spec.fn(torch.ones(4, dtype=torch.float64), config=spec.config_cls())
    with pytest.raises(ValueError, match="rewards has a non-finite value nan"):
        spec.fn(torch.tensor([[1.0, math.nan]]), config=spec.config_cls())


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(std="biased"), "std='biased'"), (dict(eps=-1e-6), "eps=-1e-06"),
    (dict(eps_placement="both"), "eps_placement='both'")])
def test_std_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        A.StdConfig(**kwargs)


def test_broadcast_to_tokens():
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    _close(A.broadcast_to_tokens(torch.tensor([[2.0, -1.0]], dtype=torch.float64), mask.double()),
           [[2.0, 2.0, 0.0], [-1.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="adv has 3 sequences; allowed: 2"):
        A.broadcast_to_tokens(torch.ones(1, 3), mask)
