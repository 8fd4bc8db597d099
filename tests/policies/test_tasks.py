"""Rewards, exact pass rates, calibrated per-prompt difficulty and the length covariance."""

from __future__ import annotations

import pytest
import torch

from policies.markov import MarkovPolicy
from policies.neural import GRUPolicy
from policies.tabular import TabularPolicy
from policies.tasks import (LengthBonus, TargetMatch, TokenCount, calibrate, call_reward, exact_pass_rate,
                            reward_length_covariance)


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def _brute_rate(policy, reward, prompt=None):
    tokens, mask, prob = policy.enumerate(prompt=prompt)
    prompts = None if prompt is None else torch.full((tokens.shape[0],), prompt)
    return float((prob * call_reward(reward, tokens, mask, prompts)).sum())


FAMILIES = {
    "tabular": lambda eos: TabularPolicy.random(4, 3, generator=_g(), eos=eos),
    "markov": lambda eos: MarkovPolicy.random(4, 3, generator=_g(), eos=eos),
}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("eos", [None, 2, 1])
@pytest.mark.parametrize("threshold", [1, 2, 4])
def test_token_count_pass_rate_recursion_equals_enumeration(family, eos, threshold):
    # eos = 1 counts the EOS token itself
    policy = FAMILIES[family](eos)
    reward = TokenCount(1, threshold)
    assert exact_pass_rate(policy, reward) == pytest.approx(_brute_rate(policy, reward), abs=1e-14)


@pytest.mark.parametrize("family", ["tabular", "markov", "gru"])
def test_target_match_pass_rate_is_the_prefix_probability(family):
    g = _g()
    policy = {"tabular": lambda: TabularPolicy.random(3, 3, generator=g, eos=2),
              "markov": lambda: MarkovPolicy.random(3, 3, generator=g, eos=2),
              "gru": lambda: GRUPolicy.random(3, 3, generator=g, eos=2, hidden=4, embed=3)}[family]()
    for target in [(1, 0), (0, 2), (2, 1)]:  # (2, 1): EOS first makes it unreachable
        reward = TargetMatch((target,))
        assert exact_pass_rate(policy, reward) == pytest.approx(_brute_rate(policy, reward), abs=1e-14)
    assert exact_pass_rate(policy, TargetMatch(((2, 1),))) == 0.0


def test_continuous_count_and_length_bonus():
    tokens = torch.tensor([[1, 1, 0, 2], [1, 2, 1, 1]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.float64)
    assert TokenCount(1)(tokens, mask).tolist() == [0.5, 0.25]
    assert TokenCount(1, 2)(tokens, mask).tolist() == [1.0, 0.0]
    assert LengthBonus(TokenCount(1), 0.4)(tokens, mask).tolist() == pytest.approx([0.9, 0.45])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("reward", [TokenCount(1, 2), TargetMatch(((1, 0),))])
def test_calibrate_sets_each_prompts_pass_rate(family, reward):
    base = FAMILIES[family](2)
    rates = [0.1, 0.5, 0.9]
    task_policy = calibrate(base, reward, rates)
    assert task_policy.n_prompts == 3
    for g, rate in enumerate(rates):
        assert exact_pass_rate(task_policy, reward, prompt=g) == pytest.approx(rate, abs=1e-12)
        assert _brute_rate(task_policy, reward, prompt=g) == pytest.approx(rate, abs=1e-12)


def test_per_prompt_targets():
    policy = TabularPolicy.random(3, 3, generator=_g(), n_prompts=2)
    reward = TargetMatch(((1, 0), (0, 0)))
    tokens = torch.tensor([[1, 0, 2], [1, 0, 2]])
    mask = torch.ones(2, 3)
    assert reward(tokens, mask, torch.tensor([0, 1])).tolist() == [1.0, 0.0]
    for g in range(2):
        assert exact_pass_rate(policy, reward, prompt=g) == pytest.approx(_brute_rate(policy, reward, g), abs=1e-14)


def test_length_covariance_detects_length_correlation():
    policy = TabularPolicy.random(4, 3, generator=_g(), eos=2)
    assert reward_length_covariance(policy, LengthBonus(TargetMatch(((1,),)), 1.0)) > 0.01
    # without EOS every sequence has length T: no reward can carry a length signal
    no_eos = TabularPolicy.random(4, 3, generator=_g())
    assert reward_length_covariance(no_eos, LengthBonus(TokenCount(1), 1.0)) == pytest.approx(0, abs=1e-15)


def test_bad_input():
    policy = TabularPolicy.random(3, 3, generator=_g(), eos=2)
    with pytest.raises(ValueError, match="threshold=0 is invalid"):
        TokenCount(1, 0)
    with pytest.raises(ValueError, match="token=-1 is invalid"):
        TokenCount(-1)
    with pytest.raises(ValueError, match="targets=.* is invalid"):
        TargetMatch(((1, 0), (1,)))
    with pytest.raises(ValueError, match="slope=inf is invalid"):
        LengthBonus(TokenCount(1), float("inf"))
    with pytest.raises(ValueError, match="pass rate 0.999999 is unreachable"):
        calibrate(policy, TokenCount(1, 3), [0.999999], max_scale=1.0)
    with pytest.raises(ValueError, match="pass_rates has 1.5"):
        calibrate(policy, TokenCount(1, 1), [1.5])
    with pytest.raises(ValueError, match="no threshold"):
        exact_pass_rate(policy, TokenCount(1))
    with pytest.raises(ValueError, match=r"must return a \[N\] tensor"):
        call_reward(lambda t, m: 1.0, torch.zeros(2, 3, dtype=torch.int64), torch.ones(2, 3), None)
    with pytest.raises(ValueError, match="non-finite rewards"):
        call_reward(lambda t, m: torch.full((2,), float("nan")), torch.zeros(2, 3, dtype=torch.int64),
                    torch.ones(2, 3), None)
