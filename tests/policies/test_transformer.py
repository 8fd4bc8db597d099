"""TransformerPolicy: log_prob against a per-sequence prefix-by-prefix reference, score_sum against
autograd, reproducible and thread-count independent sampling, vmap over seeds, the EOS mask."""

from __future__ import annotations

import pytest
import torch
from scipy import stats

from policies.transformer import (
    LMShape,
    TransformerPolicy,
    forward_cached,
    forward_logits,
    init_params,
    inverse_cdf_tokens,
    log_prob_fn,
    param_names,
    response_log_probs,
    sample_tokens,
    sample_tokens_uncached,
)

SHAPE = LMShape(vocab=5, prompt_len=3, horizon=3, d_model=8, n_heads=2, n_layers=2, d_ff=16)


def policy(eos=4, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    prompts = torch.randint(0, 4, (3, 3), generator=g)
    return TransformerPolicy.random(SHAPE, prompts, generator=g, eos=eos, scale=scale)


def reference_log_prob(pol: TransformerPolicy, tokens, prompts):
    """Token t of sequence i from a forward on its own prefix [prompt, SEP, o_<t] alone."""
    out = torch.empty(tokens.shape, dtype=pol.dtype)
    for i in range(tokens.shape[0]):
        for t in range(tokens.shape[1]):
            inp = torch.cat([pol.prompt_tokens[prompts[i]], torch.tensor([pol.vocab]), tokens[i, :t]])[None]
            out[i, t] = torch.log_softmax(forward_logits(pol.params, inp, SHAPE.n_heads)[0, -1], -1)[tokens[i, t]]
    return out


def test_log_prob_equals_the_per_sequence_prefix_reference():
    pol = policy()
    g = torch.Generator().manual_seed(1)
    prompts = torch.randint(0, 3, (6,), generator=g)
    tokens = torch.randint(0, 5, (6, 3), generator=g)
    torch.testing.assert_close(pol.log_prob(tokens, prompts), reference_log_prob(pol, tokens, prompts),
                               rtol=0, atol=1e-12)


def test_enumerated_probabilities_sum_to_one_per_prompt():
    pol = policy()
    for g in range(3):
        _, _, prob = pol.enumerate(prompt=g)
        assert abs(float(prob.sum()) - 1) < 1e-12


def test_score_sum_equals_autograd():
    pol = policy()
    g = torch.Generator().manual_seed(2)
    prompts = torch.randint(0, 3, (5,), generator=g)
    tokens, mask = pol.sample(5, generator=g, prompts=prompts)
    w = torch.randn(5, 3, generator=g, dtype=torch.float64) * mask
    params = {k: v.clone().requires_grad_(True) for k, v in pol.params.items()}
    lp = log_prob_fn(params, pol.prompt_tokens[prompts], tokens, SHAPE.n_heads)
    grads = torch.autograd.grad((w * lp).sum(), [params[k] for k in param_names(SHAPE)])
    expected = torch.cat([x.reshape(-1) for x in grads])
    torch.testing.assert_close(pol.score_sum(w, tokens, prompts), expected, rtol=0, atol=1e-12)
    assert pol.score_shape == expected.shape == pol.flat_params().shape


def test_sampling_is_reproducible_and_independent_of_the_thread_count():
    pol = policy()
    prompts = torch.arange(3).repeat(40)
    a = pol.sample(120, generator=torch.Generator().manual_seed(5), prompts=prompts)[0]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        b = pol.sample(120, generator=torch.Generator().manual_seed(5), prompts=prompts)[0]
        torch.set_num_threads(2)
        c = pol.sample(120, generator=torch.Generator().manual_seed(5), prompts=prompts)[0]
    finally:
        torch.set_num_threads(before)
    assert torch.equal(a, b) and torch.equal(b, c)
    assert not torch.equal(a, pol.sample(120, generator=torch.Generator().manual_seed(6), prompts=prompts)[0])


def test_samples_follow_the_enumerated_distribution():
    # chi-square goodness of fit of 4000 samples of prompt 0 against its exact V^T probabilities;
    # false-failure rate 1e-4 (the test's alpha); a policy with other logits must be rejected
    pol = policy(eos=None, scale=2.0)
    _, _, prob = pol.enumerate(prompt=0)
    draws = pol.sample(4000, generator=torch.Generator().manual_seed(7), prompts=torch.zeros(4000, dtype=torch.int64))[0]
    index = (draws * torch.tensor([25, 5, 1])).sum(-1)
    counts = torch.bincount(index, minlength=125).double()
    keep = prob * 4000 >= 5
    def p_value(p):
        exp = torch.cat([p[keep] * 4000, (p[~keep].sum() * 4000).reshape(1)])
        obs = torch.cat([counts[keep], counts[~keep].sum().reshape(1)])
        return stats.chisquare(obs.numpy(), exp.numpy() * obs.sum().item() / exp.sum().item()).pvalue
    assert p_value(prob) > 1e-4
    other = policy(eos=None, scale=2.0, seed=3).enumerate(prompt=0)[2]
    assert p_value(other) < 1e-4


def test_vmap_over_a_seed_axis_equals_the_loop():
    pol = policy()
    g = torch.Generator().manual_seed(8)
    stacked = {k: v.unsqueeze(0) + 0.1 * torch.randn(4, *v.shape, generator=g, dtype=v.dtype) for k, v in pol.params.items()}
    rows = pol.prompt_tokens[torch.tensor([0, 1, 2, 0])]
    u = torch.rand(4, 4, 3, generator=g, dtype=torch.float64)
    toks = torch.func.vmap(sample_tokens, in_dims=(0, None, 0, None))(stacked, rows, u, SHAPE.n_heads)
    lps = torch.func.vmap(log_prob_fn, in_dims=(0, None, 0, None))(stacked, rows, toks, SHAPE.n_heads)
    for s in range(4):
        one = {k: v[s] for k, v in stacked.items()}
        assert torch.equal(toks[s], sample_tokens(one, rows, u[s], SHAPE.n_heads))
        torch.testing.assert_close(lps[s], log_prob_fn(one, rows, toks[s], SHAPE.n_heads), rtol=0, atol=1e-12)


@pytest.mark.parametrize("repeats", [1, 2])
def test_stacked_parameters_give_vmaps_values_and_gradients(repeats):
    pol = policy()
    g = torch.Generator().manual_seed(11)
    stacked = {k: (v.unsqueeze(0) + 0.1 * torch.randn(3, *v.shape, generator=g, dtype=v.dtype)).requires_grad_(True)
               for k, v in pol.params.items()}
    rows = pol.prompt_tokens  # 3 prompt rows, `repeats` sequences each
    u = torch.rand(3, 3 * repeats, 3, generator=g, dtype=torch.float64)
    toks = sample_tokens(stacked, rows, u, SHAPE.n_heads, repeats)
    vmapped = torch.func.vmap(sample_tokens, in_dims=(0, None, 0, None, None))(stacked, rows, u, SHAPE.n_heads, repeats)
    assert torch.equal(toks, vmapped)
    direct = response_log_probs(stacked, rows, toks, SHAPE.n_heads, repeats)
    ref = torch.func.vmap(response_log_probs, in_dims=(0, None, 0, None, None))(stacked, rows, toks, SHAPE.n_heads,
                                                                               repeats)
    torch.testing.assert_close(direct, ref, rtol=0, atol=1e-12)
    w = torch.randn(direct.shape, generator=g, dtype=torch.float64)
    names = list(stacked)
    for a, b in zip(torch.autograd.grad((w * direct).sum(), [stacked[k] for k in names]),
                    torch.autograd.grad((w * ref).sum(), [stacked[k] for k in names])):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    one = {k: v[1] for k, v in stacked.items()}  # and seed 1 alone
    torch.testing.assert_close(direct[1], response_log_probs(one, rows, toks[1], SHAPE.n_heads, repeats),
                               rtol=0, atol=1e-12)


def test_cached_forward_and_sampling_equal_the_uncached_reference():
    pol = policy()
    g = torch.Generator().manual_seed(9)
    rows = pol.prompt_tokens[torch.randint(0, 3, (50,), generator=g)]
    u = torch.rand(50, 3, generator=g, dtype=torch.float64)
    assert torch.equal(sample_tokens(pol.params, rows, u, 2), sample_tokens_uncached(pol.params, rows, u, 2))
    inputs = torch.randint(0, 6, (4, 6), generator=g)
    head, caches = forward_cached(pol.params, inputs[:, :4], 0, None, 2)
    tail, _ = forward_cached(pol.params, inputs[:, 4:], 4, caches, 2)
    torch.testing.assert_close(torch.cat([head, tail], 1), forward_logits(pol.params, inputs, 2), rtol=0, atol=1e-12)


def test_prompts_shared_by_a_group_give_the_per_sequence_values():
    pol = policy()
    g = torch.Generator().manual_seed(10)
    tokens = torch.randint(0, 5, (12, 3), generator=g)
    rows = pol.prompt_tokens  # 3 prompts x 4 sequences each
    params = {k: v.detach().requires_grad_(True) for k, v in pol.params.items()}
    grouped = response_log_probs(params, rows, tokens, 2, repeats=4)
    each = response_log_probs(params, rows.repeat_interleave(4, 0), tokens, 2)
    torch.testing.assert_close(grouped, each, rtol=0, atol=1e-12)
    w = torch.randn(12, 3, 5, generator=g, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad((w * grouped).sum(), list(params.values())),
                    torch.autograd.grad((w * each).sum(), list(params.values()))):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    u = torch.rand(12, 3, generator=g, dtype=torch.float64)
    assert torch.equal(sample_tokens(pol.params, rows, u, 2, repeats=4),
                       sample_tokens(pol.params, rows.repeat_interleave(4, 0), u, 2))
    one = response_log_probs(pol.params, rows, tokens[:3, :1], 2, repeats=1)  # T = 1 needs no cached pass
    torch.testing.assert_close(response_log_probs(pol.params, rows[:1], tokens[:3, :1], 2, repeats=3)[0], one[0],
                               rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="repeats"):
        response_log_probs(pol.params, rows, tokens, 2, repeats=3)
    with pytest.raises(ValueError, match="repeats"):
        sample_tokens(pol.params, rows, u, 2, repeats=0)


def test_inverse_cdf_and_eos_mask_on_literal_examples():
    probs = torch.tensor([[0.2, 0.3, 0.5]], dtype=torch.float64)
    assert inverse_cdf_tokens(probs.expand(4, 3), torch.tensor([0.1, 0.25, 0.45, 0.99], dtype=torch.float64)).tolist() == [0, 1, 1, 2]
    pol = policy(eos=4)
    assert pol.mask(torch.tensor([[1, 4, 2], [4, 0, 0], [1, 2, 3]])).tolist() == [[1, 1, 0], [1, 0, 0], [1, 1, 1]]


def test_bad_inputs_are_refused_with_the_field_named():
    pol = policy()
    with pytest.raises(ValueError, match="d_model"):
        LMShape(vocab=5, prompt_len=1, horizon=1, d_model=7, n_heads=2)
    with pytest.raises(ValueError, match="prompt_tokens"):
        TransformerPolicy(pol.params, shape=SHAPE, prompt_tokens=torch.zeros(2, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="params"):
        TransformerPolicy({**pol.params, "w_out": torch.zeros(3, 3)}, shape=SHAPE, prompt_tokens=pol.prompt_tokens)
    with pytest.raises(ValueError, match="prompts"):
        pol.log_prob(torch.zeros(2, 3, dtype=torch.int64), torch.tensor([0, 7]))
    assert set(init_params(SHAPE, generator=torch.Generator())) == set(param_names(SHAPE))
