"""The claims ledger: a verdict for each of the seed's claims C01–C15 (shared/CLAIMS.md), computed
from the experiments' results at run time.

Each claim is split into the parts it literally asserts; each part is decided (``True`` holds,
``False`` fails, ``None`` undecided) by the rules below, which the report's "Method" section
repeats (``METHOD``). No verdict is written by hand: feed an experiment other evidence and the
verdict moves.

The rules every part follows:

1. **Effect size against a stated minimal effect.** A part is decided by an effect size in
   meaningful units with its 95% interval against a minimal effect δ stated here with its reason
   (``DELTAS``; ``sims.evidence``): "X removes / equals" holds when the interval lies inside ±δ
   and fails when it lies outside (equivalence, TOST); "X causes / is lower" holds when the
   interval lies beyond δ and fails when it lies short of it (minimum effect); an interval that
   straddles δ leaves the part undecided. Exact zero (``EXACT_TOL``) decides only parts that
   literally assert an identity (unbiasedness, a weight that is exactly 0).
2. **Setups that can show it.** Each part's evidence names its setup; where the outcome depends
   on the setup, the evidence shows more than one (independent and dependent positions, a grid of
   (T, divergence), the clip the algorithm uses). A setup whose interval cannot resolve δ is shown
   with its power and does not decide; setups that resolve δ and disagree leave the part undecided.
3. **Confounders ablated.** Comparisons of algorithms that differ in more than the mechanism are
   made on an ablation that differs only in it (SGS-CISPO vs CISPO with the same advantage,
   aggregation and clip), and the evidence says so.
4. **Power and multiplicity.** Comparative parts from Monte Carlo or seeds state the smallest
   effect they could detect (80% power); a part decided from several variants uses Holm-adjusted
   p-values; a part the experiment cannot resolve is undecided with the samples it would need.
5. **Grids as sensitivity.** A part about the objective as proposed is decided at its configured
   defaults; the grid is shown beside it, with where on the grid the part stops holding.
6. **Mechanism stated.** Failing or surprising parts say why, with the closed form where one
   exists.
7. **Agreement with published numbers by the interval** (``sims.experiments._common.agrees_with``):
   our interval widened by the published rounding contains the published value; a Monte Carlo
   interval wider than ±``RESOLVES`` of the value does not count as agreement (unresolved).
8. **Calibrated intervals, tested**: every interval's coverage is tested over many seeds
   (tests/sims/engines/test_coverage.py, tests/sims/experiments/test_coverage.py).
9. **Attainable thresholds**: a threshold must be reachable where the part holds (collapse is
   measured against the uniform-over-correct-answers entropy, not the initial entropy).
10. **One verdict rule** (``verdict_of``, the only place it is written): every part holds →
    ``holds``; every part fails → ``fails``; every part undecided → ``inconclusive``; otherwise
    ``partly`` (its summary names the failing and the undecided parts).
11. **Quick and full decide on the same points**: ``--quick`` runs the decision points of the full
    sweep with fewer samples; a part that only the full scale can decide (training dynamics) is
    undecided at quick scale and says so (``decide(results, scale="quick")``).
12. **Robustness** (``robustness``): each claim is re-decided with every δ halved and doubled and
    on each of two independent halves of its Monte Carlo samples and seeds (``Estimate.halves``);
    a verdict that never moves is ``stable``, otherwise ``fragile`` with what flips it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import math

from sims.evidence import (Delta, any_beyond_holm, beyond, delta_scale, detectable, log_ratio, oriented, power_text,
                           proportion, ratio, within)
from sims.experiments._common import Estimate, Result

EXACT_TOL = 1e-9  # an exact (enumerated) quantity below this is zero: only for parts that assert an identity

# ------------------------------------------------------------------ minimal effects (rule 1)
BIAS_DELTA = Delta(
    "relative bias", 0.01, "× ‖∇J‖",
    "a bias of 1% of the gradient's norm turns the expected update by under 0.6° and is far below the Monte Carlo "
    "noise of any practical batch; the biases the claims are about (token ratios off-policy, clipped ratios) are "
    "5–100% of ‖∇J‖ on the report's setups")
DIFFICULTY_DELTA = Delta(
    "difficulty weight spread", 0.10, "(max w / min w − 1)",
    "two prompts whose effective weights w(p) differ by less than 10% get learning rates within 10% of each other, a "
    "difference below what learning-rate tuning resolves (grids step by 2× or more, and Adam-style optimisers rescale "
    "the step anyway); the spreads the claims are about (GRPO's 1/√(p(1−p))) are several-fold")
LENGTH_DELTA = Delta(
    "residual length effect", 0.10, "× GRPO's effect",
    "\"removes the length bias\" means it removes nearly all of GRPO's expected drift of the stop probabilities on "
    "the same setup; we take 90%: a residual a tenth the size of GRPO's is an order of magnitude below the effect the "
    "claim is about")
VARIANCE_DELTA = Delta(
    "log variance ratio", math.log(1.1), "nats",
    "\"lower variance\" must be worth having: 10% lower variance equals 10% more samples per batch, and smaller gains "
    "are below the batch-size steps (2×) practitioners tune")
EXTREME_DELTA = Delta(
    "fraction of extreme weights", 0.01, "of the sequences",
    "when 1 sequence in 100 has a weight outside [1e-3, 1e3], a batch of a few hundred sequences is dominated by one "
    "weight (or loses most of its samples): the instability the claim describes; below 1% it is a rare event")
SLOPE_DELTA = Delta(
    "slope deviation from −1", 0.2, "(log-log slope + 1)",
    "a slope within ±0.2 of −1 keeps T·Var(G) within a factor of 2.5 over two decades of T; outside it the law is "
    "another power of T")
ONE_OVER_T_DELTA = Delta(
    "departure from 1/T", math.log(2), "(log of T·Var(log G) at the longest T over the shortest)",
    "\"falls like 1/T\" over T = 16–4096 (256×) allows T·Var(log G) to move by less than 2×: any other power law "
    "moves it by more than 2× over that range unless its exponent is within 0.125 of −1")
FULL_DELTA = Delta(
    "learning shortfall", 0.01, "(1 − S)",
    "S within 1% of 1 changes the step of a zero-confidence positive sample by less than 1%: \"learns fully\"")
INERT_DELTA = Delta(
    "spread of S", 0.10, "(5–95% range of S)",
    "an S that varies by less than 10% across the bulk of sequences changes their learning rates by less than "
    "learning-rate tuning resolves (the same reason as the difficulty δ): it does not discriminate")
ENTROPY_DELTA = Delta(
    "entropy difference", 0.05, "× initial entropy",
    "SGS's stated purpose is to keep exploration: an entropy gain under 5% of the initial entropy is small against "
    "the collapse it is meant to prevent (under CISPO the entropy falls by most of its initial value on the "
    "multi-solution tasks)")
COLLAPSE_DELTA = Delta(
    "entropy shortfall", 0.10, "× the uniform-over-correct entropy",
    "a policy that has not collapsed spreads over the correct answers: its entropy is at most that of the "
    "uniform-over-correct-answers policy H_uc (rule 9: the attainable reference, not the initial entropy); ending "
    "within 10% of H_uc keeps the spread over correct answers up to a tenth")
LEARNING_DELTA = Delta(
    "rise of log π", math.log(1.1), "nats over the run",
    "a clipped token whose probability still grows by more than 10% over the run has not stopped learning; "
    "\"stops\" means its probability stays where the clip left it")
DELTAS = (LEARNING_DELTA, ONE_OVER_T_DELTA, BIAS_DELTA, DIFFICULTY_DELTA, LENGTH_DELTA, VARIANCE_DELTA, EXTREME_DELTA, SLOPE_DELTA, FULL_DELTA,
          INERT_DELTA, ENTROPY_DELTA, COLLAPSE_DELTA)
REALISTIC_LENGTH = 1000  # "realistic lengths" (C12): a response of a thousand tokens, short for a reasoning model

VERDICTS = ("holds", "partly", "fails", "inconclusive")


@dataclass(frozen=True)
class Part:
    """One literal assertion of a claim: ``holds`` is True, False or None (undecided)."""

    text: str
    holds: bool | None
    evidence: str
    full_scale_only: bool = False  # rule 11: only the full sweep can decide it (undecided at quick scale)


# The words of a part that fails, as a finding (presentation only: which words are shown follows
# from ``Part.holds``, decided above; the numbers come from the part's evidence at run time).
NEGATION: dict[str, str] = {
    "the score-function gradient E[R ∇log P] equals ∇J": "the score-function gradient E[R ∇log P] differs from ∇J",
    "a baseline independent of the sample (leave-one-out) keeps it unbiased":
        "a leave-one-out baseline biases the gradient",
    "the baseline lowers the variance": "the baseline does not lower the variance at every pass rate",
    "E_old[R·A·∇log P] is unbiased off-policy": "E_old[R·A·∇log P] is biased off-policy",
    "the sequence ratio's variance grows exponentially in T": "the sequence ratio's variance does not grow exponentially in T",
    "weights vanish or explode (numerical instability)": "no weights vanish or explode",
    "token ratio × sequence advantage is not the sequence-level gradient off-policy":
        "token ratio × sequence advantage equals the sequence-level gradient off-policy",
    "it is practically more stable (lower variance than sequence IS)": "it is not lower in variance than sequence IS",
    "Var(G) falls like 1/T": "Var(G) does not fall like 1/T",
    "its gradient estimator has lower variance than sequence IS": "its gradient estimator is not lower in variance than sequence IS",
    "E_old[G] ≤ 1 = E_old[R] (biased low)": "E_old[G] exceeds 1 = E_old[R]",
    "the bias grows with the divergence between the policies": "the bias does not grow with the divergence",
    "G ≤ the arithmetic mean of the token ratios (AM-GM)": "G exceeds the arithmetic mean of the token ratios",
    "G always underestimates the true weight R": "G does not always underestimate R: it exceeds R wherever R < 1",
    "GRPO's 1/|o| produces a length bias with a length-independent reward": "GRPO's 1/|o| produces no length bias",
    "token-level normalisation (DAPO's 1/Σ|o_i|) removes it": "token-level normalisation (DAPO's 1/Σ|o_i|) does not remove the length bias",
    "std normalisation over-weights low-variance (near 0 or 1 pass rate) prompts":
        "std normalisation does not over-weight prompts near pass rate 0 or 1",
    "the gradient explodes when std = 0": "the gradient does not explode when std = 0 (the advantages are exactly 0)",
    "dropping all-equal groups removes the difficulty bias": "dropping all-equal groups does not remove the difficulty bias",
    "for A > 0 and ρ > 1+ε the clipped term's gradient is exactly 0": "the clipped term's gradient is not exactly 0 for A > 0 and ρ > 1+ε",
    "this stops the model from learning such tokens": "the clip does not stop learning: it caps the step per batch",
    "the gradient is clip(ρ)·A·∇log π": "the gradient is not clip(ρ)·A·∇log π",
    "the gradient is never killed": "the gradient is killed somewhere",
    "the gradient is bounded": "the gradient is unbounded",
    "it is a (stable) REINFORCE, i.e. still estimates the policy gradient":
        "it does not estimate the policy gradient off-policy (biased)",
    "negative samples are not suppressed (S = 1)": "negative samples are suppressed (S ≠ 1)",
    "S falls smoothly as the confidence P grows": "S does not fall smoothly as P grows",
    "low-confidence positive samples learn fully": "low-confidence positive samples do not learn fully at every (k, τ)",
    "S discriminates by confidence at realistic lengths (sequence P)":
        "with sequence P, S does not discriminate by confidence at realistic lengths",
    "the suppression acts as described whether or not S is under a stop-gradient":
        "without the stop-gradient the suppression acts differently (an extra term pushes P up)",
    "SGS keeps entropy higher than CISPO": "SGS does not keep entropy higher than CISPO",
    "SGS prevents entropy collapse": "SGS does not prevent entropy collapse",
    "SGS avoids over-learning what the model already knows":
        "SGS does not avoid over-learning what the model already knows",
    "the leave-one-out baseline is unbiased": "the leave-one-out baseline is biased",
    "it gives a more accurate signal than the group mean (beyond a constant scale)":
        "it gives the same signal as the group mean up to a constant scale",
    "gradient stability (bounded, never-zero weights)": "the gradient is not stable (bounded and never zero)",
    "no length bias (token-level normalisation)": "a length bias remains under token-level normalisation",
    "no difficulty bias (leave-one-out advantage with dynamic sampling)":
        "a difficulty bias remains (leave-one-out advantage with dynamic sampling)",
    "a principled exploration–exploitation balance (SGS)": "no demonstrated exploration–exploitation balance (SGS)",
}
KEY_EVIDENCE_CHARS = 160  # the ledger table quotes a part's evidence up to this long (whole clauses)


def _key_evidence(evidence: str) -> str:
    """The leading clauses ("; "-separated) of ``evidence`` that fit ``KEY_EVIDENCE_CHARS``; never
    cuts a clause, so never a number."""
    clauses = evidence.split("; ")
    out = clauses[0]
    for c in clauses[1:]:
        if len(out) + 2 + len(c) > KEY_EVIDENCE_CHARS:
            return out + "; …"
        out += "; " + c
    return out


def part_finding(p: "Part") -> str:
    """The part as a finding: its words when it holds, their negation when it fails, the open
    question when undecided."""
    if p.holds is True:
        return p.text
    if p.holds is False:
        return NEGATION.get(p.text, f"not: {p.text}")
    return f"undecided whether {p.text}"


@dataclass(frozen=True)
class ClaimVerdict:
    """A decided claim (``as_dict`` gives the ledger's JSON object)."""

    id: str
    claim: str
    verdict: str
    summary: str
    explanation: str
    parts: tuple[Part, ...]
    figures: tuple[str, ...] = field(default_factory=tuple)

    @property
    def finding(self) -> str:
        """The verdict as a finding: the failing and undecided parts (all parts when it holds), each
        in words that match its outcome, with the leading clauses of its evidence."""
        shown = [p for p in self.parts if p.holds is not True] or list(self.parts)
        return f"{self.verdict}: " + "; ".join(f"{part_finding(p)} — {_key_evidence(p.evidence)}" for p in shown)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "verdict": self.verdict, "summary": self.summary,
                "evidence": {"claim": self.claim, "finding": self.finding, "explanation": self.explanation,
                             "parts": [{"text": p.text, "holds": p.holds, "evidence": p.evidence} for p in self.parts],
                             "figures": list(self.figures)}}


