"""Smooth Gradient Scaling: S(P) curves and what S does at realistic sequence lengths.

S = 1 for A <= 0 and S = 1 − σ(k(P − τ)) for A > 0 (the seed; ``sims.objectives.sgs_scale``).

1. Curves: S(P) on a grid of P for several k and τ from the torch code, against the symbolic
   ``theory.sgs.scale_positive`` (the largest difference is reported), plus S for A < 0.
2. Realistic lengths: per-token probabilities π_t ~ Beta(a, b) (mean a/(a+b), default 0.89, a
   stand-in for an LLM's sampled-token probabilities), responses of L tokens, A = +1. For each
   ``p_mode`` (sequence P = Π π_t, token P = π_t, geometric P = exp(mean log π_t)) the spread of
   S across sequences (tokens for ``token``): mean, 5% and 95% quantiles.
3. On policies at realistic lengths (``sims.experiments._long``): responses of T up to 4096 tokens
   sampled from an LM-like policy over V = 32,768 (each row's top token 0.8), with independent
   positions and with dependent positions (a sticky 4-class Markov chain); P is the policy's own
   confidence in its sample (sequence P = π(o), geometric P = π(o)^(1/T)); the 5–95% spread of S
   across responses with a distribution-free 95% interval (order statistics). Token P is not
   repeated here: for these stationary policies its distribution is the same at every T.
4. Stop-gradient: the symbolic sign of the extra gradient term without the stop-gradient
   (``theory.sgs.extra_term_is_positive``) and the torch weights with and without it on one
   positive-advantage token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import sympy as sp
import torch
from scipy import stats

from sims._checks import require
from sims.experiments._common import Estimate, Result, mean_interval, seeded
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
from sims.objectives import P_MODES, SgsCispoConfig, sgs_scale
from theory import sgs as theory_sgs

NAME = "sgs"
TITLE = "Smooth Gradient Scaling: S(P) and its size at realistic lengths"


@dataclass(frozen=True)
class Config:
    """Attributes:
        ks, taus: the S(P) curves' k and τ.
        n_points: P grid size.
        lengths: L values of the realistic-length study.
        n_sequences: sequences per L.
        beta: (a, b) of the per-token probability distribution.
        k, tau: SGS parameters of the realistic-length study and the stop-gradient check.
        policy_lengths, policy_vocab, policy_sequences: T values, V and responses per T of part 3.
    """

    ks: tuple[float, ...] = (1.0, 5.0, 10.0, 50.0)
    taus: tuple[float, ...] = (0.3, 0.5, 0.7)
    n_points: int = 201
    lengths: tuple[int, ...] = (1, 10, 100, 1000, 8000)
    n_sequences: int = 2000
    beta: tuple[float, float] = (8.0, 1.0)
    k: float = 10.0
    tau: float = 0.5
    policy_lengths: tuple[int, ...] = (16, 64, 256, 1024, 4096)
    policy_vocab: int = 32_768
    policy_sequences: int = 2_000

    def __post_init__(self) -> None:
        require(self.n_points >= 3, "n_points", self.n_points, ">= 3")
        require(self.n_sequences >= 20, "n_sequences", self.n_sequences, ">= 20")
        require(all(x > 0 for x in self.beta), "beta", self.beta, "two values > 0")
        SgsCispoConfig(k=self.k, tau=self.tau)  # validates k and tau
        require(len(self.policy_lengths) >= 1 and min(self.policy_lengths) >= 1, "policy_lengths",
                self.policy_lengths, "one or more T >= 1")
        require(self.policy_sequences >= 100, "policy_sequences", self.policy_sequences,
                ">= 100 (the 5% and 95% order statistics need them)")

    @classmethod
    def quick(cls) -> Config:
        return cls(lengths=(1, 10, 100, 1000), n_sequences=500, policy_sequences=500)

    @classmethod
    def full(cls) -> Config:
        return cls(lengths=(1, 10, 100, 1000, 8000, 32000), n_sequences=2000)

    @classmethod
    def tiny(cls) -> Config:
        return cls(ks=(10.0,), taus=(0.5,), n_points=11, lengths=(1, 100), n_sequences=20, policy_lengths=(4, 16),
                   policy_vocab=64, policy_sequences=100)


def _curve_rows(config: Config) -> tuple[list[dict[str, Any]], float]:
    p = torch.linspace(1e-6, 1.0, config.n_points, dtype=torch.float64)
    logp = p.log()[:, None]
    ones = torch.ones_like(logp)
    rows, max_diff = [], 0.0
    for k in config.ks:
        for tau in config.taus:
            s_pos = sgs_scale(logp, ones, ones, k=k, tau=tau, p_mode="token")[:, 0]
            s_neg = sgs_scale(logp, -ones, ones, k=k, tau=tau, p_mode="token")[:, 0]
            sym = sp.lambdify(theory_sgs.P, theory_sgs.scale_positive(theory_sgs.P, sp.nsimplify(k), sp.nsimplify(tau)))
            ref = np.array([float(sym(float(x))) for x in p])
            max_diff = max(max_diff, float(np.abs(s_pos.numpy() - ref).max()))
            for sign, s in (("A>0", s_pos), ("A<0", s_neg)):
                rows += [{"part": "curve", "k": k, "tau": tau, "sign": sign, "P": float(x), "S": float(v)}
                         for x, v in zip(p, s)]
    return rows, max_diff


ROWS_PER_PASS = 64  # sequences per inverse-CDF pass (memory at L = 32,000, not numbers)


def _beta_log_probs(config: Config, seed: int, length: int) -> torch.Tensor:
    """log π_t with π_t ~ Beta(a, b) for ``n_sequences`` sequences of ``length`` tokens: scipy's
    inverse CDF of torch uniforms (the generator stays explicit), clamped at 1e-300. The uniforms
    are drawn in one call and transformed ``ROWS_PER_PASS`` rows at a time (elementwise, so the
    values do not depend on it), so scipy's temporaries stay small at L = 32,000."""
    u = torch.rand(config.n_sequences, length, generator=seeded(seed, length), dtype=torch.float64)
    for start in range(0, config.n_sequences, ROWS_PER_PASS):
        rows = slice(start, start + ROWS_PER_PASS)
        u[rows] = torch.from_numpy(stats.beta.ppf(u[rows].numpy(), *config.beta)).clamp_min(1e-300).log()
    return u


