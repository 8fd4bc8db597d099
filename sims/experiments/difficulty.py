"""Difficulty bias: the effective per-prompt weight versus pass rate p, per advantage estimator,
with and without dynamic sampling.

The difficulty weight (``effective_weight``, defined once and used by every claim). A prompt with
binary reward r ∈ {0, 1} and success probability p is sampled with a group of K; its first
sample's contribution to the batch gradient is A_1·1[kept]·∇log π(o_1), where 1[kept] says whether
the group is trained on (always 1 without dynamic sampling; ``sims.filters.dynamic_sampling``
decides otherwise). Its expectation per *sampled* prompt is

    p·E[A_1 1[kept] | r_1 = 1]·∇log p + (1−p)·E[A_1 1[kept] | r_1 = 0]·∇log(1−p) = w(p)·∇p,

    w(p) = c · (E[A_1·1[kept] | r_1 = 1] − E[A_1·1[kept] | r_1 = 0])

(papers.md §2, §11.5). c = 1 without dynamic sampling. With it the batch is refilled: B trained
groups take B / P̄(kept) sampled groups on average, P̄(kept) the mean of P(kept | p) over the
prompt distribution (here uniform over the pass-rate grid, ``refill_factor``), so every prompt's
contribution is multiplied by the same constant c = 1/P̄(kept), never by a per-prompt
1/P(kept | p) (that would be the weight per *trained* group, which over-counts the prompts that
are rarely kept). The normalisation makes REINFORCE without a baseline (A = r) and RLOO w ≡ 1 and
the group mean (K−1)/K: an unbiased estimator has a constant w. w is exact: the registered
advantage estimator runs on every configuration (r_1, m successes among the other K − 1 samples)
and m ~ Binomial(K − 1, p). The difficulty bias is the spread of w over p (``weight_spread``). A
Monte Carlo check through ``sims.engines.montecarlo.mc_gradient`` (one-token bandit, the real
sampling path) must cover the exact w(p)·∇p at a few p.

The baseline mechanism (``baseline_mechanism``), on the same one-token bandit (logits θ, score
s = ∇_θ log π(o)): a constant baseline b gives one sample's variance trace
V(b) = E[(r − b)²‖s‖²] − ‖∇J‖², a parabola in b with vertex b* = E[r‖s‖²]/E[‖s‖²] (the
variance-optimal constant baseline), so b is worse than no baseline exactly when |b − b*| > |b*|.
For the two-token bandit with r ∈ {0, 1}: ‖s‖² = 2(1−p)² on a success and 2p² on a failure, so
b* = 1 − p, and the mean baseline b = p is worse than none iff p > 2(1 − p), i.e. p > 2/3. Coded
r ∈ {−1, 1} instead, b* = 1 − 2p and the mean 2p − 1 is never better than none (equal at p = 1/2):
whether "a baseline lowers the variance" depends on the reward coding. Every number is computed
from the bandit at run time.

Also: the zero-signal fraction f(p) = P(group dropped) against the published p^G + (1−p)^G, the
largest |A| of the standardised advantage, and the advantages of an all-equal group (does the
gradient "explode when std = 0"?), binary and non-binary, with ε > 0 and ε = 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats

from policies.tabular import TabularPolicy
from policies.tasks import TokenCount
from sims._checks import require
from sims.advantages import NoConfig, StdConfig
from sims.experiments._common import Estimate, Published, Result, check_replicas, mc_config, normal_interval
from sims.experiments._plotting import PALETTE, Figure, fmt, join, legend_outside, line_kw, new_figure, plot_to, style
from sims.filters import DynamicSamplingConfig, dynamic_sampling
from sims.engines.montecarlo import mc_gradient
from sims.objectives import ReinforceConfig
from sims.registry import get_advantage

NAME = "difficulty"
TITLE = "Difficulty bias: effective per-prompt weight versus pass rate"

ESTIMATORS = (
    ("z-score (GRPO, sample std)", "grpo", StdConfig(std="sample", eps=1e-6)),
    ("z-score (population std)", "grpo", StdConfig(std="population", eps=1e-6)),
    ("mean-only (Dr.GRPO)", "drgrpo", NoConfig()),
    ("RLOO", "rloo", NoConfig()),
    ("no baseline (A = R)", "raw", NoConfig()),
)
MC_Z = 5.0  # the Monte Carlo check's |exact − MC| <= Z·SE; two-sided false-failure rate 5.7e-7


FULL_MC_PASS_RATES = (0.05, 0.2, 0.5, 0.9)  # where C01's "the baseline lowers the variance" is decided


@dataclass(frozen=True)
class Config:
    """Attributes:
        group_size: K.
        pass_rates: the p grid.
        population_k: K of the near-population-limit run reproducing 1/√(p(1−p)).
        mc_pass_rates: p values of the Monte Carlo check.
        n_replicas: Monte Carlo groups per check.
    """

    group_size: int = 8
    pass_rates: tuple[float, ...] = tuple(np.round(np.linspace(0.02, 0.98, 49), 4))
    population_k: int = 32_768
    mc_pass_rates: tuple[float, ...] = (0.1, 0.5)
    n_replicas: int = 20_000

    def __post_init__(self) -> None:
        require(isinstance(self.group_size, int) and self.group_size >= 2, "group_size", self.group_size, "an int >= 2")
        require(all(0 < p < 1 for p in self.pass_rates) and len(self.pass_rates) >= 2, "pass_rates",
                self.pass_rates, ">= 2 values in (0, 1)")
        check_replicas(self.n_replicas)

    @classmethod
    def quick(cls) -> "Config":
        # the full sweep's decision points (its pass-rate grid and Monte Carlo pass rates), fewer samples
        return cls(population_k=32_768, mc_pass_rates=FULL_MC_PASS_RATES, n_replicas=4_000)

    @classmethod
    def full(cls) -> "Config":
        return cls(population_k=65_536, mc_pass_rates=FULL_MC_PASS_RATES, n_replicas=100_000)

    @classmethod
    def tiny(cls) -> "Config":
        return cls(group_size=8, pass_rates=(0.1, 0.5), population_k=64, mc_pass_rates=(0.5,), n_replicas=200)


def decision_points(config: Config) -> dict[str, Any]:
    """Where this experiment's evidence decides the ledger's parts (rule 11: ``quick`` and ``full``
    must give the same)."""
    return {"group_size": config.group_size, "pass_rates": tuple(config.pass_rates),
            "mc_pass_rates": tuple(config.mc_pass_rates)}


WINDOW_PMF = 1e-24  # success counts whose binomial probability is below this are left out (< K·1e-24 in all)
CHUNK_ROWS = 256  # groups per call of the advantage estimator (memory: rows × K floats)


def success_window(k: int, p: float) -> np.ndarray:
    """The success counts m among the other K − 1 samples that carry binomial mass: those with
    P(m) ≥ ``WINDOW_PMF`` (the pmf is unimodal, so they form one range and the rest sums to less
    than K·WINDOW_PMF, negligible in float64). A near-population group of 32768 needs only
    O(√K) configurations."""
    m = np.arange(k)
    return m[stats.binom.logpmf(m, k - 1, p) >= math.log(WINDOW_PMF)]


def conditional_advantages(advantage: str, config: Any, k: int, ms=None) -> np.ndarray:
    """A_1 for every (r_1, m): array [2, len(ms)] (m = successes among the other K − 1 samples,
    all 0..K−1 by default), from the registered estimator, plus whether dynamic sampling keeps
    that group: [2, 2, len(ms)]."""
    ms = np.arange(k) if ms is None else np.asarray(ms)
    adv, keep = np.zeros((2, len(ms))), np.zeros((2, len(ms)))
    for r1 in (0, 1):
        for start in range(0, len(ms), CHUNK_ROWS):
            chunk = ms[start:start + CHUNK_ROWS]
            rewards = (torch.arange(k - 1, dtype=torch.float64)[None] < torch.as_tensor(chunk)[:, None]).to(torch.float64)
            rewards = torch.cat([torch.full((len(chunk), 1), float(r1), dtype=torch.float64), rewards], 1)
            adv[r1, start:start + len(chunk)] = get_advantage(advantage).fn(rewards, config=config)[:, 0].numpy()
            keep[r1, start:start + len(chunk)] = dynamic_sampling(rewards, config=DynamicSamplingConfig()).keep.numpy()
    return np.stack([adv, keep])


def effective_weight(advantage: str, config: Any, k: int, p: float, *, dynamic: bool, refill: float = 1.0) -> float:
    """w(p) = c·(E[A_1·1[kept] | r_1 = 1] − E[A_1·1[kept] | r_1 = 0]) of the module doc: the
    expected contribution per sampled prompt to the batch gradient, over ∇p. Without dynamic
    sampling 1[kept] ≡ 1 and c = 1; with it c = ``refill`` (pass ``refill_factor``: 1/P̄(kept),
    one constant for every prompt). m ~ Binomial(K − 1, p) over ``success_window``."""
    ms = success_window(k, p)
    adv, keep = conditional_advantages(advantage, config, k, ms)
    pm = stats.binom.pmf(ms, k - 1, p)
    if not dynamic:
        return float(pm @ adv[1] - pm @ adv[0])
    return float(refill * (pm @ (adv[1] * keep[1]) - pm @ (adv[0] * keep[0])))


def refill_factor(k: int, pass_rates) -> float:
    """c = 1/P̄(kept): dynamic sampling refills the batch, so a batch of B trained groups takes
    B/P̄(kept) sampled groups, P̄(kept) the mean over the prompt distribution (uniform over
    ``pass_rates``) of P(kept | p)."""
    return 1.0 / float(np.mean([1.0 - dropped_fraction(k, p) for p in pass_rates]))


def weight_spread(weights) -> float:
    """The difficulty bias as an effect size: max w / min w over the pass-rate grid (1 = no bias);
    infinite when some weight is ≤ 0 (a prompt pushed the wrong way or not at all)."""
    w = np.asarray(list(weights), dtype=np.float64)
    return float(w.max() / w.min()) if w.min() > 0 else math.inf


def baseline_mechanism(p: float, rewards: tuple[float, float] = (1.0, 0.0)) -> dict[str, float]:
    """The one-token bandit at pass rate p (``_bandit``) with rewards (success, failure): b* =
    E[r‖s‖²]/E[‖s‖²], the one-sample variance trace V(b) = E[(r−b)²‖s‖²] − ‖∇J‖² for no baseline
    (b = 0), the mean baseline (b = E r) and b*, and whether the mean is worse than none. Exact
    (two outcomes, scores by autograd)."""
    logits = _bandit(p).logits.clone().requires_grad_(True)
    logp = torch.log_softmax(logits[0], -1)
    probs = logp.exp().detach()
    scores = torch.stack([torch.autograd.grad(logp[o], logits, retain_graph=True)[0].reshape(-1) for o in (0, 1)])
    sq = (scores * scores).sum(-1)
    r = torch.tensor(rewards, dtype=torch.float64)
    grad = (probs[:, None] * r[:, None] * scores).sum(0)
    b_star = float((probs * r * sq).sum() / (probs * sq).sum())
    mean = float((probs * r).sum())

    def var(b: float) -> float:
        return float((probs * (r - b) ** 2 * sq).sum() - grad @ grad)

    return {"p": p, "b_star": b_star, "mean": mean, "var_none": var(0.0), "var_mean": var(mean),
            "var_b_star": var(b_star), "mean_worse_than_none": var(mean) > var(0.0)}


def mean_baseline_threshold(rewards: tuple[float, float] = (1.0, 0.0), tol: float = 1e-12) -> float | None:
    """The pass rate above which the mean baseline is worse than none on the bandit (bisection of
    V(mean) − V(0) over p ∈ (0, 1)); None when the sign does not change on the interval's ends."""
    def f(p: float) -> float:
        m = baseline_mechanism(p, rewards)
        return m["var_mean"] - m["var_none"]

    lo, hi = 1e-6, 1 - 1e-6
    if f(lo) * f(hi) >= 0:
        return None
    while hi - lo > tol:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) * f(lo) > 0 else (lo, mid)
    return (lo + hi) / 2