def verdict_of(outcomes) -> str:
    """The verdict rule of the module doc, over part outcomes (True holds, False fails, None
    undecided): all True → holds; all False → fails; all None → inconclusive; otherwise → partly.
    At least one outcome is required."""
    values = list(outcomes)
    if not values or any(v not in (True, False, None) for v in values):
        raise ValueError(f"verdict_of needs one or more outcomes in (True, False, None), got {values!r}")
    if all(v is True for v in values):
        return "holds"
    if all(v is False for v in values):
        return "fails"
    if all(v is None for v in values):
        return "inconclusive"
    return "partly"


def verdict(parts: list[Part] | tuple[Part, ...]) -> str:
    """``verdict_of`` the parts' outcomes."""
    return verdict_of(p.holds for p in parts)


def _summary(v: str, parts) -> str:
    """One line per verdict: a ``partly`` summary names the failing and the undecided parts."""
    failing = [p.text for p in parts if p.holds is False]
    undecided = [p.text for p in parts if p.holds is None]
    if v == "holds":
        return f"all {len(parts)} parts hold"
    if v == "fails":
        return "fails: " + "; ".join(failing)
    if v == "partly":
        named = ([f"fails: {'; '.join(failing)}"] if failing else []) + (
            [f"undecided: {'; '.join(undecided)}"] if undecided else [])
        return ("holds except — " if any(p.holds is True for p in parts) else "none holds — ") + " — ".join(named)
    return "undecided: " + "; ".join(undecided)