def _scale_values(logp: torch.Tensor, config: Config, mode: str) -> np.ndarray:
    """S of each sequence (``sequence``/``geometric``: one value per row) or of each token
    (``token``), for A > 0; S is computed row by row, so passes of rows give the same values."""
    ones = torch.ones(1, 1, dtype=logp.dtype).expand_as(logp)  # a view: no [n, L] tensor of ones
    s = sgs_scale(logp, ones, ones, k=config.k, tau=config.tau, p_mode=mode)
    return (s[:, 0] if mode != "token" else s.reshape(-1)).numpy()


def _length_rows(config: Config, seed: int) -> list[dict[str, Any]]:
    rows = []
    for length in config.lengths:
        logp = _beta_log_probs(config, seed, length)
        for mode in P_MODES:
            vals = np.concatenate([_scale_values(logp[start:start + ROWS_PER_PASS], config, mode)
                                   for start in range(0, logp.shape[0], ROWS_PER_PASS)])
            rows.append({"part": "lengths", "L": length, "p_mode": mode, "mean S": float(vals.mean()),
                         "q05": float(np.quantile(vals, 0.05)), "q95": float(np.quantile(vals, 0.95)),
                         "spread": float(np.quantile(vals, 0.95) - np.quantile(vals, 0.05))})
    return rows


POLICY_MODES = ("sequence", "geometric")


def quantile_interval(x: np.ndarray, q: float, level: float) -> tuple[float, float, float]:
    """(sample q-quantile, low, high): the distribution-free interval [x_(l), x_(u)] of order statistics
    with l, u the binomial(n, q) quantiles at (1 ∓ level)/2, so P(low ≤ true quantile ≤ high) ≥ level."""
    xs = np.sort(np.asarray(x, dtype=np.float64))
    n = xs.size
    lo = int(stats.binom.ppf((1 - level) / 2, n, q))
    hi = int(stats.binom.ppf((1 + level) / 2, n, q))
    return float(np.quantile(xs, q)), float(xs[max(lo - 1, 0)]), float(xs[min(hi, n - 1)])


