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
    assert f"1 + δ = {claims._fmt(1 + claims.DIFFICULTY_DELTA.value)}" in rloo.evidence and "spread max w / min w = 1" in rloo.evidence
    z = _bandit_difficulty(dyn_label="z", adv="grpo", cfg=difficulty.StdConfig(std="sample", eps=1e-6))
    zp = claims.difficulty_part(z, "z", "GRPO z-score", text, dynamic=True)
    assert zp.holds is False and z["weight_spread_dynamic"]["z"] > 1 + claims.DIFFICULTY_DELTA.value
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


# ------------------------------------------------------------------ rules 1-12 on synthetic evidence
from scipy import stats as _stats  # noqa: E402

from sims.experiments._common import Estimate, Published, Result  # noqa: E402

_Z = _stats.norm.ppf(0.975)


def _est(value, se):
    return Estimate(value, value - _Z * se, value + _Z * se)


def _res(name, summary, config=None):
    return Result(name, config, None, summary)


def _c01_inputs(v_none, v_rloo):
    bv = {"on_policy_bias_max": 0.0, "t_max": 3}
    df = {"weights": {"RLOO": {"0.5": 1.0}}, "mc_pass_rates": (0.5,), "group_size": 8,
          "mc_variance": {"RLOO, p=0.5": v_rloo, "no baseline (A = R), p=0.5": v_none},
          "baseline_mechanism": {"0.5": {"b_star": 0.5, "var_none": 0.1, "var_mean": 0.0, "mean_worse_than_none": False}},
          "baseline_mechanism_pm1": {"0.5": {"var_none": 0.0, "var_mean": 0.0}},
          "mean_baseline_threshold": 2 / 3, "mean_baseline_threshold_pm1": None}
    return {"bias_variance": _res("bias_variance", bv), "difficulty": _res("difficulty", df)}


@pytest.mark.parametrize("v_none, expected", [
    (_est(2.0, 0.01), True),    # log ratio ≈ 0.69, far beyond δ = log 1.1
    (_est(1.02, 0.002), False),  # 2% lower: short of δ
    (_est(1.1, 0.05), None),    # straddles δ
])
def test_rule1_variance_part_moves_with_the_effect_against_delta(v_none, expected):
    part = claims.c01(_c01_inputs(v_none, _est(1.0, 0.002)))[2]
    assert part.holds is expected, part.evidence
    assert "δ = 0.09531" in part.evidence and "log(V(no baseline) / V(RLOO))" in part.evidence


def _length_summary(dapo_ratio, larger_rel=None, larger_se=0.5):
    grpo = {4: -0.05, 16: -0.07}
    s = {"toy_dp_W_by_G": {"grpo": grpo, "dapo": {g: v * dapo_ratio for g, v in grpo.items()}},
         "decision_G": 16, "batch_dp_W": {}, "larger_cos": {"GRPO (seq-mean-token-mean, z-score)": Estimate.exact(-0.01)}}
    if larger_rel is not None:
        s["larger_cos"]["DAPO"] = _est(-0.01 * larger_rel, 0.01 * larger_se)
    return s


@pytest.mark.parametrize("ratio, expected", [(0.05, True), (0.3, False)])
def test_rule1_length_part_is_equivalence_at_the_decision_point(ratio, expected):
    part = claims.length_part(_length_summary(ratio), "dapo", "DAPO", None)
    assert part.holds is expected and "G = 16" in part.evidence and "δ = 0.1" in part.evidence


def test_rule2_a_setup_that_cannot_resolve_delta_does_not_decide_and_disagreeing_setups_leave_it_undecided():
    # the larger policy's interval is wide (se 0.5 of GRPO's effect): shown with its power, not deciding
    part = claims.length_part(_length_summary(0.05, larger_rel=0.3, larger_se=0.5), "dapo", "DAPO", "DAPO")
    assert part.holds is True and "smallest detectable" in part.evidence and "decided by Dr. GRPO toy" in part.evidence
    # a larger-policy estimate that resolves δ and contradicts the toy: undecided, both named
    part = claims.length_part(_length_summary(0.05, larger_rel=0.5, larger_se=0.01), "dapo", "DAPO", "DAPO")
    assert part.holds is None and "disagree" in part.evidence


def _dynamics_summary(diff, se, final_entropy, h_uc=1.05, n_seeds=64, over=-0.2):
    comps = {v: {"eval_entropy": _est(d, se), "overlearning": _est(over, se)}
             for v, d in (("sgs_cispo[token]", diff), ("sgs_cispo[sequence]", 0.0))}
    comps["sgs_cispo[k=1, tau=0.5]"] = {"eval_entropy": _est(5.0, 0.01)}  # the grid never decides (rule 5)
    return {"initial": {"sum mod m": {"entropy": 1.386, "entropy_known": 1.0}},
            "comparisons": {"sum mod m": {"adam": comps}},
            "final": {"sum mod m": {"adam": {"sgs_cispo[token]": {"eval_entropy": _est(final_entropy, 0.01)}}}},
            "uniform_correct_entropy": {"sum mod m": h_uc}, "n_seeds": n_seeds, "steps": 100}


