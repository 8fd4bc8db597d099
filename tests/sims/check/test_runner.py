"""run_checks: sections, the card, the JSON document, reproducibility and bad arguments."""

from __future__ import annotations

import json

import pytest

from sims.check.inputs import Layout
from sims.check.runner import CheckReport, run_checks
from sims.check.specs import make_spec
from tests.sims.check import correct, planted

LAYOUT = Layout(group_size=2, max_groups=2, max_width=4)
FAST = {"layout": LAYOUT, "examples": 15, "seed": 0}


def _without_time(report: CheckReport) -> dict:
    d = report.as_dict()
    d.pop("seconds")
    return d


def test_a_full_report_has_every_section_and_passes_for_a_correct_loss():
    report = run_checks(correct.cispo, target="correct.cispo", spec=make_spec("cispo", group_size=2), **FAST)
    kinds = [r.kind for r in report.results]
    assert kinds.count("contract") == 3 and kinds.count("spec") == 2 and kinds.count("property") == 6
    assert kinds.count("profile") >= 4 and report.passed and report.failed == []
    doc = report.as_dict()
    assert json.loads(json.dumps(doc)) == doc  # JSON-ready
    assert set(doc) >= {"passed", "checks"} and doc["passed"] is True
    assert all(set(c) >= {"name", "passed", "detail"} for c in doc["checks"])
    card = report.card()
    for title in ("CONTRACT", "SPEC", "PROPERTIES", "PROFILE", "PASSED: all 11 checks passed"):
        assert title in card


def test_a_failing_report_names_the_failures_and_is_reproducible():
    spec = make_spec("ppo_clip", {"dual_clip_c": 3.0}, group_size=2)
    kinds = ("contract", "spec")
    first = run_checks(planted.ppo_without_dual_clip, spec=spec, kinds=kinds, **FAST)
    again = run_checks(planted.ppo_without_dual_clip, spec=spec, kinds=kinds, **FAST)
    assert not first.passed and _without_time(first) == _without_time(again)
    assert "FAILED: " in first.card() and "spec: zero-weight regions and ratio bounds equal ppo_clip's" in first.card()
    assert first.result("spec: zero-weight regions and ratio bounds equal ppo_clip's").passed is False
    with pytest.raises(KeyError, match="no check named 'nope'"):
        first.result("nope")


def test_kinds_select_sections_and_a_broken_loss_is_still_reported():
    report = run_checks(correct.reinforce, kinds=("property",), **FAST)
    assert {r.kind for r in report.results} == {"property"}

    def broken(logp, old_logp, adv, mask):
        raise RuntimeError("boom")

    report = run_checks(broken, kinds=("property",), **FAST)
    assert not report.passed and "boom" in report.results[0].detail
    with pytest.raises(ValueError, match="kinds=\\['nope'\\] is invalid"):
        run_checks(correct.reinforce, kinds=("nope",), **FAST)


def test_a_penalty_spec_skips_the_advantage_properties():
    report = run_checks(correct.kl_k3_plus, spec=make_spec("kl", {"estimator": "k2"}), kinds=("property",), **FAST)
    assert [r.name for r in report.checks] == ["padding invariance", "batch-permutation invariance"]
    assert "not applicable" in report.result("advantage properties").detail
