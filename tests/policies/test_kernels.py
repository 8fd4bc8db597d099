"""policies.kernels: each numba kernel against its torch reference, and the generator against
SplitMix64 itself. (That the sampled tokens follow the policy is tested through the policies,
in ``test_families.py``, with a chi-squared test and its power case.)"""

from __future__ import annotations

import numba
import pytest
import torch

from policies import kernels as K
from policies.markov import MarkovPolicy
from policies.tabular import TabularPolicy

MASK64 = (1 << 64) - 1


def _splitmix64(seed: int, n: int) -> list[int]:
    """SplitMix64 as published (Steele, Lea, Flood 2014): state += γ, then mix the state."""
    out, state = [], seed
    for _ in range(n):
        state = (state + K.GAMMA) & MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        out.append(z ^ (z >> 31))
    return out


def test_splitmix_reference_reproduces_the_published_first_output():
    assert _splitmix64(0, 1)[0] == 0xE220A8397B1DCDAF  # seed 0, as in Vigna's splitmix64.c


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", [0, 12345, 2**63 - 2])
def test_counter_uniforms_are_splitmix64_top_bits(dtype, seed):
    bits = K.BITS[dtype]
    expected = [((z >> (64 - bits)) + 0.5) * 2.0 ** -bits for z in _splitmix64(seed, 50)]
    u = K.counter_uniforms(seed, (5, 10), dtype, "cpu")
    assert u.dtype == dtype
    assert u.reshape(-1).tolist() == expected
    assert bool(((u > 0) & (u < 1)).all())


def _policy(family, vocab, dtype, n_prompts, seed=0):
    g = torch.Generator().manual_seed(seed)
    if family == "tabular":
        return TabularPolicy.random(6, vocab, generator=g, dtype=dtype, n_prompts=n_prompts, scale=2.0)
    return MarkovPolicy.random(6, vocab, generator=g, dtype=dtype, n_prompts=n_prompts, scale=2.0)


