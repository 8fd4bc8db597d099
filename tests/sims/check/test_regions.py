"""Region maps of known losses: PPO's clip zones, CISPO's bound, IS's unbounded growth; base
probabilities, ±20 clamps, sign changes, boundedness by the limit, underflow vs structural zeros."""

from __future__ import annotations

import math
import time

import pytest
import torch

from sims.check.regions import BASE_PROBS, TAIL, format_map, grows, maps_agree, region_map
from tests.sims.check import correct, planted


def _token_mean(x, mask):
    return (x * mask).sum() / mask.sum()


def _weighted(weight_of_ratio):
    """A loss whose gradient weight is ``weight_of_ratio(ρ)·A`` (token-mean): -A·sg(f(ρ))·logp."""
    def loss(logp, old_logp, adv, mask):
        rho = torch.exp(logp - old_logp).detach()
        return _token_mean(-weight_of_ratio(rho) * adv * logp, mask)
    return loss


def clamp20_is(logp, old_logp, adv, mask):
    """Token IS with verl's log-ratio clamp: -A·exp(clamp(logp - old_logp, -20, 20))."""
    return _token_mean(-adv * torch.exp(torch.clamp(logp - old_logp.detach(), -20.0, 20.0)), mask)


def dppo_tv(logp, old_logp, adv, mask, delta=0.2, c=3.0):
    """DPPO binary-TV (loss_zoo §1): keep A > 0 tokens with p - p_old <= δ, A < 0 ones with
    p - p_old >= -δ; L = -A·sg(min(ρ, c))·logp·valid."""
    p, p_old = torch.exp(logp).detach(), torch.exp(old_logp)
    valid = torch.where(adv > 0, (p - p_old <= delta).to(logp.dtype), (p - p_old >= -delta).to(logp.dtype))
    rho = torch.exp(logp - old_logp).detach().clamp(max=c)
    return _token_mean(-adv * rho * logp * valid, mask)


def sapo_exp_sigmoid(logp, old_logp, adv, mask, tau=1.0):
    """SAPO's gate with σ written as 1/(1 + e^-x): its derivative e^-x/(1 + e^-x)² underflows only
    near x = 745, not at x ≈ 37 as torch.sigmoid's σ(1 - σ) does."""
    ratio = torch.exp(logp - old_logp.detach())
    return _token_mean(-(4 / tau) * adv / (1 + torch.exp(-tau * (ratio - 1))), mask)


def sapo_hard_cut(logp, old_logp, adv, mask, tau=1.0, cut=10.0):
    """SAPO with a hard cut: the gradient is dropped for ρ > 10 (a structural zero; there the
    weight is still 4σ'(9)·10/K ≈ 2.5e-3, far above underflow)."""
    ratio = torch.exp(logp - old_logp.detach())
    gate = (4 / tau) * torch.sigmoid(tau * (ratio - 1))
    return _token_mean(-torch.where(ratio > cut, gate.detach(), gate) * adv, mask)


def test_ppo_clip_zero_regions_are_the_clip_zones():
    rm = region_map(correct.ppo_clip, 2)
    assert rm.base_probs == BASE_PROBS and rm.uniform  # a ratio-only loss: the same map at every base
    pos, neg = rm.maps[0]
    assert len(pos.zero) == 1 and pos.zero[0][0] == pytest.approx(1.2, rel=1e-8) and pos.zero[0][1] == math.inf
    assert len(neg.zero) == 1 and neg.zero[0][0] == 0.0 and neg.zero[0][1] == pytest.approx(0.8, rel=1e-8)
    assert not neg.bounded  # no dual clip: w = ρ·|A| grows without bound for A < 0
    # sup is max |w/A| on the grid; token-mean over K = 2 rows halves ρ: just below 1.2 / 2
    assert pos.bounded and 0.55 < pos.sup <= 0.6
    assert pos.underflow == neg.underflow == () and pos.negative == neg.negative == ()


def test_dual_clip_bounds_the_negative_side():
    _, neg = region_map(lambda *a: correct.ppo_clip(*a, dual_clip_c=3.0), 2).maps[0]
    assert len(neg.zero) == 2 and neg.zero[1][0] == pytest.approx(3.0, rel=1e-8) and neg.bounded


