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
from sims.experiments._common import (Estimate, Published, Result, mean_interval, seeded, token_log_ratios,
                                     variance_interval)
from sims.experiments._plotting import PALETTE, Figure, fmt, legend_outside, line_kw, new_figure, plot_to, style

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
    """

    horizons: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128)
    kls: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0)
    vocab: int = 8
    sweep_horizon: int = 16
    n_samples: int = 50_000

    def __post_init__(self) -> None:
        require(len(self.horizons) >= 2 and min(self.horizons) >= 1, "horizons", self.horizons, ">= 2 values >= 1")
        require(len(self.kls) >= 2 and min(self.kls) > 0, "kls", self.kls, ">= 2 values > 0")
        require(self.n_samples >= 2, "n_samples", self.n_samples, ">= 2")

    @classmethod
    def quick(cls) -> "Config":
        return cls(horizons=(1, 2, 4, 8, 16, 64), n_samples=20_000)

    @classmethod
    def full(cls) -> "Config":
        return cls(horizons=(1, 2, 4, 8, 16, 32, 64, 128, 256), n_samples=200_000)

    @classmethod
    def tiny(cls) -> "Config":
        return cls(horizons=(1, 4), kls=(0.05, 0.5), n_samples=500)


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
    table = pd.DataFrame(rows)
    return Result(NAME, config, table, _summary(table, example, kl_example), _published(example, kl_example))


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
    return [Figure(NAME, fig, caption)]


def plot(result: Result, path) -> dict[str, str]:
    """Write ``figures(result)`` (the first at ``path``); returns {file name: caption}."""
    return plot_to(figures(result), path)
