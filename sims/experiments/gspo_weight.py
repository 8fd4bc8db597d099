"""GSPO's geometric-mean weight G(o) = R(o)^{1/T} against the true importance weight R(o).

Setup: a ``TabularPolicy`` whose every position has the same old and new distributions μ, π
(the papers.md §3/§11 example μ = (0.4, 0.3, 0.2, 0.1), π = (0.3, 0.3, 0.25, 0.15), and pairs
at several per-token KL from ``perturb``). Positions are independent, so

* E_old[R] = 1 and E_old[R²] = (1 + χ²)^T (exact enumeration for small T);
* E_old[G] = (E_μ[ρ^{1/T}])^T for every T, exactly (independence), with limit
  exp(−KL(μ‖π)) as T → ∞ (papers.md §11.3);
* pointwise G = R^{1/T} lies between R and 1, so G > R exactly when R < 1, while AM-GM bounds
  G by the arithmetic mean of the token ratios, not by R.

Measured: enumeration checks of the published example (T = 5), E_old[G] versus T (exact, and a
Monte Carlo check with 95% intervals), the gap 1 − E[G] versus the divergence, Var(G)·T and
Var(log G)·T (the 1/T claim), and on samples the fraction with G > R and the AM-GM gap.

Long part (``sims.experiments._long``): T up to 4096 and V = 32,768 on independent positions
(where Var(log G) = Var(log ρ)/T holds by construction) and on dependent positions (a sticky
4-class Markov chain, token log-ratios autocorrelated), at several per-token KL κ. From sequence
log-ratios summed in log space: T·Var(log G) with its 95% interval per (setup, κ, T), the
departure from 1/T log(T_max·Var_max / (T_min·Var_min)) with its interval (0 is exactly 1/T),
Var(G), E_old[G] and P(G > R).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from policies.perturb import perturb
from policies.tabular import TabularPolicy
from sims._checks import require
from sims.experiments import _long
from sims.experiments._common import (
    LEVEL,
    Estimate,
    Published,
    Result,
    mean_interval,
    seeded,
    token_log_ratios,
    variance_interval,
)
from sims.experiments._plotting import (
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

NAME = "gspo_weight"
TITLE = "GSPO's geometric-mean weight against the true importance weight"

EXAMPLE_MU = (0.4, 0.3, 0.2, 0.1)
EXAMPLE_PI = (0.3, 0.3, 0.25, 0.15)


@dataclass(frozen=True)
class Config:
    """Attributes:
        horizons: T values for E_old[G] (exact) and the Monte Carlo checks.
        kls: per-token KL(π_old‖π_θ) values of the divergence sweep (V = ``vocab``).
        vocab: V of the divergence sweep.
        sweep_horizon: T of the divergence sweep.
        n_samples: Monte Carlo samples per point.
        long_horizons, long_kls, long_vocab: the long part's (T, κ) grid and V.
        long_samples: sequences per (setup, κ, T) of the long part.
    """

    horizons: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128)
    kls: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0)
    vocab: int = 8
    sweep_horizon: int = 16
    n_samples: int = 50_000
    long_horizons: tuple[int, ...] = (16, 64, 256, 1024, 4096)
    long_kls: tuple[float, ...] = (0.001, 0.01, 0.05)
    long_vocab: int = 32_768
    long_samples: int = 4_000

    def __post_init__(self) -> None:
        require(len(self.horizons) >= 2 and min(self.horizons) >= 1, "horizons", self.horizons, ">= 2 values >= 1")
        require(len(self.kls) >= 2 and min(self.kls) > 0, "kls", self.kls, ">= 2 values > 0")
        require(self.n_samples >= 2, "n_samples", self.n_samples, ">= 2")
        require(len(self.long_horizons) >= 2 and min(self.long_horizons) >= 2, "long_horizons",
                self.long_horizons, "at least two T >= 2")
        require(len(self.long_kls) >= 1 and min(self.long_kls) > 0, "long_kls", self.long_kls, "one or more κ > 0")
        require(self.long_samples >= 8, "long_samples", self.long_samples, ">= 8")

    @classmethod
    def quick(cls) -> Config:
        return cls(horizons=(1, 2, 4, 8, 16, 64), n_samples=20_000, long_samples=1_000)

    @classmethod
    def full(cls) -> Config:
        return cls(horizons=(1, 2, 4, 8, 16, 32, 64, 128, 256), n_samples=200_000)

    @classmethod
    def tiny(cls) -> Config:
        return cls(horizons=(1, 4), kls=(0.05, 0.5), n_samples=500, long_horizons=(4, 16), long_kls=(0.05,),
                   long_vocab=64, long_samples=200)


def iid_pair(mu, pi, horizon: int) -> tuple[TabularPolicy, TabularPolicy]:
    """(old, new) tabular policies with every position μ (old) and π (new), float64."""
    def table(p):
        return torch.log(torch.tensor(p, dtype=torch.float64)).expand(horizon, -1).clone()
    return TabularPolicy(table(mu)), TabularPolicy(table(pi))


def enumerate_moments(old: TabularPolicy, new: TabularPolicy) -> dict[str, float]:
    """E_old[R], E_old[R²], E_old[G], E_old[log G] by enumerating every sequence."""
    tokens, mask, prob = old.enumerate()
    log_r = ((new.log_prob(tokens) - old.log_prob(tokens)) * mask).sum(-1)
    t = old.horizon
    return {"E[R]": float(prob @ log_r.exp()), "E[R^2]": float(prob @ (2 * log_r).exp()),
            "E[G]": float(prob @ (log_r / t).exp()), "E[log G]": float(prob @ (log_r / t))}


def expected_g(mu: torch.Tensor, pi: torch.Tensor, horizon: int) -> float:
    """E_μ[G] = (E_μ[ρ^{1/T}])^T for i.i.d. positions with ratio ρ = π/μ (exact)."""
    return float((mu * (pi / mu) ** (1.0 / horizon)).sum() ** horizon)


def _row_probs(policy: TabularPolicy) -> torch.Tensor:
    return torch.softmax(policy.logits[0], -1)


def _sample_rows(old, new, n: int, gen) -> dict[str, np.ndarray]:
    """R, G, log G and the arithmetic mean AM of the token ratios of ``n`` sequences from ``old``
    (drawn in one call; the log-ratios formed a pass of rows at a time: ``token_log_ratios``)."""
    tokens, mask = old.sample(n, generator=gen)
    t = old.horizon
    out: dict[str, list[np.ndarray]] = {"R": [], "G": [], "log G": [], "AM": []}
    for log_rho in token_log_ratios(old, new, tokens, mask):
        log_r = log_rho.sum(-1)
        out["R"].append(log_r.exp().numpy())
        out["G"].append((log_r / t).exp().numpy())
        out["log G"].append((log_r / t).numpy())
        out["AM"].append(log_rho.exp().mean(-1).numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def run(config: Config, *, seed: int = 0, device: str = "cpu") -> Result:
    """Tidy table: columns setting, T, kl, quantity, value, low, high, method."""
    rows: list[dict[str, Any]] = []

    def add(setting, t, kl, quantity, est: Estimate, method):
        rows.append({"setting": setting, "T": t, "kl": kl, "quantity": quantity, "value": est.value,
                     "low": est.low, "high": est.high, "method": method})

    mu, pi = (torch.tensor(p, dtype=torch.float64) for p in (EXAMPLE_MU, EXAMPLE_PI))
    kl_example = float((mu * (mu / pi).log()).sum())
    example = enumerate_moments(*iid_pair(EXAMPLE_MU, EXAMPLE_PI, 5))
    for key, value in example.items():
        add("example", 5, kl_example, key, Estimate.exact(value), "enumeration")
    for t in config.horizons:
        old, new = iid_pair(EXAMPLE_MU, EXAMPLE_PI, t)
        add("example", t, kl_example, "E[G]", Estimate.exact(expected_g(mu, pi, t)), "exact (independence)")
        s = _sample_rows(old, new, config.n_samples, seeded(seed, t))
        add("example", t, kl_example, "E[G] monte carlo", mean_interval(s["G"]), "monte carlo")
        add("example", t, kl_example, "T·Var(G)", _scaled(variance_interval(s["G"]), t), "monte carlo")
        add("example", t, kl_example, "T·Var(log G)", _scaled(variance_interval(s["log G"]), t), "monte carlo")
        add("example", t, kl_example, "P(G > R)", mean_interval(s["G"] > s["R"]), "monte carlo")
        add("example", t, kl_example, "min(AM − G)", Estimate.exact(float((s["AM"] - s["G"]).min())), "monte carlo")
    add("example", float("inf"), kl_example, "E[G]", Estimate.exact(float(np.exp(-kl_example))), "limit exp(−KL)")
    t = config.sweep_horizon
    base = TabularPolicy.random(1, config.vocab, generator=seeded(seed, 99), dtype=torch.float64)
    for kl in config.kls:
        moved = perturb(base, kl=kl, generator=seeded(seed, 100))
        m, p = _row_probs(base), _row_probs(moved)
        add("divergence sweep", t, kl, "E[G]", Estimate.exact(expected_g(m, p, t)), "exact (independence)")
        add("divergence sweep", float("inf"), kl, "E[G]", Estimate.exact(float(np.exp(-kl))), "limit exp(−KL)")
    long_est: dict[tuple[str, float, int, str], Estimate] = {}
    for si, setup in enumerate(_long.default_setups(config.long_vocab)):
        for ki, kl in enumerate(config.long_kls):
            old0, new0 = _long.policy_pair(setup, kl, max(config.long_horizons), seed + 101 * si)
            for t in config.long_horizons:
                log_r, _ = _long.sequence_log_ratios(old0.with_horizon(t), new0.with_horizon(t), config.long_samples,
                                                     seed * 7_919 + 50_000 + 1_000 * si + 100 * ki + t)
                for quantity, est in _long.log_space_stats(log_r, t).items():
                    if quantity in LONG_QUANTITIES:
                        add(f"long: {setup.name}", t, kl, quantity, est, "monte carlo (log space)")
                        long_est[(setup.name, kl, t, quantity)] = est
    table = pd.DataFrame(rows)
    summary = _summary(table, example, kl_example) | _long_summary(long_est, config)
    return Result(NAME, config, table, summary, _published(example, kl_example))


LONG_QUANTITIES = ("T·Var(log G)", "Var(G)", "E[G]", "P(G > R)")


def log_ratio_of(a: Estimate, b: Estimate, level: float = LEVEL, *, halves: bool = True) -> Estimate:
    """log(a / b) of two independent positive estimates with normal-approximation intervals: se of
    log x = se(x)/x (half-width / z), combined in quadrature (delta method); halves from theirs."""
    from scipy import stats

    z = float(stats.norm.ppf(0.5 + level / 2))
    se = float(np.hypot((a.high - a.low) / (2 * z) / a.value, (b.high - b.low) / (2 * z) / b.value))
    v = float(np.log(a.value / b.value))
    split = None
    if halves and a.halves is not None and b.halves is not None:
        split = tuple(log_ratio_of(x, y, level, halves=False) for x, y in zip(a.halves, b.halves))
    return Estimate(v, v - z * se, v + z * se, split)


def _long_summary(est: dict[tuple[str, float, int, str], Estimate], config: Config) -> dict[str, Any]:
    """Long-part records, each naming its setup, κ and T (see the module doc)."""
    setups = [s.name for s in _long.default_setups(config.long_vocab)]
    out: dict[str, Any] = {"long_horizons": list(config.long_horizons), "long_kls": list(config.long_kls),
                           "long_setups": setups}
    for key, quantity in (("long_t_var_log_g", "T·Var(log G)"), ("long_E_G", "E[G]"), ("long_p_g_above_r", "P(G > R)"),
                          ("long_var_g", "Var(G)")):
        out[key] = [{"setup": s, "kl": kl, "T": t, "estimate": est[(s, kl, t, quantity)]}
                    for s in setups for kl in config.long_kls for t in config.long_horizons]
    t_min, t_max = min(config.long_horizons), max(config.long_horizons)
    ts = np.log(np.array(config.long_horizons, dtype=float))
    out["long_one_over_t_departure"] = [  # log(T_max·Var(log G)_max / (T_min·Var(log G)_min)); 0 is exactly 1/T
        {"setup": s, "kl": kl, "T_min": t_min, "T_max": t_max,
         "log_ratio": log_ratio_of(est[(s, kl, t_max, "T·Var(log G)")], est[(s, kl, t_min, "T·Var(log G)")])}
        for s in setups for kl in config.long_kls]
    out["long_var_g_loglog_slope"] = [
        {"setup": s, "kl": kl, "slope": float(np.polyfit(ts, np.log([est[(s, kl, t, "Var(G)")].value
                                                                     for t in config.long_horizons]), 1)[0])}
        for s in setups for kl in config.long_kls]
    return out


def _scaled(e: Estimate, t: float) -> Estimate:
    return Estimate(e.value * t, e.low * t, e.high * t)


def _summary(table: pd.DataFrame, example: dict[str, float], kl_example: float) -> dict[str, Any]:
    ex = table[table.setting == "example"]
    eg = ex[(ex.quantity == "E[G]") & (ex.method == "exact (independence)")].sort_values("T")
    mc = ex[ex.quantity == "E[G] monte carlo"].set_index("T")
    var_g = ex[ex.quantity == "T·Var(G)"].sort_values("T")
    var_log = ex[ex.quantity == "T·Var(log G)"].sort_values("T")
    sweep = table[(table.setting == "divergence sweep") & (table["T"] != float("inf"))].sort_values("kl")
    slope = np.polyfit(np.log(var_g["T"].to_numpy(float)), np.log(var_g["value"].to_numpy(float) / var_g["T"].to_numpy(float)), 1)[0]
    return {
        "E[R]": example["E[R]"], "E[R^2]": example["E[R^2]"],
        "E[G]_by_T": dict(zip(eg["T"], eg["value"])),
        "E[G]_max": float(eg["value"].max()),
        "E[G]_limit": float(np.exp(-kl_example)),
        "E[G]_mc_covers_exact": float(np.mean([mc.loc[t, "low"] <= v <= mc.loc[t, "high"] for t, v in zip(eg["T"], eg["value"])])),
        "var_g_loglog_slope": float(slope),
        "t_var_log_g": {int(t): Estimate(v, lo, hi) for t, v, lo, hi in var_log[["T", "value", "low", "high"]].itertuples(index=False)},
        "p_g_above_r": {int(t): Estimate(v, lo, hi) for t, v, lo, hi in ex[ex.quantity == "P(G > R)"][["T", "value", "low", "high"]].itertuples(index=False)},
        "am_minus_g_min": float(ex[ex.quantity == "min(AM − G)"]["value"].min()),
        "gap_by_kl": dict(zip(sweep["kl"], 1.0 - sweep["value"])),
        "gap_increasing_in_kl": bool(np.all(np.diff(1.0 - sweep["value"].to_numpy()) > 0)),
    }


def _published(example: dict[str, float], kl_example: float) -> list[Published]:
    src = "research/papers.md §3 / §11 (V=4, T=5 example)"
    return [
        Published("E_old[ρ_seq²], V=4, T=5", src, "1.354081", Estimate.exact(example["E[R^2]"]), "exact (enumeration)"),
        Published("E_old[s] (GSPO ratio), V=4, T=5", src, "0.97628", Estimate.exact(example["E[G]"]), "exact (enumeration)"),
        Published("E_old[log s], V=4, T=5", src, "-0.029898", Estimate.exact(example["E[log G]"]), "exact (enumeration)"),
        Published("exp(−KL_token) (limit of E[s])", src, "0.97054", Estimate.exact(float(np.exp(-kl_example))), "exact (closed form)"),
    ]


def figures(result: Result) -> list[Figure]:
    """E_old[G] versus T with its limit; 1 − E[G] versus KL; G = R^{1/T} against R."""
    table, cfg, summary = result.table, result.config, result.summary
    ex = table[table.setting == "example"]
    eg = ex[(ex.quantity == "E[G]") & (ex.method == "exact (independence)")].sort_values("T")
    mc = ex[ex.quantity == "E[G] monte carlo"].sort_values("T")
    with style():
        fig, axes = new_figure(1, 3, width=6.5, height=3.0)
        ax_t, ax_k, ax_p = axes[0]
        ax_t.plot(eg["T"], eg["value"], **line_kw(0), label="exact E_old[G]")
        ax_t.errorbar(mc["T"], mc["value"], yerr=[mc["value"] - mc["low"], mc["high"] - mc["value"]], ls="none",
                      marker="x", color=PALETTE[1], label="Monte Carlo, 95% CI")
        ax_t.axhline(summary["E[G]_limit"], **line_kw(2, marker=False), lw=1, label="limit exp(−KL)")
        ax_t.axhline(1.0, color=PALETTE[6], lw=0.8, label="E_old[R] = 1")
        ax_t.set_xscale("log", base=2)
        ax_t.set_xlabel("sequence length T (tokens)")
        ax_t.set_ylabel("E_old[G]")
        ax_t.set_title("G is biased low")
        sw = table[table.setting == "divergence sweep"]
        fin, lim = sw[sw["T"] != float("inf")], sw[sw["T"] == float("inf")]
        ax_k.plot(fin["kl"], 1 - fin["value"], **line_kw(3), label=f"1 − E[G], T = {cfg.sweep_horizon}")
        ax_k.plot(lim["kl"], 1 - lim["value"], **line_kw(4, marker=False), label="1 − exp(−KL)")
        ax_k.set_xscale("log")
        ax_k.set_yscale("log")
        ax_k.set_xlabel("per-token KL (nats)")
        ax_k.set_ylabel("bias 1 − E_old[G]")
        ax_k.set_title("grows with the divergence")
        r = np.logspace(-3, 3, 200)
        for i, t in enumerate((1, 4, 16, 64)):
            ax_p.plot(r, r ** (1.0 / t), **line_kw(5 + i, marker=False), label="G = R (T = 1)" if t == 1 else f"T = {t}")
        ax_p.set_xscale("log")
        ax_p.set_yscale("log")
        ax_p.set_xlabel("sequence ratio R")
        ax_p.set_ylabel("G = R^(1/T)")
        ax_p.set_title("G > R wherever R < 1")
        legend_outside(fig, axes[0], ncol=4)
    above = summary["p_g_above_r"]
    caption = (
        "GSPO's geometric-mean weight G = R^(1/T) against the true importance weight R (μ = "
        f"{EXAMPLE_MU}, π = {EXAMPLE_PI} at every position). Left: E_old[G] falls below E_old[R] = 1 and "
        f"approaches exp(−KL) = {fmt(summary['E[G]_limit'], 4)} (Monte Carlo covers the exact value at "
        f"{fmt(100 * summary['E[G]_mc_covers_exact'])}% of the T). Middle: the downward bias grows with the per-token "
        f"KL. Right (an identity, not data): G lies between R and 1, so it overestimates R whenever R < 1; on samples "
        f"P(G > R) rises from {above[min(above)]} at T = {min(above)} to {above[max(above)]} at T = {max(above)}."
    )
    return [Figure(NAME, fig, caption)] + _long_figures(result)


def _long_figures(result: Result) -> list[Figure]:
    """T·Var(log G) against T relative to its value at the shortest T (1 is exactly 1/T), and Var(G)
    against T, per setup and κ, at LLM lengths (long part)."""
    table, cfg, summary = result.table, result.config, result.summary
    if not summary.get("long_t_var_log_g"):
        return []
    setups, kls = summary["long_setups"], summary["long_kls"]
    t_min, t_max = min(cfg.long_horizons), max(cfg.long_horizons)
    with style():
        fig, axes = new_figure(1, 2, width=6.5, height=3.0)
        ax_l, ax_g = axes[0]
        for si, name in enumerate(setups):
            for ki, kl in enumerate(kls):
                i = si * len(kls) + ki
                g = table[(table.setting == f"long: {name}") & (table.kl == kl)]
                v = g[g.quantity == "T·Var(log G)"].sort_values("T")
                ref = float(v[v["T"] == t_min]["value"].iloc[0])
                ax_l.plot(v["T"], v["value"] / ref, **line_kw(i), label=f"{name}, κ = {kl:g}")
                ax_l.fill_between(v["T"].astype(float), v["low"] / ref, v["high"] / ref, color=PALETTE[i], alpha=0.2, lw=0)
                w = g[g.quantity == "Var(G)"].sort_values("T")
                ax_g.errorbar(w["T"], w["value"], yerr=[w["value"] - w["low"].clip(lower=w["value"] * 1e-3),
                                                       w["high"] - w["value"]], **line_kw(i))
        ax_l.axhline(1.0, color="0.3", lw=0.8, label="exactly 1/T")
        ax_l.set_xscale("log", base=2)
        ax_l.set_yscale("log")
        ax_l.set_ylabel(f"T·Var(log G) / its value at T = {t_min}")
        ax_l.set_title("Var(log G) ∝ 1/T only for independent positions")
        first = table[(table.setting.str.startswith("long: ")) & (table.quantity == "Var(G)") & (table["T"] == t_min)]
        top = float(first["value"].max())
        ts = np.array(sorted(cfg.long_horizons), dtype=float)
        ax_g.plot(ts, top * t_min / ts, color="0.3", lw=0.8, ls=":", marker="None", label="1/T")
        ax_g.set_xscale("log", base=2)
        ax_g.set_yscale("log")
        ax_g.set_ylabel("Var_old(G)")
        ax_g.set_title("Var(G), 95% CI")
        ax_g.legend(loc="best")
        for ax in (ax_l, ax_g):
            ax.set_xlabel("sequence length T (tokens)")
        legend_outside(fig, [ax_l], ncol=4)
    dep = {(d["setup"], d["kl"]): d["log_ratio"] for d in summary["long_one_over_t_departure"]}
    slopes = {(d["setup"], d["kl"]): d["slope"] for d in summary["long_var_g_loglog_slope"]}
    caption = (
        f"GSPO's 1/T at LLM lengths (V = {cfg.long_vocab}, T = {t_min}–{t_max}). Left: T·Var(log G), divided by its "
        f"value at T = {t_min}, with 95% bands; a flat line at 1 is Var(log G) ∝ 1/T. With independent positions it "
        "is flat by construction (log G is a mean of i.i.d. terms); with dependent positions log ρ_t is autocorrelated "
        "and T·Var(log G) grows until T passes the correlation length: log(T_max·Var_max / (T_min·Var_min)) = "
        + join(f"{dep[(n, kl)]} ({n}, κ = {kl:g})" for n in setups for kl in kls)
        + ". Right: Var(G) with a 1/T guide; log-log slopes "
        + join(f"{fmt(slopes[(n, kl)])} ({n}, κ = {kl:g})" for n in setups for kl in kls) + ".")
    return [Figure(f"{NAME}_long", fig, caption)]


def plot(result: Result, path) -> dict[str, str]:
    """Write ``figures(result)`` (the first at ``path``); returns {file name: caption}."""
    return plot_to(figures(result), path)