def test_cispo_is_bounded_with_no_zero_region_and_seq_is_is_not():
    rm = region_map(correct.cispo, 2)
    # the cap 5, halved by the token-mean over K = 2 rows
    assert all(m.zero == () and m.bounded and m.sup == pytest.approx(2.5, rel=1e-12) for m in rm.maps[0])
    assert all(m.on_ratio_scale(m.sup) == pytest.approx(5.0, rel=1e-12) for m in rm.maps[0])
    assert "bounded (max |w/A| = 5 x its value at ρ = 1 (absolute 2.5) on" in format_map(rm)  # the cap as set
    is_maps = region_map(correct.seq_is, 2)
    assert not is_maps.maps[0][0].bounded and "unbounded (grows like ρ^1.00" in format_map(is_maps)


def test_maps_agree_names_the_first_difference():
    ppo = region_map(correct.ppo_clip, 2)
    assert maps_agree(ppo, ppo) is None
    assert "A > 0: zero weight: ρ > 1.2; spec: none" in maps_agree(ppo, region_map(correct.cispo, 2))
    wrong = region_map(planted.ppo_clip_ignores_sign, 2)
    assert maps_agree(wrong, ppo) is not None


# ---------------------------------------------------------------- base probabilities (1a)

def test_a_probability_dependent_mask_gives_a_map_per_base_probability():
    rm = region_map(dppo_tv, 2)
    assert not rm.uniform
    by_p = dict(zip(rm.base_probs, rm.maps))
    # A > 0 at p = 0.9: p - p_old = 0.9·(1 - 1/ρ) <= 0.2 fails beyond ρ = 1/(1 - 0.2/0.9) = 9/7
    assert by_p[0.9][0].zero == ((pytest.approx(9 / 7, rel=1e-8), math.inf),)
    # at p = 0.05 the TV distance never exceeds 0.05 < δ: nothing is dropped
    assert by_p[0.05][0].zero == ()
    # A < 0 at p = 0.9: p - p_old = 0.9·(ρ - 1) >= -0.2 fails below ρ = 1 - 0.2/0.9 = 7/9
    assert by_p[0.9][1].zero == ((0.0, pytest.approx(7 / 9, rel=1e-8)),)
    text = format_map(rm)
    assert "A > 0, base prob 0.9 (= max(π, π_old)): zero weight: ρ > 1.28571" in text
    assert "A > 0, base prob 0.05 (= max(π, π_old)): zero weight: none" in text
    # compared with a ratio-only loss, the difference names the base probability
    assert maps_agree(rm, region_map(_weighted(lambda r: r.clamp(max=3.0)), 2)).startswith("base prob 0.9: A > 0")


# ---------------------------------------------------------------- the ±20 clamp (1b, 1e)

def test_a_log_ratio_clamp_at_20_is_a_zero_region_beyond_e_20():
    pos, neg = region_map(clamp20_is, 2).maps[0]
    for m in (pos, neg):
        assert m.zero == ((0.0, pytest.approx(math.exp(-20), rel=1e-8)), (pytest.approx(math.exp(20), rel=1e-8), math.inf))
        assert m.underflow == ()  # the weight next to e^-20 is 1e-9·A: small, but float32 keeps it
    assert "ρ > 4.85165e+08" in format_map(region_map(clamp20_is, 2))
    # without the clamp, the map differs there
    assert "zero weight" in maps_agree(region_map(clamp20_is, 2), region_map(_weighted(lambda r: r), 2))


# ---------------------------------------------------------------- sign changes (1c)

def test_a_weight_that_turns_against_the_advantage_is_reported():
    rm = region_map(_weighted(lambda r: 2.0 - r), 2)  # w/A = (2 - ρ)/K: negative beyond ρ = 2
    pos, neg = rm.maps[0]
    assert pos.negative == ((pytest.approx(2.0, rel=1e-8), math.inf),) and pos.sign_changes == (pytest.approx(2.0),)
    assert neg.negative == pos.negative and pos.zero == ()
    assert "w/A < 0 (pushes against A): ρ > 2" in format_map(rm)
    diff = maps_agree(rm, region_map(_weighted(lambda r: (2.0 - r).abs()), 2))
    assert diff is not None and "w/A < 0: ρ > 2; spec: none" in diff


