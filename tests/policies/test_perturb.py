"""perturb: the requested divergence is hit exactly, for every family and both kinds."""

from __future__ import annotations

import math

import pytest
import torch

from policies.markov import MarkovPolicy
from policies.neural import GRUPolicy
from policies.perturb import perturb
from policies.table import mean_token_divergence
from policies.tabular import TabularPolicy
from sims.engines.exact import exact_objective


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("kind", ["kl", "chi2"])
@pytest.mark.parametrize("family", ["tabular", "markov"])
def test_table_families_hit_the_target(kind, family):
    cls = TabularPolicy if family == "tabular" else MarkovPolicy
    old = cls.random(4, 3, generator=_g(), eos=2)
    new = perturb(old, generator=_g(1), **{kind: 0.05})
    assert mean_token_divergence(old, new, kind) == pytest.approx(0.05, rel=1e-9)


def test_tabular_kl_is_the_mean_of_per_position_kls():
    old = TabularPolicy.random(3, 4, generator=_g())
    new = perturb(old, kl=0.05, generator=_g(4))
    lp, lq = old.log_probs(), new.log_probs()
    assert float((lp.exp() * (lp - lq)).sum(-1).mean()) == pytest.approx(0.05, rel=1e-9)


def test_chi2_gives_the_closed_form_second_moment_of_the_sequence_ratio():
    # no EOS: E_old[R²] = Π_t (1 + χ²_t), and every position has the same χ² only on average,
    # so compare with the product of the per-position values
    old = TabularPolicy.random(4, 3, generator=_g())
    new = perturb(old, chi2=0.1, generator=_g(2))
    tokens, _, prob = old.enumerate()
    ratio = (new.log_prob(tokens) - old.log_prob(tokens)).sum(-1).exp()
    per_position = torch.exp(2 * new.log_probs() - old.log_probs()).sum(-1) - 1
    assert float((prob * ratio**2).sum()) == pytest.approx(float(torch.prod(1 + per_position)), rel=1e-12)
    assert float(per_position.mean()) == pytest.approx(0.1, rel=1e-9)


def test_markov_kl_is_the_sequence_kl_per_position():
    # KL(old ‖ new) over whole token arrays = Σ_t E[KL of row c_t] = T · the mean per-token KL
    old = MarkovPolicy.random(4, 3, generator=_g())
    new = perturb(old, kl=0.03, generator=_g(5))
    tokens, _, prob = old.enumerate()
    seq_kl = float((prob * (old.log_prob(tokens) - new.log_prob(tokens)).sum(-1)).sum())
    assert seq_kl / 4 == pytest.approx(0.03, rel=1e-9)


@pytest.mark.parametrize("kind", ["kl", "chi2"])
def test_gru_hits_the_target_on_its_state_sample(kind):
    old = GRUPolicy.random(3, 3, generator=_g(), hidden=4, embed=3)
    new = perturb(old, generator=_g(1), n_states=2000, **{kind: 0.02})
    # exact per-token divergence by enumeration: close to the target (Monte Carlo over states)
    tokens, _, prob = old.enumerate()
    if kind == "kl":
        exact = float((prob * (old.log_prob(tokens) - new.log_prob(tokens)).sum(-1)).sum()) / 3
        assert exact == pytest.approx(0.02, rel=0.1)
    assert new.flat_params().shape == old.flat_params().shape


def test_perturbed_policy_changes_the_objective():
    old = TabularPolicy.random(3, 3, generator=_g())
    new = perturb(old, kl=0.1, generator=_g(1))
    reward = lambda tokens, mask: (tokens[:, 0] == 1).double()  # noqa: E731
    assert not math.isclose(float(exact_objective(old, reward)[0]), float(exact_objective(new, reward)[0]))


def test_bad_input():
    old = TabularPolicy.random(3, 4, generator=_g())
    with pytest.raises(ValueError, match="kl=1000000000.0 is unreachable"):
        perturb(old, kl=1e9, generator=_g())
    with pytest.raises(ValueError, match="kl=-1 is invalid"):
        perturb(old, kl=-1, generator=_g())
    with pytest.raises(ValueError, match="exactly one of kl= or chi2="):
        perturb(old, kl=0.1, chi2=0.1, generator=_g())
    with pytest.raises(ValueError, match="exactly one of kl= or chi2="):
        perturb(old, generator=_g())
    with pytest.raises(ValueError, match="chi2=nan is invalid"):
        perturb(old, chi2=float("nan"), generator=_g())
    with pytest.raises(ValueError, match="policy of type str is invalid"):
        perturb("policy", kl=0.1, generator=_g())