def dropped_fraction(k: int, p: float) -> float:
    """P(dynamic sampling drops a group of K), from the filter on every success count."""
    rewards = torch.tensor([[1.0] * s + [0.0] * (k - s) for s in range(k + 1)], dtype=torch.float64)
    keep = dynamic_sampling(rewards, config=DynamicSamplingConfig()).keep.numpy()
    return float(stats.binom.pmf(np.arange(k + 1), k, p) @ (~keep))


def _bandit(p: float) -> TabularPolicy:
    """A one-token policy over {success, failure} with P(token 0) = p."""
    return TabularPolicy(torch.tensor([[math.log(p), math.log(1 - p)]], dtype=torch.float64))


def _mc_rows(config: Config, seed: int) -> list[dict[str, Any]]:
    rows = []
    reward = TokenCount(0, threshold=1)
    cfg = ReinforceConfig(agg="seq-mean-token-sum")
    for p in config.mc_pass_rates:
        policy = _bandit(p)
        grad_p = torch.tensor([p * (1 - p), -p * (1 - p)], dtype=torch.float64)  # ∇p in the logits
        for label, adv, adv_cfg in ESTIMATORS:
            res = mc_gradient(policy, policy, reward, "reinforce", cfg, adv, adv_cfg,
                              mc_config(config.n_replicas, group_size=config.group_size, seed=seed))
            w = effective_weight(adv, adv_cfg, config.group_size, p, dynamic=False)
            exact = w * grad_p
            z = ((res.mean.reshape(-1) - exact).abs() / res.mean_se.reshape(-1).clamp_min(1e-300)).max()
            est = normal_interval(float(res.mean.reshape(-1)[0] / grad_p[0]),
                                  float(res.mean_se.reshape(-1)[0] / grad_p[0]))
            rows.append({"estimator": label, "p": p, "dynamic sampling": False, "quantity": "MC weight",
                         "value": est.value, "low": est.low, "high": est.high, "max |z|": float(z)})
            v = res.var_trace
            h1, h2 = v.halves  # the same interval on each half of the batches (the ledger's robustness)
            rows.append({"estimator": label, "p": p, "dynamic sampling": False, "quantity": "MC variance trace",
                         "value": v.estimate, "low": v.low, "high": v.high,
                         "half1_value": h1.estimate, "half1_low": h1.low, "half1_high": h1.high,
                         "half2_value": h2.estimate, "half2_low": h2.low, "half2_high": h2.high})
    return rows


