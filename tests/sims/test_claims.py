"""The ledger: a verdict for every claim from tiny runs, the verdict rule, and verdicts that
follow the evidence (a deliberately wrong estimator moves them)."""

from __future__ import annotations

import pytest

from sims import claims
from sims.claims import Part, verdict
from sims.experiments import bias_variance, config_for, difficulty
from sims.objectives import SeqIsConfig

pytestmark = pytest.mark.slow


@pytest.fixture
def tiny(tiny_experiments):
    return tiny_experiments


def test_every_claim_gets_a_verdict_with_evidence(tiny):
    ledger = claims.decide(tiny)
    assert [c.id for c in ledger] == [f"C{i:02d}" for i in range(1, 16)]
    for c in ledger:
        assert c.verdict in claims.VERDICTS
        d = c.as_dict()
        assert set(d) == {"id", "verdict", "summary", "evidence"} and d["evidence"]["parts"]
        if c.verdict == "partly":
            assert any(p.holds is False for p in c.parts) and "except" in c.summary


def test_verdict_rule():
    t, f, u = (Part("x", v, "e") for v in (True, False, None))
    assert verdict([t, t]) == "holds"
    assert verdict([t, f]) == "partly"
    assert verdict([f, f]) == "fails"
    assert verdict([t, u]) == "inconclusive"
    assert verdict([f, u]) == "fails"


def test_a_wrong_unbiased_estimator_flips_c02(tiny):
    assert claims.decide(tiny)[1].verdict == "holds"
    cfg = bias_variance.with_estimator(config_for("bias_variance", "tiny"), bias_variance.UNBIASED, "seq_is",
                                       SeqIsConfig(cap=1.0))  # truncation at 1: biased
    wrong = dict(tiny, bias_variance=bias_variance.run(cfg, seed=0))
    c02 = claims.decide(wrong)[1]
    assert c02.id == "C02" and c02.verdict == "fails"


def test_verdicts_follow_the_difficulty_evidence(tiny, monkeypatch):
    before = {c.id: c.verdict for c in claims.decide(tiny)}
    assert before["C08"] == "partly"  # std over-weights extremes (holds); no explosion at std = 0 (fails)
    # feed a z-score estimator that ignores std (mean-only): the over-weighting part must fail
    monkeypatch.setattr(difficulty, "ESTIMATORS", tuple(
        (lab, "drgrpo", difficulty.NoConfig()) if lab.startswith("z-score (GRPO") else (lab, a, c)
        for lab, a, c in difficulty.ESTIMATORS))
    wrong = dict(tiny, difficulty=difficulty.run(config_for("difficulty", "tiny"), seed=0))
    after = {c.id: c.verdict for c in claims.decide(wrong)}
    assert after["C08"] == "fails"