def spread_interval(x: np.ndarray, level: float = 0.95) -> Estimate:
    """The 5–95% spread q95 − q05 with an interval from the two quantiles' intervals at level
    1 − (1 − level)/2 each (Bonferroni: both hold together with probability ≥ level)."""
    each = 1 - (1 - level) / 2
    v05, l05, h05 = quantile_interval(x, 0.05, each)
    v95, l95, h95 = quantile_interval(x, 0.95, each)
    return Estimate(v95 - v05, max(l95 - h05, 0.0), h95 - l05)


def _policy_rows(config: Config, seed: int) -> list[dict[str, Any]]:
    """Part 3: S of on-policy responses per setup, T and p_mode (module doc)."""
    from policies.class_markov import ClassMarkovPolicy
    from sims.experiments import _long

    rows = []
    for si, setup in enumerate(_long.default_setups(config.policy_vocab)):
        base = ClassMarkovPolicy(_long.base_logits(setup, seed + 101 * si), horizon=max(config.policy_lengths))
        for t in config.policy_lengths:
            policy = base.with_horizon(t)
            _, logp = _long.sequence_log_ratios(policy, policy, config.policy_sequences, seed * 7_919 + 90_000 + 1_000 * si + t)
            for mode in POLICY_MODES:
                x = torch.from_numpy(logp if mode == "sequence" else logp / t)[:, None]  # one token carrying P
                one = torch.ones_like(x)
                vals = sgs_scale(x, one, one, k=config.k, tau=config.tau, p_mode=mode)[:, 0].numpy()
                spread = spread_interval(vals)
                mean = mean_interval(vals, halves=False) if vals.std() > 0 else Estimate.exact(float(vals.mean()))
                rows.append({"part": "policy", "setup": setup.name, "L": t, "p_mode": mode, "mean S": mean.value,
                             "mean low": mean.low, "mean high": mean.high, "q05": float(np.quantile(vals, 0.05)),
                             "q95": float(np.quantile(vals, 0.95)), "spread": spread.value, "spread low": spread.low,
                             "spread high": spread.high, "median P": float(np.exp(np.median(x.numpy())))})
    return rows


def _stop_gradient(config: Config) -> dict[str, Any]:
    from sims.objectives import sgs_cispo

    out: dict[str, Any] = {}
    logp0 = torch.log(torch.tensor([[0.3, 0.6]], dtype=torch.float64))
    adv = torch.ones_like(logp0)
    mask = torch.ones_like(logp0)
    for mode in P_MODES:
        weights = {}
        for sg in (True, False):
            x = logp0.clone().requires_grad_(True)
            cfg = SgsCispoConfig(k=config.k, tau=config.tau, p_mode=mode, stop_grad_s=sg, agg="seq-mean-token-sum")
            loss, _ = sgs_cispo(x, logp0, adv, mask, config=cfg)
            (g,) = torch.autograd.grad(loss, x)
            weights[sg] = (-g).reshape(-1).tolist()
        out[mode] = {"torch_extra_term": [a - b for a, b in zip(weights[False], weights[True])],
                     "symbolic_extra_term_positive": bool(theory_sgs.extra_term_is_positive(mode))}
    return out


