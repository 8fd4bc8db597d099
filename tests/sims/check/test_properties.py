"""The property battery: each property passes on correct losses and fails on its violation; the
profile identifies the aggregation and the batch scaling."""

from __future__ import annotations

import pytest

from sims.check.inputs import Layout
from sims.check.properties import (PROPERTIES, batch_scaling, check_locality, check_padding, check_permutation,
                                   check_reinforce, check_scale, check_zero_advantage, scale_pattern)
from tests.sims.check import correct, planted

LAYOUT = Layout(group_size=2, max_groups=3, max_width=4)
FAST = {"examples": 25, "seed": 0}


@pytest.mark.parametrize("fn", [correct.reinforce, correct.ppo_clip, correct.gspo, correct.sapo])
def test_correct_losses_have_every_property(fn):
    for prop in PROPERTIES:
        r = prop(fn, LAYOUT, **FAST)
        assert r.passed, (prop.__name__, r.detail)


def _with_penalty(logp, old_logp, adv, mask):
    return correct.cispo(logp, old_logp, adv, mask) + 0.1 * ((logp - old_logp) ** 2 * mask).sum() / mask.sum()


def _squared_adv(logp, old_logp, adv, mask):
    return correct.cispo(logp, old_logp, adv * adv.abs(), mask)


def _negated_on_policy(logp, old_logp, adv, mask):
    return -correct.reinforce(logp, old_logp, adv, mask)


@pytest.mark.parametrize("prop, fn, reason", [
    (check_padding, planted.token_mean_padded_width, "loss changes"),
    (check_padding, planted.seq_ratio_unmasked, ""),
    (check_permutation, planted.token_mean_per_microbatch, "row order"),
    (check_locality, planted.std_over_batch, "group 0's weights"),
    (check_zero_advantage, _with_penalty, "have A = 0 but weights"),
    (check_scale, _squared_adv, "w(A x"),
    (check_reinforce, _negated_on_policy, "not a positive multiple of A"),
])
def test_each_property_rejects_its_violation(prop, fn, reason):
    r = prop(fn, LAYOUT, **FAST)
    assert not r.passed and reason in r.detail and "smallest failing input found" in r.detail


def test_locality_needs_two_groups():
    r = check_locality(planted.std_over_batch, Layout(group_size=2, max_groups=1), **FAST)
    assert r.passed and "not testable" in r.detail


@pytest.mark.parametrize("fn, aggregation, kappa", [
    (correct.cispo, "token-mean", 1.0),
    (correct.sapo, "seq-mean-token-mean", 1.0),
    (correct.reinforce, "seq-mean-token-sum", 1.0),
    (correct.dr_grpo, "seq-mean-token-sum", 1 / 8),
])
def test_scale_pattern_identifies_the_aggregation(fn, aggregation, kappa):
    scale, symmetry = scale_pattern(fn, LAYOUT)
    assert scale.data["aggregation"] == aggregation and scale.data["kappa"] == pytest.approx(kappa, rel=1e-9)
    assert "the same for A > 0 and A < 0" in symmetry.detail
    if kappa != 1.0:
        assert "max_len = 8, Dr.GRPO" in scale.detail


def test_scale_pattern_reports_sign_asymmetry_and_no_match():
    def asymmetric(logp, old_logp, adv, mask):
        return correct.cispo(logp, old_logp, adv * (1 + 0.5 * (adv > 0)), mask)

    def squared_length(logp, old_logp, adv, mask):
        return -(adv * logp * mask).sum(-1).div(mask.sum(-1) ** 2).mean()

    assert "differs between A > 0 and A < 0" in scale_pattern(asymmetric, LAYOUT)[1].detail
    scale = scale_pattern(squared_length, LAYOUT)[0]
    assert scale.data["aggregation"] is None and "matches no registered aggregation" in scale.detail


def test_batch_scaling_tells_mean_from_sum():
    assert batch_scaling(correct.cispo, LAYOUT).data["weight_factor"] == pytest.approx(0.5)
    summed = batch_scaling(planted.drgrpo_sum_over_sequences, LAYOUT)
    assert summed.data["weight_factor"] == pytest.approx(1.0) and "sum-like" in summed.detail


def test_a_nan_weight_fails_the_check_that_meets_it():
    def nan_where_adv_is_zero(logp, old_logp, adv, mask):  # 0/0 for A = 0: a NaN weight, not a zero one
        scale = adv / adv.abs()
        return -(scale * adv.abs() * logp * mask).sum() / mask.sum()

    r = check_zero_advantage(nan_where_adv_is_zero, LAYOUT, examples=20, seed=0)
    assert r.passed is False and "non-finite" in r.detail