def run(config: Config, *, seed: int = 0, device: str = "cpu") -> Result:
    """Table: estimator, p, dynamic sampling, quantity (weight, MC weight, ...), value, low, high."""
    k = config.group_size
    rows: list[dict[str, Any]] = []
    refill = refill_factor(k, config.pass_rates)
    for label, adv, adv_cfg in ESTIMATORS:
        for p in config.pass_rates:
            for dyn in (False, True):
                w = effective_weight(adv, adv_cfg, k, p, dynamic=dyn, refill=refill)
                rows.append({"estimator": label, "p": p, "dynamic sampling": dyn, "quantity": "weight",
                             "value": w, "low": w, "high": w})
    rows += _mc_rows(config, seed)
    table = pd.DataFrame(rows)
    summary = _summary(table, config) | {"refill_factor": refill}
    return Result(NAME, config, table, summary, _published(config))


def _with_halves(row) -> Estimate:
    """A table row's estimate with its two half-sample estimates (``Estimate.halves``)."""
    halves = tuple(Estimate(float(getattr(row, f"half{i}_value")), float(getattr(row, f"half{i}_low")),
                            float(getattr(row, f"half{i}_high"))) for i in (1, 2))
    return Estimate(float(row.value), float(row.low), float(row.high), halves)


def _spread(table, label, dyn, config) -> float:
    w = table[(table.estimator == label) & (table["dynamic sampling"] == dyn) & (table.quantity == "weight")]
    return weight_spread(w["value"])


