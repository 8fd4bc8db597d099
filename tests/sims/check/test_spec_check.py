"""Spec checks: the weight comparison's tolerance, its shrunk counterexample, and the region check."""

from __future__ import annotations

from sims.check.inputs import Layout, single_token_batch
from sims.check.spec_check import SPEC_RTOL, check_spec_regions, check_spec_weights, weight_mismatch
from sims.check.specs import make_spec
from tests.sims.check import correct, planted

LAYOUT = Layout(group_size=2, max_groups=2, max_width=4)


def _scaled(factor):
    def loss(logp, old_logp, adv, mask):
        return factor * correct.cispo(logp, old_logp, adv, mask)
    return loss


def test_the_tolerance_is_relative_1e_6():
    spec = make_spec("cispo", group_size=2)
    b = single_token_batch(0.4, 1.5, 2)
    assert weight_mismatch(_scaled(1 + 1e-8), spec, b) is None  # within SPEC_RTOL
    assert "max |w - w_spec|" in weight_mismatch(_scaled(1 + 1e-4), spec, b)  # outside
    assert SPEC_RTOL == 1e-6


def test_a_matching_loss_passes_and_a_wrong_scale_fails_with_a_small_counterexample():
    spec = make_spec("cispo", group_size=2)
    assert check_spec_weights(correct.cispo, spec, LAYOUT, examples=30, seed=0).passed
    r = check_spec_weights(_scaled(1.01), spec, LAYOUT, examples=30, seed=0)
    assert not r.passed
    assert "smallest failing input found" in r.detail and "expected w = " in r.detail and "actual   w = " in r.detail
    # shrunk: one group, one token per row (the smallest batch on which a scale shows)
    assert r.data["input"]["group_size"] == 2 and all(len(row) == 1 for row in r.data["input"]["logp"])


def test_the_region_check_sees_what_random_batches_miss():
    # without dual-clip, PPO differs from dual-clip PPO only at ρ > 3 with A < 0 (ratio scale <= e^3)
    spec = make_spec("ppo_clip", {"dual_clip_c": 3.0}, group_size=2)
    r = check_spec_regions(planted.ppo_without_dual_clip, spec, LAYOUT)
    assert not r.passed and "A < 0" in r.detail
    assert check_spec_regions(lambda *a: correct.ppo_clip(*a, dual_clip_c=3.0), spec, LAYOUT).passed
