"""The claims ledger: a verdict for each of the seed's claims C01–C15 (shared/CLAIMS.md), computed
from the experiments' results at run time.

Each claim is split into the parts it literally asserts. Every part is decided by a comparison
against a threshold stated here (a bool), or left undecided (``None``) when the evidence cannot
separate the cases (an interval that covers 0).

The verdict rule (``verdict_of``, the only place it is written), over a claim's part outcomes:

* every part holds → ``holds``;
* every part fails → ``fails``;
* no part is decided (every part undecided) → ``inconclusive``;
* otherwise → ``partly``: the parts do not all agree and at least one is decided — some hold and
  some fail, or some are decided and some undecided. A ``partly`` summary names the parts that
  fail and the parts that are undecided (the others hold; "none holds" when no part holds).

No verdict is written by hand: feed an experiment other evidence and the verdict moves.

Effect sizes. "No difficulty bias" is decided by the spread of the effective per-prompt weight
w(p) over the pass-rate grid (``sims.experiments.difficulty.effective_weight`` defines w once, for
every sampling scheme): max w / min w ≤ 1 + ``DIFFICULTY_DELTA`` holds, beyond it fails (see
``DIFFICULTY_DELTA`` for the reason of its value).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from sims.experiments._common import Estimate, Result

EXACT_TOL = 1e-9  # a relative bias (exact engine) below this is zero
BIAS_TOL = 1e-3  # a relative bias above this is a real bias
DIFFICULTY_DELTA = 0.10
"""The minimal difficulty bias: two prompts whose effective weights w(p) differ by less than 10% get
learning rates within 10% of each other, a difference below what learning-rate tuning resolves
(learning rates are tuned on grids with steps of 2× or more, and Adam-style optimisers rescale the
step anyway); the spreads the claims are about (GRPO's 1/√(p(1−p))) are several-fold. So
max w / min w ≤ 1 + δ is "no difficulty bias", beyond it a bias."""
SLOPE_RANGE = (-1.2, -0.8)  # log Var(G) against log T: "falls like 1/T"
FULL_LEARNING = 0.99  # S for a zero-confidence positive sample: "learns fully"
INERT_SPREAD = 1e-3  # 5–95% spread of S below this: SGS does not discriminate
NO_COLLAPSE = 0.9  # final entropy / initial entropy at or above this: no collapse

VERDICTS = ("holds", "partly", "fails", "inconclusive")


@dataclass(frozen=True)
class Part:
    """One literal assertion of a claim: ``holds`` is True, False or None (undecided)."""

    text: str
    holds: bool | None
    evidence: str


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


def c01(r: dict[str, Result]) -> list[Part]:
    bv, df = r["bias_variance"].summary, r["difficulty"].summary
    rloo = df["weights"]["RLOO"]
    ps = df["mc_pass_rates"]
    less = [_sig_below(df["mc_variance"][f"RLOO, p={p:g}"], df["mc_variance"][f"no baseline (A = R), p={p:g}"]) for p in ps]
    lower = True if all(x is True for x in less) else (False if any(x is False for x in less) else None)
    return [
        Part("the score-function gradient E[R ∇log P] equals ∇J", bv["on_policy_bias_max"] < EXACT_TOL,
             f"exact enumeration, largest relative error on-policy {_fmt(bv['on_policy_bias_max'])} (T ≤ {bv['t_max']})"),
        Part("a baseline independent of the sample (leave-one-out) keeps it unbiased",
             max(abs(w - 1) for w in rloo.values()) < EXACT_TOL,
             f"RLOO's effective per-prompt weight is 1 at every pass rate (max |w − 1| = "
             f"{_fmt(max(abs(w - 1) for w in rloo.values()))}); a group mean that includes the sample scales it by (K−1)/K"),
        Part("the baseline lowers the variance", lower,
             f"variance trace of the K = {df['group_size']} group estimate, RLOO vs no baseline, rewards 0/1 (95% CI): "
             + "; ".join(f"p={p:g}: {df['mc_variance'][f'RLOO, p={p:g}']} vs "
                         f"{df['mc_variance'][f'no baseline (A = R), p={p:g}']}" for p in ps)
             + "; " + _baseline_mechanism_text(df)),
    ]


def c02(r):
    bv = r["bias_variance"].summary
    seq = bv["bias_by_T"]["sequence IS"]
    return [Part("E_old[R·A·∇log P] is unbiased off-policy", max(seq) < EXACT_TOL,
                 f"largest exact relative bias {_fmt(max(seq))} over T = {_list(bv['horizons'])}, per-token KL {bv['kl']}")]


def c03(r):
    bv = r["bias_variance"].summary
    ext = bv["extreme_fraction_by_T"]
    t_long = max(ext)
    grows = bv["ratio_var_growth"] > 0
    return [
        Part("the sequence ratio's variance grows exponentially in T", grows,
             f"Var R = Π(1+χ²_t) − 1: log(1 + Var) grows by {_fmt(bv['ratio_var_growth'])} per token "
             f"(linear in T), Monte Carlo matches at short T"),
        Part("weights vanish or explode (numerical instability)", ext[t_long] > 0 if ext[t_long] > 0 else None,
             f"fraction of weights outside [1e-3, 1e3]: {', '.join(f'T={t}: {_fmt(v)}' for t, v in ext.items())}"),
    ]


def c04(r):
    bv = r["bias_variance"].summary
    tok = bv["bias_by_T"]["token IS (PPO/GRPO)"]
    stable = _sig_below(bv["var_at_t_max"]["token IS (PPO/GRPO)"], bv["var_at_t_max"]["sequence IS"])
    return [
        Part("token ratio × sequence advantage is not the sequence-level gradient off-policy", max(tok[1:]) > BIAS_TOL,
             "exact relative bias by T: " + _by_t(bv["horizons"], tok) + " (0 at T = 1 and on-policy)"),
        Part("it is practically more stable (lower variance than sequence IS)", stable,
             f"relative variance at T = {bv['t_max']}: token IS {bv['var_at_t_max']['token IS (PPO/GRPO)']} vs "
             f"sequence IS {bv['var_at_t_max']['sequence IS']}"),
    ]


def c05(r):
    gw, bv = r["gspo_weight"].summary, r["bias_variance"].summary
    slope = gw["var_g_loglog_slope"]
    lower = _sig_below(bv["var_at_t_max"]["GSPO geometric"], bv["var_at_t_max"]["sequence IS"])
    return [
        Part("Var(G) falls like 1/T", SLOPE_RANGE[0] <= slope <= SLOPE_RANGE[1],
             f"slope of log Var(G) on log T = {_fmt(slope)} (1/T is −1; T·Var(log G) constant: "
             f"{', '.join(f'T={t}: {v}' for t, v in list(gw['t_var_log_g'].items())[:3])} …)"),
        Part("its gradient estimator has lower variance than sequence IS", lower,
             f"relative variance at T = {bv['t_max']}: GSPO {bv['var_at_t_max']['GSPO geometric']} vs "
             f"sequence IS {bv['var_at_t_max']['sequence IS']}"),
    ]


def c06(r):
    gw = r["gspo_weight"].summary
    above = {t: e for t, e in gw["p_g_above_r"].items() if t >= 2}
    return [
        Part("E_old[G] ≤ 1 = E_old[R] (biased low)", gw["E[G]_max"] <= 1 + 1e-12,
             f"exact E_old[G] by T: {', '.join(f'{int(t)}: {_fmt(v)}' for t, v in gw['E[G]_by_T'].items())}; "
             f"limit exp(−KL) = {_fmt(gw['E[G]_limit'])}"),
        Part("the bias grows with the divergence between the policies", gw["gap_increasing_in_kl"],
             "1 − E[G] by per-token KL: " + ", ".join(f"{k:g}: {_fmt(v)}" for k, v in gw["gap_by_kl"].items())),
        Part("G ≤ the arithmetic mean of the token ratios (AM-GM)", gw["am_minus_g_min"] >= -1e-12,
             f"min over samples of AM − G = {_fmt(gw['am_minus_g_min'])}"),
        Part("G always underestimates the true weight R", all(e.high <= 0 for e in above.values()),
             "G = R^{1/T} exceeds R whenever R < 1: P(G > R) = " + ", ".join(f"T={t}: {e}" for t, e in above.items())),
    ]


def c07(r):
    lb = r["length_bias"].summary
    toy = lb["toy_updates"]
    cos = lb["larger_cos"]
    grpo_biased = toy["grpo"]["dp_W"] < -EXACT_TOL and toy["grpo"]["dp_C"] > EXACT_TOL
    dapo = cos["DAPO token-level (prompt-token-mean)"]
    dapo_fixed_toy = abs(toy["dapo"]["dp_W"]) < EXACT_TOL and abs(toy["dapo"]["dp_C"]) < EXACT_TOL
    return [
        Part("GRPO's 1/|o| produces a length bias with a length-independent reward", grpo_biased,
             f"Dr.GRPO toy (G = {lb['toy_G']}, exact): ∂p_W = {_fmt(toy['grpo']['dp_W'])} (wrong answers get "
             f"longer), ∂p_C = {_fmt(toy['grpo']['dp_C'])}; larger policy cos(E ĝ, ∇E|o|) = "
             f"{cos['GRPO (seq-mean-token-mean, z-score)']} (true gradient: {cos['true ∇J']})"),
        Part("token-level normalisation (DAPO's 1/Σ|o_i|) removes it", dapo_fixed_toy,
             f"DAPO on the toy (exact): ∂p_W = {_fmt(toy['dapo']['dp_W'])}, ∂p_C = {_fmt(toy['dapo']['dp_C'])}; larger "
             f"policy cos = {dapo} (Monte Carlo); only the constant normaliser (Dr.GRPO) gives exactly 0: "
             f"{_fmt(toy['drgrpo']['dp_W'])}"),
    ]


def difficulty_part(df: dict[str, Any], label: str, setup: str, text: str, *, dynamic: bool) -> Part:
    """"No difficulty bias" for the estimator ``label`` of the difficulty experiment: holds when the
    spread max w / min w of its effective weight over the pass-rate grid (with or without dynamic
    sampling, ``sims.experiments.difficulty.effective_weight``) is at most 1 + DIFFICULTY_DELTA,
    fails beyond. The evidence names the setup, the effect size and δ."""
    spread = df["weight_spread_dynamic" if dynamic else "weight_spread"][label]
    ws = df["weights"][label]
    return Part(text, spread <= 1 + DIFFICULTY_DELTA,
                f"{setup} (K = {df['group_size']}, {len(ws)} pass rates {min(ws, key=float)}–{max(ws, key=float)}"
                + (f", dynamic sampling: all-equal groups dropped and the batch refilled, every prompt's weight × "
                   f"1/P̄(kept) = {_fmt(df['refill_factor'])}" if dynamic else "")
                + f"): weight spread max w / min w = {_fmt(spread)} against 1 + δ = {_fmt(1 + DIFFICULTY_DELTA)}")


def c08(r):
    df = r["difficulty"].summary
    lab = "z-score (GRPO, sample std)"
    w = df["weights"][lab]
    mid = min(w, key=lambda p: abs(float(p) - 0.5))
    ext = max(w.values())
    eq = df["all_equal_groups"]
    return [
        Part("std normalisation over-weights low-variance (near 0 or 1 pass rate) prompts",
             ext / w[mid] > 1 + DIFFICULTY_DELTA,
             f"effective weight (K = {df['group_size']}, sample std): p = {mid}: {_fmt(w[mid])}, largest {_fmt(ext)} at "
             f"the extremes, ratio {_fmt(ext / w[mid])} against 1 + δ = {_fmt(1 + DIFFICULTY_DELTA)} (spread over p "
             f"{_fmt(df['weight_spread'][lab])}×)"),
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
    return [
        Part("for A > 0 and ρ > 1+ε the clipped term's gradient is exactly 0", bool(ppo["zero_ratio_range"]) and abs(lo - 1.2) < 0.05
             and ppo["symbolic_zero_cells"] == ["(6/5, oo)"],
             f"torch weight 0 for ρ ∈ [{_fmt(lo)}, {_fmt(ppo['zero_ratio_range'][1]) if ppo['zero_ratio_range'] else '-'}], "
             f"symbolic zero cell {_list(ppo['symbolic_zero_cells']) or 'none'}"),
        Part("this stops the model from learning such tokens", reach["after_batches"]["0.2"] <= reach["one_batch"]["0.2"] * 1.01,
             f"bandit from π_old = {reach['p0']}: one batch stalls at {_fmt(reach['one_batch']['0.2'])} (= π_old(1+ε)), "
             f"but after {reach['n_batches']} batches (π_old refreshed) π = {_fmt(reach['after_batches']['0.2'])}: the "
             "clip caps the step per batch, it does not stop learning"),
    ]


def c11(r):
    sv, bv = r["survival"].summary, r["bias_variance"].summary
    c = sv["CISPO (cap 1.28)"]
    cap = 1 + c["config"]["eps_high"]
    cispo_label = next(k for k in bv["bias_at_t_max"] if k.startswith("CISPO"))
    bias = bv["bias_at_t_max"][cispo_label]
    return [
        Part("the gradient is clip(ρ)·A·∇log π", c["max_torch_symbolic_diff"] < 1e-9,
             f"torch vs derived weight, max difference {_fmt(c['max_torch_symbolic_diff'])}"),
        Part("the gradient is never killed", c["A>0"]["zero_fraction"] == 0 and c["A<0"]["zero_fraction"] == 0
             and not c["A>0"]["symbolic_zero_cells"] and not c["A<0"]["symbolic_zero_cells"],
             "no zero weight on the grid ρ ∈ [0.01, 100], no zero cell symbolically"),
        Part("the gradient is bounded", c["A>0"]["symbolic_bounded"] and c["A<0"]["symbolic_bounded"]
             and max(c["A>0"]["max_abs_weight"], c["A<0"]["max_abs_weight"]) <= cap + 1e-12,
             f"|w| ≤ {cap:g}·|A| (largest seen {_fmt(max(c['A>0']['max_abs_weight'], c['A<0']['max_abs_weight']))})"),
        Part("it is a (stable) REINFORCE, i.e. still estimates the policy gradient", bias < BIAS_TOL,
             f"exact relative bias at T = {bv['t_max']}: {_fmt(bias)} (per-token ratio with a sequence advantage, "
             f"clipped, by T: {_by_t(bv['horizons'], bv['bias_by_T'][cispo_label])})"),
    ]


def c12(r):
    sg = r["sgs"].summary
    fully = min(sg["S_at_P0_by_k_tau"].values())
    longest = sg["longest"]
    seq_spread = sg["spread_by_mode_and_length"][f"sequence, L={longest}"]
    extra = sg["stop_gradient"]
    return [
        Part("negative samples are not suppressed (S = 1)", sg["negative_scale_is_one"], "torch S for A < 0 is exactly 1 on the grid"),
        Part("S falls smoothly as the confidence P grows", sg["decreasing_in_P"] and sg["torch_symbolic_max_diff"] < 1e-9,
             f"monotone on every (k, τ) curve; torch vs symbolic {_fmt(sg['torch_symbolic_max_diff'])}"),
        Part("low-confidence positive samples learn fully", fully >= FULL_LEARNING,
             "S(P → 0) = 1 − σ(−kτ): " + ", ".join(f"{k}: {_fmt(v)}" for k, v in sg["S_at_P0_by_k_tau"].items())),
        Part("S discriminates by confidence at realistic lengths (sequence P)", seq_spread >= INERT_SPREAD,
             f"5–95% spread of S with P = π(o): {', '.join(f'{k}: {_fmt(v)}' for k, v in sg['spread_by_mode_and_length'].items() if k.startswith('sequence'))}"),
        Part("the suppression acts as described whether or not S is under a stop-gradient",
             not any(e["symbolic_extra_term_positive"] for e in extra.values()),
             "without the stop-gradient the extra gradient term is positive for A > 0 (pushes P up) in p_modes: "
             + ", ".join(m for m, e in extra.items() if e["symbolic_extra_term_positive"])),
    ]


def c13(r):
    dy = r["dynamics"].summary
    task = "multi-solution"
    paired = dy["paired_vs_cispo"].get(task, {})
    sg_variants = {k: v for k, v in paired.items() if "no sg" not in k}
    ent = [v["entropy"] for v in sg_variants.values()]
    higher = True if any(e.low > 0 for e in ent) else (False if all(e.high < 0 for e in ent) or not ent else None)
    init = dy["initial"][task]["entropy"]
    best = max((dy["final"][task][k]["entropy"] for k in sg_variants), key=lambda e: e.value, default=None)
    kept = None if best is None else best.low >= NO_COLLAPSE * init if best.high >= NO_COLLAPSE * init else False
    return [
        Part("SGS keeps entropy higher than CISPO", higher,
             f"{task}, step {dy['steps']}, paired difference SGS-CISPO − CISPO (95% CI over seeds): "
             + "; ".join(f"{k}: {v['entropy']}" for k, v in sg_variants.items())),
        Part("SGS prevents entropy collapse", kept,
             f"initial entropy {_fmt(init)} nats/token; best SGS variant at the end {best}; threshold {NO_COLLAPSE:g}× initial"),
    ]


def c14(r):
    df = r["difficulty"].summary
    mean_w = df["weights"]["mean-only (Dr.GRPO)"]
    k = df["group_size"]
    const = max(mean_w.values()) - min(mean_w.values()) < EXACT_TOL
    return [
        Part("the leave-one-out baseline is unbiased", max(abs(w - 1) for w in df["weights"]["RLOO"].values()) < EXACT_TOL,
             "RLOO's per-prompt weight is exactly 1 at every p"),
        Part("it gives a more accurate signal than the group mean (beyond a constant scale)", not const,
             f"the group-mean advantage is exactly (K−1)/K = {(k - 1) / k:.4g} × RLOO's at every p (weights "
             f"{_fmt(min(mean_w.values()))}–{_fmt(max(mean_w.values()))}): the same direction, a learning-rate change"),
    ]


def c15(r, decided: dict[str, ClaimVerdict]):
    df = r["difficulty"].summary
    c11p = {p.text: p for p in decided["C11"].parts}
    c07p = decided["C07"].parts
    return [
        Part("gradient stability (bounded, never-zero weights)", c11p["the gradient is never killed"].holds
             and c11p["the gradient is bounded"].holds, "from C11"),
        Part("no length bias (token-level normalisation)", c07p[1].holds, "from C07: " + c07p[1].evidence),
        difficulty_part(df, "RLOO", "RLOO (leave-one-out) advantage",
                        "no difficulty bias (leave-one-out advantage with dynamic sampling)", dynamic=True),
        Part("a principled exploration–exploitation balance (SGS)", {"holds": True, "fails": False}.get(decided["C13"].verdict),
             f"from C12 ({decided['C12'].verdict}) and C13 ({decided['C13'].verdict})"),
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
    "C10": ("PPO's clip zeroes the gradient of breakthrough tokens and stops their learning", c10, ("survival",)),
    "C11": ("CISPO's gradient is never killed, only bounded: a stable REINFORCE", c11, ("survival", "bias_variance")),
    "C12": ("SGS: no suppression for A ≤ 0; smooth suppression as confidence grows", c12, ("sgs",)),
    "C13": ("SGS prevents entropy collapse", c13, ("dynamics",)),
    "C14": ("A leave-one-out baseline is more accurate than the group mean", c14, ("difficulty",)),
    "C15": ("SGS-CISPO unifies the fixes (stability, no length/difficulty bias, exploration)", c15, ("difficulty",)),
}


def decide(results: dict[str, Result]) -> list[ClaimVerdict]:
    """Every claim's verdict from the experiments' ``results`` (keyed by experiment name)."""
    decided: dict[str, ClaimVerdict] = {}
    for cid, (claim, fn, figs) in CLAIMS.items():
        parts = fn(results, decided) if cid == "C15" else fn(results)
        v = verdict(parts)
        decided[cid] = ClaimVerdict(cid, claim, v, _summary(v, parts), _explain(parts), tuple(parts),
                                    tuple(f"{f}.png" for f in figs))
    return list(decided.values())


def published(results: dict[str, Result]) -> list[dict[str, Any]]:
    """Every published result reproduced by the experiments, as dicts."""
    return [p.as_dict() | {"experiment": name} for name, res in results.items() for p in res.published]