def _all_equal_groups(k: int) -> dict[str, Any]:
    """The z-score advantages of all-equal groups of K (binary 1s, and the non-binary reward 0.5),
    with ε = 1e-6 (0/(0 + ε) = 0) and with ε = 0 (the registry refuses the 0/0: the error's type)."""
    out: dict[str, Any] = {}
    for name, value in (("binary", 1.0), ("non-binary 0.5", 0.5)):
        rewards = torch.full((1, k), value, dtype=torch.float64)
        a = get_advantage("grpo").fn(rewards, config=StdConfig(eps=1e-6))
        try:
            a0 = get_advantage("grpo").fn(rewards, config=StdConfig(eps=0.0))
            eps0 = f"advantages {float(a0.abs().max()):g}" if bool(torch.isfinite(a0).all()) else "non-finite advantages"
        except ValueError as e:
            eps0 = f"refused ({type(e).__name__}: 0/0)"
        out[name] = {"reward": value, "max_abs_eps": float(a.abs().max()), "eps0": eps0}
    return out


def _summary(table: pd.DataFrame, config: Config) -> dict[str, Any]:
    k = config.group_size
    labels = [lab for lab, *_ in ESTIMATORS]
    zs = get_advantage("grpo").fn(torch.tensor([[1.0] + [0.0] * (k - 1), [1.0] * k]), config=StdConfig())
    mc = table[table.quantity == "MC weight"]
    return {
        "group_size": k,
        "weight_spread": {lab: _spread(table, lab, False, config) for lab in labels},
        "weight_spread_dynamic": {lab: _spread(table, lab, True, config) for lab in labels},
        "weights": {lab: {f"{p:g}": float(v) for p, v in table[(table.estimator == lab) & (table.quantity == "weight")
                                                                  & ~table["dynamic sampling"]][["p", "value"]].itertuples(index=False)}
                    for lab in labels},
        "max_abs_z_score_advantage": float(zs[0].abs().max()),
        "max_abs_z_score_bound": (k - 1) / math.sqrt(k),
        "all_equal_group_advantages_max_abs": float(zs[1].abs().max()),
        "mc_max_abs_z": float(mc["max |z|"].max()),
        "mc_variance": {f"{r.estimator}, p={r.p:g}": _with_halves(r) for r in
                        table[table.quantity == "MC variance trace"].itertuples(index=False)},
        "mc_pass_rates": list(config.mc_pass_rates),
        "mc_z_threshold": MC_Z,
        "all_equal_groups": _all_equal_groups(k),
        "baseline_mechanism": {f"{p:g}": baseline_mechanism(p) for p in config.mc_pass_rates},
        "baseline_mechanism_pm1": {f"{p:g}": baseline_mechanism(p, (1.0, -1.0)) for p in config.mc_pass_rates},
        "mean_baseline_threshold": mean_baseline_threshold(),
        "mean_baseline_threshold_pm1": mean_baseline_threshold((1.0, -1.0)),
    }


