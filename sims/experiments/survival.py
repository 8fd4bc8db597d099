"""Gradient-survival maps: the per-token gradient weight w as a function of (ratio ρ, sign of A).

For each objective in ``Config.objectives`` (PPO-clip, DAPO clip-higher, dual-clip PPO, CISPO,
SAPO, SGS-CISPO) and a grid of ratios, one-token sequences with A = ±1 are fed to the registered
torch objective and w = −∂loss/∂logp is read from autograd; the same points are evaluated from
the symbolic derivation (``theory.weights.batch_weights``), and ``theory.regions`` gives the
exact zero / bounded cells. The table holds both curves; the summary holds, per objective and
sign, the fraction of the grid where the torch weight is exactly 0, the largest |w|/|A|, the
symbolic cells' verdicts (zero somewhere, bounded everywhere) and the largest torch–symbolic
difference.

Clip reach (papers.md §1): a one-token bandit whose sampled action has π_old = ``reach_p0`` and
A = +1, trained by gradient ascent on the PPO-clip surrogate with π_old fixed (one batch) stalls
where the gradient becomes 0, at π_old·(1 + ε_high); with π_old refreshed every batch it keeps
rising (``reach_batches`` batches).

SGS-CISPO needs the token's probability: the old probability is ``Config.sgs_old_prob`` and
π_θ = ρ·π_old (``p_mode="token"``), so ρ ranges up to 1/π_old.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import sympy as sp
import torch

from sims._checks import require
from sims.experiments._common import Estimate, Published, Result
from sims.experiments._plotting import PALETTE, Figure, fmt, join, legend_outside, line_kw, new_figure, plot_to, style
from sims.objectives import CispoConfig, PpoClipConfig, SapoConfig, SgsCispoConfig
from sims.registry import config_dict, get_objective, require_callable_by
from theory.regions import weight_regions
from theory.weights import batch_weights

NAME = "survival"
TITLE = "Gradient-survival maps w(ρ, sign A)"

_AGG = {"agg": "seq-mean-token-sum"}
_AGG_FIELDS = ("agg", "max_len", "group_size")


def default_objectives() -> tuple[tuple[str, str, Any], ...]:
    """(label, registered objective, config) of the compared objectives."""
    return (
        ("PPO clip (0.2)", "ppo_clip", PpoClipConfig(eps_low=0.2, eps_high=0.2, **_AGG)),
        ("DAPO clip-higher (0.2, 0.28)", "ppo_clip", PpoClipConfig(eps_low=0.2, eps_high=0.28, **_AGG)),
        ("dual-clip PPO (c=3)", "ppo_clip", PpoClipConfig(eps_low=0.2, eps_high=0.2, dual_clip_c=3.0, **_AGG)),
        ("CISPO (cap 1.28)", "cispo", CispoConfig.minimax_m1(0.28, **_AGG)),
        ("SAPO", "sapo", SapoConfig(**_AGG)),
        ("SGS-CISPO (token P, sg)", "sgs_cispo", SgsCispoConfig(eps_high=0.28, p_mode="token", **_AGG)),
    )


@dataclass(frozen=True)
class Config:
    """Attributes:
        n_ratios: grid points, log-spaced over [ratio_min, ratio_max].
        ratio_min, ratio_max: the ratio range.
        sgs_old_prob: π_old of the token for SGS-CISPO.
        objectives: (label, objective, config) triples.
    """

    n_ratios: int = 401
    ratio_min: float = 0.01
    ratio_max: float = 100.0
    sgs_old_prob: float = 0.005
    reach_p0: float = 0.01
    reach_batches: int = 10
    objectives: tuple[tuple[str, str, Any], ...] = field(default_factory=default_objectives)

    def __post_init__(self) -> None:
        require(self.n_ratios >= 3, "n_ratios", self.n_ratios, ">= 3")
        require(0 < self.ratio_min < 1 < self.ratio_max, "ratio_min/ratio_max",
                (self.ratio_min, self.ratio_max), "0 < ratio_min < 1 < ratio_max")
        require(0 < self.sgs_old_prob < 1 / self.ratio_max, "sgs_old_prob", self.sgs_old_prob,
                f"0 < p < 1/ratio_max = {1 / self.ratio_max:g} (so π_θ = ρ·p < 1)")

    @classmethod
    def quick(cls) -> "Config":
        return cls(n_ratios=201)

    @classmethod
    def full(cls) -> "Config":
        return cls(n_ratios=801)

    @classmethod
    def tiny(cls) -> "Config":
        return cls(n_ratios=21)


def decision_points(config: Config) -> dict[str, Any]:
    """Where this experiment's evidence decides the ledger's parts (rule 11: ``quick`` and ``full``
    must give the same; the grid's density only refines the located boundaries)."""
    return {"ratio_range": (config.ratio_min, config.ratio_max), "reach": (config.reach_p0, config.reach_batches),
            "objectives": tuple(label for label, _, _ in config.objectives)}


def _inputs(config: Config):
    ratio = torch.logspace(math.log10(config.ratio_min), math.log10(config.ratio_max), config.n_ratios,
                           dtype=torch.float64)
    ratio = torch.cat([ratio, ratio])
    adv = torch.cat([torch.ones(config.n_ratios), -torch.ones(config.n_ratios)]).to(torch.float64)
    old = torch.full_like(ratio, math.log(config.sgs_old_prob))
    return ratio, adv, old[:, None], (old + ratio.log())[:, None], adv[:, None], torch.ones_like(adv)[:, None]


def torch_weights(objective: str, cfg: Any, logp, old_logp, adv, mask) -> torch.Tensor:
    """w = −∂loss/∂logp of the registered objective, per token (seq-mean-token-sum ⇒ ×B)."""
    x = logp.clone().requires_grad_(True)
    spec = get_objective(objective)
    # each row is an independent one-token case: no rollout_logp, no batch-coupled selection
    require_callable_by(spec, "the survival experiment", independent_batches=True)
    loss, _ = spec.loss_fn(x, old_logp, adv, mask, config=cfg)
    (grad,) = torch.autograd.grad(loss, x)
    return -grad[:, 0] * x.shape[0]


def _regions(objective: str, cfg: Any, old_logp: float):
    entry = get_objective(objective).theory
    params = {k: v for k, v in config_dict(cfg).items() if k not in _AGG_FIELDS}
    extra = {sp.Symbol("lold1", negative=True): sp.nsimplify(old_logp)} if objective == "sgs_cispo" else None
    return weight_regions(entry, params, extra)


def clip_reach(eps_high: float, p0: float, n_batches: int, *, steps: int = 300, lr: float = 0.002) -> list[float]:
    """π_θ(a) after each batch of ``steps`` gradient-ascent steps on ppo_clip (A = +1, π_old
    refreshed between batches); the bandit has two actions, logits are the parameters."""
    from sims.objectives import ppo_clip

    z = torch.tensor([math.log(p0), math.log(1 - p0)], dtype=torch.float64, requires_grad=True)
    cfg = PpoClipConfig(eps_low=0.2, eps_high=eps_high, agg="seq-mean-token-sum")
    one = torch.ones(1, 1, dtype=torch.float64)
    out = []
    for _ in range(n_batches):
        old = torch.log_softmax(z.detach(), -1)[0].reshape(1, 1)
        for _ in range(steps):
            logp = torch.log_softmax(z, -1)[0].reshape(1, 1)
            loss, _ = ppo_clip(logp, old, one, one, config=cfg)
            (g,) = torch.autograd.grad(loss, z)
            with torch.no_grad():
                z -= lr * g
        out.append(float(torch.softmax(z.detach(), -1)[0]))
    return out


def clip_reach_bracket(eps_high: float, p0: float, *, steps: int = 300, lr: float = 0.002) -> Estimate:
    """The reach of one batch (``clip_reach``'s first batch) as a bracket: gradient ascent stops at
    the first step whose gradient is exactly 0, so the boundary where the clip zeroes the gradient
    lies between π before the last non-zero step (low) and after it (high = the reached π).
    Exact bounds, not a statistical interval; low = high when no step is ever clipped."""
    from sims.objectives import ppo_clip

    z = torch.tensor([math.log(p0), math.log(1 - p0)], dtype=torch.float64, requires_grad=True)
    cfg = PpoClipConfig(eps_low=0.2, eps_high=eps_high, agg="seq-mean-token-sum")
    one = torch.ones(1, 1, dtype=torch.float64)
    old = torch.log_softmax(z.detach(), -1)[0].reshape(1, 1)
    before = float(torch.softmax(z.detach(), -1)[0])
    for _ in range(steps):
        logp = torch.log_softmax(z, -1)[0].reshape(1, 1)
        loss, _ = ppo_clip(logp, old, one, one, config=cfg)
        (g,) = torch.autograd.grad(loss, z)
        if not bool(g.any()):
            break
        before = float(torch.softmax(z.detach(), -1)[0])
        with torch.no_grad():
            z -= lr * g
    reached = float(torch.softmax(z.detach(), -1)[0])
    return Estimate(reached, min(before, reached), reached) if not bool(g.any()) else Estimate.exact(reached)


def run(config: Config, *, seed: int = 0, device: str = "cpu") -> Result:
    """Table: objective, sign, ratio, torch weight, symbolic weight (w/|A|). Deterministic."""
    ratio, adv_vec, old, logp, adv, mask = _inputs(config)
    frames, summary = [], {}
    for label, objective, cfg in config.objectives:
        w_torch = torch_weights(objective, cfg, logp, old, adv, mask).numpy()
        w_sym = batch_weights(get_objective(objective).theory, logp.numpy(), old.numpy(), adv.numpy(),
                              mask.numpy(), cfg)[:, 0] * len(adv_vec)  # the same ×B as torch
        frames.append(pd.DataFrame({"objective": label, "sign": np.where(adv_vec > 0, "A>0", "A<0"),
                                    "ratio": ratio.numpy(), "w_torch": w_torch, "w_symbolic": w_sym}))
        table = _regions(objective, cfg, math.log(config.sgs_old_prob))
        per_sign = {}
        for sign, name in ((1, "A>0"), (-1, "A<0")):
            sel = adv_vec.numpy() == sign
            zero = w_torch[sel] == 0
            cells = [r for r in table if r.sign == sign]
            per_sign[name] = {
                "zero_fraction": float(zero.mean()),
                # exactly 0 in torch where the symbolic weight is not (float64 underflow, e.g.
                # SAPO's σ(1−σ) far from ρ = 1)
                "numerical_zero_fraction": float((zero & (w_sym[sel] != 0)).mean()),
                "zero_ratio_range": ([float(ratio[sel][zero].min()), float(ratio[sel][zero].max())]
                                     if zero.any() else None),
                "max_abs_weight": float(np.abs(w_torch[sel]).max()),
                "symbolic_zero_cells": [f"({sp.sstr(r.lo)}, {sp.sstr(r.hi)})" for r in cells if r.zero],
                "symbolic_bounded": all(r.bounded for r in cells),
            }
        summary[label] = {"objective": objective, "config": config_dict(cfg),
                          "max_torch_symbolic_diff": float(np.abs(w_torch - w_sym).max()), **per_sign}
    reach = {eps: clip_reach(eps, config.reach_p0, config.reach_batches) for eps in (0.2, 0.28)}
    summary["clip_reach"] = {"p0": config.reach_p0, "one_batch": {f"{e:g}": r[0] for e, r in reach.items()},
                             "after_batches": {f"{e:g}": r[-1] for e, r in reach.items()},
                             "n_batches": config.reach_batches}
    src = "research/papers.md §1 (DAPO clip-higher reach from π_old = 0.01)"
    published = [Published(f"reachable π in one batch, ε_high = {e:g}", src, pub, clip_reach_bracket(e, config.reach_p0),
                           "gradient ascent: [π before, π after] the last non-zero step, which brackets the boundary")
                 for e, pub in ((0.2, "0.012"), (0.28, "0.0128"))]
    return Result(NAME, config, pd.concat(frames, ignore_index=True), summary, published)


def figures(result: Result) -> list[Figure]:
    """One figure: a panel per objective, |w|/|A| against ρ on log-log axes for A > 0 and A < 0
    (symbolic curves, torch autograd points), the ratios where the weight is exactly 0 shaded."""
    table, summary = result.table, result.summary
    labels = list(dict.fromkeys(table.objective))
    ncols = min(3, len(labels))
    nrows = -(-len(labels) // ncols)
    floor = 1e-3  # the y axis starts here; smaller nonzero weights fall below it (SAPO's tail)
    with style():
        fig, axes = new_figure(nrows, ncols, width=6.5, height=1.9 * nrows + 0.6, sharex=True, sharey=True)
        flat = list(axes.flat)
        for ax, label in zip(flat, labels):
            sub = table[table.objective == label]
            for i, sign in enumerate(("A>0", "A<0")):
                s = sub[sub.sign == sign]
                w = s.w_symbolic.abs().to_numpy()
                ratio = s.ratio.to_numpy()
                ax.plot(ratio, np.where(w > 0, w, np.nan), **line_kw(i, marker=False),
                        label=f"symbolic, {sign.replace('>', ' > ').replace('<', ' < ')}")
                zero = w == 0
                if zero.any():
                    ax.fill_between(ratio, 0, 1, where=zero, step="mid", transform=ax.get_xaxis_transform(),
                                    color=PALETTE[i], alpha=0.15, lw=0, hatch="//" if i == 0 else "\\\\",
                                    label=f"w = 0 exactly, {sign.replace('>', ' > ').replace('<', ' < ')}")
            step = max(1, len(sub) // 2 // 25)
            pts = sub.iloc[::step]
            wt = pts.w_torch.abs().to_numpy()
            ax.plot(pts.ratio[wt > 0], wt[wt > 0], ls="none", marker=".", color=PALETTE[6], ms=3,
                    label=f"torch autograd (1 point in {step})")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_ylim(floor, None)
            ax.set_title(label)
        for ax in flat[len(labels):]:
            ax.set_visible(False)
        for ax in axes[-1]:
            ax.set_xlabel("ratio ρ = π_θ / π_old")
        for ax in axes[:, 0]:
            ax.set_ylabel("|w| / |A|")
        legend_outside(fig, flat, ncol=3)
    killed = [lab for lab in labels if any(summary[lab][sg]["symbolic_zero_cells"] for sg in ("A>0", "A<0"))]
    alive = [lab for lab in labels if lab not in killed]
    underflow = [lab for lab in labels if max(summary[lab][sg]["numerical_zero_fraction"] for sg in ("A>0", "A<0")) > 0]
    diff = max(summary[lab]["max_torch_symbolic_diff"] for lab in labels)
    caption = (
        "Gradient survival: the per-token gradient weight |w| per unit |A| as a function of the "
        "ratio ρ, for a positive (solid) and a negative (dashed) advantage. Look at the shaded "
        f"bands: there the weight is exactly zero and the token gets no gradient. {join(killed) or 'No objective'} "
        f"{'have' if len(killed) != 1 else 'has'} ratio ranges where the gradient is exactly 0; {join(alive) or 'none'} never {'zero' if len(alive) != 1 else 'zeroes'} it, {'they' if len(alive) != 1 else 'it'} only bound it. "
        f"Black points are the torch objectives' autograd weights; they lie on the symbolic curves "
        f"(largest difference {fmt(diff)})."
    )
    if underflow:
        caption += (f" {join(underflow)}'s weight decays smoothly far from ρ = 1 and falls below the axis "
                    f"(< {floor:g}); where torch prints exactly 0 there it is float64 underflow, not a zero region "
                    "(the symbolic weight is positive).")
    return [Figure(NAME, fig, caption)]


def plot(result: Result, path) -> dict[str, str]:
    """Write ``figures(result)`` (the first at ``path``); returns {file name: caption}."""
    return plot_to(figures(result), path)


def with_objective(config: Config, label: str, objective: str, objective_config: Any) -> Config:
    """``config`` with the objective ``label`` replaced."""
    objs = tuple((lab, objective, objective_config) if lab == label else (lab, o, c)
                 for lab, o, c in config.objectives)
    return dataclasses.replace(config, objectives=objs)
