"""Closed forms the claims need: SGS, importance weights, group advantages, KL estimators,
entropy — each derived symbolically, checked exactly, against published values, and against
the torch code where both compute the same thing."""

from __future__ import annotations

import math

import pytest
import sympy as sp
import torch

from sims.advantages import StdConfig, grpo_advantages
from sims.kl import kl_values
from theory import advantages as adv
from theory import entropy, importance, kl, sgs

# ----------------------------------------------------------------------------- SGS


def test_sgs_derivative_range_and_monotonicity():
    d = sgs.dS_dP()
    assert sp.simplify(d + sgs.K * sp.exp(-sgs.K * (sgs.P - sgs.TAU)) /
                       (1 + sp.exp(-sgs.K * (sgs.P - sgs.TAU))) ** 2) == 0
    assert d.is_negative  # S strictly decreases in P for k > 0
    lo, hi = sgs.scale_range()
    assert sp.simplify(lo).is_positive and sp.simplify(1 - hi).is_positive  # S ∈ (0, 1), finite k
    for k, tau in ((1.0, 0.5), (10.0, 0.2), (20.0, 0.8)):
        v_lo, v_hi = (float(x.subs({sgs.K: k, sgs.TAU: tau})) for x in (lo, hi))
        assert 0 < v_lo < v_hi < 1


def test_sgs_limits_in_k():
    assert sgs.limit_k_to_zero() == sp.Rational(1, 2)
    assert sgs.limit_k_to_infinity() == (1, sp.Rational(1, 2), 0)


def test_sgs_scale_jumps_at_zero_advantage_but_its_product_with_a_is_continuous():
    jump, product_gap = sgs.jump_at_zero_advantage()
    assert product_gap == 0
    assert jump.is_negative  # S(0+) < S(0-) = 1: S itself is discontinuous


@pytest.mark.parametrize("p_mode", ["token", "sequence", "geometric"])
def test_sgs_without_stop_gradient_adds_a_positive_term(p_mode):
    terms = sgs.extra_gradient_term(p_mode, 2)
    assert all(t != 0 for t in terms)
    assert sgs.extra_term_is_positive(p_mode, 2)


# ----------------------------------------------------------------------------- importance


def test_importance_identities():
    assert importance.expected_ratio_minus_one(4) == 0
    assert importance.second_moment_minus_chi2(4) == 0
    assert importance.var_log_g_times_t_minus_var_log_rho(3) == 0
    assert importance.am_gm_gap_two() == 0


def test_importance_moments_by_enumeration_match_closed_forms():
    mu, pi = importance.EXAMPLE_MU, importance.EXAMPLE_PI
    t = 3
    m = importance.sequence_moments([mu] * t, [pi] * t)
    assert m["E_R"] == 1
    assert sp.simplify(m["E_R2"] - (1 + importance.chi2(pi, mu)) ** t) == 0
    assert sp.simplify(m["E_G"] - importance.expected_geometric_iid(mu, pi, t)) == 0
    # non-identical positions: E[R²] = Π_t (1 + χ²_t)
    mus = [mu, (sp.Rational(1, 4),) * 4]
    pis = [pi, (sp.Rational(1, 10), sp.Rational(2, 10), sp.Rational(3, 10), sp.Rational(4, 10))]
    m2 = importance.sequence_moments(mus, pis)
    assert sp.simplify(m2["E_R2"] - sp.Mul(*[1 + importance.chi2(p, q) for q, p in zip(mus, pis)])) == 0


def test_importance_example_reproduces_papers_md():
    # papers.md §3/§11: E[ρ] = 1.000000, E[ρ²] = 1.354081, E[s] = 0.97628, E[log s] = -0.029898,
    # exp(-KL_token) = 0.97054 (V = 4, T = 5)
    v = importance.example_values()
    assert round(v["E_R"], 6) == 1.0
    assert round(v["E_R2"], 6) == 1.354081
    assert round(v["E_G"], 5) == 0.97628
    assert round(v["E_logG"], 6) == -0.029898
    assert round(v["exp_neg_kl"], 5) == 0.97054


