"""The ledger: a verdict for every claim from tiny runs, the verdict rule, and verdicts that
follow the evidence (a deliberately wrong estimator moves them)."""

from __future__ import annotations

import itertools

import pytest
import torch

from sims import claims
from sims.claims import Part, verdict
from sims.experiments import bias_variance, config_for, difficulty
from sims.objectives import SeqIsConfig
from sims.registry import get_advantage

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
            assert any(p.holds is not True for p in c.parts)
            assert ("holds except" in c.summary) == any(p.holds is True for p in c.parts)
            assert all(p.text in c.summary for p in c.parts if p.holds is not True)


def _rule_by_cases(outcomes) -> str:
    """The rule of the module doc, restated by cases for the exhaustive test."""
    if set(outcomes) == {True}:
        return "holds"
    if set(outcomes) == {False}:
        return "fails"
    if set(outcomes) == {None}:
        return "inconclusive"
    return "partly"


def test_verdict_rule_on_every_combination_of_one_to_three_parts():
    seen = set()
    for n in (1, 2, 3):
        for outcomes in itertools.product((True, False, None), repeat=n):
            parts = [Part(f"part {i}", v, "e") for i, v in enumerate(outcomes)]
            v = verdict(parts)
            assert v == claims.verdict_of(outcomes) == _rule_by_cases(outcomes), outcomes
            seen.add(v)
            summary = claims._summary(v, parts)
            if v == "partly":  # names the failing and the undecided parts, never a holding one
                for i, o in enumerate(outcomes):
                    assert (f"part {i}" in summary) == (o is not True), (outcomes, summary)
                assert summary.startswith("holds except" if True in outcomes else "none holds"), summary
                assert ("fails: " in summary) == (False in outcomes) and ("undecided: " in summary) == (None in outcomes)
    assert seen == set(claims.VERDICTS)
    t, f, u = (Part("x", v, "e") for v in (True, False, None))
    assert verdict([f, u]) == "partly" and verdict([t, u]) == "partly" and verdict([u, u]) == "inconclusive"
    with pytest.raises(ValueError):
        claims.verdict_of([])


def _bandit_difficulty(k=8, ps=(0.1, 0.5), dyn_label="RLOO", adv="rloo", cfg=difficulty.NoConfig()):
    """The difficulty summary fields a part reads, computed with ``effective_weight``."""
    c = difficulty.refill_factor(k, ps)
    w = {f"{p:g}": difficulty.effective_weight(adv, cfg, k, p, dynamic=False) for p in ps}
    wd = [difficulty.effective_weight(adv, cfg, k, p, dynamic=True, refill=c) for p in ps]
    return {"group_size": k, "refill_factor": c, "weights": {dyn_label: w},
            "weight_spread": {dyn_label: difficulty.weight_spread(w.values())},
            "weight_spread_dynamic": {dyn_label: difficulty.weight_spread(wd)}}


def test_difficulty_weight_is_per_sampled_prompt_with_one_refill_constant():
    k, ps = 8, (0.05, 0.2, 0.5, 0.9)
    c = difficulty.refill_factor(k, ps)
    assert c == pytest.approx(1 / sum(1 - p ** k - (1 - p) ** k for p in ps) * len(ps))
    for p in ps:  # RLOO: 1 per sampled prompt; with dynamic sampling the same times the common constant
        assert difficulty.effective_weight("rloo", difficulty.NoConfig(), k, p, dynamic=False) == pytest.approx(1, abs=1e-12)
        assert difficulty.effective_weight("rloo", difficulty.NoConfig(), k, p, dynamic=True, refill=c) == pytest.approx(c)
    assert difficulty.weight_spread([1.0, 2.0]) == 2 and difficulty.weight_spread([1.0, 0.0]) == float("inf")


