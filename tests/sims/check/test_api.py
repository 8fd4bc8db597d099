"""The pytest-facing API: assert_matches_spec / assert_passes raise AssertionError with the card;
bad arguments are UsageErrors."""

from __future__ import annotations

import pytest

from sims.check import UsageError, assert_matches_spec, assert_passes, check
from tests.sims.check import correct, planted

FAST = {"examples": 20}


def test_assert_matches_spec_passes_a_correct_loss_with_spec_params():
    report = assert_matches_spec(correct.ppo_clip, "ppo_clip", eps_high=0.2, **FAST)
    assert report.passed and {r.kind for r in report.results} == {"contract", "spec"}


def test_assert_matches_spec_raises_with_the_card():
    with pytest.raises(AssertionError) as info:
        assert_matches_spec(planted.gspo_with_ppo_epsilon, "gspo", **FAST)
    message = str(info.value)
    assert "FAILED: " in message and "spec: gradient weights equal gspo's" in message
    assert "expected w = " in message


def test_assert_passes_runs_the_property_battery():
    assert assert_passes(correct.cispo, **FAST).passed
    with pytest.raises(AssertionError, match="batch-permutation invariance"):
        assert_passes(planted.token_mean_per_microbatch, **FAST)


def test_params_bind_the_loss_settings():
    report = check(correct.ppo_clip, "ppo_clip", spec_params={"eps_high": 0.28}, params={"eps_high": 0.28},
                   kinds=("spec",), **FAST)
    assert report.passed and report.spec.startswith("ppo_clip(") and "eps_high=0.28" in report.spec


def test_bad_arguments_are_usage_errors():
    with pytest.raises(UsageError, match="--spec 'cispoo' is unknown"):
        assert_matches_spec(correct.cispo, "cispoo")
    with pytest.raises(UsageError, match="not a field of cispo's config"):
        assert_matches_spec(correct.cispo, "cispo", epsilon=0.2)
    with pytest.raises(UsageError, match="wrong signature"):
        assert_passes(lambda logp: logp.sum())
