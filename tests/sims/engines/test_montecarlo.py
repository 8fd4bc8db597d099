"""The Monte Carlo engine against the exact engine.

Statistical tests use Z = 5 on each coordinate of the mean gradient (9 for the tabular cases,
2·4·3 = 24 for the prompted Markov task, 173 for the GRU): the two-sided normal tail at 5σ is
5.7e-7, so a test fails falsely with probability <= 173 · 5.7e-7 ≈ 1e-4, and this module
(8 such comparisons) with probability < 2e-4. Seeds are fixed, so the
outcome is reproducible. ``test_biased_estimator_is_rejected`` must fail the same check: the
test has power. Interval checks use level 1 - 1e-6.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from policies.markov import MarkovPolicy
from policies.neural import PARAM_NAMES, GRUPolicy, log_prob_fn
from policies.perturb import perturb
from policies.tabular import TabularPolicy
from policies.tasks import TokenCount, calibrate
from sims import objectives as O
from sims.advantages import NoConfig, StdConfig
from sims.engines.exact import exact_group_estimator_mean, exact_objective
from sims.engines.montecarlo import MCConfig, _chunk, _normaliser, mc_gradient
from sims.registry import get_advantage, get_objective

_Z = 5.0
_MC = MCConfig(n_replicas=20_000, group_size=4, chunk=2_000, seed=11, level=1 - 1e-6)


def _two_ones(tokens, mask):
    return ((tokens[:, 0] == 1) & (tokens[:, 1] == 1)).to(torch.float64)


def _pair(seed=0, kl=0.05):
    g = torch.Generator().manual_seed(seed)
    old = TabularPolicy.random(3, 3, generator=g, eos=2)
    return old, perturb(old, kl=kl, generator=g)


def _within_z(res, expected):
    """|MC mean - expected| <= Z·SE on every coordinate; where SE = 0 (parameters no sampled
    token touches, such as the row after EOS) the two must agree exactly."""
    diff = (res.mean - expected).abs()
    touched = res.mean_se > 0
    return bool((diff[touched] <= _Z * res.mean_se[touched]).all() and (diff[~touched] <= 1e-12).all())


CASES = [
    ("reinforce", O.ReinforceConfig(agg="seq-mean-token-sum"), "rloo", NoConfig(), False),
    ("cispo", O.CispoConfig.verl(0.2, 0.2, agg="seq-mean-token-sum"), "rloo", NoConfig(), True),
    ("ppo_clip", O.PpoClipConfig(agg="seq-mean-token-mean"), "grpo", StdConfig(std="population"), True),
    ("gspo", O.GspoConfig(eps_low=0.05, eps_high=0.05), "grpo", StdConfig(), True),
    ("sgs_cispo", O.SgsCispoConfig(agg="seq-mean-token-sum", p_mode="token"), "rloo", NoConfig(), True),
    ("reinforce", O.ReinforceConfig(agg="token-sum"), "rloo", NoConfig(), False),
]


@pytest.mark.statistical
@pytest.mark.parametrize(("objective", "config", "advantage", "adv_config", "off_policy"), CASES)
def test_mc_mean_matches_exact_expectation(objective, config, advantage, adv_config, off_policy):
    old, new = _pair()
    new = new if off_policy else old
    expected = exact_group_estimator_mean(new, old, _two_ones, objective, config, advantage, adv_config,
                                          group_size=_MC.group_size)
    _, truth = exact_objective(new, _two_ones)
    res = mc_gradient(new, old, _two_ones, objective, config, advantage, adv_config, _MC, truth=truth)
    assert _within_z(res, expected)
    exact_bias = float((expected - truth).norm())
    assert res.bias_norm.low <= exact_bias <= res.bias_norm.high
    exact_cos = float((expected * truth).sum() / (expected.norm() * truth.norm()))
    assert res.cosine.low <= exact_cos <= res.cosine.high


@pytest.mark.statistical
def test_biased_estimator_is_rejected():
    # the group-mean baseline's expectation is (K-1)/K·∇J: compared with ∇J it must fail
    old, _ = _pair()
    _, truth = exact_objective(old, _two_ones)
    res = mc_gradient(old, old, _two_ones, "reinforce", O.ReinforceConfig(agg="seq-mean-token-sum"),
                      "group_mean", NoConfig(), _MC, truth=truth)
    assert not _within_z(res, truth)
    assert _within_z(res, (_MC.group_size - 1) / _MC.group_size * truth)


def _family_pair(family, seed=0):
    g = torch.Generator().manual_seed(seed)
    if family == "tabular":
        old = TabularPolicy.random(3, 3, generator=g, eos=2)
    elif family == "markov":
        old = MarkovPolicy.random(3, 3, generator=g, eos=2)
    else:
        old = GRUPolicy.random(3, 3, generator=g, eos=2, hidden=4, embed=3)
    return old, perturb(old, kl=0.05, generator=g)


_AGGS = ["token-mean", "prompt-token-mean", "seq-mean-token-mean", "seq-mean-token-sum",
         "seq-mean-token-sum-norm", "token-sum"]


@pytest.mark.parametrize(("family", "agg"), [("tabular", a) for a in _AGGS]
                         + [("markov", "token-mean"), ("markov", "seq-mean-token-sum"),
                            ("gru", "token-mean"), ("gru", "prompt-token-mean")])
def test_replica_moments_equal_a_per_replica_autograd_loop(family, agg):
    """Σ_r g_r and Σ_r g_r² of one chunk equal those of per-replica gradients computed by
    autograd through the policy's parameters with the full batch loss (the obvious reference)."""
    old, new = _family_pair(family)
    n_rep, g, k, max_len = 3, 2, 2, 4
    config = O.PpoClipConfig(agg=agg)
    token_sum = dataclasses.replace(config, agg="token-sum")
    s1, s2, _, _ = _chunk(new, old, _two_ones, get_objective("ppo_clip"), token_sum, get_advantage("grpo"),
                          StdConfig(), agg, n_rep, g, k, max_len, torch.Generator().manual_seed(5))
    tokens, mask = old.sample(n_rep * g * k, generator=torch.Generator().manual_seed(5))
    rewards = _two_ones(tokens, mask).reshape(n_rep * g, k)
    adv = get_advantage("grpo").fn(rewards, config=StdConfig()).reshape(-1, 1) * mask
    b = g * k
    grads = []
    for r in range(n_rep):  # the obviously correct reference: autograd through the parameters
        rows = slice(r * b, (r + 1) * b)
        params, lp = _log_prob_with_params(new, tokens[rows])
        cfg = dataclasses.replace(config, max_len=max_len, group_size=k)
        loss, _ = O.ppo_clip(lp, old.log_prob(tokens[rows]), adv[rows], mask[rows], config=cfg)
        grads.append(torch.cat([x.reshape(-1) for x in torch.autograd.grad(-loss, params)]))
    grads = torch.stack(grads)
    torch.testing.assert_close(s1, grads.sum(0), atol=1e-12, rtol=0)
    torch.testing.assert_close(s2, (grads * grads).sum(0), atol=1e-12, rtol=0)