def run(config: Config, *, seed: int = 0, device: str = "cpu") -> Result:
    """Table: part (curve / lengths) with the curve points and the per-length spread of S."""
    curve_rows, max_diff = _curve_rows(config)
    length_rows = _length_rows(config, seed)
    policy_rows = _policy_rows(config, seed)
    table = pd.DataFrame(curve_rows + length_rows + policy_rows)
    curves = pd.DataFrame(curve_rows)
    pos = curves[curves.sign == "A>0"]
    monotone = all(np.all(np.diff(g.sort_values("P")["S"].to_numpy()) <= 0) for _, g in pos.groupby(["k", "tau"]))
    _, hi = theory_sgs.scale_range()
    low_conf = {f"k={k:g}, tau={t:g}": float(hi.subs({theory_sgs.K: k, theory_sgs.TAU: t}))
                for k in config.ks for t in config.taus}
    summary = {
        "torch_symbolic_max_diff": max_diff,
        "negative_scale_is_one": bool((curves[curves.sign == "A<0"]["S"] == 1.0).all()),
        "decreasing_in_P": bool(monotone),
        "S_at_P0_by_k_tau": low_conf,  # sup of S: what a zero-confidence positive sample gets
        "spread_by_mode_and_length": {f"{r['p_mode']}, L={r['L']}": r["spread"] for r in length_rows},
        "mean_by_mode_and_length": {f"{r['p_mode']}, L={r['L']}": r["mean S"] for r in length_rows},
        "longest": max(config.lengths),
        "k": config.k, "tau": config.tau,
        "stop_gradient": _stop_gradient(config),
        # part 3: every record names its setup (sims.experiments._long), T and p_mode
        "policy_spread": [{"setup": r["setup"], "T": r["L"], "p_mode": r["p_mode"],
                           "spread": Estimate(r["spread"], r["spread low"], r["spread high"]),
                           "mean": Estimate(r["mean S"], r["mean low"], r["mean high"]), "median_P": r["median P"]}
                          for r in policy_rows],
        "policy_longest": max(config.policy_lengths),
    }
    return Result(NAME, config, table, summary)