@pytest.mark.parametrize("family", ["tabular", "markov"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n_prompts", [None, 3])
@pytest.mark.parametrize("vocab", [2, 32, K.LINEAR_SEARCH_MAX_V + 1, 300])  # count and binary search
def test_sampling_kernel_gives_the_torch_reference_tokens(family, dtype, n_prompts, vocab):
    policy = _policy(family, vocab, dtype, n_prompts)
    n = 2000
    prompts = None if n_prompts is None else torch.arange(n) % n_prompts
    bos = None if family == "tabular" else vocab
    fast = K.sample_table_cpu(policy.cdf_table(), prompts, n, policy.horizon, 77, markov_bos=bos)
    ref = K.sample_table_torch(policy.cdf_table(), prompts, n, policy.horizon, 77, markov_bos=bos)
    assert fast.dtype == torch.int64 and fast.shape == (n, policy.horizon)
    assert torch.equal(fast, ref)
    assert 0 <= int(fast.min()) and int(fast.max()) < vocab


def test_a_zero_probability_token_is_never_sampled():
    logits = torch.zeros(4, 5, dtype=torch.float64)
    logits[:, 0] = -1e4  # p = 0 in float64: the first token's CDF step is empty
    logits[:, 4] = -1e4  # and the last one's
    tokens, _ = TabularPolicy(logits).sample(20_000, generator=torch.Generator().manual_seed(0))
    assert int(((tokens == 0) | (tokens == 4)).sum()) == 0


def test_sampled_tokens_do_not_depend_on_the_thread_count():
    policy = _policy("markov", 8, torch.float32, None)
    cdf = policy.cdf_table()
    before = numba.get_num_threads()
    try:
        many = K.sample_table_cpu(cdf, None, 999, policy.horizon, 5, markov_bos=8)
        numba.set_num_threads(1)
        one = K.sample_table_cpu(cdf, None, 999, policy.horizon, 5, markov_bos=8)
    finally:
        numba.set_num_threads(before)
    assert torch.equal(many, one)


def test_seeds_from_one_generator_differ_and_replay():
    a, b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    first = [K.draw_seed(a) for _ in range(3)]
    assert first == [K.draw_seed(b) for _ in range(3)]
    assert len(set(first)) == 3


def _sampled_contexts(family, n_prompts):
    """A float32 V = 7 policy, 40 sampled token arrays and their contexts (expanded, stride 0, for
    the unprompted tabular family)."""
    policy = _policy(family, 7, torch.float32, n_prompts)
    prompts = None if n_prompts is None else torch.arange(40) % n_prompts
    tokens, _ = policy.sample(40, generator=torch.Generator().manual_seed(1), prompts=prompts)
    return policy, tokens, policy.contexts(tokens, prompts)


@pytest.mark.parametrize("family", ["tabular", "markov"])
@pytest.mark.parametrize("n_prompts", [None, 2])
def test_gather_kernel_equals_take(family, n_prompts):
    policy, tokens, ctx = _sampled_contexts(family, n_prompts)
    table = policy.log_probs().reshape(-1, 7)
    assert torch.equal(K.gather_rows(table, ctx, tokens), K.gather_rows_torch(table, ctx, tokens))


@pytest.mark.parametrize("family", ["tabular", "markov"])
@pytest.mark.parametrize("n_prompts", [None, 2])
def test_gather_pair_kernel_equals_three_takes(family, n_prompts):
    policy, tokens, ctx = _sampled_contexts(family, n_prompts)
    tables = (policy.log_probs().reshape(-1, 7), torch.randn(ctx.max() + 1, 7),
              torch.rand(ctx.max() + 1, 7, dtype=torch.float64))
    fast = K.gather_pair(*tables, ctx, tokens)
    for a, b in zip(fast, K.gather_pair_torch(*tables, ctx, tokens)):
        assert a.dtype == b.dtype and torch.equal(a, b)
    for a, b in zip(fast, K.gather_pair(*tables, ctx.contiguous(), tokens)):  # dense ctx: the same
        assert torch.equal(a, b)


@pytest.mark.parametrize("family", ["tabular", "markov"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n_prompts", [None, 3])
def test_scored_sampling_gives_the_same_tokens_and_the_gathered_tables(family, dtype, n_prompts):
    policy = _policy(family, 9, dtype, n_prompts)
    n, seed = 300, 77
    prompts = None if n_prompts is None else torch.arange(n) % n_prompts
    bos = None if family == "tabular" else 9
    cdf = policy.cdf_table()
    rows = policy.logits.numel() // 9
    tables = (policy.log_probs().reshape(-1, 9), torch.randn(rows, 9, dtype=dtype),
              torch.rand(rows, 9, dtype=torch.float64))
    tokens, *gathered = K.sample_table(cdf, prompts, n, policy.horizon, seed, markov_bos=bos, score=tables)
    assert torch.equal(tokens, K.sample_table(cdf, prompts, n, policy.horizon, seed, markov_bos=bos))
    ctx = policy.contexts(tokens, prompts)
    for a, b in zip(gathered, K.gather_pair_torch(*tables, ctx, tokens)):
        assert a.dtype == b.dtype and torch.equal(a, b)
    stacked = (*tables[:2], torch.stack([tables[2], -tables[2]]))  # k = 2 cell values
    again, *gathered = K.sample_table(cdf, prompts, n, policy.horizon, seed, markov_bos=bos, score=stacked)
    assert torch.equal(again, tokens) and gathered[2].shape == (2, n, policy.horizon)
    for a, b in zip(gathered, K.gather_pair_torch(*stacked, ctx, tokens)):
        assert torch.equal(a, b)
    for a, b in zip(K.gather_pair(*stacked, ctx, tokens), K.gather_pair_torch(*stacked, ctx, tokens)):
        assert torch.equal(a, b)


def test_scored_sampling_refuses_tables_of_another_shape():
    policy = _policy("tabular", 5, torch.float64, None)
    good = torch.zeros(6, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"score tables have shapes \[\(6, 5\), \(1, 5\), \(6, 5\)\]"):
        K.sample_table(policy.cdf_table(), None, 4, 6, 0, score=(good, good[:1], good))  # the old table too
    with pytest.raises(ValueError, match=r"k = 1 or 2"):
        K.sample_table(policy.cdf_table(), None, 4, 6, 0, score=(good, good, torch.zeros(3, 6, 5, dtype=torch.float64)))
    bad = (torch.zeros(3, 5), torch.zeros(3, 5), torch.zeros(3, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"score tables have shapes \[\(3, 5\), \(3, 5\), \(3, 5\)\]; allowed: \[P·R, V\] = \[6, 5\]"):
        K.sample_table(policy.cdf_table(), None, 4, 6, 0, score=bad)


def test_scored_sampling_output_buffers_are_validated():
    policy = _policy("tabular", 5, torch.float64, None)
    tables = (policy.log_probs().reshape(-1, 5),) * 2 + (torch.zeros(6, 5, dtype=torch.float64),)
    bad = (torch.empty(4, 6, dtype=torch.float64), torch.empty(4, 6, dtype=torch.float32), torch.empty(4, 6, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"score_out has a torch.float32 tensor of shape \(4, 6\)"):
        K.sample_table(policy.cdf_table(), None, 4, 6, 0, score=tables, score_out=bad)
    good = tuple(torch.empty(4, 6, dtype=torch.float64) for _ in range(3))
    tokens, *gathered = K.sample_table(policy.cdf_table(), None, 4, 6, 0, score=tables, score_out=good)
    assert all(x is y for x, y in zip(gathered, good))


def test_gather_stays_differentiable_in_the_table():
    table = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    tokens = torch.tensor([[0, 3, 1]])
    ctx = torch.arange(3).expand(1, 3)
    K.gather_rows(table, ctx, tokens).sum().backward()
    expected = torch.zeros(3, 4, dtype=torch.float64)
    expected[[0, 1, 2], [0, 3, 1]] = 1
    assert torch.equal(table.grad, expected)


@pytest.mark.parametrize("tokens, message", [
    (torch.tensor([[0, 4]]), r"values in \[0, 4\]; allowed: token ids in \[0, 4\)"),
    (torch.tensor([[-1, 0]]), r"values in \[-1, 0\]"),
    (torch.tensor([[0.0, 1.0]]), "must be an integer tensor"),
])
def test_tokens_outside_the_vocabulary_are_refused(tokens, message):
    table = torch.zeros(2, 4)
    ctx = torch.arange(2).expand(1, 2)
    with pytest.raises(ValueError, match=message):
        K.gather_rows(table, ctx, tokens)
    with pytest.raises(ValueError, match=message):
        K.replica_moments(torch.ones(1, 2), ctx, tokens, 1, torch.full((2, 4), 0.25))


@pytest.mark.parametrize("family", ["tabular", "markov"])
@pytest.mark.parametrize("weight_dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n_rep", [1, 8, 60, 120])  # 120: one sequence per replica, fewer tokens than rows
@pytest.mark.parametrize("n_prompts", [None, 2])  # None: the tabular contexts are one expanded row
def test_moments_kernel_equals_the_torch_reference(family, weight_dtype, n_rep, n_prompts):
    policy = _policy(family, 5, torch.float64, n_prompts)
    n = 120
    prompts = None if n_prompts is None else torch.arange(n) % 2
    tokens, _ = policy.sample(n, generator=torch.Generator().manual_seed(2), prompts=prompts)
    weights = torch.randn(n, policy.horizon, generator=torch.Generator().manual_seed(4), dtype=weight_dtype)
    weights[:, -2:] = 0.0  # padding-like zeros
    ctx = policy.contexts(tokens, prompts)
    probs = torch.softmax(policy.logits, -1).reshape(-1, 5)
    fast = K.replica_moments_cpu(weights, ctx, tokens, n_rep, probs)
    ref = K.replica_moments_torch(weights, ctx, tokens, n_rep, probs)
    for a, b in zip(fast, ref):
        assert a.dtype == torch.float64
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n_rep", [0, 7, 2.0, True])
def test_replica_count_must_divide_the_rows(n_rep):
    ctx = torch.arange(2).expand(6, 2)
    with pytest.raises(ValueError, match="n_rep=.* allowed: an int >= 1 dividing N=6"):
        K.replica_moments(torch.ones(6, 2), ctx, torch.zeros(6, 2, dtype=torch.int64), n_rep,
                          torch.full((2, 4), 0.25))