def _log_prob_with_params(policy, tokens):
    if isinstance(policy, GRUPolicy):
        params = {key: v.clone().requires_grad_(True) for key, v in policy.params.items()}
        return [params[key] for key in PARAM_NAMES], log_prob_fn(params, tokens)
    logits = policy.logits.clone().requires_grad_(True)
    return [logits], policy.with_logits(logits).log_prob(tokens)


def test_normaliser_closed_forms():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 0]], dtype=torch.float64)
    assert _normaliser("token-mean", mask, 2, 1, 2, 3).tolist() == [1 / 3] * 2 + [1 / 5] * 2
    assert _normaliser("prompt-token-mean", mask, 1, 2, 2, 3).tolist() == [1 / 6] * 2 + [1 / 10] * 2
    assert _normaliser("seq-mean-token-mean", mask, 1, 1, 4, 3).tolist() == [1 / 8, 1 / 4, 1 / 12, 1 / 8]


def test_reproducible_and_memory_does_not_depend_on_m():
    old, new = _pair()
    mc = MCConfig(n_replicas=400, group_size=4, chunk=50, n_batches=4, seed=3)
    a = mc_gradient(new, old, _two_ones, "cispo", O.CispoConfig(), "rloo", NoConfig(), mc)
    b = mc_gradient(new, old, _two_ones, "cispo", O.CispoConfig(), "rloo", NoConfig(), mc)
    assert torch.equal(a.mean, b.mean) and a.var_trace == b.var_trace
    assert a.bias_norm is None and a.n_sequences == 1600


def test_mc_config_and_input_errors():
    with pytest.raises(ValueError, match="n_replicas=25 is invalid; allowed: a multiple of n_batches=20"):
        MCConfig(n_replicas=25)
    with pytest.raises(ValueError, match="n_replicas=20 is invalid; .* at least 2 replicas per batch"):
        MCConfig(n_replicas=20)  # one replica per batch has no within-batch variance
    with pytest.raises(ValueError, match="level=1.5 is invalid"):
        MCConfig(level=1.5)
    old, new = _pair()
    with pytest.raises(ValueError, match="advantage='batch_std' is invalid"):
        mc_gradient(new, old, _two_ones, "cispo", O.CispoConfig(), "batch_std", StdConfig(),
                    MCConfig(n_replicas=40))