def _explain(parts) -> str:
    return " ".join(f"{p.text}: {'holds' if p.holds else 'fails' if p.holds is False else 'undecided'} ({p.evidence})."
                    for p in parts)


def _sig_below(a: Estimate, b: Estimate) -> bool | None:
    """a < b with non-overlapping intervals: True; a > b likewise: False; else None."""
    if a.high < b.low:
        return True
    if a.low > b.high:
        return False
    return None


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _list(xs) -> str:
    """Items as prose ("1, 2, 3"), never a Python list repr."""
    return ", ".join(_fmt(x) if isinstance(x, float) else str(x) for x in xs)


def _by_t(ts, values) -> str:
    """"T=1: 0, T=2: 0.098, …" for values aligned with the horizons ``ts``."""
    return ", ".join(f"T={t}: {_fmt(v)}" for t, v in zip(ts, values))


# ----------------------------------------------------------------------------------- claims
def _baseline_mechanism_text(df: dict[str, Any]) -> str:
    """C01's mechanism, from the difficulty experiment's bandit numbers (module doc of
    ``sims.experiments.difficulty``)."""
    mech, pm1 = df["baseline_mechanism"], df["baseline_mechanism_pm1"]
    thr, thr_pm1 = df["mean_baseline_threshold"], df["mean_baseline_threshold_pm1"]
    worse = [p for p, m in mech.items() if m["mean_worse_than_none"]]
    return (
        "mechanism (one-token bandit, rewards coded 0/1, one sample): the variance is a parabola in a constant "
        "baseline b with vertex b* = E[r‖s‖²]/E[‖s‖²], so the mean baseline b = p is worse than none iff p > 2b*: "
        + ", ".join(f"p={p}: b* = {_fmt(m['b_star'])}, V(none) = {_fmt(m['var_none'])}, V(mean) = "
                    f"{_fmt(m['var_mean'])}" for p, m in mech.items())
        + (f"; mean worse than none above p = {_fmt(thr)}" if thr is not None else "; the mean is never worse than none")
        + (f" (predicted at p = {', '.join(worse)})" if worse else "")
        + "; coded −1/1 the mean baseline is "
        + (f"worse than none above p = {_fmt(thr_pm1)}" if thr_pm1 is not None else
           ("never better than none (" + ", ".join(f"p={p}: V(none) = {_fmt(m['var_none'])}, V(mean) = "
                                                     f"{_fmt(m['var_mean'])}" for p, m in pm1.items()) + ")"))
        + ": the result depends on the reward coding"
    )


def _delta_text(d: Delta) -> str:
    return f"{d} ({d.name})"


def _all_hold(outcomes) -> bool | None:
    """Intersection of several decided sub-parts: True if all hold, False if any fails, else None."""
    outcomes = list(outcomes)
    if any(o is False for o in outcomes):
        return False
    if outcomes and all(o is True for o in outcomes):
        return True
    return None


def _resolving(setups: list[tuple[str, Estimate, bool | None]], delta: Delta) -> tuple[bool | None, str]:
    """Rule 2/4 over several setups of one part: ``_across`` with each setup resolving δ when its
    detectable effect is at most δ."""
    return _across([(name, o, detectable(e) <= delta.current) for name, e, o in setups])


def c01(r: dict[str, Result]) -> list[Part]:
    bv, df = r["bias_variance"].summary, r["difficulty"].summary
    rloo = df["weights"]["RLOO"]
    ps = df["mc_pass_rates"]
    # effect: log(V_none / V_RLOO) > δ means the baseline lowers the variance by more than 10%
    effects = {p: log_ratio(df["mc_variance"][f"no baseline (A = R), p={p:g}"], df["mc_variance"][f"RLOO, p={p:g}"])
               for p in ps}
    outs = [beyond(e, VARIANCE_DELTA) for e in effects.values()]
    # "lowers the variance" is a claim for every pass rate: it holds when it holds at each p
    # (intersection-union test, no correction needed) and fails when it fails at one.
    lower = _all_hold(outs)
    return [
        Part("the score-function gradient E[R ∇log P] equals ∇J", bv["on_policy_bias_max"] < EXACT_TOL,
             f"identity, exact enumeration (tabular policy, T ≤ {bv['t_max']}): largest relative error on-policy "
             f"{_fmt(bv['on_policy_bias_max'])}"),
        Part("a baseline independent of the sample (leave-one-out) keeps it unbiased",
             max(abs(w - 1) for w in rloo.values()) < EXACT_TOL,
             f"identity, exact: RLOO's effective per-prompt weight is 1 at every pass rate (max |w − 1| = "
             f"{_fmt(max(abs(w - 1) for w in rloo.values()))}); a group mean that includes the sample scales it by "
             "(K−1)/K"),
        Part("the baseline lowers the variance", lower,
             f"one-token bandit, groups of K = {df['group_size']}, rewards 0/1, Monte Carlo: log(V(no baseline) / "
             f"V(RLOO)) against {_delta_text(VARIANCE_DELTA)}, at every p (95% CI): "
             + "; ".join(f"p={p:g}: {e} → {_outcome_word(o)}" for (p, e), o in zip(effects.items(), outs))
             + "; " + _baseline_mechanism_text(df)),
    ]


def _outcome_word(o: bool | None) -> str:
    return {True: "holds", False: "fails", None: "undecided"}[o]


def c02(r):
    bv = r["bias_variance"].summary
    seq = bv["bias_by_T"]["sequence IS"]
    return [Part("E_old[R·A·∇log P] is unbiased off-policy", max(seq) < EXACT_TOL,
                 f"identity, exact enumeration (tabular policy): largest relative bias {_fmt(max(seq))} over "
                 f"T = {_list(bv['horizons'])}, per-token KL {bv['kl']}")]


def c03(r):
    bv = r["bias_variance"].summary
    ext = bv["extreme_fraction_by_T"]
    t_long = max(ext)
    n = r["bias_variance"].config.n_ratio_samples
    frac = proportion(round(ext[t_long] * n), n)
    grows = bv["ratio_var_growth"] > 0
    return [
        Part("the sequence ratio's variance grows exponentially in T", grows,
             f"closed form, Var R = Π(1+χ²_t) − 1: log(1 + Var) grows by {_fmt(bv['ratio_var_growth'])} per token "
             f"(linear in T), Monte Carlo matches at short T"),
        Part("weights vanish or explode (numerical instability)", beyond(frac, EXTREME_DELTA),
             f"tabular policy, {n} sampled sequences per T: fraction of sequence weights outside [1e-3, 1e3] at "
             f"T = {t_long}: {frac} (Clopper–Pearson) against {_delta_text(EXTREME_DELTA)}; by T: "
             + ", ".join(f"T={t}: {_fmt(v)}" for t, v in ext.items())),
    ]


LONG_LABELS = {"token IS (PPO/GRPO)": ("token IS (no clip)", "PPO/GRPO clip 1±0.2", "CISPO clip 1±0.2 (verl)"),
               "GSPO geometric": ("GSPO clip (3e-4, 4e-4)",)}


