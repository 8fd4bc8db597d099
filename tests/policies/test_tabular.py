"""TabularPolicy specifics; the battery shared by every family is ``test_families.py``."""

from __future__ import annotations

import pytest
import torch

from policies.tabular import TabularPolicy

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


def test_eos_mask_marks_the_prefix():
    p = _policy(eos=2)
    tokens = torch.tensor([[2, 0, 1], [0, 2, 2], [1, 1, 1]])
    assert p.mask(tokens).tolist() == [[1, 0, 0], [1, 1, 0], [1, 1, 1]]


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
