"""Every experiment's ``run()`` on its tiny config: a tidy table, a summary, a figure, and the
numbers that must hold whatever the sweep (exact identities, published values)."""

from __future__ import annotations

import math

import pytest

from sims.experiments import EXPERIMENTS, config_for
from sims.experiments import bias_variance, difficulty, gspo_weight, length_bias, survival

pytestmark = pytest.mark.slow


@pytest.fixture
def tiny_results(tiny_experiments):
    return tiny_experiments


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_run_returns_a_tidy_table_summary_and_plot(tiny_results, name, tmp_path):
    res = tiny_results[name]
    assert res.name == name and len(res.table) > 0 and res.summary
    assert not res.table.columns.duplicated().any()
    EXPERIMENTS[name].plot(res, tmp_path / "fig.png")
    assert (tmp_path / "fig.png").stat().st_size > 1000


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_same_seed_same_table(name):
    if name == "dynamics":
        cfg = EXPERIMENTS[name].Config(steps=1, n_seeds=2, algorithms=("cispo",))
    else:
        cfg = config_for(name, "tiny")
    a = EXPERIMENTS[name].run(cfg, seed=3).table
    b = EXPERIMENTS[name].run(cfg, seed=3).table
    assert a.equals(b)


def test_unbiased_reference_is_exact_and_on_policy_everything_is_reinforce(tiny_results):
    s = tiny_results["bias_variance"].summary
    assert max(s["bias_by_T"][bias_variance.UNBIASED]) < 1e-12
    assert s["on_policy_bias_max"] < 1e-12


def test_published_values_reproduced_where_the_tiny_sweep_covers_them(tiny_results):
    # (the GRPO population weights need a large K, which the tiny sweep does not have)
    for name in ("gspo_weight", "survival", "difficulty"):
        for p in tiny_results[name].published:
            if "population" not in p.source:
                assert p.agrees, p.as_dict()


def test_length_bias_toy_matches_the_closed_form():
    q = 0.3
    pop = length_bias.toy_population_update(q, 0.5, 0.5, std=True, agg="seq-mean-token-mean")
    assert pop[2] == pytest.approx(-math.sqrt(q * (1 - q)) / 6, abs=1e-12)
    assert pop[1] == pytest.approx(math.sqrt(q * (1 - q)) / 6, abs=1e-12)
    dr = length_bias.toy_group_update("drgrpo", 4, q, 0.5, 0.5)
    assert abs(dr[1]) < 1e-12 and abs(dr[2]) < 1e-12


def test_difficulty_weights_match_theory():
    # RLOO is unbiased (w = 1); the mean baseline scales by (K-1)/K; population z-score -> 1/sqrt(p(1-p))
    for p in (0.1, 0.5, 0.9):
        assert difficulty.effective_weight("rloo", difficulty.NoConfig(), 6, p, dynamic=False) == pytest.approx(1.0, abs=1e-12)
        assert difficulty.effective_weight("drgrpo", difficulty.NoConfig(), 6, p, dynamic=False) == pytest.approx(5 / 6, abs=1e-12)
    assert difficulty.dropped_fraction(16, 0.9) == pytest.approx(0.9 ** 16 + 0.1 ** 16, abs=1e-12)


def test_difficulty_monte_carlo_covers_the_exact_weights(tiny_results):
    # the exact w(p)·∇p must lie within Z = 5 standard errors of the MC mean on every coordinate
    # (false-failure rate 5.7e-7 per coordinate); the weight curves stand on it
    s = tiny_results["difficulty"].summary
    assert s["mc_max_abs_z"] <= difficulty.MC_Z


def test_gspo_expected_weight_closed_form_equals_enumeration():
    old, new = gspo_weight.iid_pair(gspo_weight.EXAMPLE_MU, gspo_weight.EXAMPLE_PI, 4)
    import torch

    mu, pi = (torch.tensor(x, dtype=torch.float64) for x in (gspo_weight.EXAMPLE_MU, gspo_weight.EXAMPLE_PI))
    assert gspo_weight.expected_g(mu, pi, 4) == pytest.approx(gspo_weight.enumerate_moments(old, new)["E[G]"], abs=1e-13)


def test_survival_torch_equals_symbolic(tiny_results):
    for label, s in tiny_results["survival"].summary.items():
        if label != "clip_reach":
            assert s["max_torch_symbolic_diff"] < 1e-9, label


def test_bad_configs_are_rejected():
    with pytest.raises(ValueError, match="kl"):
        bias_variance.Config(kl=0.0)
    with pytest.raises(ValueError, match="n_replicas"):
        length_bias.Config(n_replicas=30)
    with pytest.raises(ValueError, match="sgs_old_prob"):
        survival.Config(sgs_old_prob=0.5)
    with pytest.raises(ValueError, match="scale"):
        config_for("sgs", "huge")
    from sims.experiments import dynamics

    with pytest.raises(ValueError, match="algorithms"):
        dynamics.Config(algorithms=("nope",))