def _long_variance_part(bv: dict[str, Any], label: str) -> tuple[bool | None, str] | None:
    """"Lower variance than sequence IS" on the long grid (rule 2): setups (independent and
    dependent positions) × per-token KL κ × T, with the clips the algorithms ship. Decided at the
    realistic lengths T ≥ ``REALISTIC_LENGTH`` (every setup, κ and estimator must hold; one that
    fails refutes it); the shorter T are the sensitivity, with where it stops holding."""
    eff = bv.get("long_effects")
    if not eff:
        return None
    names = LONG_LABELS.get(label, (label,))
    rows = [e for e in eff if e["estimator"] in names]
    if not rows:
        return None
    out = {}
    for e in rows:
        lower = oriented(e["log_var_ratio"], -1.0)  # log(V_seq / V_est): positive means lower than sequence IS
        out[(e["setup"], e["kl"], e["T"], e["estimator"])] = (lower, beyond(lower, VARIANCE_DELTA))
    decisive = {k: v for k, v in out.items() if k[2] >= REALISTIC_LENGTH}
    if not decisive:
        return None, "no long horizon ≥ the realistic length was run"
    outcome = _all_hold(o for _, o in decisive.values())
    short_fail = sorted({(k[0], k[1], k[2]) for k, (_, o) in out.items() if k[2] < REALISTIC_LENGTH and o is not True})
    worst_key, (worst, _) = min(decisive.items(), key=lambda kv: kv[1][0].low)
    return outcome, (
        f"long grid ({', '.join(sorted({k[0] for k in out}))} positions × κ = {_list(sorted({k[1] for k in out}))} × "
        f"T = {_list(sorted({k[2] for k in out}))}, V = 32768, clips as the algorithms ship them: {', '.join(names)}), "
        f"decided at T ≥ {REALISTIC_LENGTH}: log(V(sequence IS) / V(estimator)) against {_delta_text(VARIANCE_DELTA)}, "
        f"{sum(o is True for _, o in decisive.values())} of {len(decisive)} grid points hold, the least favourable "
        f"{worst_key[3]} ({worst_key[0]}, κ = {worst_key[1]:g}, T = {worst_key[2]}): {worst}"
        + (f"; sensitivity: below T = {REALISTIC_LENGTH} it does not hold at "
           + ", ".join(f"{a}, κ = {b:g}, T = {c}" for a, b, c in short_fail[:6]) + ("…" if len(short_fail) > 6 else "")
           if short_fail else f"; it also holds at every T < {REALISTIC_LENGTH}")
        + "".join(f"; not estimable at {u['setup']}, κ = {u['kl']:g}, T = {u['T']} (no tilted sample with a non-zero "
                  "reward)" for u in bv.get("long_unestimable", [])))


def _variance_vs_seq_is(bv: dict[str, Any], label: str) -> tuple[bool | None, str]:
    """"lower variance than sequence IS" at the longest T, as log(V_seq / V_label) against
    VARIANCE_DELTA (beyond: lower by more than 10%), with every setup the experiment measured."""
    setups = []
    texts = []
    grid = bv.get("variance_vs_seq_is", {})  # setup name -> {label: log-ratio Estimate}, when measured
    if grid:
        for setup, by_label in grid.items():
            if label in by_label:
                e = by_label[label]
                o = beyond(e, VARIANCE_DELTA)
                setups.append((setup, e, o))
                texts.append(f"{setup}: {e} → {_outcome_word(o)}")
    else:
        e = log_ratio(bv["var_at_t_max"]["sequence IS"], bv["var_at_t_max"][label])
        o = beyond(e, VARIANCE_DELTA)
        setup = f"tabular policy, independent positions, T = {bv['t_max']}, per-token KL {bv['kl']}"
        setups.append((setup, e, o))
        texts.append(f"{setup}: {e} → {_outcome_word(o)} (relative variance {bv['var_at_t_max'][label]} vs sequence IS "
                     f"{bv['var_at_t_max']['sequence IS']})")
    outcome, how = _resolving(setups, VARIANCE_DELTA)
    text = (f"tabular grid: log(V(sequence IS) / V({label})) against {_delta_text(VARIANCE_DELTA)} (95% CI): "
            + "; ".join(texts) + f"; {how}")
    long = _long_variance_part(bv, label)
    if long is None:
        return outcome, text
    long_o, long_t = long
    # the long grid reaches LLM lengths: it decides; the short tabular setup is shown beside it
    return long_o, long_t + f"; short tabular setup (T ≤ {bv['t_max']}): {_outcome_word(outcome)} — " + text


def c04(r):
    bv = r["bias_variance"].summary
    tok = bv["bias_by_T"]["token IS (PPO/GRPO)"]
    worst = max(tok[1:]) if len(tok) > 1 else 0.0
    stable, text = _variance_vs_seq_is(bv, "token IS (PPO/GRPO)")
    return [
        Part("token ratio × sequence advantage is not the sequence-level gradient off-policy",
             beyond(Estimate.exact(worst), BIAS_DELTA),
             f"exact enumeration (tabular policy, per-token KL {bv['kl']}): relative bias ‖E ĝ − ∇J‖/‖∇J‖ by T: "
             + _by_t(bv["horizons"], tok) + f" (0 at T = 1 and on-policy); largest {_fmt(worst)} against "
             + _delta_text(BIAS_DELTA)),
        Part("it is practically more stable (lower variance than sequence IS)", stable, text),
    ]


def c05(r):
    gw, bv = r["gspo_weight"].summary, r["bias_variance"].summary
    slope = gw["var_g_loglog_slope"]
    slope_e = slope if isinstance(slope, Estimate) else Estimate.exact(slope)
    dev = Estimate(slope_e.value + 1, slope_e.low + 1, slope_e.high + 1)
    lower, text = _variance_vs_seq_is(bv, "GSPO geometric")
    dependent = gw.get("var_g_loglog_slope_dependent")
    dep_text = ""
    outs = [within(dev, SLOPE_DELTA)]
    for d in gw.get("long_one_over_t_departure", []):  # log of T·Var(log G) at T_max over T_min: 0 is exactly 1/T
        o = within(d["log_ratio"], ONE_OVER_T_DELTA)
        outs.append(o)
        dep_text += (f"; {d['setup']} positions, κ = {d['kl']:g}, T = {d['T_min']}–{d['T_max']}: log(T·Var(log G) ratio) "
                     f"= {d['log_ratio']} against ±{ONE_OVER_T_DELTA.current:.3g} → {_outcome_word(o)}")
    if dependent is not None:
        dep = dependent if isinstance(dependent, Estimate) else Estimate.exact(dependent)
        dep_dev = Estimate(dep.value + 1, dep.low + 1, dep.high + 1)
        outs.append(within(dep_dev, SLOPE_DELTA))
        dep_text = f"; dependent positions: slope {dep} → {_outcome_word(outs[-1])}"
    return [
        Part("Var(G) falls like 1/T", _all_hold(outs),
             f"slope of log Var(G) on log T, independent positions: {slope_e} (1/T is −1) against "
             f"{_delta_text(SLOPE_DELTA)} → {_outcome_word(outs[0])}{dep_text}; T·Var(log G): "
             f"{', '.join(f'T={t}: {v}' for t, v in list(gw['t_var_log_g'].items())[:3])} …"),
        Part("its gradient estimator has lower variance than sequence IS", lower, text),
    ]


def c06(r):
    gw = r["gspo_weight"].summary
    above = {t: e for t, e in gw["p_g_above_r"].items() if t >= 2}
    return [
        Part("E_old[G] ≤ 1 = E_old[R] (biased low)", gw["E[G]_max"] <= 1 + 1e-12,
             f"inequality, exact enumeration (i.i.d. positions): E_old[G] by T: "
             f"{', '.join(f'{int(t)}: {_fmt(v)}' for t, v in gw['E[G]_by_T'].items())}; limit exp(−KL) = "
             f"{_fmt(gw['E[G]_limit'])}"),
        Part("the bias grows with the divergence between the policies", gw["gap_increasing_in_kl"],
             "exact: 1 − E[G] by per-token KL: " + ", ".join(f"{k:g}: {_fmt(v)}" for k, v in gw["gap_by_kl"].items())),
        Part("G ≤ the arithmetic mean of the token ratios (AM-GM)", gw["am_minus_g_min"] >= -1e-12,
             f"inequality: min over samples of AM − G = {_fmt(gw['am_minus_g_min'])}"),
        Part("G always underestimates the true weight R", False if any(e.low > 0 for e in above.values())
             else (True if all(e.high <= 0 for e in above.values()) else None),
             "a universal claim, refuted by a counterexample: G = R^{1/T} exceeds R whenever R < 1; P(G > R) = "
             + ", ".join(f"T={t}: {e}" for t, e in above.items())),
    ]


