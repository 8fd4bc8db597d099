"""ClassMarkovPolicy against references: the ordinary MarkovPolicy (S = V), a per-sequence Python
loop, the torch sampler, and score_sum for the per-sequence score norms."""

from __future__ import annotations

import math

import pytest
import torch

from policies.class_markov import ClassMarkovPolicy, guide_table, score_sq_norms
from policies.kernels import search_cdf
from policies.markov import MarkovPolicy


def _policy(v=7, s=3, t=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ClassMarkovPolicy(torch.randn(s + 1, v, generator=g, dtype=torch.float64) * 2, horizon=t)


def test_log_prob_equals_a_per_sequence_loop():
    p = _policy()
    tokens = p.sample_block(11, 0, 25)
    lp = p.log_probs()
    ref = torch.tensor([[float(lp[p.n_states if t == 0 else int(seq[t - 1]) % p.n_states, int(seq[t])])
                         for t in range(p.horizon)] for seq in tokens], dtype=torch.float64)
    assert torch.equal(p.log_prob(tokens), ref)


def test_with_one_class_per_token_it_is_the_markov_policy():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 5, generator=g, dtype=torch.float64)
    cm, mm = ClassMarkovPolicy(logits, horizon=5), MarkovPolicy(logits, horizon=5)
    tokens = cm.sample_block(3, 0, 40)
    assert torch.equal(cm.log_prob(tokens), mm.log_prob(tokens))
    assert torch.allclose(cm.row_marginals(), mm.row_marginals(), rtol=0, atol=1e-15)
    _, _, prob = cm.enumerate()
    assert float(prob.sum()) == pytest.approx(1.0, abs=1e-12)


def test_kernel_sampler_equals_the_torch_inverse_cdf_and_blocks_equal_one_draw():
    for v in (5, 300):  # linear and indexed-search regimes of the CDF rows
        p = _policy(v=v, s=2, t=9, seed=v)
        whole = p.sample_block(123, 0, 50)
        assert torch.equal(whole, p.sample_block_torch(123, 0, 50))
        assert torch.equal(torch.cat([p.sample_block(123, 0, 17), p.sample_block(123, 17, 33)]), whole)


def test_guide_table_search_is_the_inverse_cdf():
    p = _policy(v=1000, s=1, t=1, seed=5)
    cdf = p.cdf_table()[0]
    u = torch.rand(2, 5000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    guide = torch.from_numpy(guide_table(cdf.numpy()))
    v = cdf.shape[-1]
    start = guide.gather(1, (u * v).long().clamp_max(v - 1))
    # the guide never overshoots: its start is <= the inverse-CDF token
    assert bool((start <= search_cdf(cdf, u)).all())


def test_sequence_sums_equal_the_log_probs_of_the_sampled_tokens():
    p = _policy(v=40, s=3, t=30)
    q = p.with_logits(p.logits + 0.3)
    sums = p.sequence_sums(9, 4, 20, q.log_probs(), p.log_probs())
    tokens = p.sample_block(9, 4, 20)
    assert torch.allclose(sums[:, 0], q.log_prob(tokens).sum(-1), rtol=0, atol=1e-12)
    assert torch.allclose(sums[:, 1], p.log_prob(tokens).sum(-1), rtol=0, atol=1e-12)


def test_score_sq_norms_equal_score_sum_per_sequence():
    p = _policy(v=5, s=2, t=12)  # few tokens per row: repeated (row, token) cells in every sequence
    tokens = p.sample_block(2, 0, 30)
    w = torch.randn(tokens.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ref = torch.stack([p.score_sum(w[i:i + 1], tokens[i:i + 1]).pow(2).sum() for i in range(30)])
    assert torch.allclose(score_sq_norms(p, w, tokens), ref, rtol=1e-12, atol=1e-12)


def test_stationary_classes_are_stationary():
    p = _policy(v=12, s=4)
    pi = p.stationary_classes()
    assert float(pi.sum()) == pytest.approx(1.0, abs=1e-12)
    assert torch.allclose(pi @ p.class_transitions()[:4], pi, atol=1e-13)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="S \\+ 1"):
        ClassMarkovPolicy(torch.zeros(1, 4, dtype=torch.float64), horizon=3)
    with pytest.raises(ValueError, match="horizon"):
        ClassMarkovPolicy(torch.zeros(2, 4, dtype=torch.float64), horizon=0)
    p = _policy()
    with pytest.raises(ValueError, match="log_probs_a"):
        p.sequence_sums(0, 0, 2, torch.zeros(2, 2), p.log_probs())
    assert math.isfinite(float(p.log_prob(p.sample_block(0, 0, 1)).sum()))


def test_score_moments_sum_equals_score_sum():
    from policies.class_markov import score_moments

    p = _policy(v=5, s=2, t=12)
    tokens = p.sample_block(4, 0, 30)
    w = torch.randn(tokens.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    total, _ = score_moments(p, w, tokens)
    assert torch.allclose(total, p.score_sum(w, tokens), rtol=0, atol=1e-12)


def test_score_moments_per_block_sums():
    from policies.class_markov import score_moments

    p = _policy(v=5, s=2, t=6)
    tokens = p.sample_block(6, 0, 12)
    w = torch.randn(tokens.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    per, _ = score_moments(p, w, tokens, blocks=3)
    for b in range(3):
        assert torch.allclose(per[b], p.score_sum(w[4 * b:4 * b + 4], tokens[4 * b:4 * b + 4]), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="blocks"):
        score_moments(p, w, tokens, blocks=5)