def _published(config: Config) -> list[Published]:
    """The GRPO per-question weight 1/√(p(1−p)) (population limit) against ours at K =
    ``population_k`` (exact over the binomial; it approaches the limit from below as K grows, so K
    is chosen large enough to agree within the published rounding), and DAPO's zero-gradient
    fractions (exact)."""
    src_w = "research/papers.md §2 (GRPO per-question weight 1/√(p(1−p)), population limit)"
    src_d = "research/papers.md §1 (DAPO dynamic sampling, G = 16)"
    k = config.population_k
    pop = StdConfig(std="population", eps=1e-12)  # all-equal groups: 0 / eps = 0
    out = [Published(f"GRPO weight at p = {p}, K = {k}", src_w, pub,
                     Estimate.exact(effective_weight("grpo", pop, k, p, dynamic=False)),
                     f"exact over Binomial(K − 1, p) at K = {k} (the published value is the K → ∞ limit)")
           for p, pub in ((0.5, "2.0"), (0.1, "3.333"), (0.01, "10.05"))]
    for p, frac, groups in ((0.9, "0.1853", "1.227"), (0.95, "0.4401", "1.786")):
        f = dropped_fraction(16, p)
        out.append(Published(f"zero-gradient group fraction, p = {p}", src_d, frac, Estimate.exact(f), "exact (binomial)"))
        out.append(Published(f"groups generated per kept group, p = {p}", src_d, groups, Estimate.exact(1 / (1 - f)),
                             "exact (binomial)"))
    return out