def test_expected_geometric_is_below_one_and_tends_to_exp_minus_kl():
    mu, pi = importance.EXAMPLE_MU, importance.EXAMPLE_PI
    kl_mu_pi = float(sum(m * sp.log(m / p) for m, p in zip(mu, pi)))
    values = [float(importance.expected_geometric_iid(mu, pi, t)) for t in (1, 2, 5, 50, 5000)]
    assert values[0] == pytest.approx(1.0)
    assert all(b < a for a, b in zip(values, values[1:]))  # decreasing in T, so <= 1 (Jensen)
    assert values[-1] == pytest.approx(math.exp(-kl_mu_pi), abs=1e-4)
    lim = importance.limit_log_expected_geometric(3)
    mu3 = sp.symbols("mu1:3", positive=True)
    a = sp.symbols("a1:4", real=True)
    assert sp.simplify(lim - (a[0] * mu3[0] + a[1] * mu3[1] + a[2] * (1 - mu3[0] - mu3[1]))) == 0


def test_pointwise_relation_between_g_and_r():
    log_gap, ratio = importance.pointwise_relation()
    assert log_gap == 0
    r, t = sp.Symbol("R", positive=True), sp.Symbol("T", positive=True)
    assert ratio.subs({r: sp.Rational(1, 2), t: 4}) > 1 and ratio.subs({r: 2, t: 4}) < 1
    assert ratio.subs({r: 3, t: 1}) == 1  # T = 1: G is R


def test_expected_geometric_at_most_one_at_random_points():
    # Jensen: E_old[G] = (Σ_v μ_v ρ_v^{1/T})^T <= 1, equality iff π = μ
    gen = torch.Generator().manual_seed(2)
    for _ in range(200):
        v = int(torch.randint(2, 6, (1,), generator=gen))
        mu = torch.softmax(torch.randn(v, generator=gen, dtype=torch.float64), 0).tolist()
        pi = torch.softmax(torch.randn(v, generator=gen, dtype=torch.float64), 0).tolist()
        t = int(torch.randint(1, 40, (1,), generator=gen))
        e_g = sum(m * (p / m) ** (1 / t) for m, p in zip(mu, pi)) ** t
        assert e_g <= 1 + 1e-12
    assert importance.expected_geometric_iid([sp.Rational(1, 3)] * 3, [sp.Rational(1, 3)] * 3, 7) == 1


def test_am_gm_and_min_max_bounds_at_random_points():
    gen = torch.Generator().manual_seed(0)
    rho = torch.exp(torch.randn(1000, 7, generator=gen, dtype=torch.float64))
    g = rho.log().mean(-1).exp()
    assert (g <= rho.mean(-1) + 1e-12).all()
    assert ((rho.min(-1).values <= g) & (g <= rho.max(-1).values)).all()


# ----------------------------------------------------------------------------- group advantages


def test_grpo_prompt_weight_and_objective():
    w = adv.grpo_prompt_weight()
    assert sp.simplify(w - 1 / sp.sqrt(adv.P * (1 - adv.P))) == 0
    assert sp.simplify(sp.diff(adv.grpo_ascended_objective(), adv.P) - w) == 0
    # papers.md §2: p = 0.5 -> 2.0; p = 0.1 or 0.9 -> 3.333; p = 0.01 -> 10.05
    got = [round(float(w.subs(adv.P, p)), 3) for p in (0.5, 0.1, 0.9)]
    assert got == [2.0, 3.333, 3.333]
    assert round(float(w.subs(adv.P, 0.01)), 2) == 10.05


@pytest.mark.parametrize("std", ["population", "sample"])
def test_largest_standardized_advantage_matches_the_code(std):
    bound = adv.max_standardized_advantage(std)
    for g in range(2, 17):
        rewards = torch.zeros(1, g, dtype=torch.float64)
        rewards[0, 0] = 1.0
        a = grpo_advantages(rewards, config=StdConfig(std=std, eps=0.0))
        assert a.abs().max().item() == pytest.approx(float(bound.subs(adv.G, g)), rel=1e-12)
    by_m = adv.standardized_advantage_by_successes()
    m = sp.Symbol("m", positive=True)
    assert sp.diff(by_m, m).subs({adv.G: 10, m: 3}) < 0  # decreasing in the number of successes


def test_baseline_identities():
    assert adv.rloo_identity() == 0
    for k in (2, 3, 4):
        assert adv.mean_baseline_scale(k) == sp.Rational(k - 1, k)
        assert adv.rloo_scale(k) == 1


