"""Named algorithms equal the hand composition of their parts."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from sims import objectives as O
from sims.advantages import NoConfig, StdConfig, broadcast_to_tokens, grpo_advantages
from sims.algorithms import ALGORITHMS, Algorithm, KLTerm, algorithm_loss, get_algorithm
from sims.kl import KLConfig, kl_in_reward, kl_penalty
from tests.batches import make_batch

G, K, T = 3, 4, 5
EXPECTED_RECIPES = {"grpo", "drgrpo", "dapo", "gspo", "cispo", "rloo", "sgs_cispo"}


def _data(seed=0):
    b = make_batch(seed, G, K, T, per_token_adv=False, log_ratio_scale=0.3)
    rewards = torch.tensor([[1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 1.0, 1.0]],
                           dtype=torch.float64)
    ref = torch.clamp(b.logp - 0.1, max=0.0)
    return b, rewards, ref


def _grad(loss, logp):
    return torch.autograd.grad(loss, logp)[0]


def test_registry_has_the_published_recipes():
    assert set(ALGORITHMS) == EXPECTED_RECIPES
    for name, algo in ALGORITHMS.items():
        assert algo.name == name and get_algorithm(name) is algo and algo.reference


@pytest.mark.parametrize("name", sorted(EXPECTED_RECIPES))
def test_every_algorithm_runs(name):
    b, rewards, ref = _data()
    logp = b.logp.clone().requires_grad_(True)
    loss, diag = algorithm_loss(ALGORITHMS[name], logp, b.old_logp, rewards, b.mask, ref_logp=ref, max_len=T)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert torch.isfinite(_grad(loss, logp)).all()
    dropped = 1.0 if ALGORITHMS[name].group_filter else 0.0  # group 1 has equal rewards
    assert diag["groups_dropped"].item() == dropped


def test_dapo_equals_its_parts():
    b, rewards, _ = _data()
    logp = b.logp.clone().requires_grad_(True)
    loss, _ = algorithm_loss(ALGORITHMS["dapo"], logp, b.old_logp, rewards, b.mask)
    keep = torch.tensor([0, 1, 2, 3, 8, 9, 10, 11])  # group 1 (all ones) is dropped
    adv = grpo_advantages(rewards[[0, 2]], config=StdConfig(std="sample", eps=1e-6))
    cfg = O.PpoClipConfig(eps_low=0.2, eps_high=0.28, agg="prompt-token-mean", group_size=K)
    manual, _ = O.ppo_clip(logp[keep], b.old_logp[keep], broadcast_to_tokens(adv, b.mask[keep]),
                           b.mask[keep], config=cfg)
    torch.testing.assert_close(loss, manual, atol=1e-12, rtol=0)
    torch.testing.assert_close(_grad(loss, logp), _grad(manual, logp), atol=1e-12, rtol=0)


def test_grpo_adds_the_k3_penalty_with_beta_004():
    b, rewards, ref = _data()
    logp = b.logp.clone().requires_grad_(True)
    loss, diag = algorithm_loss(ALGORITHMS["grpo"], logp, b.old_logp, rewards, b.mask, ref_logp=ref)
    adv = broadcast_to_tokens(grpo_advantages(rewards, config=StdConfig(eps=1e-6)), b.mask)
    cfg = O.PpoClipConfig(agg="seq-mean-token-mean", group_size=K)
    pg, _ = O.ppo_clip(logp, b.old_logp, adv, b.mask, config=cfg)
    kl, _ = kl_penalty(logp, ref, b.mask, config=KLConfig(estimator="k3", agg="seq-mean-token-mean"))
    torch.testing.assert_close(loss, pg + 0.04 * kl, atol=1e-12, rtol=0)
    assert diag["kl_loss"].item() == pytest.approx(kl.item())


def test_kl_in_reward_placement_shapes_rewards_before_advantages():
    b, rewards, ref = _data()
    algo = Algorithm(name="rloo_kl", advantage="rloo", advantage_config=NoConfig(),
                     objective="reinforce", objective_config=O.ReinforceConfig(),
                     kl=KLTerm(estimator="k1", coef=0.05, placement="reward"))
    logp = b.logp.clone().requires_grad_(True)
    loss, _ = algorithm_loss(algo, logp, b.old_logp, rewards, b.mask, ref_logp=ref)
    shaped = kl_in_reward(rewards, b.old_logp, ref, b.mask, estimator="k1", beta=0.05)
    k = shaped.shape[1]
    adv = broadcast_to_tokens((shaped - shaped.mean(-1, keepdim=True)) * k / (k - 1), b.mask)
    manual, _ = O.reinforce(logp, b.old_logp, adv, b.mask, config=O.ReinforceConfig())
    torch.testing.assert_close(loss, manual, atol=1e-12, rtol=0)


def test_drgrpo_uses_the_explicit_max_len():
    b, rewards, _ = _data()
    with pytest.raises(ValueError, match="max_len=None is invalid"):
        algorithm_loss(ALGORITHMS["drgrpo"], b.logp, b.old_logp, rewards, b.mask)
    small, _ = algorithm_loss(ALGORITHMS["drgrpo"], b.logp, b.old_logp, rewards, b.mask, max_len=T)
    big, _ = algorithm_loss(ALGORITHMS["drgrpo"], b.logp, b.old_logp, rewards, b.mask, max_len=2 * T)
    assert big.item() == pytest.approx(small.item() / 2)


def test_algorithm_errors():
    b, rewards, _ = _data()
    with pytest.raises(ValueError, match="ref_logp=None is invalid"):
        algorithm_loss(ALGORITHMS["grpo"], b.logp, b.old_logp, rewards, b.mask)
    with pytest.raises(ValueError, match="dropped all 3 groups"):
        algorithm_loss(ALGORITHMS["dapo"], b.logp, b.old_logp, torch.ones(G, K, dtype=torch.float64), b.mask)
    with pytest.raises(ValueError, match=r"rewards has shape \(2, 4\); allowed: \[G, K\] with G\*K = 12"):
        algorithm_loss(ALGORITHMS["dapo"], b.logp, b.old_logp, rewards[:2], b.mask)
    with pytest.raises(ValueError, match="objective_config=.* is invalid; allowed: an instance of CispoConfig"):
        dataclasses.replace(ALGORITHMS["cispo"], objective_config=O.PpoClipConfig())
    with pytest.raises(ValueError, match="algorithm='ppo' is invalid"):
        get_algorithm("ppo")
    with pytest.raises(ValueError, match="placement='logits' is invalid"):
        KLTerm(estimator="k3", coef=0.1, placement="logits")
