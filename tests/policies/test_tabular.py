"""TabularPolicy: enumeration, sampling, EOS masks, the closed-form score, perturbation.

The sampling test is statistical: each token frequency must lie within Z = 5 standard errors of
its exact probability. With 3·4 = 12 frequencies the false-failure rate is at most
12 · 5.7e-7 ≈ 7e-6 (two-sided normal tail at 5σ). A sampler with a shifted CDF must fail it.
"""

from __future__ import annotations

import pytest
import torch

from policies.tabular import TabularPolicy, perturb

_Z = 5.0
_N = 200_000


def _policy(eos=None, seed=0, t=3, v=4):
    return TabularPolicy.random(t, v, generator=torch.Generator().manual_seed(seed), eos=eos)


def test_enumeration_is_a_distribution_with_and_without_eos():
    for eos in (None, 3):
        tokens, mask, prob = _policy(eos).enumerate()
        assert tokens.shape == (4**3, 3)
        assert float(prob.sum()) == pytest.approx(1.0, abs=1e-12)
    # with EOS, the probability of each distinct valid prefix is the product over its tokens
    p = _policy(3)
    tokens, mask, prob = p.enumerate()
    lp = p.log_probs()
    prefix = (0, 3)  # token 3 is EOS, so the sequence ends at position 1
    rows = (tokens[:, 0] == prefix[0]) & (tokens[:, 1] == prefix[1])
    expected = float((lp[0, prefix[0]] + lp[1, prefix[1]]).exp())
    assert float(prob[rows].sum()) == pytest.approx(expected, abs=1e-12)
    assert (mask[rows] == torch.tensor([1.0, 1.0, 0.0], dtype=mask.dtype)).all()


def _frequencies_within_z(policy, tokens):
    probs = policy.log_probs().exp()
    freq = torch.stack([(tokens == v).double().mean(0) for v in range(policy.vocab)], -1)  # (T, V)
    se = (probs * (1 - probs) / tokens.shape[0]).sqrt()
    return bool(((freq - probs).abs() <= _Z * se).all())


def test_sampler_matches_probabilities():
    p = _policy()
    tokens, mask = p.sample(_N, generator=torch.Generator().manual_seed(1))
    assert tokens.shape == (_N, 3) and (mask == 1).all()
    assert _frequencies_within_z(p, tokens)


def test_sampler_test_has_power():
    # a sampler that draws from shifted logits must be rejected
    p = _policy()
    wrong = TabularPolicy(p.logits + torch.tensor([0.3, 0.0, 0.0, 0.0], dtype=p.logits.dtype))
    tokens, _ = wrong.sample(_N, generator=torch.Generator().manual_seed(1))
    assert not _frequencies_within_z(p, tokens)


def test_sampling_is_reproducible_from_the_generator():
    p = _policy()
    a, _ = p.sample(100, generator=torch.Generator().manual_seed(7))
    b, _ = p.sample(100, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_eos_mask_marks_the_prefix():
    p = _policy(eos=2)
    tokens = torch.tensor([[2, 0, 1], [0, 2, 2], [1, 1, 1]])
    assert p.mask(tokens).tolist() == [[1, 0, 0], [1, 1, 0], [1, 1, 1]]


def test_closed_form_score_equals_per_sample_autograd_loop():
    p = _policy(eos=3)
    tokens, mask = p.sample(6, generator=torch.Generator().manual_seed(2))
    w = torch.randn(6, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * mask
    loop = torch.zeros_like(p.logits)
    for i in range(6):  # the obviously correct reference: one autograd call per sequence
        logits = p.logits.clone().requires_grad_(True)
        lp = TabularPolicy(logits, eos=3).log_prob(tokens[i:i + 1])
        loop += torch.autograd.grad((w[i:i + 1] * lp).sum(), logits)[0]
    torch.testing.assert_close(p.score_sum(w, tokens), loop, atol=1e-12, rtol=0)


def test_perturb_hits_the_requested_kl():
    p = _policy()
    q = perturb(p, kl=0.05, generator=torch.Generator().manual_seed(4))
    lp, lq = p.log_probs(), q.log_probs()
    assert float((lp.exp() * (lp - lq)).sum(-1).mean()) == pytest.approx(0.05, rel=1e-9)


def test_bad_input():
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="horizon=0 is invalid"):
        TabularPolicy.random(0, 4, generator=g)
    with pytest.raises(ValueError, match="non-finite"):
        TabularPolicy(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError, match="V >= 2"):
        TabularPolicy(torch.zeros(3, 1))
    with pytest.raises(ValueError, match="eos=5 is invalid"):
        TabularPolicy(torch.zeros(3, 4), eos=5)
    with pytest.raises(ValueError, match=r"V\^T = 4\^3 = 64 sequences exceeds max_sequences=10"):
        _policy().enumerate(max_sequences=10)
    with pytest.raises(ValueError, match="kl=1000000000.0 is unreachable"):
        perturb(_policy(), kl=1e9, generator=g)
    with pytest.raises(ValueError, match="kl=-1 is invalid"):
        perturb(_policy(), kl=-1, generator=g)
    with pytest.raises(ValueError, match="n=0 is invalid"):
        _policy().sample(0, generator=g)
