"""One battery over every policy family (tabular, Markov, GRU), with and without prompts.

The sampling test is statistical: the empirical frequency of each of the V^T = 27 token arrays
must lie within Z = 5 standard errors of its enumerated probability. The false-failure rate is
at most 27 · 5.7e-7 ≈ 1.5e-5 per case (two-sided normal tail at 5σ, Bonferroni); seeds are fixed.
A sampler drawing from a perturbed policy must fail the same check (the test has power).
"""

from __future__ import annotations

import pytest
import torch

from policies.markov import MarkovPolicy
from policies.neural import PARAM_NAMES, GRUPolicy, log_prob_fn
from policies.perturb import perturb
from policies.tabular import TabularPolicy

_Z = 5.0
_N = 100_000
T, V = 3, 3


def _make(family, eos=2, n_prompts=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    if family == "tabular":
        return TabularPolicy.random(T, V, generator=g, eos=eos, n_prompts=n_prompts)
    if family == "markov":
        return MarkovPolicy.random(T, V, generator=g, eos=eos, n_prompts=n_prompts)
    return GRUPolicy.random(T, V, generator=g, eos=eos, n_prompts=n_prompts, hidden=5, embed=3)


FAMILIES = ["tabular", "markov", "gru"]
PROMPTS = [None, 1]  # prompt id used with a 2-prompt policy, or an unconditioned policy


def _prompts_for(policy, prompt, n):
    return None if prompt is None else torch.full((n,), prompt, dtype=torch.int64)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("prompt", PROMPTS)
def test_enumeration_is_a_distribution_consistent_with_log_prob(family, prompt):
    policy = _make(family, n_prompts=None if prompt is None else 2)
    tokens, mask, prob = policy.enumerate(prompt=prompt)
    assert tokens.shape == (V**T, T)
    assert float(prob.sum()) == pytest.approx(1.0, abs=1e-12)
    lp = policy.log_prob(tokens, _prompts_for(policy, prompt, tokens.shape[0]))
    torch.testing.assert_close(prob, lp.sum(-1).exp(), rtol=1e-12, atol=0)
    # EOS: the mask marks the prefix up to and including the first EOS
    assert bool((mask[tokens[:, 0] == 2][:, 1:] == 0).all())


def _array_frequencies_within_z(policy, sampled, prompt):
    tokens, _, prob = policy.enumerate(prompt=prompt)
    index = (sampled * torch.tensor([V * V, V, 1])).sum(-1)
    freq = torch.bincount(index, minlength=V**T).to(prob.dtype) / sampled.shape[0]
    se = (prob * (1 - prob) / sampled.shape[0]).sqrt()
    order = (tokens * torch.tensor([V * V, V, 1])).sum(-1)
    return bool(((freq[order] - prob).abs() <= _Z * se + 1e-12).all())


@pytest.mark.statistical
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("prompt", PROMPTS)
def test_sampler_matches_enumerated_probabilities(family, prompt):
    policy = _make(family, n_prompts=None if prompt is None else 2)
    gen = torch.Generator().manual_seed(1)
    tokens, mask = policy.sample(_N, generator=gen, prompts=_prompts_for(policy, prompt, _N))
    assert torch.equal(mask, policy.mask(tokens))
    assert _array_frequencies_within_z(policy, tokens, prompt)


@pytest.mark.statistical
@pytest.mark.parametrize("family", FAMILIES)
def test_sampler_test_has_power(family):
    policy = _make(family)
    wrong = perturb(policy, kl=0.02, generator=torch.Generator().manual_seed(3))
    tokens, _ = wrong.sample(_N, generator=torch.Generator().manual_seed(1))
    assert not _array_frequencies_within_z(policy, tokens, None)


@pytest.mark.parametrize("family", FAMILIES)
def test_sampling_is_reproducible_from_the_generator(family):
    policy = _make(family)
    a, _ = policy.sample(50, generator=torch.Generator().manual_seed(7))
    b, _ = policy.sample(50, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def _autograd_scores(policy, tokens, weights, prompts):
    """Reference: one autograd call per sequence through the parameters, summed."""
    total = None
    for i in range(tokens.shape[0]):
        pr = None if prompts is None else prompts[i:i + 1]
        if isinstance(policy, GRUPolicy):
            params = {k: v.clone().requires_grad_(True) for k, v in policy.params.items()}
            lp = log_prob_fn(params, tokens[i:i + 1], pr)
            grads = torch.autograd.grad((weights[i:i + 1] * lp).sum(), [params[k] for k in PARAM_NAMES])
            g = torch.cat([x.reshape(-1) for x in grads])
        else:
            logits = policy.logits.clone().requires_grad_(True)
            lp = policy.with_logits(logits).log_prob(tokens[i:i + 1], pr)
            (g,) = torch.autograd.grad((weights[i:i + 1] * lp).sum(), logits)
        total = g if total is None else total + g
    return total


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("n_prompts", [None, 2])
def test_score_sum_equals_a_per_sample_autograd_loop(family, n_prompts):
    policy = _make(family, n_prompts=n_prompts)
    n = 7
    prompts = None if n_prompts is None else torch.arange(n) % n_prompts
    tokens, mask = policy.sample(n, generator=torch.Generator().manual_seed(2), prompts=prompts)
    w = torch.randn(n, T, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * mask
    expected = _autograd_scores(policy, tokens, w, prompts)
    torch.testing.assert_close(policy.score_sum(w, tokens, prompts), expected, atol=1e-12, rtol=0)
    assert policy.score_sum(w, tokens, prompts).shape == policy.score_shape


@pytest.mark.parametrize("family", FAMILIES)
def test_replica_moments_equal_per_replica_autograd(family):
    policy = _make(family, n_prompts=2)
    n_rep, b = 3, 4
    prompts = torch.arange(b).repeat(n_rep) % 2
    tokens, mask = policy.sample(n_rep * b, generator=torch.Generator().manual_seed(4), prompts=prompts)
    w = torch.randn(n_rep * b, T, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * mask
    per = torch.stack([_autograd_scores(policy, tokens[r * b:(r + 1) * b], w[r * b:(r + 1) * b],
                                        prompts[r * b:(r + 1) * b]).reshape(-1) for r in range(n_rep)])
    s1, s2 = policy.replica_score_moments(w, tokens, prompts, n_rep)
    torch.testing.assert_close(s1, per.sum(0), atol=1e-12, rtol=0)
    torch.testing.assert_close(s2, (per * per).sum(0), atol=1e-12, rtol=0)


def test_markov_row_marginals_match_enumeration():
    policy = _make("markov")
    tokens, _, prob = policy.enumerate()
    rows = policy.contexts(tokens)  # (N, T)
    expected = torch.stack([torch.stack([(prob * (rows[:, t] == r)).sum() for r in range(V + 1)])
                            for t in range(T)])
    torch.testing.assert_close(policy.row_marginals(), expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_bad_input(family):
    g = torch.Generator().manual_seed(0)
    policy = _make(family)
    with pytest.raises(ValueError, match=r"V\^T = 3\^3 = 27 sequences exceeds max_sequences=10"):
        policy.enumerate(max_sequences=10)
    with pytest.raises(ValueError, match="n=0 is invalid"):
        policy.sample(0, generator=g)
    with pytest.raises(ValueError, match="prompts were given"):
        policy.sample(2, generator=g, prompts=torch.zeros(2, dtype=torch.int64))
    prompted = _make(family, n_prompts=2)
    with pytest.raises(ValueError, match="prompts"):
        prompted.sample(2, generator=g)
    with pytest.raises(ValueError, match=r"outside \[0, 2\)"):
        prompted.log_prob(torch.zeros(2, T, dtype=torch.int64), torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="prompt=None is invalid"):
        prompted.enumerate()
    with pytest.raises(ValueError, match="horizon=0 is invalid"):
        type(policy).random(0, V, generator=g)


def test_family_specific_bad_input():
    with pytest.raises(ValueError, match=r"allowed: \[V \+ 1, V\]"):
        MarkovPolicy(torch.zeros(3, 3), horizon=2)
    with pytest.raises(ValueError, match="non-finite"):
        MarkovPolicy(torch.full((4, 3), float("inf")), horizon=2)
    with pytest.raises(ValueError, match="eos=3 is invalid"):
        MarkovPolicy(torch.zeros(4, 3), horizon=2, eos=3)
    params = _make("gru").params
    with pytest.raises(ValueError, match=r"params\['w_out'\] has shape"):
        GRUPolicy({**params, "w_out": torch.zeros(4, 3, dtype=torch.float64)}, horizon=2)
    with pytest.raises(ValueError, match="params has keys"):
        GRUPolicy({k: v for k, v in params.items() if k != "h0"}, horizon=2)
    with pytest.raises(ValueError, match=r"params\['b_out'\] must be a finite"):
        GRUPolicy({**params, "b_out": torch.full((3,), float("nan"), dtype=torch.float64)}, horizon=2)


TABLE_FAMILIES = ["tabular", "markov", "class_markov"]


def _table_pair(family, dtype=torch.float64, n_prompts=None):
    from policies.class_markov import ClassMarkovPolicy
    g = torch.Generator().manual_seed(5)
    if family == "class_markov":
        old = ClassMarkovPolicy(torch.randn(3, 6, generator=g, dtype=torch.float64), horizon=4, eos=2)
    elif family == "tabular":
        old = TabularPolicy.random(4, 6, generator=g, eos=2, n_prompts=n_prompts, dtype=dtype)
    else:
        old = MarkovPolicy.random(4, 6, generator=g, eos=2, n_prompts=n_prompts, dtype=dtype)
    return old, perturb(old, kl=0.05, generator=g)


@pytest.mark.parametrize("family", TABLE_FAMILIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_score_pair_is_both_log_probs_and_their_ratio(family, dtype):
    from policies.table import score_pair
    old, new = _table_pair(family, dtype if family != "class_markov" else torch.float64)
    tokens, _ = old.sample(500, generator=torch.Generator().manual_seed(1))
    lp, lo, rho = score_pair(new, old, tokens)
    assert torch.equal(lp, new.log_prob(tokens)) and torch.equal(lo, old.log_prob(tokens))
    assert rho.dtype == torch.float64
    torch.testing.assert_close(rho, torch.exp(lp.double() - lo.double()), rtol=1e-15, atol=0)


@pytest.mark.parametrize("family, n_prompts", [("tabular", None), ("tabular", 2), ("markov", None),
                                               ("markov", 2), ("class_markov", None)])  # its own sampler
def test_sample_scored_draws_the_same_tokens_as_sample(family, n_prompts):
    from policies.table import score_pair
    old, new = _table_pair(family, n_prompts=n_prompts)
    prompts = None if n_prompts is None else torch.arange(300) % n_prompts
    a, b = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    tokens, mask, lp, lo, rho = old.sample_scored(new, 300, generator=a, prompts=prompts)
    ref_tokens, ref_mask = old.sample(300, generator=b, prompts=prompts)
    assert torch.equal(tokens, ref_tokens) and torch.equal(mask, ref_mask)
    assert torch.equal(a.get_state(), b.get_state())  # the generator advanced alike
    for x, y in zip((lp, lo, rho), score_pair(new, old, tokens, prompts)):
        assert torch.equal(x, y)


def test_score_pair_refuses_policies_of_different_families_or_shapes():
    from policies.table import score_pair
    old, _ = _table_pair("tabular")
    markov, _ = _table_pair("markov")
    tokens, _ = old.sample(3, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="two table policies of one family and shape are needed"):
        score_pair(markov, old, tokens)
    with pytest.raises(ValueError, match="two table policies of one family and shape are needed"):
        old.sample_scored(TabularPolicy(torch.zeros(5, 6)), 3, generator=torch.Generator())


def test_a_subclass_with_its_own_sampler_is_not_sampled_by_the_table_kernel():
    from policies.table import score_pair

    class Shifted(TabularPolicy):  # draws every token one step later in the vocabulary
        def sample(self, n, *, generator, prompts=None):
            tokens, mask = super().sample(n, generator=generator, prompts=prompts)
            return (tokens + 1) % self.vocab, mask

        def with_logits(self, logits):
            return Shifted(logits)

    g = torch.Generator().manual_seed(2)
    old = Shifted(torch.randn(4, 6, generator=g, dtype=torch.float64))
    new = Shifted(old.logits + 0.1 * torch.randn(4, 6, generator=g, dtype=torch.float64))
    assert not old._table_sampled() and TabularPolicy(old.logits)._table_sampled()
    tokens, _, lp, lo, rho = old.sample_scored(new, 50, generator=torch.Generator().manual_seed(4))
    ref, _ = old.sample(50, generator=torch.Generator().manual_seed(4))
    assert torch.equal(tokens, ref)
    for x, y in zip((lp, lo, rho), score_pair(new, old, tokens)):
        assert torch.equal(x, y)
