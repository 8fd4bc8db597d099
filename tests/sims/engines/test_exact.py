"""The exact engine against finite differences and against theory's closed forms."""

from __future__ import annotations

import pytest
import torch

from policies.perturb import perturb
from policies.tabular import TabularPolicy
from sims import objectives as O
from sims.advantages import NoConfig, StdConfig
from sims.engines.exact import exact_estimator_mean, exact_group_estimator_mean, exact_objective
from theory import importance


def _first_token_is(v):
    return lambda tokens, mask: (tokens[:, 0] == v).to(torch.float64)


def _setup(eos=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    old = TabularPolicy.random(3, 3, generator=g, eos=eos)
    new = perturb(old, kl=0.05, generator=g)
    return old, new


def test_exact_gradient_matches_finite_differences():
    old, _ = _setup()
    reward = _first_token_is(1)
    _, grad = exact_objective(old, reward)
    h = 1e-6
    fd = torch.zeros_like(old.logits)
    for t in range(3):
        for v in range(3):
            step = torch.zeros_like(old.logits)
            step[t, v] = h
            plus, _ = exact_objective(TabularPolicy(old.logits + step, eos=2), reward)
            minus, _ = exact_objective(TabularPolicy(old.logits - step, eos=2), reward)
            fd[t, v] = (plus - minus) / (2 * h)
    torch.testing.assert_close(grad, fd, atol=1e-8, rtol=0)


def test_engine_reproduces_importance_weight_closed_forms():
    # papers.md example: V = 4, T = 5, i.i.d. positions: E_old[R] = 1, E_old[R²] = (1 + χ²)^T,
    # E_old[G] = (Σ μ (π/μ)^{1/T})^T
    mu = torch.tensor([float(x) for x in importance.EXAMPLE_MU], dtype=torch.float64)
    pi = torch.tensor([float(x) for x in importance.EXAMPLE_PI], dtype=torch.float64)
    t = importance.EXAMPLE_T
    old = TabularPolicy(mu.log().expand(t, 4).clone())
    new = TabularPolicy(pi.log().expand(t, 4).clone())
    tokens, mask, prob = old.enumerate()
    log_r = (new.log_prob(tokens) - old.log_prob(tokens)).sum(-1)
    values = importance.example_values()
    assert float((prob * log_r.exp()).sum()) == pytest.approx(values["E_R"], abs=1e-12)
    assert float((prob * (2 * log_r).exp()).sum()) == pytest.approx(values["E_R2"], abs=1e-12)
    assert float((prob * (log_r / t).exp()).sum()) == pytest.approx(values["E_G"], abs=1e-12)
    chi2 = float(importance.chi2(importance.EXAMPLE_PI, importance.EXAMPLE_MU))
    assert float((prob * (2 * log_r).exp()).sum()) == pytest.approx((1 + chi2) ** t, abs=1e-12)


def _two_ones(tokens, mask):
    # couples positions 0 and 1: token-level ratios cannot correct for it
    return ((tokens[:, 0] == 1) & (tokens[:, 1] == 1)).to(torch.float64)


def test_full_sequence_is_is_exactly_unbiased_off_policy_and_cispo_is_not():
    old, new = _setup()
    reward = _two_ones
    _, truth = exact_objective(new, reward)
    seq_is = exact_estimator_mean(new, old, reward, "seq_is", O.SeqIsConfig())
    torch.testing.assert_close(seq_is, truth, atol=1e-12, rtol=0)
    token_is = exact_estimator_mean(new, old, reward, "cispo", O.CispoConfig(agg="token-sum"))
    assert float((token_is - truth).norm()) > 1e-4  # token-level weights are biased here


def test_token_is_is_exact_when_the_reward_reads_one_position():
    # independent positions and a reward on token 0 only: E_old[R ρ_t ∇ℓ_t] vanishes for t > 0
    old, new = _setup()
    reward = _first_token_is(1)
    _, truth = exact_objective(new, reward)
    token_is = exact_estimator_mean(new, old, reward, "cispo", O.CispoConfig(agg="token-sum"))
    torch.testing.assert_close(token_is, truth, atol=1e-12, rtol=0)


def test_on_policy_reinforce_is_unbiased():
    old, _ = _setup()
    reward = _first_token_is(0)
    _, truth = exact_objective(old, reward)
    est = exact_estimator_mean(old, old, reward, "reinforce", O.ReinforceConfig(), baseline=0.3)
    torch.testing.assert_close(est, truth, atol=1e-12, rtol=0)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_group_baselines_exactly(k):
    old, _ = _setup()
    reward = _first_token_is(1)
    _, truth = exact_objective(old, reward)
    cfg = O.ReinforceConfig(agg="seq-mean-token-sum")
    rloo = exact_group_estimator_mean(old, old, reward, "reinforce", cfg, "rloo", NoConfig(), group_size=k)
    mean = exact_group_estimator_mean(old, old, reward, "reinforce", cfg, "group_mean", NoConfig(), group_size=k)
    torch.testing.assert_close(rloo, truth, atol=1e-12, rtol=0)  # unbiased
    torch.testing.assert_close(mean, (k - 1) / k * truth, atol=1e-12, rtol=0)  # shrunk by (K-1)/K


def test_group_expectation_scales_with_the_aggregation():
    # token-sum adds the K members' terms; seq-mean-token-sum averages them: a factor K exactly
    old, _ = _setup()
    reward = _first_token_is(1)
    args = (old, old, reward, "reinforce")
    total = exact_group_estimator_mean(*args, O.ReinforceConfig(agg="token-sum"), "rloo", NoConfig(), group_size=3)
    mean = exact_group_estimator_mean(*args, O.ReinforceConfig(agg="seq-mean-token-sum"), "rloo", NoConfig(),
                                      group_size=3)
    torch.testing.assert_close(total, 3 * mean, atol=1e-12, rtol=0)


@pytest.mark.parametrize(("advantage", "config"), [("grpo", StdConfig(std="population", eps=1e-6)),
                                                  ("rloo", NoConfig())])
def test_group_conditioning_equals_brute_force_over_all_pairs(advantage, config):
    # K = 2: enumerate all (V^T)^2 ordered pairs of sequences and average the group estimator
    from sims.registry import get_advantage

    old, new = _setup()
    reward = _first_token_is(1)
    cfg = O.CispoConfig.verl(0.2, 0.2, agg="seq-mean-token-sum")
    exact = exact_group_estimator_mean(new, old, reward, "cispo", cfg, advantage, config, group_size=2)
    tokens, mask, prob = old.enumerate()
    r = reward(tokens, mask)
    n = tokens.shape[0]
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    i, j = i.reshape(-1), j.reshape(-1)
    rewards = torch.stack([r[i], r[j]], -1)  # (n², 2): every ordered group
    adv = get_advantage(advantage).fn(rewards, config=config)
    rows = torch.stack([i, j], -1).reshape(-1)  # sequence index of each group member
    logp = new.log_prob(tokens)[rows].clone().requires_grad_(True)
    adv_tok = adv.reshape(-1)[:, None] * mask[rows]
    loss, _ = O.cispo(logp, old.log_prob(tokens)[rows], adv_tok, mask[rows],
                      config=O.CispoConfig.verl(0.2, 0.2, agg="seq-mean-token-sum"))
    w = -torch.autograd.grad(loss, logp)[0] * n * n  # per-group weights (loss averages n² groups)
    pair_prob = (prob[i] * prob[j]).repeat_interleave(2)
    brute = new.score_sum(pair_prob[:, None] * w, tokens[rows])
    torch.testing.assert_close(exact, brute, atol=1e-12, rtol=0)


def test_exact_engine_refusals():
    old, new = _setup()
    reward = _first_token_is(1)
    with pytest.raises(ValueError, match="exceeds max_sequences=8"):
        exact_objective(old, reward, max_sequences=8)
    with pytest.raises(ValueError, match="rewards in \\{0, 1\\}"):
        exact_group_estimator_mean(old, old, lambda t, m: t[:, 0].double() / 2, "reinforce",
                                   O.ReinforceConfig(), "rloo", NoConfig(), group_size=2)
    with pytest.raises(ValueError, match="no exact group expectation"):
        exact_group_estimator_mean(old, old, reward, "reinforce", O.ReinforceConfig(agg="token-mean"),
                                   "rloo", NoConfig(), group_size=2)
    other = TabularPolicy(torch.zeros(4, 3, dtype=torch.float64), eos=2)
    with pytest.raises(ValueError, match="old_policy="):
        exact_estimator_mean(other, old, reward, "reinforce", O.ReinforceConfig())


@pytest.mark.parametrize(("objective", "config", "match"), [
    ("ppo_clip_rollout_is", O.PpoClipRolloutIsConfig(), "cannot supply rollout_logp"),
    ("kl_cov", O.KlCovConfig(), "batch-coupled"),
])
def test_engine_refuses_objectives_it_cannot_evaluate(objective, config, match):
    # the engine has no rollout log-probs, and evaluates N batch-of-one estimators in one call
    old, new = _setup()
    with pytest.raises(ValueError, match=match):
        exact_estimator_mean(new, old, _two_ones, objective, config)