@pytest.mark.parametrize("diff, se, expected", [
    (0.3, 0.02, True),     # far beyond δ = 0.05 × 1.386 = 0.069 even after Holm over 2 variants
    (0.0, 0.005, False),   # both variants resolved and short of δ
    (0.08, 0.02, None),    # straddles δ
    (0.3, 0.2, None),      # beyond δ by its point, but the seeds cannot resolve δ: undecided, with the seeds needed
])
def test_rules_3_4_entropy_comparison_uses_the_ablation_holm_and_states_power(diff, se, expected):
    part = claims.c13({"lm_dynamics": _res("lm_dynamics", _dynamics_summary(diff, se, 1.0))})[0]
    assert part.holds is expected, part.evidence
    assert "Holm p" in part.evidence and "CISPO ablation (same advantage, aggregation and clip" in part.evidence
    assert "smallest detectable effect" in part.evidence and "seeds = 64" in part.evidence
    assert "k=1" not in part.evidence  # the sensitivity grid is not the decision
    if se == 0.2:
        assert "would need seeds ≈" in part.evidence


@pytest.mark.parametrize("final, expected", [(1.0, True), (0.5, False), (0.945, None)])
def test_rule9_collapse_is_measured_against_the_uniform_over_correct_entropy(final, expected):
    # H_uc = 1.05: a policy spread over every correct answer keeps 1.0 (0.95 H_uc) and holds, though it
    # is only 0.72 of the initial 1.386 — the old 0.9 × initial threshold could never be met
    part = claims.c13({"lm_dynamics": _res("lm_dynamics", _dynamics_summary(0.0, 0.005, final))})[1]
    assert part.holds is expected, part.evidence
    assert "H_uc = 1.05" in part.evidence


@pytest.mark.parametrize("over, expected", [(-0.3, True), (0.0, False)])
def test_c13_over_learning_part_reads_the_solved_prompts_entropy_drop(over, expected):
    part = claims.c13({"lm_dynamics": _res("lm_dynamics", _dynamics_summary(0.0, 0.005, 1.0, over=over))})[2]
    assert part.text == "SGS avoids over-learning what the model already knows"
    assert part.holds is expected, part.evidence


def test_rule11_full_scale_only_parts_are_undecided_below_full_scale():
    parts = [Part("a", True, "e", full_scale_only=True), Part("b", False, "e")]
    quick = claims._at_scale(parts, "quick")
    assert quick[0].holds is None and "decided only at full scale" in quick[0].evidence and "showed: holds" in quick[0].evidence
    assert quick[1].holds is False
    assert claims._at_scale(parts, "full") == parts
    with pytest.raises(ValueError, match="scale"):
        claims.decide({}, scale="huge")


def test_rule12_robustness_names_what_flips_a_verdict(monkeypatch):
    # one claim whose only part sits at 1.5 δ: stable at δ and δ/2, flipped at 2δ; its halves disagree
    e = Estimate(0.15, 0.14, 0.16, halves=(Estimate(0.15, 0.13, 0.17), Estimate(0.05, 0.03, 0.07)))
    d = claims.Delta("t", 0.1, "", "")

    def fake(r):
        return [Part("x", claims.beyond(r["exp"].summary["e"], d), "e")]

    monkeypatch.setattr(claims, "CLAIMS", {"C99": ("a test claim", fake, ())})
    rob = claims.robustness({"exp": _res("exp", {"e": e})})["C99"]
    assert rob["verdict"] == "holds" and rob["status"] == "fragile"
    assert rob["verdicts"]["δ × 0.5"] == "holds" and rob["verdicts"]["δ × 2"] == "fails"
    assert rob["verdicts"]["half 1 of the samples"] == "holds" and rob["verdicts"]["half 2 of the samples"] == "fails"
    assert set(rob["flips"]) == {"δ × 2 → fails", "half 2 of the samples → fails"} and rob["halved_estimates"] == 1
    steady = Estimate(1.0, 0.9, 1.1, halves=(Estimate(1.0, 0.8, 1.2), Estimate(1.0, 0.8, 1.2)))
    assert claims.robustness({"exp": _res("exp", {"e": steady})})["C99"]["status"] == "stable"


def test_rule7_published_agreement_is_decided_by_the_interval_and_its_resolution():
    def pub(printed, ours):
        return Published("x", "src", printed, ours)

    assert pub("1.6950", Estimate(1.6767, 1.6640, 1.6893)).agreement == "disagrees"  # the interval misses
    assert pub("1.6950", Estimate(1.69, 1.68, 1.70)).agreement == "agrees"
    wide = pub("0.0025", Estimate(0.002, -0.03, 0.04))  # contains the value, spans it 28 times over
    assert wide.agreement == "unresolved" and not wide.agrees
    assert pub("0", Estimate.exact(1e-17)).agrees  # exact: equal within the printed rounding


def test_every_delta_states_its_reason_and_the_method_section_lists_them():
    text = claims.method_markdown()
    for d in claims.DELTAS:
        assert len(d.reason) > 40 and d.name in text
    for n in range(1, 13):
        assert f"{n}. **" in text