def figures(result: Result) -> list[Figure]:
    """(1) S(P) for A > 0, one panel per k with a curve per τ; (2) S's mean and 5–95% band
    versus response length, one panel per p_mode."""
    table, cfg, summary = result.table, result.config, result.summary
    curves = table[(table.part == "curve") & (table.sign == "A>0")]
    ks = sorted(curves.k.unique())
    with style():
        fig, axes = new_figure(1, len(ks), width=6.5, height=2.5, sharey=True)
        for ax, k in zip(axes[0], ks):
            for i, (tau, g) in enumerate(curves[curves.k == k].groupby("tau")):
                g = g.sort_values("P")
                ax.plot(g.P, g.S, **line_kw(i, markevery=(4 * i, max(1, len(g) // 6))), label=f"τ = {tau:g}")
            ax.set_title(f"k = {k:g}")
            ax.set_xlabel("confidence P")
            ax.set_xlim(0, 1)
            ax.set_ylim(-0.03, 1.03)
        axes[0][0].set_ylabel("scale S(P) for A > 0")
        legend_outside(fig, axes[0], ncol=len(cfg.taus))
        curve_fig = fig
    s0 = summary["S_at_P0_by_k_tau"]
    lo_key, hi_key = min(s0, key=s0.get), max(s0, key=s0.get)

    def pair(key):  # "k=1, tau=0.3" -> "k = 1, τ = 0.3"
        return key.replace("tau=", "τ = ").replace("k=", "k = ")

    caption = (
        "Smooth Gradient Scaling S(P) = 1 − σ(k(P − τ)) for a positive advantage (S = 1 for A ≤ 0: "
        f"{'exactly 1 on the whole grid' if summary['negative_scale_is_one'] else 'NOT 1 everywhere'}), from the "
        "torch code (the symbolic derivation agrees to "
        f"{fmt(summary['torch_symbolic_max_diff'])}). Look at the left end of each curve: S(P → 0) = 1 − σ(−kτ) "
        f"is the most a zero-confidence positive sample gets. It ranges from {fmt(s0[lo_key])} ({pair(lo_key)}) to "
        f"{fmt(s0[hi_key], 6)} ({pair(hi_key)}): with a small k even unconfident samples are damped. Larger k "
        "makes the fall around P = τ steeper."
    )
    lengths = table[table.part == "lengths"]
    modes = list(dict.fromkeys(lengths.p_mode))
    with style():
        fig, axes = new_figure(1, len(modes), width=6.5, height=2.5, sharey=True)
        for i, (ax, mode) in enumerate(zip(axes[0], modes)):
            g = lengths[lengths.p_mode == mode].sort_values("L")
            ax.fill_between(g.L.astype(float), g.q05, g.q95, color=PALETTE[i], alpha=0.2, lw=0,
                            label="5–95% of samples")
            ax.plot(g.L, g["mean S"], **line_kw(i), label="mean S")
            ax.set_xscale("log")
            ax.set_title(f"{mode}: P = {'π(o)' if mode == 'sequence' else 'π_t' if mode == 'token' else '(Π π_t)^(1/L)'}")
            ax.set_xlabel("response length L (tokens)")
            ax.set_ylim(-0.03, 1.03)
            ax.legend(loc="best")
        axes[0][0].set_ylabel("scale S for A > 0")
        length_fig = fig
    spread = summary["spread_by_mode_and_length"]
    longest = summary["longest"]
    mean = summary["mean_by_mode_and_length"]
    cap2 = (
        f"What S does at realistic lengths (k = {cfg.k:g}, τ = {cfg.tau:g}, per-token probabilities π_t ~ "
        f"Beta{tuple(cfg.beta)}, A = +1), per definition of the confidence P. Look at the band: where it is "
        "flat and thin, S gives every sample the same factor and does not discriminate by confidence. At "
        f"L = {longest} the 5–95% spread of S is "
        + join(f"{fmt(spread[f'{m}, L={longest}'])} for {m} P (mean {fmt(mean[f'{m}, L={longest}'])})" for m in modes)
        + ". With sequence P the product Π π_t goes to 0 with L, so S settles at S(0) = 1 − σ(−kτ) for every "
        "sequence; token P keeps a spread; geometric P concentrates around its typical value as L grows."
    )
    return [Figure(NAME, curve_fig, caption), Figure(f"{NAME}_lengths", length_fig, cap2)] + _policy_figures(result)


SPREAD_FLOOR = 1e-12  # a spread of exactly 0 is drawn at this line (log axis)


def _policy_figures(result: Result) -> list[Figure]:
    """The 5–95% spread of S across on-policy responses against T, per p_mode (panels) and setup."""
    table, cfg, summary = result.table, result.config, result.summary
    if not summary.get("policy_spread"):
        return []
    pol = table[table.part == "policy"]
    setups = list(dict.fromkeys(pol.setup))
    with style():
        fig, axes = new_figure(1, len(POLICY_MODES), width=6.5, height=2.8, sharey=True)
        for ax, mode in zip(axes[0], POLICY_MODES):
            for i, name in enumerate(setups):
                g = pol[(pol.setup == name) & (pol.p_mode == mode)].sort_values("L")
                y = g["spread"].clip(lower=SPREAD_FLOOR)
                lo = g["spread low"].clip(lower=SPREAD_FLOOR)
                hi = g["spread high"].clip(lower=SPREAD_FLOOR)
                ax.errorbar(g["L"], y, yerr=[y - lo, hi - y], **line_kw(i), label=name)
            ax.axhline(SPREAD_FLOOR, color="0.5", lw=0.8, ls=":", label=f"spread 0 (drawn at {SPREAD_FLOOR:g})")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{mode} P = {'π(o)' if mode == 'sequence' else 'π(o)^(1/T)'}")
            ax.set_xlabel("response length T (tokens)")
        axes[0][0].set_ylabel("5–95% spread of S across responses")
        legend_outside(fig, axes[0].tolist(), ncol=3)
    rec = {(r["setup"], r["T"], r["p_mode"]): r for r in summary["policy_spread"]}
    longest = summary["policy_longest"]
    shortest = min(cfg.policy_lengths)
    caption = (
        f"SGS on responses sampled from LM-like policies (V = {cfg.policy_vocab}, top token 0.8 per row; k = {cfg.k:g}, "
        f"τ = {cfg.tau:g}, A = +1), P the policy's confidence in its own response; 95% distribution-free intervals of "
        f"the spread. At T = {longest} the spread is "
        + join(f"{rec[(n, longest, m)]['spread']} ({n}, {m} P; median P {fmt(rec[(n, longest, m)]['median_P'])})"
               for n in setups for m in POLICY_MODES)
        + ". With sequence P, π(o) falls toward 0 within tens of tokens, so S = S(0) = 1 − σ(−kτ) for every response "
        "and SGS is inert; with geometric P the spread falls from "
        + join(f"{fmt(rec[(n, shortest, 'geometric')]['spread'].value)} ({n})" for n in setups)
        + f" at T = {shortest} as π(o)^(1/T) concentrates around its typical value (log G is a mean over T tokens).")
    return [Figure(f"{NAME}_policy", fig, caption)]


def plot(result: Result, path) -> dict[str, str]:
    """Write ``figures(result)`` (the first at ``path``); returns {file name: caption}."""
    return plot_to(figures(result), path)
