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
from sims.experiments._plotting import (MARKERS, PALETTE, Figure, fmt, join, legend_outside, line_kw, new_figure,
                                        plot_to, style)
from sims.engines.montecarlo import mc_gradient
from sims.objectives import PpoClipConfig, ppo_clip

NAME = "length_bias"
TITLE = "Length bias of the aggregations (reward independent of length)"

# the toy's sequences: (first token C?, stops after the second token?) -> tokens, lengths
_C, _W, _X, _EOS = 0, 1, 2, 3
EXACT_ZERO = 1e-12  # a published "exactly 0" agrees with an exact computation within float64 rounding of O(1) terms
TOY = ((True, True), (True, False), (False, True), (False, False))
TOY_ALGORITHMS = ("grpo", "grpo_no_std", "drgrpo", "dapo", "sgs_cispo")
DECISION_G = 16
"""The group size at which the ledger decides "token-level normalisation removes the length bias":
DAPO's own (Yu et al. 2025, arXiv:2503.14476, §5: 16 responses per prompt). DAPO's residual
effect on the toy is a finite-sample effect of the ratio normaliser 1/Σ|o_i| and shrinks about
like 1/G, so the decision point is the group size the method is proposed with, and the G trend
is shown beside it."""
SGS_P_MODES = ("sequence", "token", "geometric")  # SGS-CISPO's confidence P: every way S can see the length


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
        group_sizes: finite G values enumerated exactly (must include ``DECISION_G``).
        batch_groups: numbers of groups (of G = 2) sharing one batch-level normaliser (``token-mean``).
        horizon, vocab: T and V of the larger policy (EOS = V − 1).
        stop: its per-row EOS probability.
        group_size: K of the larger policy's groups.
        n_replicas: Monte Carlo replicas for the token-level aggregations.
    """

    q: float = 0.3
    p_stop: tuple[float, float] = (0.5, 0.5)
    group_sizes: tuple[int, ...] = (2, 4, 8, DECISION_G)
    batch_groups: tuple[int, ...] = (1, 2)
    horizon: int = 6
    vocab: int = 4
    stop: float = 0.3
    group_size: int = 4
    n_replicas: int = 20_000

    def __post_init__(self) -> None:
        require(0 < self.q < 1, "q", self.q, "0 < q < 1")
        require(all(0 < p < 1 for p in self.p_stop) and len(self.p_stop) == 2, "p_stop", self.p_stop,
                "two probabilities in (0, 1)")
        require(all(isinstance(g, int) and 2 <= g <= 32 for g in self.group_sizes), "group_sizes",
                self.group_sizes, "ints in [2, 32] (C(G + 3, 3) compositions are enumerated)")
        require(all(isinstance(b, int) and 1 <= b <= 3 for b in self.batch_groups) and len(self.batch_groups) >= 1,
                "batch_groups", self.batch_groups, "ints in [1, 3] (10^B batch compositions are enumerated)")
        check_replicas(self.n_replicas)

    @classmethod
    def quick(cls) -> "Config":
        return cls(group_sizes=(2, 4, DECISION_G), n_replicas=4_000)

    @classmethod
    def full(cls) -> "Config":
        return cls(group_sizes=(2, 4, 8, DECISION_G, 32), batch_groups=(1, 2, 3), n_replicas=100_000)

    @classmethod
    def tiny(cls) -> "Config":
        return cls(group_sizes=(2,), batch_groups=(1,), horizon=3, n_replicas=200)


def decision_points(config: Config) -> dict[str, Any]:
    """Where this experiment's evidence decides the ledger's parts (rule 11: ``quick`` and ``full``
    must give the same): the toy at ``DECISION_G`` and the larger policy."""
    return {"q": config.q, "p_stop": config.p_stop, "decision_G": DECISION_G in config.group_sizes,
            "larger": (config.horizon, config.vocab, config.stop, config.group_size)}


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


def compositions(g: int, kinds: int = len(TOY)) -> np.ndarray:
    """Every vector of ``kinds`` non-negative counts summing to ``g`` (C(g + kinds − 1, kinds − 1) rows)."""
    out = [c for c in itertools.product(range(g + 1), repeat=kinds - 1) if sum(c) <= g]
    return np.array([list(c) + [g - sum(c)] for c in out], dtype=np.int64)


def composition_groups(g: int, probs: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The toy's groups of ``g`` responses up to order: ``(members [n, g], pmf [n])`` where row i
    lists the response types of composition i (sorted) and pmf is its multinomial probability
    under the type probabilities ``probs``."""
    comps = compositions(g)
    members = torch.tensor(np.stack([np.repeat(np.arange(len(TOY)), c) for c in comps]))
    log_pmf = (math.lgamma(g + 1) - sum(np.vectorize(math.lgamma)(comps[:, i] + 1) for i in range(len(TOY)))
               + (comps * np.log(probs)).sum(-1))
    return members, torch.tensor(np.exp(log_pmf), dtype=torch.float64)