# ---------------------------------------------------------------- boundedness by the limit (1d)

def test_grows_is_judged_by_the_trend_of_the_tail():
    d = TAIL
    assert grows((math.exp(d[0]), math.exp(d[1]), math.exp(d[2])))  # ρ
    assert grows(d)  # log ρ: equal increases
    assert grows(tuple(math.log(x) for x in d))  # log log ρ: increase ratio 0.585 >= 0.5
    assert not grows((5.0, 5.0, 5.0))  # a cap
    assert not grows(tuple(1 - 1 / x for x in d))  # 1 - 1/log ρ converges: increase ratio 1/3
    assert not grows(tuple(x / (1 + x) for x in (math.exp(t) for t in d)))  # ρ/(1+ρ): geometric
    assert not grows((3.0, 2.0, 1.0)) and not grows((0.0, 0.0, 0.0))
    assert grows((1.0, 2.0, math.inf)) and grows((1.0, math.nan, 1.0))


@pytest.mark.parametrize("name, weight, bounded", [
    ("rho", lambda r: r, False),
    ("log(1 + rho)", torch.log1p, False),
    ("min(rho, 5)", lambda r: r.clamp(max=5.0), True),
    ("rho / (1 + rho)", lambda r: r / (1 + r), True),
    ("1 / rho", lambda r: 1 / r, False),  # grows as ρ -> 0
])
def test_boundedness_of_weight_shapes(name, weight, bounded):
    pos, neg = region_map(_weighted(weight), 2).maps[0]
    assert pos.bounded is bounded and neg.bounded is bounded, name


def test_logarithmic_growth_is_reported_as_unbounded_with_its_values():
    # log(1 + e^d)/K = d/2 at d = 10.25, 20.5, 30.75
    text = format_map(region_map(_weighted(torch.log1p), 2))
    assert "unbounded (grows slower than any power of ρ as ρ -> ∞: |w/A| = 5.13, 10.3, 15.4" in text


def test_ppo_and_sapo_are_bounded_where_the_theory_says():
    pos, _ = region_map(correct.ppo_clip, 2).maps[0]
    assert pos.bounded and pos.zero  # bounded, with its clip zone
    assert all(m.bounded for m in region_map(correct.sapo, 2).maps[0])


# ---------------------------------------------------------------- underflow is not zero (1e)

def test_sapo_underflow_is_a_note_not_a_zero_region():
    rm = region_map(correct.sapo, 2)
    pos, neg = rm.maps[0]
    assert pos.zero == neg.zero == ()
    # torch.sigmoid's derivative σ(1 - σ) is exactly 0 once σ(τ(ρ - 1)) rounds to 1: τ(ρ - 1) ≈ 36.7
    assert len(pos.underflow) == 1 and 37 < pos.underflow[0][0] < 39 and pos.underflow[0][1] == math.inf
    assert len(neg.underflow) == 1 and 35 < neg.underflow[0][0] < 37  # τ = 1.05
    text = format_map(rm)
    assert "zero weight: none; underflows to 0 (float64; not a zero region) beyond ρ ≈ 37.7" in text


def test_maps_agree_ignores_underflow_but_not_a_structural_cut():
    sapo = region_map(lambda *a: correct.sapo(*a, tau_neg=1.0), 2)
    other = region_map(sapo_exp_sigmoid, 2)  # underflows much later (or not at all on the grid)
    assert other.maps[0][0].underflow != sapo.maps[0][0].underflow
    assert maps_agree(other, sapo) is None
    cut = region_map(sapo_hard_cut, 2)
    assert cut.maps[0][0].zero == ((pytest.approx(10.0, rel=1e-8), math.inf),)  # structural: reported
    assert cut.maps[0][0].underflow == ()
    assert "zero weight: ρ > 10; spec: none" in maps_agree(cut, sapo)


# ---------------------------------------------------------------- runtime

def test_a_region_map_takes_under_1_5_seconds():
    """The map is computed twice per spec check and once in the profile; the budget is 1.5 s for
    a plain-torch loss on a 2-core CPU (measured ~0.2-0.5 s; the loss calls are the cost)."""
    start = time.perf_counter()
    region_map(correct.ppo_clip, 4)
    assert time.perf_counter() - start < 1.5