def test_c15_difficulty_part_holds_for_rloo_and_fails_for_the_z_score():
    text = "no difficulty bias (leave-one-out advantage with dynamic sampling)"
    rloo = claims.difficulty_part(_bandit_difficulty(), "RLOO", "RLOO (leave-one-out) advantage", text, dynamic=True)
    assert rloo.holds is True
    assert "RLOO" in rloo.evidence and "dynamic sampling" in rloo.evidence and "K = 8" in rloo.evidence
    assert f"1 + δ = {claims._fmt(1 + claims.DIFFICULTY_DELTA)}" in rloo.evidence and "spread max w / min w = 1" in rloo.evidence
    z = _bandit_difficulty(dyn_label="z", adv="grpo", cfg=difficulty.StdConfig(std="sample", eps=1e-6))
    zp = claims.difficulty_part(z, "z", "GRPO z-score", text, dynamic=True)
    assert zp.holds is False and z["weight_spread_dynamic"]["z"] > 1 + claims.DIFFICULTY_DELTA
    assert claims._fmt(z["weight_spread_dynamic"]["z"]) in zp.evidence
    # dynamic sampling changes nothing per sampled prompt for the z-score (all-equal groups have A = 0)
    assert z["weight_spread_dynamic"]["z"] == pytest.approx(z["weight_spread"]["z"], rel=1e-12)


def test_c15_and_c09_difficulty_parts_in_the_ledger(tiny, monkeypatch):
    ledger = {c.id: c for c in claims.decide(tiny)}
    part = next(p for p in ledger["C15"].parts if p.text.startswith("no difficulty bias"))
    assert part.holds is True and "1/P̄(kept)" in part.evidence
    assert ledger["C09"].parts[0].holds is False  # GRPO's spread survives dynamic sampling
    # an "RLOO" that is really the z-score: the C15 part must fail
    monkeypatch.setattr(difficulty, "ESTIMATORS", tuple(
        (lab, "grpo", difficulty.StdConfig(std="sample", eps=1e-6)) if lab == "RLOO" else (lab, a, c)
        for lab, a, c in difficulty.ESTIMATORS))
    wrong = dict(tiny, difficulty=difficulty.run(config_for("difficulty", "tiny"), seed=0))
    part = next(p for p in {c.id: c for c in claims.decide(wrong)}["C15"].parts if p.text.startswith("no difficulty"))
    assert part.holds is False


def test_c08_states_the_all_equal_group_conventions(tiny):
    eq = tiny["difficulty"].summary["all_equal_groups"]
    assert set(eq) == {"binary", "non-binary 0.5"}
    assert all(v["max_abs_eps"] == 0 and v["eps0"].startswith("refused (ValueError") for v in eq.values())
    with pytest.raises(ValueError, match="0/0"):
        get_advantage("grpo").fn(torch.full((1, 4), 0.5, dtype=torch.float64), config=difficulty.StdConfig(eps=0.0))
    c08 = {c.id: c for c in claims.decide(tiny)}["C08"]
    ev = c08.parts[1].evidence
    assert "ε = 0" in ev and "refused" in ev and "non-binary" in ev


def test_c01_mechanism_is_computed_from_the_bandit(tiny):
    df = tiny["difficulty"].summary
    for p, m in df["baseline_mechanism"].items():  # 0/1 rewards: b* = 1 − p (closed form for two tokens)
        assert m["b_star"] == pytest.approx(1 - float(p), abs=1e-12)
        assert m["mean_worse_than_none"] == (float(p) > 2 * m["b_star"])
    assert df["mean_baseline_threshold"] == pytest.approx(2 / 3, abs=1e-9)
    assert df["mean_baseline_threshold_pm1"] is None  # coded ±1 the mean is never better
    assert all(m["var_mean"] >= m["var_none"] - 1e-15 for m in df["baseline_mechanism_pm1"].values())
    ev = {c.id: c for c in claims.decide(tiny)}["C01"].parts[2].evidence
    assert "b* = E[r‖s‖²]/E[‖s‖²]" in ev and claims._fmt(df["mean_baseline_threshold"]) in ev and "coding" in ev
    assert difficulty.baseline_mechanism(0.9)["mean_worse_than_none"] and not difficulty.baseline_mechanism(0.5)["mean_worse_than_none"]


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