def figures(result: Result) -> list[Figure]:
    """(1) w(p) per estimator, without and with dynamic sampling (one panel each), Monte Carlo
    checks as points; (2) the Monte Carlo variance trace per estimator at the checked p."""
    table, cfg, summary = result.table, result.config, result.summary
    labels = [lab for lab, *_ in ESTIMATORS]
    w_all = table[table.quantity == "weight"]
    with style():
        fig, axes = new_figure(1, 2, width=6.5, height=3.0, sharey=True)
        for ax, dyn in zip(axes[0], (False, True)):
            for i, label in enumerate(labels):
                w = w_all[(w_all.estimator == label) & (w_all["dynamic sampling"] == dyn)]
                ax.plot(w.p, w.value, **line_kw(i, markevery=(i, max(1, len(w) // 8))), label=label)  # staggered markers
            ax.set_yscale("log")
            ax.set_xlabel("pass rate p of the prompt")
            ax.set_xlim(0, 1)
        mc = table[table.quantity == "MC weight"]
        axes[0][0].errorbar(mc.p, mc.value, yerr=[mc.value - mc.low, mc.high - mc.value], ls="none", marker="x",
                            color=PALETTE[6], ms=5, label="Monte Carlo check (95% CI)")
        axes[0][0].set_ylabel("effective weight w(p), E[ĝ] = w(p)·∇p")
        axes[0][0].set_title("per sampled group")
        axes[0][1].set_title("with dynamic sampling (batch refilled)")
        legend_outside(fig, axes[0], ncol=3)
        main = fig
    k = cfg.group_size
    spread, spread_dyn = summary["weight_spread"], summary["weight_spread_dynamic"]
    flat = [lab for lab in labels if spread[lab] < 1 + 1e-6]
    steep = [lab for lab in labels if spread[lab] >= 1 + 1e-6]
    mean_w = {lab: float(np.mean(list(summary["weights"][lab].values()))) for lab in labels}
    caption = (
        f"Difficulty bias (K = {k} samples per prompt): the effective weight w(p) a prompt with pass rate p gets, "
        "exact from the binomial distribution of the group's successes. An unbiased estimator has a flat "
        f"w(p). Left: {join(f'{lab} (w = {fmt(mean_w[lab])})' for lab in flat)} "
        f"{'are' if len(flat) != 1 else 'is'} flat; {join(f'{lab} (max/min {fmt(spread[lab])})' for lab in steep)} "
        f"{'weight' if len(steep) != 1 else 'weights'} the prompts near p = 0 and p = 1 more. Right: dynamic sampling "
        "drops the all-equal groups and refills the batch, which multiplies every prompt's weight by the same "
        f"1/P̄(kept) = {fmt(summary['refill_factor'])}; per sampled prompt the max/min of w(p) is "
        f"{join(f'{lab} {fmt(spread_dyn[lab])}' for lab in labels)}"
        + (" (changed only for estimators whose all-equal groups carry a non-zero advantage: "
           + join(lab for lab in labels if abs(spread_dyn[lab] - spread[lab]) > 1e-9 * spread[lab]) + ")"
           if any(abs(spread_dyn[lab] - spread[lab]) > 1e-9 * spread[lab] for lab in labels) else
           " (unchanged for every estimator)")
        + f". Crosses: Monte Carlo checks through the sampling engine at p = "
        f"{join(f'{p:g}' for p in cfg.mc_pass_rates)} (largest |z| against the exact curve "
        f"{fmt(summary['mc_max_abs_z'])}, threshold {summary['mc_z_threshold']:g})."
    )
    v = table[table.quantity == "MC variance trace"]
    with style():
        fig, axes = new_figure(1, 1, width=4.6, height=3.4)
        ax = axes[0][0]
        for i, label in enumerate(labels):
            s = v[v.estimator == label].sort_values("p")
            ax.errorbar(s.p, s.value, yerr=[s.value - s.low, s.high - s.value], **line_kw(i), label=label)
        ax.set_yscale("log")
        ax.set_xlabel("pass rate p of the prompt")
        ax.set_ylabel("variance trace tr Cov(ĝ) (logit units²)")
        legend_outside(fig, [ax], ncol=2)
        var_fig = fig
    ref, base = "no baseline (A = R)", "RLOO"
    mv = summary["mc_variance"]
    lower = [p for p in cfg.mc_pass_rates if mv[f"{base}, p={p:g}"].high < mv[f"{ref}, p={p:g}"].low]
    higher = [p for p in cfg.mc_pass_rates if mv[f"{base}, p={p:g}"].low > mv[f"{ref}, p={p:g}"].high]
    cap2 = (
        f"Monte Carlo variance trace of the one-token bandit's gradient estimate (K = {k}, 95% CIs) per advantage "
        f"estimator. Compare RLOO with no baseline: RLOO's variance is lower at p = {join(f'{p:g}' for p in lower) or 'no p'}"
        + (f" and higher at p = {join(f'{p:g}' for p in higher)} (non-overlapping intervals), so a baseline does "
           "not lower the variance at every pass rate" if higher else "") + "."
    )
    return [Figure(NAME, main, caption), Figure(f"{NAME}_variance", var_fig, cap2)]


def plot(result: Result, path) -> dict[str, str]:
    """Write ``figures(result)`` (the first at ``path``); returns {file name: caption}."""
    return plot_to(figures(result), path)