def c07(r):
    lb = r["length_bias"].summary
    toy = lb["toy_updates"]
    cos = lb["larger_cos"]
    grpo_biased = toy["grpo"]["dp_W"] < -EXACT_TOL and toy["grpo"]["dp_C"] > EXACT_TOL
    part2 = length_part(lb, "dapo", "DAPO (prompt-token-mean)", "DAPO token-level (prompt-token-mean)")
    return [
        Part("GRPO's 1/|o| produces a length bias with a length-independent reward", grpo_biased,
             f"Dr.GRPO toy (G = {lb['toy_G']}, exact): ∂p_W = {_fmt(toy['grpo']['dp_W'])} (wrong answers get "
             f"longer), ∂p_C = {_fmt(toy['grpo']['dp_C'])} (the true gradient is 0 for both); larger policy "
             f"cos(E ĝ, ∇E|o|) = {cos['GRPO (seq-mean-token-mean, z-score)']} (true gradient: {cos['true ∇J']})"),
        Part("token-level normalisation (DAPO's 1/Σ|o_i|) removes it", part2.holds, part2.evidence),
    ]


def length_part(lb: dict[str, Any], name: str, label: str, larger_label: str | None,
                text: str = "token-level normalisation (DAPO's 1/Σ|o_i|) removes it") -> Part:
    """"``name`` removes the length bias": the residual |∂p_W(name)| / |∂p_W(GRPO)| on the Dr. GRPO
    toy at DAPO's group size (``length_bias.DECISION_G``, exact) within LENGTH_DELTA, with the
    trend in G and in batch size; the larger policy's cosine relative to GRPO's (Monte Carlo) as a
    second setup, which decides only if its interval resolves δ (rule 2/4)."""
    g_dec = lb.get("decision_G")
    by_g = lb["toy_dp_W_by_G"]
    grpo = by_g["grpo"]
    if g_dec is None:
        return Part(text, None, "the decision point G = 16 was not run")
    setups = []
    toy_ratio = Estimate.exact(abs(by_g[name][g_dec]) / abs(grpo[g_dec]))
    o_toy = within(toy_ratio, LENGTH_DELTA)
    setups.append((f"Dr. GRPO toy at G = {g_dec} (exact)", toy_ratio, o_toy))
    trend = ", ".join(f"G={g}: {_fmt(abs(by_g[name][g]) / abs(grpo[g]))}" for g in sorted(grpo))
    texts = [f"Dr. GRPO toy (q = 0.3, exact over every group composition): |∂p_W({label})| / |∂p_W(GRPO)| at "
             f"G = {g_dec} (DAPO's group size) = {_fmt(toy_ratio.value)} against {_delta_text(LENGTH_DELTA)} → "
             f"{_outcome_word(o_toy)}; by G (a finite-sample effect of the ratio normaliser, about 1/G): {trend}"]
    if name == "dapo" and lb.get("batch_dp_W"):
        b = lb["batch_dp_W"]["dapo"]
        texts.append("with one normaliser shared by B groups of G = 2 (batch token-mean): ∂p_W = "
                     + ", ".join(f"B={k}: {_fmt(v)}" for k, v in b.items()))
    cos = lb["larger_cos"]
    if larger_label and larger_label in cos:
        grpo_cos = cos["GRPO (seq-mean-token-mean, z-score)"].value
        rel = ratio(cos[larger_label], grpo_cos)
        o_l = within(rel, LENGTH_DELTA)
        setups.append(("larger Markov policy (Monte Carlo)", rel, o_l))
        n = lb.get("n_replicas")
        texts.append(f"larger Markov policy (T = 6, V = 4, length independent of content): cos relative to GRPO's "
                     f"= {rel} → {_outcome_word(o_l)}"
                     + (f"; {power_text(rel, LENGTH_DELTA, n, samples='replicas')}" if n
                        else f"; smallest detectable {_fmt(detectable(rel))}"))
    outcome, how = _resolving(setups, LENGTH_DELTA)
    return Part(text, outcome, "; ".join(texts) + f"; {how}")


def difficulty_part(df: dict[str, Any], label: str, setup: str, text: str, *, dynamic: bool) -> Part:
    """"No difficulty bias" for the estimator ``label`` of the difficulty experiment: holds when the
    spread max w / min w − 1 of its effective weight over the pass-rate grid (with or without
    dynamic sampling, ``sims.experiments.difficulty.effective_weight``) is within DIFFICULTY_DELTA,
    fails beyond. The evidence names the setup, the effect size and δ."""
    spread = df["weight_spread_dynamic" if dynamic else "weight_spread"][label]
    ws = df["weights"][label]
    return Part(text, within(Estimate.exact(spread - 1), DIFFICULTY_DELTA),
                f"{setup} (K = {df['group_size']}, {len(ws)} pass rates {min(ws, key=float)}–{max(ws, key=float)}, exact"
                + (f", dynamic sampling: all-equal groups dropped and the batch refilled, every prompt's weight × "
                   f"1/P̄(kept) = {_fmt(df['refill_factor'])}" if dynamic else "")
                + f"): weight spread max w / min w = {_fmt(spread)} against 1 + δ = {_fmt(1 + DIFFICULTY_DELTA.current)}")


def c08(r):
    df = r["difficulty"].summary
    lab = "z-score (GRPO, sample std)"
    w = df["weights"][lab]
    mid = min(w, key=lambda p: abs(float(p) - 0.5))
    ext = max(w.values())
    eq = df["all_equal_groups"]
    return [
        Part("std normalisation over-weights low-variance (near 0 or 1 pass rate) prompts",
             beyond(Estimate.exact(ext / w[mid] - 1), DIFFICULTY_DELTA),
             f"effective weight (exact, K = {df['group_size']}, sample std): p = {mid}: {_fmt(w[mid])}, largest "
             f"{_fmt(ext)} at the extremes, ratio {_fmt(ext / w[mid])} against 1 + δ = "
             f"{_fmt(1 + DIFFICULTY_DELTA.current)} (spread over p {_fmt(df['weight_spread'][lab])}×)"),
        Part("the gradient explodes when std = 0", df["all_equal_group_advantages_max_abs"] > 1e6,
             f"an all-equal group gets advantages exactly {_fmt(df['all_equal_group_advantages_max_abs'])} (0/(0+ε)); "
             "so does an all-equal non-binary group: "
             + ", ".join(f"{k} rewards {_fmt(v['reward'])}: |A| ≤ {_fmt(v['max_abs_eps'])} with ε = 1e-6"
                         for k, v in eq.items())
             + "; with ε = 0 the advantage is 0/0 and the code refuses it: "
             + ", ".join(f"{k}: {v['eps0']}" for k, v in eq.items())
             + f"; |A| ≤ (K−1)/√K = {_fmt(df['max_abs_z_score_bound'])} always (largest seen "
             f"{_fmt(df['max_abs_z_score_advantage'])})"),
    ]


def c09(r):
    df = r["difficulty"].summary
    lab = "z-score (GRPO, sample std)"
    part = difficulty_part(df, lab, "GRPO z-score (sample std)", "dropping all-equal groups removes the difficulty bias",
                           dynamic=True)
    return [Part(part.text, part.holds, part.evidence + f"; without dynamic sampling {_fmt(df['weight_spread'][lab])}: "
                 "dropped groups carry zero advantage, so per sampled prompt nothing changes but the common refill factor")]