def _toy_algorithm(algorithm_name: str, agg: str | None, objective_config: Any = None):
    algorithm = toy_algorithm(algorithm_name)
    cfg = objective_config if objective_config is not None else algorithm.objective_config
    if agg is not None:
        cfg = dataclasses.replace(cfg, agg=agg)
    return dataclasses.replace(algorithm, objective_config=cfg)


def toy_group_update(algorithm_name: str, g: int, q: float, p_c: float, p_w: float, *, agg: str | None = None,
                     objective_config: Any = None) -> np.ndarray:
    """Exact E[ĝ] in (q, p_C, p_W) per group of ``g`` responses, through ``algorithm_loss``.

    Every registered estimator is invariant to the order of a group's responses, so the
    expectation over the 4^g ordered groups is a sum over the C(g + 3, 3) compositions (how many
    responses of each of the 4 types), each weighted by its multinomial probability: exact, and
    cheap up to g = 32 (6,545 groups). All compositions go through one call of the registered
    algorithm; its loss is a mean over the (kept) groups, so −∂loss/∂ℓ × n_kept is each group's
    own estimator (groups a filter drops contribute 0). ``agg`` / ``objective_config`` replace
    the algorithm's aggregation / objective config. The batches are single groups: a batch-level
    aggregation is then its per-group twin (``token-mean`` over one group is ``prompt-token-mean``)
    and is evaluated as such; batches of several groups sharing one normaliser are
    ``toy_batch_update``."""
    logp1, mask1, reward1, prob1, score1 = toy_tensors(q, p_c, p_w)
    members, pmf = composition_groups(g, prob1.numpy())
    algorithm = _toy_algorithm(algorithm_name, agg, objective_config)
    require(algorithm.objective_config.agg != "token-sum", "agg", "token-sum",
            "an aggregation that averages over groups (token-sum sums them)")
    if algorithm.objective_config.agg == "token-mean":  # a batch of one group: the same normaliser
        algorithm = _toy_algorithm(algorithm_name, "prompt-token-mean", algorithm.objective_config)
    return _expected_update(algorithm, members, pmf, logp1, mask1, reward1, score1)


def _expected_update(algorithm, members, pmf, logp1, mask1, reward1, score1) -> np.ndarray:
    idx = members.reshape(-1)
    g = members.shape[1]
    logp = logp1[idx].clone().requires_grad_(True)
    try:
        loss, diag = algorithm_loss(algorithm, logp, logp.detach(), reward1[members], mask1[idx], max_len=3)
    except ValueError:  # every group dropped by a filter: no update
        return np.zeros(3)
    (grad,) = torch.autograd.grad(loss, logp)
    n_kept = members.shape[0] - int(diag["groups_dropped"])
    w = -grad * n_kept
    per_seq = torch.einsum("nt,ntk->nk", w, score1[idx])
    return (pmf.repeat_interleave(g)[:, None] * per_seq).sum(0).numpy()


