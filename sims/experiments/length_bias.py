"""Length bias: the expected update on response length under each aggregation, with a reward
that does not depend on length.

1. **The Dr. GRPO toy** (research/papers.md §2). The first token is C (probability q) or W; on
   each branch b the response stops after one more token with probability p_b (length 2) or
   continues once more (length 3). R = 1{C}, so ∂J/∂p_C = ∂J/∂p_W = 0. The expected update on
   (p_C, p_W) is computed exactly by enumerating every group of G responses (4^G of them) and
   running the registered algorithm (``algorithm_loss``) on each — w from autograd, times the
   score in (q, p_C, p_W), weighted by the group's probability — and, in the population limit,
   with the advantage (R − q)/σ or R − q on each of the 4 responses.
2. **A larger one**: a ``MarkovPolicy`` with EOS (T = 6, V = 4) whose every row stops with the
   same probability ``stop`` (the first token never stops), so the length is independent of the
   content while the length parameters of each branch are separate, as in the toy; R = 1{o_1 = 0}
   (``TargetMatch``), whose exact length covariance is reported (≈ 1e-13). The
   expected update's component along ∇E|o| (the direction that lengthens responses) is exact
   for the ``seq-mean-*`` aggregations (``exact_group_estimator_mean``) and Monte Carlo for the
   token-level ones (no exact form exists there; the interval is conservative, Σ_j |∂_j E|o||·SE_j).
   The unbiased reference is ⟨∇E|o|, ∇J⟩ (≈ 0 here).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from policies.markov import MarkovPolicy
from policies.tasks import TargetMatch, reward_length_covariance
from sims._checks import require
from sims.advantages import NoConfig, StdConfig
from sims.algorithms import ALGORITHMS, algorithm_loss
from sims.engines.exact import exact_group_estimator_mean, exact_objective
from sims.experiments._common import Estimate, Published, Result, check_replicas, mc_config, normal_interval, seeded
from sims.experiments._plotting import MARKERS, PALETTE, Figure, fmt, join, legend_outside, new_figure, plot_to, style
from sims.engines.montecarlo import mc_gradient
from sims.objectives import PpoClipConfig, ppo_clip

NAME = "length_bias"
TITLE = "Length bias of the aggregations (reward independent of length)"

# the toy's sequences: (first token C?, stops after the second token?) -> tokens, lengths
_C, _W, _X, _EOS = 0, 1, 2, 3
EXACT_ZERO = 1e-12  # a published "exactly 0" agrees with an exact computation within float64 rounding of O(1) terms
TOY = ((True, True), (True, False), (False, True), (False, False))
TOY_ALGORITHMS = ("grpo", "grpo_no_std", "drgrpo", "dapo")


def toy_algorithm(name: str):
    """The registered algorithm (on-policy, KL off), or GRPO with the mean-only advantage."""
    if name == "grpo_no_std":
        return dataclasses.replace(ALGORITHMS["grpo"], name=name, advantage="group_mean",
                                   advantage_config=NoConfig(), kl=None)
    return dataclasses.replace(ALGORITHMS[name], kl=None)


@dataclass(frozen=True)
class Config:
    """Attributes:
        q: P(first token is C) in the toy.
        p_stop: (p_C, p_W), the stop probabilities.
        group_sizes: finite G values enumerated exactly.
        horizon, vocab: T and V of the larger policy (EOS = V − 1).
        stop: its per-row EOS probability.
        group_size: K of the larger policy's groups.
        n_replicas: Monte Carlo replicas for the token-level aggregations.
    """

    q: float = 0.3
    p_stop: tuple[float, float] = (0.5, 0.5)
    group_sizes: tuple[int, ...] = (2, 4, 6)
    horizon: int = 6
    vocab: int = 4
    stop: float = 0.3
    group_size: int = 4
    n_replicas: int = 20_000

    def __post_init__(self) -> None:
        require(0 < self.q < 1, "q", self.q, "0 < q < 1")
        require(all(0 < p < 1 for p in self.p_stop) and len(self.p_stop) == 2, "p_stop", self.p_stop,
                "two probabilities in (0, 1)")
        require(all(isinstance(g, int) and 2 <= g <= 8 for g in self.group_sizes), "group_sizes",
                self.group_sizes, "ints in [2, 8] (4^G groups are enumerated)")
        check_replicas(self.n_replicas)

    @classmethod
    def quick(cls) -> "Config":
        return cls(group_sizes=(2, 4), n_replicas=4_000)

    @classmethod
    def full(cls) -> "Config":
        return cls(group_sizes=(2, 4, 6, 8), n_replicas=100_000)

    @classmethod
    def tiny(cls) -> "Config":
        return cls(group_sizes=(2,), horizon=3, n_replicas=200)


def toy_tensors(q: float, p_c: float, p_w: float):
    """(logp [4, 3], mask [4, 3], reward [4], prob [4], score [4, 3, 3]) of the toy's responses;
    score[i, t] = ∂ℓ_it/∂(q, p_C, p_W)."""
    logp = torch.zeros(4, 3, dtype=torch.float64)
    mask = torch.zeros(4, 3, dtype=torch.float64)
    score = torch.zeros(4, 3, 3, dtype=torch.float64)
    reward = torch.zeros(4, dtype=torch.float64)
    for i, (correct, stops) in enumerate(TOY):
        p = p_c if correct else p_w
        logp[i, 0] = math.log(q if correct else 1 - q)
        score[i, 0, 0] = 1 / q if correct else -1 / (1 - q)
        logp[i, 1] = math.log(p if stops else 1 - p)
        score[i, 1, 1 if correct else 2] = 1 / p if stops else -1 / (1 - p)
        mask[i, : 2 if stops else 3] = 1.0  # the third token (EOS after X) has probability 1
        reward[i] = float(correct)
    return logp, mask, reward, logp.sum(-1).exp(), score


def toy_group_update(algorithm_name: str, g: int, q: float, p_c: float, p_w: float) -> np.ndarray:
    """Exact E[ĝ] in (q, p_C, p_W) for groups of ``g`` responses, through ``algorithm_loss``."""
    logp1, mask1, reward1, prob1, score1 = toy_tensors(q, p_c, p_w)
    combos = torch.tensor(list(itertools.product(range(4), repeat=g)))  # (4^g, g)
    idx = combos.reshape(-1)
    logp = logp1[idx].clone().requires_grad_(True)
    rewards = reward1[combos]
    algorithm = toy_algorithm(algorithm_name)
    try:
        loss, diag = algorithm_loss(algorithm, logp, logp.detach(), rewards, mask1[idx], max_len=3)
    except ValueError:  # every group dropped by a filter: no update
        return np.zeros(3)
    (grad,) = torch.autograd.grad(loss, logp)
    n_kept = combos.shape[0] - int(diag["groups_dropped"])
    w = -grad * n_kept  # per-group estimators (see the module doc)
    group_prob = prob1[combos].prod(-1).repeat_interleave(g)
    per_seq = torch.einsum("nt,ntk->nk", w, score1[idx])
    return (group_prob[:, None] * per_seq).sum(0).numpy()


def toy_population_update(q: float, p_c: float, p_w: float, *, std: bool, agg: str) -> np.ndarray:
    """Population-limit E[ĝ] with A = (R − q)/σ (``std``) or R − q, through ``ppo_clip``."""
    logp, mask, reward, prob, score = toy_tensors(q, p_c, p_w)
    adv = (reward - q) / (math.sqrt(q * (1 - q)) if std else 1.0)
    x = logp.clone().requires_grad_(True)
    cfg = PpoClipConfig(agg=agg, max_len=3 if agg == "seq-mean-token-sum-norm" else None)
    loss, _ = ppo_clip(x, logp, adv[:, None] * mask, mask, config=cfg)
    (grad,) = torch.autograd.grad(loss, x)
    w = -grad * 4
    return (prob[:, None] * torch.einsum("nt,ntk->nk", w, score)).sum(0).numpy()


def _larger(config: Config, seed: int, device: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    eos = config.vocab - 1
    logits = MarkovPolicy.random(config.horizon, config.vocab, generator=seeded(seed, 1), eos=eos,
                                 scale=2.0).logits.clone()
    rest = torch.logsumexp(torch.cat([logits[:, :eos], logits[:, eos + 1:]], -1), -1)
    logits[:, eos] = rest + math.log(config.stop / (1 - config.stop))  # P(EOS) = stop in every row
    logits[config.vocab, eos] = -30.0  # the first token (BOS row) is never EOS (~1e-13)
    policy = MarkovPolicy(logits.to(device), horizon=config.horizon, eos=eos)
    reward = TargetMatch(((0,),))
    cov = reward_length_covariance(policy, reward)
    length_grad = exact_objective(policy, lambda tokens, mask: mask.sum(-1).to(torch.float64))[1].reshape(-1)
    truth = exact_objective(policy, reward)[1].reshape(-1)
    unit = length_grad / length_grad.norm()
    rows = [{"setting": "larger", "aggregation": "true ∇J", "quantity": "cos(update, ∇E|o|)",
             "value": float(truth @ unit / truth.norm()), "low": np.nan, "high": np.nan, "method": "exact"}]
    k = config.group_size
    exact_cases = (("GRPO (seq-mean-token-mean, z-score)", "grpo", StdConfig(), "seq-mean-token-mean"),
                   ("GRPO, mean-only advantage", "group_mean", NoConfig(), "seq-mean-token-mean"),
                   ("Dr.GRPO (constant normaliser)", "drgrpo", NoConfig(), "seq-mean-token-sum-norm"))
    for label, adv, adv_cfg, agg in exact_cases:
        cfg = PpoClipConfig(agg=agg, max_len=config.horizon if agg.endswith("norm") else None)
        mean = exact_group_estimator_mean(policy, policy, reward, "ppo_clip", cfg, adv, adv_cfg,
                                          group_size=k).reshape(-1)
        rows.append({"setting": "larger", "aggregation": label, "quantity": "cos(update, ∇E|o|)",
                     "value": float(mean @ unit / mean.norm()), "low": np.nan, "high": np.nan, "method": "exact"})
    for label, agg in (("DAPO token-level (prompt-token-mean)", "prompt-token-mean"),):
        cfg = PpoClipConfig(agg=agg)
        res = mc_gradient(policy, policy, reward, "ppo_clip", cfg, "grpo", StdConfig(),
                          mc_config(config.n_replicas, group_size=k, seed=seed))
        mean, se = res.mean.reshape(-1), res.mean_se.reshape(-1)
        proj = float(mean @ unit)
        est = normal_interval(proj, float(unit.abs() @ se))
        norm = float(mean.norm())
        rows.append({"setting": "larger", "aggregation": label, "quantity": "cos(update, ∇E|o|)",
                     "value": est.value / norm, "low": est.low / norm, "high": est.high / norm,
                     "method": "monte carlo (conservative CI)"})
    return rows, {"length_covariance": float(cov)}


def run(config: Config, *, seed: int = 0, device: str = "cpu") -> Result:
    """Table: setting, aggregation, quantity, value, low, high, method (and G for the toy)."""
    q, (p_c, p_w) = config.q, config.p_stop
    rows: list[dict[str, Any]] = []
    for std in (True, False):
        for agg, label in (("seq-mean-token-mean", "GRPO" if std else "GRPO no std"),
                           ("seq-mean-token-sum-norm", "Dr.GRPO" if not std else "Dr.GRPO with std")):
            upd = toy_population_update(q, p_c, p_w, std=std, agg=agg)
            for name, v in (("dp_C", upd[1]), ("dp_W", upd[2])):
                rows.append({"setting": "toy, population", "G": np.inf, "aggregation": label, "quantity": name,
                             "value": float(v), "low": float(v), "high": float(v), "method": "exact"})
    for g in config.group_sizes:
        for name in TOY_ALGORITHMS:
            upd = toy_group_update(name, g, q, p_c, p_w)
            for qty, v in (("dp_C", upd[1]), ("dp_W", upd[2])):
                rows.append({"setting": "toy, finite G", "G": g, "aggregation": name, "quantity": qty,
                             "value": float(v), "low": float(v), "high": float(v), "method": "exact"})
    larger_rows, extra = _larger(config, seed, device)
    table = pd.DataFrame(rows + larger_rows)
    return Result(NAME, config, table, _summary(table, config, extra), _published(table, config))


def _toy(table, setting, aggregation, quantity, g=None):
    sel = (table.setting == setting) & (table.aggregation == aggregation) & (table.quantity == quantity)
    if g is not None:
        sel &= table.G == g
    return float(table[sel]["value"].iloc[0])


def _summary(table: pd.DataFrame, config: Config, extra: dict[str, Any]) -> dict[str, Any]:
    larger = table[table.setting == "larger"].set_index("aggregation")
    g_ref = 4 if 4 in config.group_sizes else config.group_sizes[-1]
    toy = {name: {"dp_C": _toy(table, "toy, finite G", name, "dp_C", g_ref),
                  "dp_W": _toy(table, "toy, finite G", name, "dp_W", g_ref)} for name in TOY_ALGORITHMS}
    return {
        "toy_G": g_ref,
        "toy_updates": toy,
        "population": {lab: _toy(table, "toy, population", lab, "dp_W") for lab in ("GRPO", "GRPO no std", "Dr.GRPO")},
        "larger_cos": {lab: Estimate(float(r["value"]), float(r["low"]) if not np.isnan(r["low"]) else float(r["value"]),
                                     float(r["high"]) if not np.isnan(r["high"]) else float(r["value"]))
                       for lab, r in larger.iterrows()},
        **extra,
    }


def _published(table: pd.DataFrame, config: Config) -> list[Published]:
    if not (math.isclose(config.q, 0.3) and 4 in config.group_sizes):
        return []
    src = "research/papers.md §2 (Dr. GRPO length-bias toy, q = 0.3)"
    out = [
        Published("GRPO ∂p_W, population (−√(q(1−q))/6)", src, "-0.0764",
                  Estimate.exact(_toy(table, "toy, population", "GRPO", "dp_W")), "exact (enumeration)"),
        Published("GRPO ∂p_C, population", src, "0.0764", Estimate.exact(_toy(table, "toy, population", "GRPO", "dp_C")),
                  "exact (enumeration)"),
        Published("GRPO without std ∂p_W, population (−q(1−q)/6)", src, "-0.035",
                  Estimate.exact(_toy(table, "toy, population", "GRPO no std", "dp_W")), "exact (enumeration)"),
        Published("GRPO ∂p_W, G = 4 (sample std)", src, "-0.0495", Estimate.exact(_toy(table, "toy, finite G", "grpo", "dp_W", 4)),
                  "exact (enumeration)"),
        Published("Dr.GRPO ∂p_W, G = 4", src, "0", Estimate.exact(_toy(table, "toy, finite G", "drgrpo", "dp_W", 4)),
                  "exact (enumeration); the source states exactly 0, so the resolution is float64 rounding", EXACT_ZERO),
    ]
    return out


TOY_LABELS = {"grpo": "GRPO", "grpo_no_std": "GRPO\n(no std)", "drgrpo": "Dr.GRPO", "dapo": "DAPO"}


def figures(result: Result) -> list[Figure]:
    """Left: the toy's exact expected ∂p_W and ∂p_C per algorithm. Right: the larger policy's
    cos(E ĝ, ∇E|o|) per aggregation with intervals."""
    s, cfg = result.summary, result.config
    names = list(s["toy_updates"])
    cos = s["larger_cos"]
    labels = list(cos)
    with style():
        fig, axes = new_figure(1, 2, width=6.5, height=2.9, gridspec_kw={"width_ratios": [1, 1.1]})
        ax_t, ax_l = axes[0]
        x = np.arange(len(names))
        for i, (key, what) in enumerate((("dp_W", "∂p_W (wrong answers' stop prob.)"),
                                         ("dp_C", "∂p_C (correct answers' stop prob.)"))):
            ax_t.bar(x + (i - 0.5) * 0.38, [s["toy_updates"][n][key] for n in names], 0.38, color=PALETTE[i],
                     hatch=("", "//")[i], edgecolor="white", label=what)
        ax_t.set_xticks(x, [TOY_LABELS.get(n, n) for n in names])
        ax_t.axhline(0, color="k", lw=0.7)
        ax_t.set_ylabel("expected update (exact)")
        ax_t.set_title(f"toy, G = {s['toy_G']}, q = {cfg.q:g}")
        y = np.arange(len(labels))[::-1]
        exact = [cos[k].low == cos[k].high for k in labels]
        for j, (is_exact, name, mk) in enumerate(((True, "exact", MARKERS[0]), (False, "Monte Carlo, 95% CI", MARKERS[1]))):
            sel = [n for n, e in enumerate(exact) if e == is_exact]
            if sel:
                v = np.array([cos[labels[n]].value for n in sel])
                err = [v - [cos[labels[n]].low for n in sel], [cos[labels[n]].high for n in sel] - v]
                ax_l.errorbar(v, y[sel], xerr=err, ls="none", marker=mk, color=PALETTE[2 + j], label=name)
        ax_l.set_yticks(y, [lab.replace(" (", "\n(") for lab in labels])
        ax_l.axvline(0, color="k", lw=0.7)
        ax_l.set_xlabel("cos(E ĝ, ∇E|o|)  (< 0: shortens)")
        ax_l.set_title(f"larger policy (T = {cfg.horizon}, V = {cfg.vocab})")
        ax_l.grid(axis="y", visible=False)
        legend_outside(fig, [ax_t, ax_l], ncol=2)
    toy = s["toy_updates"]
    covers = [lab for lab in labels if cos[lab].low < cos[lab].high and cos[lab].low <= 0 <= cos[lab].high]
    caption = (
        f"Length bias with a reward that does not depend on length. Left: the Dr. GRPO toy (q = {cfg.q:g}, groups of "
        f"G = {s['toy_G']}, exact over every group): the expected change of each branch's stop probability; the "
        "true gradient is 0 for both. Look for bars of opposite sign: "
        + join(f"{TOY_LABELS.get(n, n).replace(chr(10), ' ')} (∂p_W = {fmt(toy[n]['dp_W'])})" for n in names)
        + ". Right: on a larger Markov policy with length independent of the content (reward–length covariance "
        f"{fmt(s['length_covariance'])}), the cosine between the expected update and the direction that lengthens "
        f"responses; the true gradient gives {fmt(cos['true ∇J'].value)}."
    )
    for lab in covers:
        caption += (f" The interval of {lab} ({cos[lab]}) covers 0: it comes from Monte Carlo (no exact form exists "
                    "for token-level normalisation), and at this sample size it cannot tell a length bias of "
                    "that size from none; the toy on the left is exact and decides the sign.")
    return [Figure(NAME, fig, caption)]


def plot(result: Result, path) -> dict[str, str]:
    """Write ``figures(result)`` (the first at ``path``); returns {file name: caption}."""
    return plot_to(figures(result), path)