def c10(r):
    sv = r["survival"].summary
    ppo = sv["PPO clip (0.2)"]["A>0"]
    reach = sv["clip_reach"]
    lo = ppo["zero_ratio_range"][0] if ppo["zero_ratio_range"] else float("nan")
    # "stops learning": the log-probability of a clipped, positively rewarded token rises by less than δ
    bandit_rise = Estimate.exact(math.log(reach["after_batches"]["0.2"] / reach["one_batch"]["0.2"]))
    setups = [("one-token bandit (exact)", bandit_rise, beyond(bandit_rise, LEARNING_DELTA))]
    texts = [f"bandit from π_old = {reach['p0']}: one batch stalls at {_fmt(reach['one_batch']['0.2'])} (= π_old(1+ε)), "
             f"but after {reach['n_batches']} batches (π_old refreshed) π = {_fmt(reach['after_batches']['0.2'])}: "
             f"log-rise beyond the one-batch cap {_fmt(bandit_rise.value)}"]
    lm = r.get("lm_dynamics")
    for task, rows in (lm.summary.get("c10", {}) if lm is not None else {}).items():
        clipped = {k: v for k, v in rows.items() if k in ("grpo", "dapo")}
        for name, row in clipped.items():
            rise = row["answer_logp_rise"]
            setups.append((f"tiny transformer, {task}, {name}", rise, beyond(rise, LEARNING_DELTA)))
            texts.append(f"tiny transformer ({task}, {name}'s clip, {lm.summary['steps']} batches): log π(answer) of the "
                         f"rare prompts rises by {rise} nats; rarest answer token {_fmt(row['rare_token_prob_initial'])} → "
                         f"{row['rare_token_prob_final']}")
    # the claim is refuted when any clipped setup keeps learning beyond δ
    learns = [o for _, _, o in setups]
    stops = False if any(o is True for o in learns) else (True if all(o is False for o in learns) else None)
    return [
        Part("for A > 0 and ρ > 1+ε the clipped term's gradient is exactly 0",
             bool(ppo["zero_ratio_range"]) and abs(lo - 1.2) < 0.05 and ppo["symbolic_zero_cells"] == ["(6/5, oo)"],
             f"identity: torch weight 0 for ρ ∈ [{_fmt(lo)}, "
             f"{_fmt(ppo['zero_ratio_range'][1]) if ppo['zero_ratio_range'] else '-'}], "
             f"symbolic zero cell {_list(ppo['symbolic_zero_cells']) or 'none'}"),
        Part("this stops the model from learning such tokens", stops,
             "rise of log π of clipped, positively rewarded tokens against " + _delta_text(LEARNING_DELTA) + ": "
             + "; ".join(texts) + ": the clip caps the step per batch; refreshing π_old lets the token go on learning"),
    ]


def c11(r):
    sv, bv = r["survival"].summary, r["bias_variance"].summary
    c = sv["CISPO (cap 1.28)"]
    cap = 1 + c["config"]["eps_high"]
    cispo_label = next(k for k in bv["bias_at_t_max"] if k.startswith("CISPO"))
    bias = bv["bias_at_t_max"][cispo_label]
    return [
        Part("the gradient is clip(ρ)·A·∇log π", c["max_torch_symbolic_diff"] < 1e-9,
             f"identity: torch vs derived weight, max difference {_fmt(c['max_torch_symbolic_diff'])}"),
        Part("the gradient is never killed", c["A>0"]["zero_fraction"] == 0 and c["A<0"]["zero_fraction"] == 0
             and not c["A>0"]["symbolic_zero_cells"] and not c["A<0"]["symbolic_zero_cells"],
             "identity: no zero weight on the grid ρ ∈ [0.01, 100], no zero cell symbolically"),
        Part("the gradient is bounded", c["A>0"]["symbolic_bounded"] and c["A<0"]["symbolic_bounded"]
             and max(c["A>0"]["max_abs_weight"], c["A<0"]["max_abs_weight"]) <= cap + 1e-12,
             f"symbolic: |w| ≤ {cap:g}·|A| (largest seen {_fmt(max(c['A>0']['max_abs_weight'], c['A<0']['max_abs_weight']))})"),
        Part("it is a (stable) REINFORCE, i.e. still estimates the policy gradient",
             within(Estimate.exact(bias), BIAS_DELTA),
             f"exact enumeration (tabular policy, per-token KL {bv['kl']}): relative bias at T = {bv['t_max']}: "
             f"{_fmt(bias)} against {_delta_text(BIAS_DELTA)} (per-token ratio with a sequence advantage, clipped, by T: "
             f"{_by_t(bv['horizons'], bv['bias_by_T'][cispo_label])})"),
    ]


def _registered_sgs() -> tuple[float, float]:
    from sims.registry import get_objective

    cfg = get_objective("sgs_cispo").config_cls()
    return float(cfg.k), float(cfg.tau)


def c12(r):
    sg = r["sgs"].summary
    k0, tau0 = _registered_sgs()
    grid = sg["S_at_P0_by_k_tau"]
    key = next((k for k in grid if k == f"k={k0:g}, tau={tau0:g}"), None)
    shortfall = None if key is None else 1 - grid[key]
    fully = None if shortfall is None else within(Estimate.exact(shortfall), FULL_DELTA)
    failing = [k for k, v in grid.items() if within(Estimate.exact(1 - v), FULL_DELTA) is not True]
    spreads = {k: v for k, v in sg["spread_by_mode_and_length"].items() if k.startswith("sequence")}
    lengths = sorted(int(k.split("L=")[1]) for k in spreads)
    at = next((L for L in lengths if L >= REALISTIC_LENGTH), lengths[-1])
    seq_spread = spreads[f"sequence, L={at}"]
    pol = [p for p in sg.get("policy_spread", []) if p["p_mode"] == "sequence" and p["T"] >= REALISTIC_LENGTH]
    extra = sg["stop_gradient"]
    return [
        Part("negative samples are not suppressed (S = 1)", sg["negative_scale_is_one"],
             "identity: torch S for A < 0 is exactly 1 on the grid"),
        Part("S falls smoothly as the confidence P grows", sg["decreasing_in_P"] and sg["torch_symbolic_max_diff"] < 1e-9,
             f"monotone on every (k, τ) curve; torch vs symbolic {_fmt(sg['torch_symbolic_max_diff'])}"),
        Part("low-confidence positive samples learn fully", fully,
             f"at the registered k = {k0:g}, τ = {tau0:g}: 1 − S(P → 0) = 1 − (1 − σ(−kτ)) = "
             + (f"{_fmt(shortfall)}" if shortfall is not None else "not measured")
             + f" against {_delta_text(FULL_DELTA)}; sensitivity over the (k, τ) grid, S(P → 0): "
             + ", ".join(f"{k}: {_fmt(v)}" for k, v in grid.items())
             + (f"; it stops holding at {', '.join(failing)}" if failing else "; it holds on the whole grid")),
        Part("S discriminates by confidence at realistic lengths (sequence P)",
             _all_hold([beyond(Estimate.exact(seq_spread), INERT_DELTA)] + [beyond(p["spread"], INERT_DELTA) for p in pol]),
             f"5–95% spread of S with P = π(o) over sampled sequences at L = {at} "
             + (f"(the first length ≥ {REALISTIC_LENGTH} tokens)" if at >= REALISTIC_LENGTH
                else f"(the longest measured; no length ≥ {REALISTIC_LENGTH} was run)") + ": "
             f"{_fmt(seq_spread)} against {_delta_text(INERT_DELTA)}; by L: "
             + ", ".join(f"{k.split(', ')[1]}: {_fmt(v)}" for k, v in spreads.items())
             + "".join(f"; sampled responses of the long {p['setup']} policy, T = {p['T']}: spread {p['spread']}"
                       for p in pol)
             + "; π(o) of a long response is astronomically small, so σ(k(P − τ)) is constant"),
        Part("the suppression acts as described whether or not S is under a stop-gradient",
             not any(e["symbolic_extra_term_positive"] for e in extra.values()),
             "symbolic: without the stop-gradient the extra gradient term is positive for A > 0 (pushes P up) in "
             "p_modes: " + ", ".join(m for m, e in extra.items() if e["symbolic_extra_term_positive"])),
    ]


DYNAMICS = (("dynamics", "tabular policy"), ("lm_dynamics", "tiny transformer LM"))
MULTI_ANSWER_ENTROPY = 0.1  # a task whose uniform-over-correct entropy is below this (nats/token) has ~one answer