def test_zero_signal_fraction():
    assert sp.expand(adv.zero_signal_fraction_by_enumeration(5) - adv.zero_signal_fraction(5)) == 0
    f16 = adv.zero_signal_fraction(16)
    # papers.md §1: p = 0.9 -> 0.1853 and p = 0.95 -> 0.4401; groups sampled per kept group
    # 1/(1 - f): 1.227 and 1.786
    assert [round(float(f16.subs(adv.P, p)), 4) for p in (0.9, 0.95)] == [0.1853, 0.4401]
    assert [round(1 / (1 - float(f16.subs(adv.P, p))), 3) for p in (0.9, 0.95)] == [1.227, 1.786]


# ----------------------------------------------------------------------------- KL


@pytest.mark.parametrize("name", kl.ESTIMATORS)
def test_expected_kl_gradients_are_exact(name):
    assert kl.expected_gradient_minus_target(name, 3) == [0, 0, 0]


def test_k3_gradient_is_not_the_reverse_kl_gradient():
    # power: compare k3's expected gradient with the reverse-KL target at a point
    theta = sp.symbols("theta1:4", real=True)
    p = sp.symbols("p1:4", positive=True)
    q = [sp.exp(t) / sum(sp.exp(x) for x in theta) for t in theta]
    exp_grad = sum(q[a] * sp.diff(kl.estimator_value("k3", sp.log(p[a] / q[a])), theta[0]) for a in range(3))
    rev = sp.diff(sum(q[a] * sp.log(q[a] / p[a]) for a in range(3)), theta[0])
    point = {theta[0]: 0.3, theta[1]: -0.2, theta[2]: 0.1, p[0]: 0.2, p[1]: 0.5, p[2]: 0.3}
    assert abs(float((exp_grad - rev).subs(point))) > 1e-3


def test_gaussian_table_reproduces_schulman():
    t = kl.gaussian_table()
    # papers.md §8 (Schulman 2020): μ = 0.1: k1 (0, 20), k2 (0.002[5], 1.42), k3 (0, 1.42);
    # μ = 1: k1 (0, 2), k2 (0.25, 1.73), k3 (0, 1.7)
    assert t["k1"]["0.1"] == pytest.approx((0.0, 20.0))
    assert t["k1"]["1"] == pytest.approx((0.0, 2.0))
    assert t["k2"]["0.1"][0] == pytest.approx(0.0025) and round(t["k2"]["0.1"][1], 3) == 1.418
    assert t["k2"]["1"][0] == pytest.approx(0.25) and round(t["k2"]["1"][1], 3) == 1.732
    assert t["k3"]["0.1"][0] == pytest.approx(0.0, abs=1e-12) and round(t["k3"]["0.1"][1], 4) == 1.4166
    assert t["k3"]["1"][0] == pytest.approx(0.0, abs=1e-12) and round(t["k3"]["1"][1], 1) == 1.7
    mean, var = kl.gaussian_moments("k3")
    assert sp.simplify(var - (sp.exp(kl.MU**2) - 1 - kl.MU**2)) == 0


def test_kl_estimators_match_the_code():
    gen = torch.Generator().manual_seed(1)
    logp = -torch.rand(50, dtype=torch.float64, generator=gen) * 3
    ref = -torch.rand(50, dtype=torch.float64, generator=gen) * 3
    for name in kl.ESTIMATORS:
        expected = [float(kl.estimator_value(name, sp.Float(r - l))) for l, r in zip(logp.tolist(), ref.tolist())]
        torch.testing.assert_close(kl_values(logp, ref, estimator=name),
                                   torch.tensor(expected, dtype=torch.float64), atol=1e-12, rtol=1e-12)


# ----------------------------------------------------------------------------- entropy


def test_entropy_derivative_is_minus_covariance():
    assert entropy.entropy_derivative_minus_covariance(3) == 0
    assert entropy.policy_gradient_forms(3) == (0, 0)
    assert entropy.pg_step_is_exact_gradient(3) == [0, 0, 0]


def test_entropy_sign_rule():
    # papers.md §6: rewarding the most likely action lowers entropy, the least likely raises it
    z = [sp.Integer(2), sp.Integer(0), sp.Integer(-1)]
    for action, sign in ((0, -1), (2, +1)):
        dz = [1 if i == action else 0 for i in range(3)]
        deriv, *_ = entropy.entropy_derivative(3, dz)
        zs = sp.symbols("z1:4", real=True)
        value = float(deriv.subs(dict(zip(zs, z))))
        assert math.copysign(1, value) == sign