def toy_batch_update(algorithm_name: str, g: int, n_groups: int, q: float, p_c: float, p_w: float, *,
                     agg: str = "token-mean") -> np.ndarray:
    """Exact E[ĝ] in (q, p_C, p_W) per group, for batches of ``n_groups`` groups of ``g`` that share
    one batch-level normaliser (verl's ``token-mean``: 1/Σ over the batch's tokens). One call of
    the registered algorithm per batch composition (the product of the groups' compositions);
    the batch's estimator is −∂loss/∂ℓ × (kept groups), so the result is comparable with
    ``toy_group_update`` (n_groups = 1 gives the same number)."""
    logp1, mask1, reward1, prob1, score1 = toy_tensors(q, p_c, p_w)
    members, pmf = composition_groups(g, prob1.numpy())
    algorithm = _toy_algorithm(algorithm_name, agg)
    total = np.zeros(3)
    for combo in itertools.product(range(members.shape[0]), repeat=n_groups):
        sel = torch.tensor(combo)
        weight = pmf[sel].prod()
        upd = _expected_update(algorithm, members[sel], torch.ones(n_groups, dtype=torch.float64), logp1, mask1,
                               reward1, score1)
        total += float(weight) * upd / n_groups
    return total


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
        sgs = toy_algorithm("sgs_cispo").objective_config
        for mode in SGS_P_MODES:
            upd = toy_group_update("sgs_cispo", g, q, p_c, p_w, objective_config=dataclasses.replace(sgs, p_mode=mode))
            rows.append({"setting": "toy, SGS p_mode", "G": g, "aggregation": f"sgs_cispo[{mode}]", "quantity": "dp_W",
                         "value": float(upd[2]), "low": float(upd[2]), "high": float(upd[2]), "method": "exact"})
    for b in config.batch_groups:
        for name, agg in (("dapo", "token-mean"), ("grpo", None)):
            upd = (toy_batch_update(name, 2, b, q, p_c, p_w, agg=agg) if agg else toy_group_update(name, 2, q, p_c, p_w))
            rows.append({"setting": "toy, batch", "G": 2, "B": b, "aggregation": name, "quantity": "dp_W",
                         "value": float(upd[2]), "low": float(upd[2]), "high": float(upd[2]), "method": "exact"})
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
    by_g = {name: {int(g): _toy(table, "toy, finite G", name, "dp_W", g) for g in config.group_sizes}
            for name in TOY_ALGORITHMS}
    modes = table[table.setting == "toy, SGS p_mode"]
    batch = table[table.setting == "toy, batch"]
    return {
        "toy_G": g_ref,
        "toy_updates": toy,
        "toy_dp_W_by_G": by_g,
        "decision_G": DECISION_G if DECISION_G in config.group_sizes else None,
        "sgs_p_mode": toy_algorithm("sgs_cispo").objective_config.p_mode,
        "sgs_dp_W_by_mode_and_G": {m: {int(r.G): float(r.value) for r in modes[modes.aggregation == f"sgs_cispo[{m}]"].itertuples()}
                                   for m in SGS_P_MODES},
        "batch_dp_W": {name: {int(r.B): float(r.value) for r in batch[batch.aggregation == name].itertuples()}
                       for name in ("dapo", "grpo")},
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


TOY_LABELS = {"grpo": "GRPO", "grpo_no_std": "GRPO\nno std", "drgrpo": "Dr.\nGRPO", "dapo": "DAPO",
              "sgs_cispo": "SGS-\nCISPO"}


def figures(result: Result) -> list[Figure]:
    """Left: the toy's exact expected ∂p_W and ∂p_C per algorithm. Right: the larger policy's
    cos(E ĝ, ∇E|o|) per aggregation with intervals."""
    s, cfg = result.summary, result.config
    names = list(s["toy_updates"])
    cos = s["larger_cos"]
    labels = list(cos)
    with style():
        fig, axes = new_figure(1, 2, width=6.5, height=2.9, gridspec_kw={"width_ratios": [1.25, 1]})
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
    return [Figure(NAME, fig, caption), _residual_figure(result)]


def _residual_figure(result: Result) -> Figure:
    """The toy's residual length effect relative to GRPO's, |∂p_W(X)| / |∂p_W(GRPO)|, against G
    (log-log) for DAPO and SGS-CISPO with each confidence mode, with the ledger's δ and the
    decision point G = ``DECISION_G``; inset text: the batch-level (token-mean) trend in B."""
    from sims.claims import LENGTH_DELTA  # the ledger's minimal effect (lazy: the ledger imports experiments)

    s = result.summary
    grpo = s["toy_dp_W_by_G"]["grpo"]
    gs = sorted(grpo)
    curves = [("DAPO (prompt-token-mean)", s["toy_dp_W_by_G"]["dapo"])]
    curves += [(f"SGS-CISPO, P = {m}" + (" (registered)" if m == s["sgs_p_mode"] else ""),
                s["sgs_dp_W_by_mode_and_G"][m]) for m in SGS_P_MODES]
    with style():
        fig, axes = new_figure(1, 1, width=6.0, height=3.0)
        ax = axes[0][0]
        for i, (label, by_g) in enumerate(curves):
            ax.plot(gs, [abs(by_g[g]) / abs(grpo[g]) for g in gs], label=label, **line_kw(i))
        ax.plot(gs, [1 / g for g in gs], color="0.5", ls=":", lw=1, label="1/G")
        ax.axhline(LENGTH_DELTA.value, color="k", lw=0.8, ls="--", label=f"δ = {LENGTH_DELTA.value:g}")
        if s["decision_G"]:
            ax.axvline(s["decision_G"], color="0.3", lw=0.7, ls="-.")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("group size G (responses per prompt)")
        ax.set_ylabel("|∂p_W| relative to GRPO's")
        ax.set_title("residual length effect on the Dr. GRPO toy (exact)")
        legend_outside(fig, [ax], ncol=2)
    dapo_b = s["batch_dp_W"]["dapo"]
    caption = (
        "How much of GRPO's length effect each token-level scheme leaves, on the Dr. GRPO toy (exact over every "
        f"group composition): |∂p_W(X)| / |∂p_W(GRPO)| against G, log-log. The ratio normaliser 1/Σ|o_i| leaves a "
        "finite-sample effect that falls about like 1/G (dotted); the dashed line is the ledger's minimal effect δ and "
        f"the dash-dotted line the decision point G = {DECISION_G} (DAPO's group size). SGS-CISPO's confidence "
        "factor S sees the length through P when P is the sequence probability; every p_mode is drawn. "
        "With the normaliser shared by B groups of G = 2 (verl's batch token-mean) DAPO's ∂p_W is "
        + ", ".join(f"B = {b}: {fmt(v)}" for b, v in dapo_b.items()) + ": it shrinks with the batch too."
    )
    return Figure(f"{NAME}_residual", fig, caption)


def plot(result: Result, path) -> dict[str, str]:
    """Write ``figures(result)`` (the first at ``path``); returns {file name: caption}."""
    return plot_to(figures(result), path)