def _dynamics_setups(r: dict[str, Result]):
    """Every (setup, task, optimiser) of the training-dynamics experiments with the paired
    comparisons SGS − ablated CISPO (same advantage, aggregation and clip; rule 3): yields dicts
    with ``name``, ``comparisons`` {variant: {metric: Estimate}}, ``initial``, ``h_uc``, ``final``
    {variant: {metric: Estimate}}, ``n_seeds``."""
    for exp, family in DYNAMICS:
        if exp not in r:
            continue
        dy = r[exp].summary
        for task, by_opt in dy.get("comparisons", {}).items():
            for opt, comps in by_opt.items():
                by_task = dy["final"][task]
                final = by_task[opt] if opt in by_task else by_task  # the tabular testbed trains with Adam only
                yield {"name": f"{family}, {task}, {opt}", "comparisons": comps, "initial": dy["initial"][task],
                       "h_uc": dy.get("uniform_correct_entropy", {}).get(task), "final": final,
                       "n_seeds": dy.get("n_seeds"), "steps": dy.get("steps")}


def _sgs_variants(comps: dict[str, Any]) -> dict[str, Any]:
    """The SGS variants as proposed (with the stop-gradient; not the (k, τ) grid, not a bonus)."""
    return {k: v for k, v in comps.items() if k.startswith("sgs") and "no sg" not in k and "k=" not in k
            and "bonus" not in k}


def _across(setups: list[tuple[str, bool | None, bool]]) -> tuple[bool | None, str]:
    """Rule 2 over setups (name, outcome, resolves δ): the resolving, decided setups decide; if they
    disagree the part depends on the setup (undecided); if none resolves δ it is undecided."""
    decisive = [(n, o) for n, o, res in setups if res and o is not None]
    if not decisive:
        return None, "no setup both resolves δ and decides"
    if len({o for _, o in decisive}) > 1:
        return None, "the setups disagree: " + ", ".join(f"{n}: {_outcome_word(o)}" for n, o in decisive)
    return decisive[0][1], "decided by " + "; ".join(n for n, _ in decisive)


def _paired_part(r, metric: str, sign: float, delta_of, what: str) -> tuple[bool | None, str]:
    """A comparison SGS vs ablated CISPO on ``metric`` (oriented by ``sign`` so the claimed
    direction is positive) in every dynamics setup: Holm over the SGS variants of a setup, δ from
    ``delta_of(setup)``, power from the interval; combined over setups by ``_across``."""
    rows, texts = [], []
    for st in _dynamics_setups(r):
        variants = {k: oriented(v[metric], sign) for k, v in _sgs_variants(st["comparisons"]).items()
                    if v.get(metric) is not None and math.isfinite(v[metric].value)}
        d = delta_of(st)
        if not variants or d is None:
            continue
        outcome, adj = any_beyond_holm(variants, d)
        widest = max(variants.values(), key=lambda e: e.high - e.low)
        resolves = detectable(widest) <= d
        rows.append((st["name"], outcome, resolves))
        n = st["n_seeds"]
        texts.append(f"{st['name']} (step {st['steps']}): " + ", ".join(
            f"{k}: {v} (Holm p = {_fmt(adj[k])})" for k, v in variants.items())
            + f" against δ = {_fmt(d)} → {_outcome_word(outcome)}; "
            + (power_text(widest, d, n, samples="seeds") if n else f"smallest detectable {_fmt(detectable(widest))}"))
    if not rows:
        return None, f"no training run compared SGS with the ablated CISPO on {what}"
    outcome, how = _across(rows)
    return outcome, (f"paired difference of {what}, SGS − CISPO ablation (same advantage, aggregation and clip; "
                     f"95% CI over seeds, oriented so that the claim is positive): " + "; ".join(texts) + f"; {how}")


def c13(r):
    ent_o, ent_t = _paired_part(r, "eval_entropy", 1.0, lambda st: ENTROPY_DELTA.current * st["initial"]["entropy"],
                                "final entropy per token")
    over_o, over_t = _paired_part(
        r, "overlearning", -1.0,
        lambda st: (ENTROPY_DELTA.current * st["initial"]["entropy_known"]
                    if st["initial"].get("entropy_known") and math.isfinite(st["initial"]["entropy_known"]) else None),
        "the entropy drop on prompts already solved (> 90%), less is better")
    rows, texts = [], []
    for st in _dynamics_setups(r):
        h_uc = st["h_uc"]
        sgs = {k: v for k, v in st["final"].items() if k in _sgs_variants(st["comparisons"]) and v}
        if h_uc is None or h_uc < MULTI_ANSWER_ENTROPY or not sgs:
            continue
        name, best = max(((k, v.get("eval_entropy") or v["entropy"]) for k, v in sgs.items()), key=lambda kv: kv[1].value)
        kept = Estimate(best.value / h_uc - 1, best.low / h_uc - 1, best.high / h_uc - 1)
        o = beyond(kept, -COLLAPSE_DELTA.current)
        rows.append((st["name"], o, detectable(kept) <= COLLAPSE_DELTA.current))
        texts.append(f"{st['name']}: {name} ends at {best} nats/token, H/H_uc − 1 = {kept} with H_uc = {_fmt(h_uc)} "
                     f"→ {_outcome_word(o)}")
    coll_o, how = _across(rows) if rows else (None, "no multi-answer task was trained")
    coll_t = (f"final entropy of the best SGS variant relative to the uniform-over-correct-answers entropy H_uc "
              f"(rule 9), against −δ = {-COLLAPSE_DELTA.current:g} ({COLLAPSE_DELTA.name}): " + "; ".join(texts)
              + f"; {how}")
    return [
        Part("SGS keeps entropy higher than CISPO", ent_o, ent_t, full_scale_only=True),
        Part("SGS prevents entropy collapse", coll_o, coll_t, full_scale_only=True),
        Part("SGS avoids over-learning what the model already knows", over_o, over_t, full_scale_only=True),
    ]


def c14(r):
    df = r["difficulty"].summary
    mean_w = df["weights"]["mean-only (Dr.GRPO)"]
    k = df["group_size"]
    const = max(mean_w.values()) - min(mean_w.values()) < EXACT_TOL
    return [
        Part("the leave-one-out baseline is unbiased", max(abs(w - 1) for w in df["weights"]["RLOO"].values()) < EXACT_TOL,
             "identity, exact: RLOO's per-prompt weight is exactly 1 at every p"),
        Part("it gives a more accurate signal than the group mean (beyond a constant scale)", not const,
             f"identity, exact: the group-mean advantage is exactly (K−1)/K = {(k - 1) / k:.4g} × RLOO's at every p "
             f"(weights {_fmt(min(mean_w.values()))}–{_fmt(max(mean_w.values()))}): the same direction, a "
             "learning-rate change"),
    ]


def c15(r, decided: dict[str, ClaimVerdict]):
    df, lb = r["difficulty"].summary, r["length_bias"].summary
    c11p = {p.text: p for p in decided["C11"].parts}
    c12p = {p.text: p for p in decided["C12"].parts}
    c13p = decided["C13"].parts
    mode = lb.get("sgs_p_mode", "sequence")
    length = length_part(lb, "sgs_cispo", f"SGS-CISPO (token-mean, RLOO, P = {mode})", None,
                         "no length bias (token-level normalisation)")
    modes = lb.get("sgs_dp_W_by_mode_and_G", {})
    g_dec = lb.get("decision_G")
    grpo = lb["toy_dp_W_by_G"]["grpo"]
    mode_text = ""
    if g_dec and modes:
        mode_text = ("; every way S sees the length (the confidence P of each p_mode), same ratio at G = "
                     f"{g_dec}: " + ", ".join(f"{m}: {_fmt(abs(v[g_dec]) / abs(grpo[g_dec]))}" for m, v in modes.items()))
    explore = _all_hold([p.holds for p in c13p] + [c12p["S discriminates by confidence at realistic lengths (sequence P)"].holds])
    return [
        Part("gradient stability (bounded, never-zero weights)", _all_hold([c11p["the gradient is never killed"].holds,
                                                                         c11p["the gradient is bounded"].holds]),
             "from C11's parts \"never killed\" and \"bounded\""),
        Part(length.text, length.holds, "SGS-CISPO's own composition: " + length.evidence + mode_text),
        difficulty_part(df, "RLOO", "RLOO (leave-one-out) advantage",
                        "no difficulty bias (leave-one-out advantage with dynamic sampling)", dynamic=True),
        Part("a principled exploration–exploitation balance (SGS)", explore,
             "from C13's parts (" + "; ".join(f"{p.text}: {_outcome_word(p.holds)}" for p in c13p)
             + ") and C12's \"S discriminates by confidence at realistic lengths\": "
             + _outcome_word(c12p["S discriminates by confidence at realistic lengths (sequence P)"].holds),
             full_scale_only=True),
    ]