@pytest.mark.statistical
def test_prompted_markov_task_mc_matches_exact_per_prompt_expectations():
    # two prompts at calibrated pass rates; the batch estimator's expectation is the mean over
    # prompts of each group's exact expectation (seq-mean-token-sum divides by G·K)
    base = MarkovPolicy.random(3, 3, generator=torch.Generator().manual_seed(0), eos=2)
    reward = TokenCount(1, 1)
    old = calibrate(base, reward, [0.3, 0.7])
    new = perturb(old, kl=0.05, generator=torch.Generator().manual_seed(1))
    config = O.CispoConfig.verl(0.2, 0.2, agg="seq-mean-token-sum")
    mc = dataclasses.replace(_MC, n_groups=2, n_replicas=10_000)
    expected = sum(exact_group_estimator_mean(new, old, reward, "cispo", config, "grpo", StdConfig(),
                                              group_size=mc.group_size, prompt=g) for g in range(2)) / 2
    truth = sum(exact_objective(new, reward, prompt=g)[1] for g in range(2)) / 2
    res = mc_gradient(new, old, reward, "cispo", config, "grpo", StdConfig(), mc, truth=truth)
    assert _within_z(res, expected)
    assert res.bias_norm.low <= float((expected - truth).norm()) <= res.bias_norm.high


@pytest.mark.statistical
def test_gru_mc_matches_exact_expectation():
    old, new = _family_pair("gru")
    config = O.PpoClipConfig(agg="seq-mean-token-sum")
    mc = dataclasses.replace(_MC, n_replicas=4_000, chunk=1_000)
    expected = exact_group_estimator_mean(new, old, _two_ones, "ppo_clip", config, "rloo", NoConfig(),
                                          group_size=mc.group_size)
    res = mc_gradient(new, old, _two_ones, "ppo_clip", config, "rloo", NoConfig(), mc)
    assert res.mean.shape == new.score_shape
    assert _within_z(res, expected)


def test_policy_and_truth_errors():
    old, new = _pair()
    cfg, mc = O.CispoConfig(), MCConfig(n_replicas=40)
    with pytest.raises(ValueError, match="old_policy='MarkovPolicy"):
        mc_gradient(new, _family_pair("markov")[0], _two_ones, "cispo", cfg, "rloo", NoConfig(), mc)
    with pytest.raises(ValueError, match=r"truth=\(2,\) is invalid"):
        mc_gradient(new, old, _two_ones, "cispo", cfg, "rloo", NoConfig(), mc, truth=torch.zeros(2))
    prompted = TabularPolicy.random(3, 3, generator=torch.Generator().manual_seed(0), n_prompts=3)
    with pytest.raises(ValueError, match="n_groups=1 is invalid; allowed: the policy's number of prompts P=3"):
        mc_gradient(prompted, prompted, _two_ones, "cispo", cfg, "rloo", NoConfig(), mc)


def test_profile_chunk_times_every_stage_of_the_chunk_step():
    from sims.engines.montecarlo import STAGES, profile_chunk

    old, new = _pair()
    stages = profile_chunk(new, old, _two_ones, "cispo", O.CispoConfig(), "grpo", StdConfig(),
                           n_rep=20, group_size=4, repeats=2)
    assert list(stages) == list(STAGES)
    assert all(seconds > 0 for seconds in stages.values())
    with pytest.raises(ValueError, match="n_rep=0 is invalid; allowed: an int >= 1"):
        profile_chunk(new, old, _two_ones, "cispo", O.CispoConfig(), "grpo", StdConfig(), n_rep=0)
    with pytest.raises(ValueError, match="objective='nope'"):
        profile_chunk(new, old, _two_ones, "nope", O.CispoConfig(), "grpo", StdConfig(), n_rep=2)


@pytest.mark.parametrize(("objective", "config", "match"), [
    ("ppo_clip_rollout_is", O.PpoClipRolloutIsConfig(), "cannot supply rollout_logp"),
    ("clip_cov", O.ClipCovConfig(), "batch-coupled"),
])
def test_mc_refuses_objectives_it_cannot_evaluate(objective, config, match):
    # replicas are concatenated into one loss call: a batch covariance would span all of them
    old, new = _pair()
    mc = MCConfig(n_replicas=8, group_size=4, chunk=8, n_batches=4, seed=3)
    with pytest.raises(ValueError, match=match):
        mc_gradient(new, old, _two_ones, objective, config, "rloo", NoConfig(), mc)
