"""Bias and variance of the importance-weighting schemes versus sequence length T (headline).

Setup: a ``TabularPolicy`` π_old with V tokens, no EOS, and π_θ = ``perturb(π_old, kl=κ)`` at a
fixed mean per-token divergence κ, re-drawn for every T. Reward R(o) = 1[#token 0 >= max(1, T//V)]
(binary and not additive over positions: with an additive reward and independent positions
token IS happens to be unbiased), advantage A = R (no baseline). Each estimator uses the
aggregation under which its on-policy gradient is ∇J = ∇E_θ[R] itself (``seq-mean-token-mean``
for the per-sequence ``seq_is`` loss, ``seq-mean-token-sum`` for the rest); the run checks this
(``on-policy relative bias``, exact, must be ~1e-15). The estimators (``Config.estimators``):

* sequence IS ``seq_is`` (w_t = R(o)·A, R = Π ρ_t) — unbiased;
* token IS ``reinforce(is_level="token")`` (w_t = ρ_t·A, PPO/GRPO's weight without clipping);
* GSPO's geometric ratio ``gspo`` unclipped (w_t = G(o)·A, G = R^{1/T});
* truncated sequence IS ``seq_is(cap=C)`` (w_t = min(R, C)·A);
* CISPO ``cispo`` (w_t = min(ρ_t, 1 + ε_high)·A, MiniMax-M1's upper cap).

Measured per T: the exact expected gradient E_old[ĝ] by enumeration (``sims.engines.exact``), so the
bias ‖E ĝ − ∇J‖/‖∇J‖ is exact; the variance trace tr Cov(ĝ)/‖∇J‖² by Monte Carlo
(``sims.engines.montecarlo``) with a 95% interval; and for longer T the variance of the sequence ratio
itself against its closed form Var R = Π_t(1 + χ²_t) − 1 (papers.md §11.1), with the fraction of
weights outside [1e-3, 1e3] and the Kish ESS.

Long part (``sims.experiments._long``): T up to 4096 and V = 32,768 on two setups, independent
positions (S = 1) and dependent positions (a sticky 4-class Markov chain), at several per-token
KL κ. For each (setup, T, κ) it measures the effect size the claims need, log(tr Cov(ĝ_e) / tr
Cov(ĝ_seq)) with a 95% interval, for the estimators with the clips the algorithms use
(``default_long_estimators``: token IS, PPO/GRPO's 1 ± 0.2 clip, GSPO's (3e-4, 4e-4) clip on
the sequence ratio, verl's CISPO 1 ± 0.2); A = R = 1[#even tokens ≥ its median], no baseline.
The estimators' variances come from one paired Monte Carlo under π_old; sequence IS's, whose
sample variance at long T misses the rare huge weights that carry it, from the exact tilt
E_old[R²A²‖s‖²] = c·E_q[A²‖s‖²/h] (``_long.tilted``) minus ‖∇J‖² (on-policy U-statistic). The
sequence ratio's log(1 + Var R) is exact (transfer matrix), the extreme fraction and ESS are
Monte Carlo in log space.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from policies.perturb import perturb
from policies.tabular import TabularPolicy
from policies.tasks import TokenCount
from sims._checks import require
from sims.engines.exact import exact_estimator_mean, exact_objective
from sims.engines.montecarlo import mc_gradient
from sims.experiments import _long
from sims.experiments._common import (
    Estimate,
    Result,
    check_replicas,
    mc_config,
    mean_interval,
    seeded,
    token_log_ratios,
    variance_interval,
)
from sims.experiments._plotting import (
    MARKERS,
    PALETTE,
    Figure,
    fmt,
    join,
    legend_outside,
    line_kw,
    new_figure,
    plot_to,
    style,
)
from sims.objectives import (
    CispoConfig,
    GspoConfig,
    PpoClipConfig,
    ReinforceConfig,
    SeqIsConfig,
)

NAME = "bias_variance"
TITLE = "Bias and variance of importance weights versus sequence length"

_SUM = "seq-mean-token-sum"
_SEQ = "seq-mean-token-mean"  # the per-sequence loss seq_is broadcasts over tokens, averaged back
UNBIASED = "sequence IS"  # the label the claims read as the unbiased reference


def default_estimators(cap: float = 2.0, cispo_eps_high: float = 0.2) -> tuple[tuple[str, str, Any], ...]:
    """(label, registered objective, config) of the compared estimators (see the module doc)."""
    return (
        (UNBIASED, "seq_is", SeqIsConfig(agg=_SEQ)),
        ("token IS (PPO/GRPO)", "reinforce", ReinforceConfig(agg=_SUM, is_level="token", is_cap=1e300)),
        ("GSPO geometric", "gspo", GspoConfig(agg=_SUM, eps_low=None, eps_high=1e300)),
        (f"truncated IS (C={cap:g})", "seq_is", SeqIsConfig(agg=_SEQ, cap=cap)),
        (f"CISPO (cap 1+{cispo_eps_high:g})", "cispo", CispoConfig.minimax_m1(cispo_eps_high, agg=_SUM)),
    )


def default_long_estimators(clip: float = 0.2) -> tuple[tuple[str, str, Any], ...]:
    """(label, objective, config) of the long study, each with the clip its algorithm uses: PPO/GRPO
    1 ± ``clip`` (verl's default 0.2) on the token ratio, GSPO the paper's (3e-4, 4e-4) on the
    geometric sequence ratio, CISPO verl's 1 ± ``clip`` on the token weight; and token IS unclipped."""
    return (
        ("token IS (no clip)", "reinforce", ReinforceConfig(agg=_SUM, is_level="token", is_cap=1e300)),
        (f"PPO/GRPO clip 1±{clip:g}", "ppo_clip", PpoClipConfig(agg=_SUM, eps_low=clip, eps_high=clip)),
        ("GSPO clip (3e-4, 4e-4)", "gspo", GspoConfig(agg=_SUM, eps_low=3e-4, eps_high=4e-4)),
        (f"CISPO clip 1±{clip:g} (verl)", "cispo", CispoConfig.verl(clip, clip, agg=_SUM)),
    )


@dataclass(frozen=True)
class Config:
    """Attributes:
        vocab: V.
        kl: κ, the mean per-token KL(π_old‖π_θ) of every pair.
        horizons: T values with exact bias (V^T sequences are enumerated).
        ratio_horizons: longer T values where only the sequence ratio's variance is measured.
        n_replicas: Monte Carlo replicas (single sequences) per variance estimate.
        n_ratio_samples: samples of the sequence ratio per long T.
        estimators: (label, objective, config) triples; ``default_estimators()``.
        long_horizons, long_kls: the (T, κ) grid of the long part.
        long_vocab: V of the long part's policies.
        long_sequences: sequences per (setup, T, κ) for each variance (paired MC, tilt, ∇J).
        long_ratio_samples: sequences per (setup, T, κ) for the log-ratio statistics.
        long_estimators: ``default_long_estimators()``.
    """

    vocab: int = 3
    kl: float = 0.05
    horizons: tuple[int, ...] = (1, 2, 3, 4, 6, 8)
    ratio_horizons: tuple[int, ...] = (16, 32, 64)
    n_replicas: int = 20_000
    n_ratio_samples: int = 100_000
    estimators: tuple[tuple[str, str, Any], ...] = field(default_factory=default_estimators)
    long_horizons: tuple[int, ...] = (16, 64, 256, 1024, 4096)
    long_kls: tuple[float, ...] = (0.001, 0.01, 0.05)
    long_vocab: int = 32_768
    long_sequences: int = 400
    long_ratio_samples: int = 2_000
    long_estimators: tuple[tuple[str, str, Any], ...] = field(default_factory=default_long_estimators)

    def __post_init__(self) -> None:
        require(isinstance(self.vocab, int) and self.vocab >= 2, "vocab", self.vocab, "an int >= 2")
        require(self.kl > 0, "kl", self.kl, "kl > 0")
        require(len(self.horizons) >= 2 and all(t >= 1 for t in self.horizons), "horizons",
                self.horizons, "at least two T >= 1")
        check_replicas(self.n_replicas)
        require(self.n_ratio_samples >= 2, "n_ratio_samples", self.n_ratio_samples, ">= 2")
        require(len(self.long_horizons) >= 2 and min(self.long_horizons) >= 2, "long_horizons", self.long_horizons,
                "at least two T >= 2")
        require(len(self.long_kls) >= 1 and min(self.long_kls) > 0, "long_kls", self.long_kls, "one or more κ > 0")
        check_replicas(self.long_sequences)
        require(self.long_ratio_samples >= 8, "long_ratio_samples", self.long_ratio_samples, ">= 8")

    @classmethod
    def quick(cls) -> Config:
        return cls(horizons=(1, 2, 4, 6, 8), ratio_horizons=(16, 32), n_replicas=4_000,
                   n_ratio_samples=20_000, long_sequences=40, long_ratio_samples=200)

    @classmethod
    def full(cls) -> Config:
        return cls(horizons=(1, 2, 3, 4, 5, 6, 8, 10), ratio_horizons=(16, 32, 64, 128),
                   n_replicas=40_000, n_ratio_samples=200_000)

    @classmethod
    def tiny(cls) -> Config:
        return cls(horizons=(1, 3), ratio_horizons=(8,), n_replicas=200, n_ratio_samples=500,
                   long_horizons=(4, 16), long_kls=(0.05,), long_vocab=64, long_sequences=40, long_ratio_samples=200)


def reward_for(horizon: int, vocab: int) -> TokenCount:
    """R = 1[#token 0 >= max(1, T // V)]: binary, pass rate near 1/2 for every T."""
    return TokenCount(0, threshold=max(1, horizon // vocab))


def policy_pair(horizon: int, config: Config, seed: int, device: str = "cpu"):
    """(π_old, π_θ) for one T: random logits, then ``perturb(kl=κ)``."""
    old = TabularPolicy.random(horizon, config.vocab, generator=seeded(seed, horizon),
                               dtype=torch.float64, device=device)
    new = perturb(old, kl=config.kl, generator=seeded(seed, 10_000 + horizon))
    return old, new


def chi2_per_position(old: TabularPolicy, new: TabularPolicy) -> torch.Tensor:
    """χ²(π_θ,t ‖ π_old,t) of every position (rows of a tabular policy)."""
    p, q = torch.softmax(new.logits, -1), torch.softmax(old.logits, -1)
    return (p * p / q).sum(-1) - 1.0


def _gradient_rows(config: Config, seed: int, device: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for t in config.horizons:
        reward = reward_for(t, config.vocab)
        old, new = policy_pair(t, config, seed, device)
        j, truth = exact_objective(new, reward)[:2]
        scale = float(truth.norm())
        # what the relative numbers are divided by (the figure's caption explains jumps with them)
        for quantity, value in (("pass rate J", float(j)), ("‖∇J‖", scale)):
            rows.append({"T": t, "estimator": "true ∇J", "quantity": quantity, "value": value,
                         "low": value, "high": value, "method": "exact"})
        for label, objective, cfg in config.estimators:
            exact = exact_estimator_mean(new, old, reward, objective, cfg)
            mc = mc_gradient(new, old, reward, objective, cfg, "raw", None,
                             mc_config(config.n_replicas, group_size=1, seed=seed + t),
                             truth=truth)
            bias = float((exact - truth).norm()) / scale
            on_policy = exact_estimator_mean(new, new, reward, objective, cfg)
            rows.append({"T": t, "estimator": label, "quantity": "on-policy relative bias",
                         "value": float((on_policy - truth).norm()) / scale, "low": np.nan,
                         "high": np.nan, "method": "exact"})
            rows.append({"T": t, "estimator": label, "quantity": "relative bias", "value": bias,
                         "low": bias, "high": bias, "method": "exact"})
            v = mc.var_trace
            rows.append({"T": t, "estimator": label, "quantity": "relative variance",
                         "value": v.estimate / scale ** 2, "low": v.low / scale ** 2,
                         "high": v.high / scale ** 2, "method": "monte carlo"})
    return rows


def _ratio_rows(config: Config, seed: int, device: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for t in sorted(set(config.horizons) | set(config.ratio_horizons)):
        old, new = policy_pair(t, config, seed, device)
        closed = float(torch.prod(1.0 + chi2_per_position(old, new)) - 1.0)
        tokens, mask = old.sample(config.n_ratio_samples, generator=seeded(seed, 20_000 + t))
        log_r = np.concatenate([x.sum(-1).cpu().numpy() for x in token_log_ratios(old, new, tokens, mask)])
        r = np.exp(log_r)
        var = variance_interval(r)
        extreme = mean_interval(((r < 1e-3) | (r > 1e3)).astype(float))
        ess = float(r.sum() ** 2 / (r @ r) / r.size)
        for quantity, est in (("ratio variance", var), ("ratio variance closed form", Estimate.exact(closed)),
                              ("extreme weight fraction", extreme), ("ESS fraction", Estimate.exact(ess)),
                              ("ESS fraction closed form", Estimate.exact(1.0 / (1.0 + closed)))):
            rows.append({"T": t, "estimator": UNBIASED, "quantity": quantity, "value": est.value,
                         "low": est.low, "high": est.high,
                         "method": "closed form" if "closed" in quantity else "monte carlo"})
    return rows


def _long_rows(config: Config, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, float],
                                                  list[dict[str, Any]]]:
    """Rows, effect records, per estimator the largest relative difference between the long part's
    closed-form weights and the registered objective's (``_weight_errors``) over the grid, and the
    grid points where sequence IS's variance is not estimable (no tilted sample has a non-zero
    reward: its second moment's estimate is 0, so no ratio can be formed there)."""
    rows: list[dict[str, Any]] = []
    effects: list[dict[str, Any]] = []
    weight_check: dict[str, float] = {}
    unestimable: list[dict[str, Any]] = []
    for si, setup in enumerate(_long.default_setups(config.long_vocab)):
        for ki, kl in enumerate(config.long_kls):
            old0, new0 = _long.policy_pair(setup, kl, max(config.long_horizons), seed + 101 * si)
            for t in config.long_horizons:
                old, new = old0.with_horizon(t), new0.with_horizon(t)
                reward = _long.median_reward(old)
                s0 = seed * 7_919 + 1_000 * si + 100 * ki + t

                def add(estimator, quantity, est, method, _t=t, _kl=kl, _name=setup.name):
                    rows.append({"T": _t, "estimator": estimator, "quantity": quantity, "value": est.value,
                                 "low": est.low, "high": est.high, "method": method, "setup": _name, "kl": _kl})

                log_m2 = _long.log_second_moment(old, new)
                add(UNBIASED, "log(1 + Var R) exact", Estimate.exact(log_m2), "exact (transfer matrix)")
                log_r, _ = _long.sequence_log_ratios(old, new, config.long_ratio_samples, s0)
                st = _long.log_space_stats(log_r, t)
                add(UNBIASED, "extreme weight fraction (long)", st["extreme weight fraction"], "monte carlo (log space)")
                add(UNBIASED, "ESS fraction (long)", st["ESS fraction"], "monte carlo (log space)")
                add(UNBIASED, "ESS fraction limit 1/(1 + Var R)", Estimate.exact(float(np.exp(-log_m2))), "exact")
                batches = _long.paired_variances(old, new, reward, config.long_estimators, config.long_sequences, s0 + 1)
                log_c, moment = _long.seq_is_second_moment(old, new, reward, config.long_sequences, s0 + 2)
                grad_sq = _long.on_policy_gradient_sq(new, reward, config.long_sequences, s0 + 3)
                if not moment.value > 0:  # no tilted sample has a non-zero reward: sequence IS's variance not estimable
                    add(UNBIASED, "log tr Cov", Estimate(float("nan"), float("nan"), float("nan")),
                        f"not estimable: none of {config.long_sequences} tilted samples has a non-zero reward")
                    unestimable.append({"setup": setup.name, "T": t, "kl": kl})
                    continue
                seq_m2 = moment.value * float(np.exp(min(log_c, 700.0)))
                add(UNBIASED, "log tr Cov", Estimate.exact(log_c + float(np.log(moment.value))), "exact tilt + monte carlo")
                add(UNBIASED, "‖∇J‖² share of E‖ĝ‖²", Estimate.exact(grad_sq / seq_m2 if log_c < 700 else 0.0),
                    "monte carlo")
                for label, err in _weight_errors(old, new, reward, config.long_estimators, s0 + 4).items():
                    weight_check[label] = max(weight_check.get(label, 0.0), err)
                for label, *_ in config.long_estimators:
                    ratio = _long.log_var_ratio_vs_exact(batches[label], log_c, moment, grad_sq)
                    add(label, "log variance ratio vs sequence IS", ratio, "monte carlo vs exact tilt")
                    effects.append({"setup": setup.name, "T": t, "kl": kl, "estimator": label,
                                    "log_var_ratio": ratio, "vs": UNBIASED})
    return rows, effects, weight_check, unestimable


def _setup_text(setup: _long.LongSetup) -> str:
    """One line naming a long setup's policy family."""
    if setup.n_states == 1:
        return (f"independent positions: one next-token distribution for every position (V = {setup.vocab}, top token "
                f"{setup.top_prob:g}), token log-ratios i.i.d.")
    return (f"dependent positions: a {setup.n_states}-class sticky Markov chain (V = {setup.vocab}, {setup.stay:g} of a row's "
            f"mass on its own class, top token {setup.top_prob:g}; half the classes move {setup.amplitudes[0] / setup.amplitudes[1]:g}× "
            "more under π_θ), token log-ratios autocorrelated")


def _long_ratio_records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """Per (setup, T, κ): exact log(1 + Var R), the extreme fraction and the ESS fraction (long part)."""
    long = table[table.setup.notna()] if "setup" in table else table.iloc[:0]
    out = []
    for (name, t, kl), g in long[long.estimator == UNBIASED].groupby(["setup", "T", "kl"], sort=False):
        q = g.set_index("quantity")
        out.append({"setup": name, "T": int(t), "kl": float(kl),
                    "log1p_var_R": float(q.loc["log(1 + Var R) exact", "value"]),
                    "extreme_fraction": Estimate(*(float(q.loc["extreme weight fraction (long)", c])
                                                   for c in ("value", "low", "high"))),
                    "ess_fraction": float(q.loc["ESS fraction (long)", "value"])})
    return out


def _weight_errors(old, new, reward, estimators, seed: int, n: int = 4) -> dict[str, float]:
    """Per estimator (and sequence IS), ``_long.weight_error`` on ``n`` sequences: the closed-form
    weights of the long part (and the R·A the tilt assumes) against the registered objectives."""
    tokens = old.sample_block(seed, 0, n)
    mask = old.mask(tokens)
    adv = reward(tokens, mask).reshape(-1, 1).expand(mask.shape)
    logp, old_logp = new.log_prob(tokens), old.log_prob(tokens)
    return {label: _long.weight_error(obj, cfg, logp, old_logp, adv, mask)
            for label, obj, cfg in ((UNBIASED, "seq_is", SeqIsConfig(agg=_SEQ)),) + tuple(estimators)}


def growth_rate(table: pd.DataFrame, estimator: str, quantity: str) -> float:
    """Slope b of log(1 + y) = a + b·T fitted over the sweep: b > 0 is exponential growth."""
    sub = table[(table.estimator == estimator) & (table.quantity == quantity)]
    slope = np.polyfit(sub["T"].to_numpy(float), np.log1p(sub["value"].to_numpy(float)), 1)[0]
    return float(slope)


def run(config: Config, *, seed: int = 0, device: str = "cpu") -> Result:
    """Run the sweep; ``Result.table`` has columns T, estimator, quantity, value, low, high, method."""
    long_rows, effects, weight_check, unestimable = _long_rows(config, seed)
    table = pd.DataFrame(_gradient_rows(config, seed, device) + _ratio_rows(config, seed, device) + long_rows)
    closed = table[table.quantity == "ratio variance closed form"]
    measured = table[table.quantity == "ratio variance"].set_index("T")
    covered = [bool(measured.loc[t, "low"] <= v <= measured.loc[t, "high"])
               for t, v in zip(closed["T"], closed["value"])]
    t_max = max(config.horizons)
    at_max = table[(table["T"] == t_max)].set_index(["estimator", "quantity"])
    summary = {
        "kl": config.kl,
        "t_max": t_max,
        "ratio_var_growth": growth_rate(table, UNBIASED, "ratio variance closed form"),
        "ratio_var_closed_form_covered": float(np.mean(covered)),
        "extreme_fraction_by_T": dict(zip(table[table.quantity == "extreme weight fraction"]["T"],
                                         table[table.quantity == "extreme weight fraction"]["value"])),
        "bias_at_t_max": {lab: float(at_max.loc[(lab, "relative bias"), "value"]) for lab, *_ in config.estimators},
        "bias_by_T": {lab: [float(x) for x in table[(table.estimator == lab) & (table.quantity == "relative bias")]["value"]]
                      for lab, *_ in config.estimators},
        "var_at_t_max": {lab: Estimate(*(float(at_max.loc[(lab, "relative variance"), c]) for c in ("value", "low", "high")))
                         for lab, *_ in config.estimators},
        "horizons": list(config.horizons),
        "on_policy_bias_max": float(table[table.quantity == "on-policy relative bias"]["value"].max()),
        # long part: every record names its setup, T and κ (sims.experiments._long)
        "long_setups": {s.name: _setup_text(s) for s in _long.default_setups(config.long_vocab)},
        "long_horizons": list(config.long_horizons),
        "long_kls": list(config.long_kls),
        "long_effects": effects,
        "long_unestimable": unestimable,  # grid points where no tilted sample had a non-zero reward
        "long_ratio": _long_ratio_records(table),
        "long_weight_check": weight_check,  # closed-form weights vs the registered objectives, max relative
    }
    return Result(NAME, config, table, summary)


FLOOR = 1e-16  # float64 rounding: an exact bias below this is drawn at this line


def _jumps(table: pd.DataFrame, labels) -> list[int]:
    """T values where every estimator's relative variance is at least 5× both neighbours'."""
    out = []
    for lab in labels:
        v = table[(table.estimator == lab) & (table.quantity == "relative variance")].sort_values("T")
        t, y = v["T"].to_numpy(), v["value"].to_numpy()
        out.append({int(t[i]) for i in range(1, len(y) - 1) if y[i] >= 5 * y[i - 1] and y[i] >= 5 * y[i + 1]})
    return sorted(set.intersection(*out)) if out else []


def figures(result: Result) -> list[Figure]:
    """(1) exact relative bias and MC relative variance versus T, one panel each; (2) the sequence
    ratio's variance against its closed form, and the fraction of extreme weights, versus T."""
    table, cfg, summary = result.table, result.config, result.summary
    labels = [lab for lab, *_ in cfg.estimators]
    with style():
        fig, axes = new_figure(1, 2, width=6.5, height=2.9)
        ax_b, ax_v = axes[0]
        for i, label in enumerate(labels):
            b = table[(table.estimator == label) & (table.quantity == "relative bias")]
            ax_b.plot(b["T"], np.maximum(b["value"], FLOOR), **line_kw(i), label=label)
            v = table[(table.estimator == label) & (table.quantity == "relative variance")]
            ax_v.plot(v["T"], v["value"], **line_kw(i), label=label)
            ax_v.fill_between(v["T"], v["low"], v["high"], color=PALETTE[i], alpha=0.2, lw=0)
        ax_b.axhline(FLOOR, color="0.5", lw=0.8, ls=":", label="float64 rounding (1e-16)")
        ax_b.set_ylabel("relative bias ‖E ĝ − ∇J‖ / ‖∇J‖ (exact)")
        ax_v.set_ylabel("relative variance tr Cov(ĝ) / ‖∇J‖²")
        for ax in (ax_b, ax_v):
            ax.set_yscale("log")
            ax.set_xlabel("sequence length T (tokens)")
            ax.set_xticks(cfg.horizons)
        ax_b.set_title("bias: only sequence IS is unbiased")
        ax_v.set_title("variance (95% CI bands)")
        legend_outside(fig, [ax_b], ncol=3)
        main = fig
    jumps = _jumps(table, labels)
    pr = table[table.quantity == "pass rate J"].set_index("T")["value"]
    gn = table[table.quantity == "‖∇J‖"].set_index("T")["value"]
    var = summary["var_at_t_max"]
    low_var = [lab for lab in labels if lab != UNBIASED and var[lab].high < var[UNBIASED].low]
    caption = (
        f"Bias and variance of the importance-weighting schemes versus sequence length T at a fixed per-token "
        f"KL of {cfg.kl:g} (V = {cfg.vocab}, advantage A = R). Left: the exact relative bias from enumeration; "
        f"sequence IS stays at float64 rounding (largest {fmt(max(summary['bias_by_T'][UNBIASED]))}), every other "
        f"scheme is biased from T = 2 on (at T = 1 they coincide with sequence IS). Right: the Monte Carlo "
        f"relative variance with 95% bands; at T = {summary['t_max']} {join(low_var) or 'no scheme'} "
        f"{'lies' if len(low_var) == 1 else 'lie'} below sequence IS."
    )
    if jumps:
        caption += (
            f" The variance jumps at T = {join(jumps)} for every scheme at once. These are not instabilities of "
            f"the estimators. Almost every sequence reaches the reward's threshold max(1, ⌊T/V⌋) at these T (the "
            f"threshold grows in steps, T in ones, and each T has its own random policy pair): the pass rate J is "
            f"{join(fmt(pr[t]) for t in jumps)} there (elsewhere {fmt(pr.drop(jumps).min())}–"
            f"{fmt(pr.drop(jumps).max())}), ‖∇J‖ falls to {join(fmt(gn[t]) for t in jumps)} (elsewhere "
            f"{fmt(gn.drop(jumps).min())}–{fmt(gn.drop(jumps).max())}), and the variance is divided by ‖∇J‖². "
            "Compare the schemes at one T, not one T with the next.")
    with style():
        fig, axes = new_figure(1, 2, width=6.5, height=2.7)
        ax_r, ax_x = axes[0]
        r = table[table.quantity == "ratio variance"].sort_values("T")
        c = table[table.quantity == "ratio variance closed form"].sort_values("T")
        ax_r.plot(c["T"], c["value"], **line_kw(0, marker=False), label="closed form Π(1 + χ²_t) − 1")
        pos = r["low"] > 0
        lo = np.where(pos, r["value"] - r["low"], 0.0)
        ax_r.errorbar(r["T"], r["value"], yerr=[lo, r["high"] - r["value"]], ls="none", marker=MARKERS[1],
                      color=PALETTE[1], label="Monte Carlo, 95% CI")
        if (~pos).any():
            ax_r.plot(r["T"][~pos], r["value"][~pos] / 10, ls="none", marker="v", color=PALETTE[6],
                      label="its CI reaches ≤ 0 (arrow to ÷10)")
            ax_r.vlines(r["T"][~pos], r["value"][~pos] / 10, r["value"][~pos], color=PALETTE[6], lw=1)
        ax_r.set_yscale("log")
        ax_r.set_ylabel("Var R of the sequence ratio")
        ax_r.set_title("variance grows exponentially in T")
        ax_r.legend(loc="upper left")
        x = table[table.quantity == "extreme weight fraction"].sort_values("T")
        ax_x.errorbar(x["T"], x["value"], yerr=[x["value"] - x["low"], x["high"] - x["value"]], **line_kw(2))
        ax_x.set_ylabel("fraction of R outside [1e-3, 1e3]")
        ax_x.set_title("weights vanish or explode")
        ax_x.set_ylim(0, None)
        for ax in (ax_r, ax_x):
            ax.set_xlabel("sequence length T (tokens)")
        ratio_fig = fig
    t_all = r["T"].to_numpy()
    cover = r.set_index("T")
    closed = c.set_index("T")["value"]
    under = [int(t) for t in t_all if cover.loc[t, "high"] < closed[t]]
    zero_ci = [int(t) for t in t_all if cover.loc[t, "low"] <= 0]
    ext = summary["extreme_fraction_by_T"]
    cap2 = (
        f"The sequence importance ratio R = Π_t ρ_t at per-token KL {cfg.kl:g}. Left: Var R against its closed "
        f"form (a straight line on this log axis means exponential growth: log(1 + Var R) rises by "
        f"{fmt(summary['ratio_var_growth'])} per token). Right: the fraction of sampled weights below 1e-3 or "
        f"above 1e3, {fmt(ext[max(ext)])} at T = {max(ext)}."
    )
    if under:
        cap2 += (f" At T = {join(under)} the Monte Carlo variance lies below the closed form and its interval misses "
                 "it: R is so heavy-tailed there that the rare huge weights carrying most of the variance are rarely "
                 "sampled, so the sample variance underestimates it and its delta-method interval is too narrow")
        cap2 += (f"; at T = {join(zero_ci)} that interval reaches 0 or below (drawn as a downward arrow on the log "
                 "axis)." if zero_ci else ".")
    return [Figure(NAME, main, caption), Figure(f"{NAME}_ratio", ratio_fig, cap2)] + _long_figures(result)


def _long_figures(result: Result) -> list[Figure]:
    """(3) log variance ratio vs sequence IS against T, one panel per (setup, κ); (4) the sequence
    ratio at long T: exact log(1 + Var R) and the extreme fraction, both setups and every κ."""
    table, cfg, summary = result.table, result.config, result.summary
    if "setup" not in table or not summary.get("long_effects"):
        return []
    long = table[table.setup.notna()]
    setups = list(dict.fromkeys(long.setup))
    kls = list(cfg.long_kls)
    labels = [lab for lab, *_ in cfg.long_estimators]
    with style():
        fig, axes = new_figure(len(setups), len(kls), width=6.5, height=1.9 * len(setups) + 0.6, sharex=True)
        for r, name in enumerate(setups):
            for c, kl in enumerate(kls):
                ax = axes[r][c]
                sub = long[(long.setup == name) & (long.kl == kl) & (long.quantity == "log variance ratio vs sequence IS")]
                for i, lab in enumerate(labels):
                    g = sub[sub.estimator == lab].sort_values("T")
                    ax.plot(g["T"], g["value"], **line_kw(i), label=lab)
                    ax.fill_between(g["T"].astype(float), g["low"], g["high"], color=PALETTE[i], alpha=0.2, lw=0)
                ax.axhline(0.0, color="0.3", lw=0.8, label="= sequence IS")
                ax.set_xscale("log", base=2)
                ax.set_title(f"{name}, κ = {kl:g}")
                ax.set_ylabel("log(tr Cov ĝ / tr Cov ĝ_seq IS)" if c == 0 else "log variance ratio")
                if r == len(setups) - 1:
                    ax.set_xlabel("sequence length T (tokens)")
        legend_outside(fig, axes[0].tolist(), ncol=3)
        effect_fig = fig
    eff = summary["long_effects"]
    t_max = max(cfg.long_horizons)
    at_max = [e for e in eff if e["T"] == t_max]
    worst = max(at_max, key=lambda e: e["log_var_ratio"].high)
    t_min = min(cfg.long_horizons)
    first = [e for e in eff if e["T"] == t_min]
    least = max(first, key=lambda e: e["log_var_ratio"].high)
    covers = sorted({(e["setup"], e["kl"], e["T"]) for e in eff if e["log_var_ratio"].low <= 0 <= e["log_var_ratio"].high})
    cap3 = (
        f"Log variance ratio of each clipped or token-level estimator against sequence IS (95% intervals; each panel "
        f"has its own y scale), "
        f"T = {t_min}–{t_max}, V = {cfg.long_vocab}, per setup (rows; independent: i.i.d. token log-ratios; dependent: a "
        f"sticky 4-class Markov chain) and per-token KL κ (columns); below 0 the estimator has "
        f"lower variance. Sequence IS's variance is exact up to a well-behaved Monte Carlo factor (the squared-ratio "
        f"tilt), not its own sample variance, which at long T misses the rare huge weights. At T = {t_max} the ratio "
        f"is at most {fmt(worst['log_var_ratio'].high)} (upper end, {worst['estimator']}, {worst['setup']}, κ = "
        f"{worst['kl']:g}); at T = {t_min} at most {fmt(least['log_var_ratio'].high)} ({least['estimator']}, "
        f"{least['setup']}, κ = {least['kl']:g}). "
        + ("The interval of at least one estimator includes 0 (no difference from sequence IS) at "
           + join(f"{n}, κ = {k:g}, T = {t}" for n, k, t in covers) + ": at small divergence and short T the "
           "sequence ratio is light-tailed and sequence IS is no noisier. " if covers else "")
        + f"The closed-form weights (and sequence IS's R·A, which the tilt "
        f"assumes) equal the registered objectives' to {fmt(max(summary['long_weight_check'].values()))} (relative).")
    with style():
        fig, axes = new_figure(1, 2, width=6.5, height=2.9)
        ax_v, ax_x = axes[0]
        seq = long[long.estimator == UNBIASED]
        for si, name in enumerate(setups):
            for ki, kl in enumerate(kls):
                i = si * len(kls) + ki
                g = seq[(seq.setup == name) & (seq.kl == kl)]
                v = g[g.quantity == "log(1 + Var R) exact"].sort_values("T")
                ax_v.plot(v["T"], v["value"], **line_kw(i), label=f"{name}, κ = {kl:g}")
                x = g[g.quantity == "extreme weight fraction (long)"].sort_values("T")
                ax_x.errorbar(x["T"], x["value"], yerr=[x["value"] - x["low"], x["high"] - x["value"]], **line_kw(i))
        ax_v.set_xscale("log", base=2)
        ax_v.set_yscale("log")
        ax_v.set_ylabel("log(1 + Var R), exact")
        ax_v.set_title("Var R = e^y − 1 grows exponentially in T")
        ax_x.set_xscale("log", base=2)
        ax_x.set_ylim(-0.03, 1.03)
        ax_x.set_ylabel("fraction of R outside [1e-3, 1e3]")
        ax_x.set_title("weights vanish or explode (95% CI)")
        for ax in (ax_v, ax_x):
            ax.set_xlabel("sequence length T (tokens)")
        legend_outside(fig, [ax_v], ncol=3)
        ratio_fig = fig
    rec = {(r["setup"], r["kl"], r["T"]): r for r in summary["long_ratio"]}
    mid = kls[len(kls) // 2]
    cap4 = (
        f"The sequence ratio R = Π_t ρ_t at LLM lengths (V = {cfg.long_vocab}). Left: log(1 + Var R) = log E_old[R²], "
        f"exact from the class chain's transfer matrix (no sampling); at T = {t_max}, κ = {mid:g} it is "
        + join(f"{fmt(rec[(n, mid, t_max)]['log1p_var_R'])} ({n})" for n in setups)
        + " nats, i.e. Var R ≈ e^that. It is linear in T for independent positions (T·log(1 + χ²)) and larger for "
        "dependent ones. Right: the Monte Carlo fraction of sampled weights outside [1e-3, 1e3] (ratios summed in log "
        f"space); at T = {t_max} it is " + join(f"{fmt(rec[(n, kl, t_max)]['extreme_fraction'].value)} ({n}, κ = {kl:g})"
                                                  for n in setups for kl in kls) + ".")
    return [Figure(f"{NAME}_long", effect_fig, cap3), Figure(f"{NAME}_long_ratio", ratio_fig, cap4)]


def plot(result: Result, path) -> dict[str, str]:
    """Write ``figures(result)`` (the first at ``path``); returns {file name: caption}."""
    return plot_to(figures(result), path)


def with_estimator(config: Config, label: str, objective: str, objective_config: Any) -> Config:
    """``config`` with the estimator ``label`` replaced (tests feed deliberately wrong ones)."""
    ests = tuple((lab, objective, objective_config) if lab == label else (lab, obj, cfg)
                 for lab, obj, cfg in config.estimators)
    return dataclasses.replace(config, estimators=ests)