CLAIMS: dict[str, tuple[str, Callable, tuple[str, ...]]] = {
    "C01": ("REINFORCE is unbiased; a baseline keeps it unbiased and lowers variance", c01, ("difficulty",)),
    "C02": ("The sequence-ratio off-policy gradient is unbiased", c02, ("bias_variance",)),
    "C03": ("The sequence ratio's variance grows exponentially in T (vanishing/exploding weights)", c03, ("bias_variance",)),
    "C04": ("Token ratio × sequence advantage: inconsistent but practically stable", c04, ("bias_variance",)),
    "C05": ("GSPO's geometric mean turns exponential variance into 1/T", c05, ("gspo_weight", "bias_variance")),
    "C06": ("GSPO's geometric mean systematically underestimates the importance weight (AM-GM)", c06, ("gspo_weight",)),
    "C07": ("GRPO's 1/|o| causes length bias; token-level normalisation fixes it", c07, ("length_bias",)),
    "C08": ("Group std normalisation over-weights easy/hard groups; explodes when std = 0", c08, ("difficulty",)),
    "C09": ("Dynamic sampling removes the difficulty bias", c09, ("difficulty",)),
    "C10": ("PPO's clip zeroes the gradient of breakthrough tokens and stops their learning", c10,
            ("survival", "lm_dynamics")),
    "C11": ("CISPO's gradient is never killed, only bounded: a stable REINFORCE", c11, ("survival", "bias_variance")),
    "C12": ("SGS: no suppression for A ≤ 0; smooth suppression as confidence grows", c12, ("sgs",)),
    "C13": ("SGS prevents entropy collapse and avoids over-learning what the model already knows", c13,
            ("dynamics", "lm_dynamics")),
    "C14": ("A leave-one-out baseline is more accurate than the group mean", c14, ("difficulty",)),
    "C15": ("SGS-CISPO unifies the fixes (stability, no length/difficulty bias, exploration)", c15, ("difficulty",)),
}


SCALES = ("tiny", "quick", "full")


def _at_scale(parts: list[Part], scale: str) -> list[Part]:
    """Rule 11: below full scale a ``full_scale_only`` part is undecided; its evidence keeps what
    the small sweep showed. The ``large`` sweep (a superset of the full one) decides it too."""
    if scale in ("full", "large"):
        return parts
    return [Part(p.text, None, f"decided only at full scale ({scale} scale showed: {_outcome_word(p.holds)}; "
                 f"{p.evidence})", True) if p.full_scale_only else p for p in parts]


def decide(results: dict[str, Result], scale: str = "full") -> list[ClaimVerdict]:
    """Every claim's verdict from the experiments' ``results`` (keyed by experiment name), at the
    sweep ``scale`` they ran at (rule 11)."""
    if scale not in SCALES:
        raise ValueError(f"scale={scale!r} is invalid; allowed: {', '.join(SCALES)}")
    decided: dict[str, ClaimVerdict] = {}
    for cid, (claim, fn, figs) in CLAIMS.items():
        parts = _at_scale(fn(results, decided) if cid == "C15" else fn(results), scale)
        v = verdict(parts)
        decided[cid] = ClaimVerdict(cid, claim, v, _summary(v, parts), _explain(parts), tuple(parts),
                                    tuple(f"{f}.png" for f in figs))
    return list(decided.values())


def _half(obj: Any, i: int) -> tuple[Any, int]:
    """``obj`` with every ``Estimate`` that has ``halves`` replaced by its half ``i``; returns the
    copy and how many estimates were replaced."""
    if isinstance(obj, Estimate):
        return (obj.halves[i], 1) if obj.halves is not None else (obj, 0)
    if isinstance(obj, dict):
        out, n = {}, 0
        for k, v in obj.items():
            out[k], m = _half(v, i)
            n += m
        return out, n
    if isinstance(obj, (list, tuple)) and not isinstance(obj, str):
        items = [_half(v, i) for v in obj]
        return type(obj)(v for v, _ in items) if isinstance(obj, tuple) else [v for v, _ in items], sum(m for _, m in items)
    return obj, 0


def half_results(results: dict[str, Result], i: int) -> tuple[dict[str, Result], int]:
    """The results as measured on half ``i`` (0 or 1) of their samples and seeds, where the
    estimates carry halves (``Estimate.halves``); returns them and how many estimates changed."""
    import dataclasses as _dc

    out, total = {}, 0
    for name, res in results.items():
        summary, n = _half(res.summary, i)
        out[name] = _dc.replace(res, summary=summary)
        total += n
    return out, total


def robustness(results: dict[str, Result], scale: str = "full") -> dict[str, dict[str, Any]]:
    """Rule 12: every claim re-decided with all δ halved and doubled, and on each independent half
    of its Monte Carlo samples and seeds (no second run). Per claim: ``status`` (``stable`` when no
    re-decision changes the verdict, else ``fragile``), ``verdicts`` (perturbation → verdict) and
    ``flips`` (the perturbations that change it). Halves apply to estimates that carry them; the
    count is in ``halved_estimates``."""
    base = {c.id: c.verdict for c in decide(results, scale)}
    runs: dict[str, dict[str, str]] = {}
    for label, factor in (("δ × 0.5", 0.5), ("δ × 2", 2.0)):
        with delta_scale(factor):
            runs[label] = {c.id: c.verdict for c in decide(results, scale)}
    halved = 0
    for i in (0, 1):
        res_i, n = half_results(results, i)
        halved = max(halved, n)
        runs[f"half {i + 1} of the samples"] = {c.id: c.verdict for c in decide(res_i, scale)}
    out = {}
    for cid, v in base.items():
        verdicts = {label: run[cid] for label, run in runs.items()}
        flips = [f"{label} → {w}" for label, w in verdicts.items() if w != v]
        out[cid] = {"status": "fragile" if flips else "stable", "verdict": v, "verdicts": verdicts, "flips": flips,
                    "halved_estimates": halved}
    return out


def ledger(results: dict[str, Result], scale: str = "full") -> tuple[list[ClaimVerdict], dict[str, dict[str, Any]]]:
    """The decided claims and their robustness (rule 12)."""
    return decide(results, scale), robustness(results, scale)


def ledger_rows(claims: list[ClaimVerdict], robust: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The ledger's JSON rows (``claims.json``, ``pgverify claims --json``): each claim's
    ``as_dict`` with its ``robustness`` record."""
    return [c.as_dict() | {"robustness": robust[c.id]} for c in claims]


def method_markdown() -> str:
    """The report's "Method" section: the rules of the module doc and every minimal effect δ with
    its reason (generated from this module, never written twice)."""
    doc = (__doc__ or "").split("The rules every part follows:", 1)[1].strip()
    rows = ["| δ | value | unit | why this value |", "|---|---|---|---|"]
    rows += [f"| {d.name} | {d.value:.4g} | {d.unit} | {d.reason} |" for d in DELTAS]
    return ("Every part of every claim is decided by these rules (sims/claims.py); the outcome is computed at run "
            "time from the experiments' evidence.\n\n" + doc + "\n\nThe minimal effects:\n\n" + "\n".join(rows))


def published(results: dict[str, Result]) -> list[dict[str, Any]]:
    """Every published result reproduced by the experiments, as dicts."""
    return [p.as_dict() | {"experiment": name} for name, res in results.items() for p in res.published]
