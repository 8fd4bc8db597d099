"""The engine of ``pgverify compare``: the experiments that apply to a per-token objective, run for
the objectives you choose (registry names, plugins and your own torch losses), side by side.

``resolve`` turns the command line into a ``Plan`` (usage errors first, before any work); a user
target ``path.py:function`` becomes a temporary registry objective (``sims.variants``) so that the
engines, the experiments and ``sims.algorithms`` take it by name. ``run_comparison`` runs, for
every objective, what applies to it, and says why for what does not:

* ``bias_variance``: bias (exact, by enumeration) and variance (Monte Carlo) of the gradient
  estimate versus T — the experiment's own ``run``/``figures`` with ``Config.estimators`` = the
  compared objectives plus the unbiased sequence-IS reference. Each objective gets the
  aggregation under which its on-policy weight is REINFORCE's: ``seq-mean-token-sum`` for a
  per-token weight, ``seq-mean-token-mean`` for a sequence loss broadcast over its tokens (its
  per-token weight at ρ = 1 is T·A); an objective with another on-policy scale c is kept with
  ``seq-mean-token-sum`` and its bias includes the scale (the on-policy relative bias row shows it).
  Needs a per-sequence objective without extra inputs (the exact engine evaluates B = 1 batches).
* ``sequence_weight``: where the objective's token weight reads the other tokens (a sequence ratio:
  checked numerically, token 1's weight under a change of token 2's log-prob), E_old[w_t/A] and
  its variance versus T on the GSPO-weight experiment's i.i.d. pair (μ, π of papers.md §3), next to
  E_old[R] = 1 (the true weight, exact) and E_old[G] = (E_μ[ρ^{1/T}])^T (GSPO's, exact).
* ``survival``: the gradient-survival map — the experiment's ``run``/``figures`` with
  ``Config.objectives`` = the compared objectives (torch autograd; the symbolic curve and the
  exact zero/bounded cells from the theory entry, a user's ``--theory`` included).
* ``length_bias``: the Dr. GRPO toy (exact, every ordered group of G responses, through
  ``algorithm_loss`` with ``--advantage``) and the larger Markov policy's cos(E ĝ, ∇E|o|) (exact
  for ``seq-mean-*`` aggregations, Monte Carlo otherwise).
* ``difficulty``: the effective per-prompt weight w(p) under ``--advantage``: exact, c·w_adv(p)
  with c the objective's on-policy scale (at θ = θ_old every objective here is c·REINFORCE), and a
  Monte Carlo check through ``mc_gradient`` with the objective itself on the one-token bandit.
* ``dynamics``: a short training run (the experiment's ``train``, ``summarise`` and ``figures``)
  with the algorithm ``--advantage`` + objective + ``--agg``, no KL, no filter.

Sweep sizes: ``tiny`` (a smoke run), ``quick`` and ``full`` are each experiment's own sweeps,
except where compare runs three or more objectives through one experiment and keeps its time in
bounds: bias_variance at quick T ≤ 6 with 2,000 replicas and at full its default sweep with
10,000; dynamics at quick 10 steps × 3 seeds and at full 40 steps × 4 seeds; the long-T part of
bias_variance (the experiment's own estimators) always at its tiny sweep.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from sims.check.target import UsageError, parse_assignments
from sims.experiments._common import (
    Estimate,
    Result,
    mc_config,
    mean_interval,
    normal_interval,
    seeded,
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
    style,
)

__all__ = ["Compared", "Plan", "resolve", "run_comparison", "build_comparison", "SCALES"]

SCALES = ("tiny", "quick", "full")
_SUM, _SEQ = "seq-mean-token-sum", "seq-mean-token-mean"
ROUNDING = 1e-12  # an exact toy update below this is float64 rounding of O(1) terms (length_bias.EXACT_ZERO)


@dataclass(frozen=True)
class Compared:
    """One compared objective: ``label`` (shown everywhere), ``name`` (its registry key; a user
    target's is its ``path.py:function``), ``config`` (its config with the compare's ``agg``),
    ``user`` (a user target)."""

    label: str
    name: str
    config: Any
    user: bool = False


@dataclass(frozen=True)
class Plan:
    """What ``pgverify compare`` will run: the objectives, the user objectives to register for the
    run (name -> ObjectiveSpec), the advantage estimator and its config, the aggregation."""

    objectives: tuple[Compared, ...]
    register: dict[str, Any] = field(default_factory=dict)
    advantage: str = "grpo"
    advantage_config: Any = None
    agg: str = _SEQ
    theory: Any = None


def resolve(names: Sequence[str], *, theory: str | None = None, advantage: str = "grpo", agg: str = _SEQ,
            params: Sequence[str] | None = None, theory_params: Sequence[str] | None = None) -> Plan:
    """The ``Plan`` for the command line; ``UsageError`` naming the problem otherwise."""
    from sims.aggregation import AGGREGATIONS
    from sims.registry import OBJECTIVES, get_advantage
    from sims.variants import load_theory, load_user_objective, theory_config

    if agg not in AGGREGATIONS or agg == "seq-mean-token-sum-norm":
        allowed = ", ".join(a for a in AGGREGATIONS if a != "seq-mean-token-sum-norm")
        raise UsageError(f"--agg {agg!r} is invalid; allowed: {allowed} (seq-mean-token-sum-norm needs a max_len "
                         "per experiment)")
    try:
        adv_spec = get_advantage(advantage)
    except ValueError as exc:
        raise UsageError(f"--advantage: {exc}") from exc
    if len(names) < 2:
        raise UsageError(f"compare needs at least two objectives (got {list(names)}); allowed: your target and the "
                         "baselines to put beside it, e.g. path/to/loss.py:fn cispo ppo_clip")
    if len(set(names)) != len(names):
        raise UsageError(f"an objective is named twice in {list(names)}; allowed: each once")
    users = [n for n in names if ":" in n]
    for n in names:
        if ":" not in n and n not in OBJECTIVES:
            raise UsageError(f"objective {n!r} is unknown; allowed: {', '.join(OBJECTIVES)} (pgverify list), or a "
                             "user target path/to/loss.py:function")
    if theory is not None and len(users) != 1:
        raise UsageError(f"--theory needs exactly one user target among the objectives (got {len(users)}); "
                         "allowed: one path/to/loss.py:function")
    if (params or theory_params) and not users:
        raise UsageError("--param/--theory-param set a user target's settings, and no user target is named; "
                         "allowed: path/to/loss.py:function among the objectives")
    if theory_params and theory is None:
        raise UsageError("--theory-param needs --theory FILE.py:FUNCTION")
    loaded = None if theory is None else load_theory(theory, parse_assignments("--theory-param", theory_params))
    bound = parse_assignments("--param", params)
    out, register = [], {}
    for n in names:
        if n in OBJECTIVES:
            spec = OBJECTIVES[n]
            cfg = dataclasses.replace(spec.config_cls(), agg=agg)
            out.append(Compared(n, n, cfg))
            continue
        spec = load_user_objective(n, bound, declared_agg=agg, theory=loaded, name=n)
        if loaded is not None:
            cfg = theory_config(loaded, agg=agg)
            spec = dataclasses.replace(spec, config_cls=type(cfg))
        else:
            cfg = spec.config_cls(agg=agg)
        register[n] = spec
        label = n.rpartition(":")[2] + " (yours)"
        out.append(Compared(label, n, cfg, user=True))
    return Plan(tuple(out), register, advantage, adv_spec.config_cls(), agg, loaded)


# ---------------------------------------------------------------------------------------------
# probes of one objective


def _weights(name: str, cfg: Any, logp, old_logp, adv, mask) -> torch.Tensor:
    from sims.registry import get_objective

    x = logp.clone().requires_grad_(True)
    loss, _ = get_objective(name).loss_fn(x, old_logp, adv, mask, config=cfg)
    (g,) = torch.autograd.grad(loss, x, allow_unused=True)
    return torch.zeros_like(x) if g is None else -g


def on_policy_scale(name: str, cfg: Any, n: int = 3) -> float:
    """Mean w_t/A of one sequence of ``n`` tokens at ρ = 1, A = 1, under ``token-sum``."""
    one = dataclasses.replace(cfg, agg="token-sum", max_len=None, group_size=None)
    logp = torch.full((1, n), -1.0, dtype=torch.float64)
    w = _weights(name, one, logp, logp.clone(), torch.ones(1, n, dtype=torch.float64),
                 torch.ones(1, n, dtype=torch.float64))
    return float(w.mean())


def reads_other_tokens(name: str, cfg: Any) -> bool:
    """Whether token 1's weight changes when token 2's log-prob does (off-policy, at A = +1 and at
    A = −1: an objective may read the sequence ratio for one sign only, as TOPR)."""
    one = dataclasses.replace(cfg, agg="token-sum", max_len=None, group_size=None)
    old = torch.tensor([[-1.0, -1.3, -0.7]], dtype=torch.float64)
    mask = torch.ones_like(old)
    base = torch.tensor([[-0.9, -1.1, -0.8]], dtype=torch.float64)
    moved = base.clone()
    moved[0, 1] -= 0.35
    for sign in (1.0, -1.0):
        adv = torch.full_like(old, sign)
        if not torch.allclose(_weights(name, one, base, old, adv, mask)[0, 0],
                              _weights(name, one, moved, old, adv, mask)[0, 0], rtol=1e-12, atol=0):
            return True
    return False


def _why_not_generic(name: str, caller: str, independent: bool) -> str | None:
    from sims.registry import get_objective, require_callable_by

    try:
        require_callable_by(get_objective(name), caller, independent_batches=independent)
    except ValueError as exc:
        return str(exc)
    return None


# ---------------------------------------------------------------------------------------------
# experiments


@dataclass
class Section:
    """One experiment of the comparison: its result (or None), figures, notes (what did not apply
    and why), and the objectives it covers."""

    name: str
    title: str
    result: Result | None
    figures: list[Figure]
    notes: list[str]
    covered: list[str]
    failed: bool = False


def _bias_variance(plan: Plan, scale: str, seed: int, device: str) -> Section:
    from sims.experiments import bias_variance as bv

    base = bv.Config(n_replicas=10_000) if scale == "full" else getattr(bv.Config, scale)()
    if scale == "tiny":
        base = dataclasses.replace(base, horizons=(1, 2), ratio_horizons=(2,), n_replicas=40, n_ratio_samples=200)
    if scale == "quick":
        base = dataclasses.replace(base, horizons=(1, 2, 4, 6), ratio_horizons=(16,), n_replicas=2_000,
                                   n_ratio_samples=10_000)
    ests, notes = [(bv.UNBIASED, "seq_is", bv.SeqIsConfig(agg=_SEQ))], []
    for c in plan.objectives:
        why = _why_not_generic(c.name, "the exact engine (batches of one sequence)", True)
        if why:
            notes.append(f"{c.label}: not run: {why}")
            continue
        scale_t = on_policy_scale(c.name, c.config)
        agg = _SEQ if math.isclose(scale_t, 3.0, rel_tol=1e-9) else _SUM
        if not (math.isclose(scale_t, 1.0, rel_tol=1e-9) or agg == _SEQ):
            notes.append(f"{c.label}: its on-policy weight is {scale_t:.4g}·A, not REINFORCE's; its bias includes "
                         "that scale (see its on-policy relative bias)")
        ests.append((c.label, c.name, dataclasses.replace(c.config, agg=agg)))
    cfg = dataclasses.replace(_long_part_tiny(base, bv.Config.tiny()), estimators=tuple(ests))
    res = bv.run(cfg, seed=seed, device=device)
    notes.append("the objectives are compared on the enumerable sweep (T up to "
                 f"{max(cfg.horizons)}); the experiment's long-T part, if it has one, shows its own estimators "
                 "at its tiny sweep (pgverify report runs it in full)")
    return Section(bv.NAME, bv.TITLE, res, bv.figures(res), notes, [e[0] for e in ests[1:]])


def _long_part_tiny(config: Any, tiny: Any) -> Any:
    """``config`` with the experiment's long-T part (fields ``long_*`` other than its estimators,
    where the experiment has one) at its tiny sweep: that part runs the experiment's own
    estimators, not the compared objectives, so compare keeps its cost minimal."""
    fields = {f.name for f in dataclasses.fields(config)}
    keep = {n: getattr(tiny, n) for n in fields if n.startswith("long_") and n != "long_estimators"}
    return dataclasses.replace(config, **keep)


def _sequence_weight(plan: Plan, scale: str, seed: int, device: str) -> Section:
    from sims.experiments import gspo_weight as gw

    horizons = {"tiny": (1, 4), "quick": (1, 2, 4, 8, 16, 32), "full": (1, 2, 4, 8, 16, 32, 64, 128)}[scale]
    n = {"tiny": 500, "quick": 20_000, "full": 100_000}[scale]
    rows, notes, covered = [], [], []
    mu, pi = torch.tensor(gw.EXAMPLE_MU, dtype=torch.float64), torch.tensor(gw.EXAMPLE_PI, dtype=torch.float64)
    for t in horizons:
        g = float((mu * (pi / mu) ** (1.0 / t)).sum() ** t)
        rows += [{"T": t, "objective": "true weight R", "quantity": "E_old[w/A]", "value": 1.0, "low": 1.0,
                  "high": 1.0, "method": "exact"},
                 {"T": t, "objective": "GSPO's G = R^(1/T)", "quantity": "E_old[w/A]", "value": g, "low": g,
                  "high": g, "method": "exact"}]
    for c in plan.objectives:
        why = _why_not_generic(c.name, "the sequence-weight experiment", True)
        if why:
            notes.append(f"{c.label}: not run: {why}")
            continue
        if not reads_other_tokens(c.name, c.config):
            notes.append(f"{c.label}: not applicable: its token weight reads only its own token (no sequence ratio; "
                         "checked numerically)")
            continue
        covered.append(c.label)
        one = dataclasses.replace(c.config, agg="token-sum", max_len=None, group_size=None)
        for t in horizons:
            old, new = gw.iid_pair(gw.EXAMPLE_MU, gw.EXAMPLE_PI, t)
            tokens, mask = old.sample(n, generator=seeded(seed, 30_000 + t))
            lo, ln = old.log_prob(tokens), new.log_prob(tokens)
            for sign, side in ((1.0, ""), (-1.0, ", A < 0")):
                adv = torch.full_like(lo, sign)
                at_one = _weights(c.name, one, lo, lo, adv, mask)[:, 0]
                x = (_weights(c.name, one, ln, lo, adv, mask)[:, 0] / at_one).numpy()
                rows += [{"T": t, "objective": c.label + side, "quantity": "E_old[w/A]",
                          **_est(mean_interval(x)), "method": "monte carlo"},
                         {"T": t, "objective": c.label + side, "quantity": "Var_old[w/A]",
                          **_est(variance_interval(x)), "method": "monte carlo"}]
    table = pd.DataFrame(rows)
    summary = {lab: {f"T={t}": _row(table, lab, t, "E_old[w/A]") for t in horizons}
               for lab in dict.fromkeys(table.objective)}
    res = Result("sequence_weight", {"horizons": horizons, "n_samples": n, "mu": gw.EXAMPLE_MU, "pi": gw.EXAMPLE_PI},
                 table, summary)
    figs = [_sequence_figure(table, covered)] if covered else []
    return Section("sequence_weight", "Sequence-ratio weights against the true importance weight", res, figs, notes,
                   covered)


def _est(e: Estimate) -> dict[str, float]:
    return {"value": e.value, "low": e.low, "high": e.high}


def _row(table: pd.DataFrame, label: str, t: int, quantity: str) -> Estimate:
    r = table[(table.objective == label) & (table["T"] == t) & (table.quantity == quantity)].iloc[0]
    return Estimate(float(r["value"]), float(r["low"]), float(r["high"]))


def _sequence_figure(table: pd.DataFrame, covered: list[str]) -> Figure:
    sub = table[table.quantity == "E_old[w/A]"]
    labels = list(dict.fromkeys(sub.objective))
    with style():
        fig, axes = new_figure(1, 1, width=5.0, height=2.8)
        ax = axes[0][0]
        for i, lab in enumerate(labels):
            s = sub[sub.objective == lab]
            ax.plot(s["T"], s["value"], **line_kw(i), label=lab)
            ax.fill_between(s["T"], s["low"], s["high"], color=PALETTE[i % len(PALETTE)], alpha=0.15, lw=0)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sequence length T")
        ax.set_ylabel("E_old[w / A] (w at ρ = 1 is 1)")
        legend_outside(fig, [ax], ncol=2)
    last = sub[sub["T"] == sub["T"].max()].set_index("objective")["value"]
    caption = ("The expected per-token weight over π_old of each objective with a sequence ratio, on i.i.d. "
               "positions (μ = (0.4, 0.3, 0.2, 0.1), π = (0.3, 0.3, 0.25, 0.15)), normalised by its value at "
               "θ = θ_old; the true importance weight R has E_old[R] = 1 at every T, GSPO's G = R^(1/T) falls "
               f"towards exp(−KL). At T = {int(sub['T'].max())}: "
               + join(f"{lab} {fmt(last[lab])}" for lab in labels) + ". Bands: 95% intervals (Monte Carlo).")
    return Figure("sequence_weight", fig, caption)


def _survival(plan: Plan, scale: str, seed: int, device: str) -> Section:
    from sims.experiments import survival as sv

    base = getattr(sv.Config, scale)()
    if scale == "tiny":
        base = dataclasses.replace(base, reach_batches=1)
    objs, notes = [], []
    for c in plan.objectives:
        why = _why_not_generic(c.name, "the survival experiment", True)
        if why:
            notes.append(f"{c.label}: not run: {why}")
            continue
        objs.append((c.label, c.name, dataclasses.replace(c.config, agg=_SUM)))
        from sims.registry import get_objective

        if get_objective(c.name).theory is None:
            notes.append(f"{c.label}: torch map only (no theory: pass --theory for the symbolic map)")
    cfg = dataclasses.replace(base, objectives=tuple(objs))
    res = sv.run(cfg, seed=seed, device=device)
    return Section(sv.NAME, sv.TITLE, res, sv.figures(res), notes, [o[0] for o in objs])


def _algorithm(plan: Plan, c: Compared, agg: str | None = None):
    from sims.algorithms import Algorithm

    return Algorithm(name=c.label, advantage=plan.advantage, advantage_config=plan.advantage_config,
                     objective=c.name, objective_config=dataclasses.replace(c.config, agg=agg or c.config.agg))


def toy_update(algorithm, g: int, q: float, p_c: float, p_w: float) -> np.ndarray:
    """Exact E[ĝ] in (q, p_C, p_W) for groups of ``g`` responses of the Dr. GRPO toy
    (``length_bias.toy_tensors``), every ordered group enumerated, through ``algorithm_loss``."""
    from sims.algorithms import algorithm_loss
    from sims.experiments.length_bias import toy_tensors

    logp1, mask1, reward1, prob1, score1 = toy_tensors(q, p_c, p_w)
    combos = torch.tensor(list(itertools.product(range(4), repeat=g)))
    idx = combos.reshape(-1)
    logp = logp1[idx].clone().requires_grad_(True)
    try:
        loss, diag = algorithm_loss(algorithm, logp, logp.detach(), reward1[combos], mask1[idx], max_len=3)
    except ValueError:
        return np.zeros(3)
    (grad,) = torch.autograd.grad(loss, logp)
    n_kept = combos.shape[0] - int(diag["groups_dropped"])
    per_seq = torch.einsum("nt,ntk->nk", -grad * n_kept, score1[idx])
    group_prob = prob1[combos].prod(-1).repeat_interleave(g)
    return (group_prob[:, None] * per_seq).sum(0).numpy()


def _length_bias(plan: Plan, scale: str, seed: int, device: str) -> Section:
    from sims.experiments import length_bias as lb

    base = getattr(lb.Config, scale)()
    groups = {"tiny": (2,), "quick": (2, 4), "full": (2, 4, 6)}[scale]
    q, (p_c, p_w) = base.q, base.p_stop
    rows, notes, covered = [], [], []
    for c in plan.objectives:
        why = _why_not_generic(c.name, "the length-bias experiment", False)
        if why:
            notes.append(f"{c.label}: not run: {why}")
            continue
        covered.append(c.label)
        agg = "prompt-token-mean" if c.config.agg == "token-mean" else c.config.agg  # one group per batch
        alg = _algorithm(plan, c, agg)
        for g in groups:
            upd = toy_update(alg, g, q, p_c, p_w)
            for qty, v in (("dp_C", upd[1]), ("dp_W", upd[2])):
                rows.append({"setting": "toy, finite G", "G": g, "objective": c.label, "quantity": qty,
                             "value": float(v), "low": float(v), "high": float(v), "method": "exact"})
    table = pd.DataFrame(rows)
    g_ref = groups[-1]
    summary = {"toy_G": g_ref, "agg": plan.agg,
               "toy_updates": {lab: {k: float(table[(table.objective == lab) & (table.G == g_ref) &
                                                    (table.quantity == k)]["value"].iloc[0]) for k in ("dp_W", "dp_C")}
                               for lab in covered}}
    res = Result(lb.NAME, {"q": q, "p_stop": (p_c, p_w), "group_sizes": groups, "advantage": plan.advantage,
                           "agg": plan.agg}, table, summary)
    figs = [_toy_figure(summary, q)] if covered else []
    if plan.agg in (_SUM, "token-sum"):
        notes.append(f"under {plan.agg} a sequence's weight is not divided by its length, so no objective here can "
                     "have the Dr. GRPO length bias on this toy; compare with --agg seq-mean-token-mean to see it")
    notes.append("the larger Markov policy of the report's length-bias experiment is not run here: it fixes PPO-clip "
                 "per aggregation; the toy above is exact for every compared objective")
    return Section(lb.NAME, "Length bias on the Dr. GRPO toy (reward independent of length)", res, figs, notes, covered)


def _toy_figure(summary: dict[str, Any], q: float) -> Figure:
    names = list(summary["toy_updates"])
    with style():
        fig, axes = new_figure(1, 1, width=5.5, height=2.8)
        ax = axes[0][0]
        x = np.arange(len(names))
        for i, (key, what) in enumerate((("dp_W", "∂p_W (wrong answers' stop prob.)"),
                                         ("dp_C", "∂p_C (correct answers' stop prob.)"))):
            # an exact update below ROUNDING is float64 rounding of O(1) terms: drawn and labelled as 0
            values = [0.0 if abs(summary["toy_updates"][n][key]) < ROUNDING else summary["toy_updates"][n][key]
                      for n in names]
            ax.bar(x + (i - 0.5) * 0.38, values, 0.38, color=PALETTE[i], hatch=("", "//")[i], edgecolor="white",
                   label=what)
            for xi, v in zip(x + (i - 0.5) * 0.38, values):  # the value on each bar: a 0 is visible too
                ax.annotate(fmt(v), (xi, v), textcoords="offset points", xytext=(0, 3 if v >= 0 else -9),
                            ha="center", fontsize=7)
        ax.set_xticks(x, [n.replace(" (", "\n(") for n in names])
        ax.axhline(0, color="k", lw=0.7)
        ax.set_ylabel("expected update (exact)")
        ax.set_title(f"toy, G = {summary['toy_G']}, q = {q:g}, aggregation {summary['agg']}")
        legend_outside(fig, [ax], ncol=2)
    toy = summary["toy_updates"]
    caption = ("Length bias on the Dr. GRPO toy, exact over every ordered group: the expected change of each "
               "branch's stop probability (the true gradient is 0 for both; values below 1e-12, float64 rounding, "
               "are drawn as 0). A non-zero bar is a length bias: "
               + join(f"{n} ∂p_W = {fmt(toy[n]['dp_W'])}, ∂p_C = {fmt(toy[n]['dp_C'])}" for n in names) + ".")
    return Figure("length_bias", fig, caption)


def _difficulty(plan: Plan, scale: str, seed: int, device: str) -> Section:
    from policies.tasks import TokenCount
    from sims.engines.montecarlo import mc_gradient
    from sims.experiments import difficulty as df

    base = getattr(df.Config, scale)()
    k = base.group_size
    grid = {"tiny": (0.1, 0.5), "quick": tuple(np.round(np.linspace(0.05, 0.95, 10), 4)),
            "full": tuple(np.round(np.linspace(0.02, 0.98, 25), 4))}[scale]
    mc_ps = {"tiny": (0.5,), "quick": (0.2, 0.5), "full": (0.1, 0.5, 0.9)}[scale]
    n_rep = {"tiny": 200, "quick": 2_000, "full": 20_000}[scale]
    points = sorted(set(grid) | set(mc_ps))
    w_adv = {p: df.effective_weight(plan.advantage, plan.advantage_config, k, float(p), dynamic=False) for p in points}
    rows, notes, covered = [], [], []
    for c in plan.objectives:
        why = _why_not_generic(c.name, "the difficulty experiment", False)
        if why:
            notes.append(f"{c.label}: not run: {why}")
            continue
        covered.append(c.label)
        cfg = dataclasses.replace(c.config, agg=_SUM)
        scale_c = on_policy_scale(c.name, cfg, n=1)
        for p in points:
            rows.append({"objective": c.label, "p": float(p), "quantity": "w(p)", "value": scale_c * w_adv[p],
                         "low": scale_c * w_adv[p], "high": scale_c * w_adv[p], "method": "exact"})
        reward = TokenCount(0, threshold=1)
        for p in mc_ps:
            policy = df._bandit(float(p))
            grad_p = p * (1 - p)
            res = mc_gradient(policy, policy, reward, c.name, cfg, plan.advantage, plan.advantage_config,
                              mc_config(n_rep, group_size=k, seed=seed))
            est = normal_interval(float(res.mean.reshape(-1)[0]) / grad_p, float(res.mean_se.reshape(-1)[0]) / grad_p)
            rows.append({"objective": c.label, "p": float(p), "quantity": "w(p) Monte Carlo", **_est(est),
                         "method": "monte carlo"})
    table = pd.DataFrame(rows)
    summary = {}
    for lab in covered:
        ex = table[(table.objective == lab) & (table.quantity == "w(p)")]
        mc = table[(table.objective == lab) & (table.quantity == "w(p) Monte Carlo")]
        on_grid = ex[ex.p.isin(grid)]
        entry: dict[str, Any] = {"max/min w": float(on_grid.value.max() / on_grid.value.min())
                                 if (on_grid.value > 0).all() else float("nan")}
        for r in mc.itertuples():
            exact = float(ex[np.isclose(ex.p, r.p)].value.iloc[0])
            entry[f"p={r.p:g} exact"] = exact
            entry[f"p={r.p:g} Monte Carlo"] = Estimate(r.value, r.low, r.high)
            entry[f"p={r.p:g} covered"] = bool(r.low <= exact <= r.high)
        summary[lab] = entry
    res = Result(df.NAME, {"group_size": k, "pass_rates": grid, "mc_pass_rates": mc_ps, "n_replicas": n_rep,
                           "advantage": plan.advantage}, table, summary)
    figs = [_difficulty_figure(table, plan.advantage, k)] if covered else []
    return Section(df.NAME, f"Difficulty weighting under the {plan.advantage} advantage", res, figs, notes, covered)


def _difficulty_figure(table: pd.DataFrame, advantage: str, k: int) -> Figure:
    labels = list(dict.fromkeys(table.objective))
    with style():
        fig, axes = new_figure(1, 1, width=5.5, height=2.8)
        ax = axes[0][0]
        for i, lab in enumerate(labels):
            ex = table[(table.objective == lab) & (table.quantity == "w(p)")]
            mc = table[(table.objective == lab) & (table.quantity == "w(p) Monte Carlo")]
            ax.plot(ex.p, ex.value, **line_kw(i), label=f"{lab} (exact)")
            ax.errorbar(mc.p + 0.01 * (i - len(labels) / 2), mc.value, yerr=[mc.value - mc.low, mc.high - mc.value],
                        ls="none", marker="o", ms=3, color=PALETTE[i % len(PALETTE)])
        ax.set_xlabel("pass rate p")
        ax.set_ylabel("effective weight w(p)")
        legend_outside(fig, [ax], ncol=2)
    caption = (f"Effective per-prompt weight w(p) (its expected update is w(p)·∇p) under the {advantage} advantage "
               f"with groups of K = {k}, per objective: lines exact (the objective's on-policy scale times the "
               "advantage's weight), points Monte Carlo with the objective itself (95% intervals). An unbiased "
               "estimator has a flat w.")
    return Figure("difficulty", fig, caption)


def _dynamics(plan: Plan, scale: str, seed: int, device: str) -> Section:
    from sims.experiments import dynamics as dy

    base = getattr(dy.Config, scale)()
    if scale == "tiny":
        base = dataclasses.replace(base, steps=1, n_seeds=2)
    if scale == "quick":
        base = dataclasses.replace(base, steps=10, n_seeds=3)
    if scale == "full":
        base = dataclasses.replace(base, steps=40, n_seeds=4)
    rows, notes, covered = [], [], []
    tasks = ("difficulty spread", "multi-solution")
    inits = {t: dy.initial_policy(t, base, device) for t in tasks}
    for c in plan.objectives:
        why = _why_not_generic(c.name, "the dynamics experiment", False)
        if why:
            notes.append(f"{c.label}: not run: {why}")
            continue
        covered.append(c.label)
        alg = _algorithm(plan, c)
        for task in tasks:
            for s in range(base.n_seeds):
                rows += dy.train(task, c.label, alg, inits[task], base, seed * 1000 + s, device)
    table = pd.DataFrame(rows)
    res = Result(dy.NAME, base, table, dy.summarise(table, base)) if covered else None
    figs = dy.figures(res) if res is not None else []
    return Section(dy.NAME, dy.TITLE, res, figs, notes, covered)


EXPERIMENTS = (("bias_variance", _bias_variance), ("sequence_weight", _sequence_weight), ("survival", _survival),
               ("length_bias", _length_bias), ("difficulty", _difficulty), ("dynamics", _dynamics))


def run_comparison(plan: Plan, *, scale: str = "quick", seed: int = 0, device: str = "cpu", names=None,
                   progress: bool = False) -> list[Section]:
    """Run every experiment (or ``names``) for the plan, with its user objectives registered."""
    import sys

    from sims.report import experiment_seed
    from sims.variants import registered

    if scale not in SCALES:
        raise ValueError(f"scale={scale!r} is invalid; allowed: {', '.join(SCALES)}")
    chosen = [(n, f) for n, f in EXPERIMENTS if names is None or n in names]
    out = []
    with registered(plan.register):
        for i, (name, fn) in enumerate(chosen, 1):
            start = time.perf_counter()
            try:
                out.append(fn(plan, scale, experiment_seed(seed, name), device))
            except Exception as exc:  # noqa: BLE001 (a failing experiment is reported, the others still run)
                last = traceback.format_exception_only(type(exc), exc)[-1].strip()
                out.append(Section(name, name, None, [], [(f"FAILED: the experiment raised {last} (a bug in "
                                                            "pgverify; please report it)")], [], failed=True))
            if progress:
                sys.stderr.write(f"[{i}/{len(chosen)}] {name} done in {time.perf_counter() - start:.1f} s\n")
                sys.stderr.flush()
    return out


# ---------------------------------------------------------------------------------------------
# the report


def coverage(plan: Plan, sections: list[Section]) -> list[dict[str, Any]]:
    """One row per objective: in which experiments it appears ("yes") or why not."""
    rows = []
    for c in plan.objectives:
        row: dict[str, Any] = {"objective": c.label}
        for sec in sections:
            if c.label in sec.covered:
                row[sec.name] = "yes"
            else:
                why = [n.split(": ", 1)[1] for n in sec.notes if n.startswith(c.label + ": ")]
                row[sec.name] = why[0] if why else "no"
        rows.append(row)
    return rows


def render(plan: Plan, sections: list[Section], captions: dict[str, dict[str, str]], prov: dict[str, Any]) -> str:
    """REPORT.md of a comparison."""
    from sims.report import _md_table, summary_tables

    names = [c.label for c in plan.objectives]
    cols = ["objective", *[s.name for s in sections]]
    out = ["# pgverify comparison", "",
           (f"Generated by `pgverify compare` ({prov['scale']} scale, seed {prov['seed']}, device {prov['device']}, "
           f"commit `{(prov['git_commit'] or 'unknown')[:12]}`, {prov['created']}, {prov['seconds']} s). "
           f"Objectives: {', '.join(names)}; advantage {plan.advantage}; aggregation {plan.agg}. Intervals are 95% "
           "confidence intervals, value [low, high]; exact numbers carry none. Provenance: "
           "[provenance.json](provenance.json); summaries as JSON: [results.json](results.json)."), "",
           "## Objectives", "",
           _md_table([{"objective": c.label, "registry name / target": c.name, "yours": c.user,
                       "config": {k: v for k, v in dataclasses.asdict(c.config).items() if v is not None}}
                      for c in plan.objectives], ["objective", "registry name / target", "yours", "config"]), "",
           "## Where each objective appears", "",
           "Each experiment runs every objective it applies to; a cell that is not 'yes' says why.", "",
           _md_table(coverage(plan, sections), cols), ""]
    number = 0
    for sec in sections:
        out += [f"## {sec.title}", ""]
        if sec.notes:
            out += [f"- {n}" for n in sec.notes] + [""]
        for fname, caption in captions.get(sec.name, {}).items():
            number += 1
            out += [f"![Figure {number}: {fname}]({fname})", "", f"**Figure {number}** (`{fname}`). {caption}", ""]
        if sec.result is not None:
            out += [f"Data: [{sec.name}.csv]({sec.name}.csv). Summary:", ""]
            for head, table in summary_tables(sec.result.summary):
                if head:
                    out += [f"*{head}*", ""]
                out += [table, ""]
    return "\n".join(out)


def provenance(plan: Plan, sections: list[Section], scale: str, seed: int, device: str,
               seconds: float) -> dict[str, Any]:
    """provenance.json: the report's, plus the compared objectives and the plan."""
    from sims.report import jsonable
    from sims.report import provenance as report_provenance

    results = {s.name: s.result for s in sections if s.result is not None}
    prov = report_provenance(scale, seed, device, results, seconds)
    prov["objectives"] = [{"label": c.label, "name": c.name, "user": c.user, "config": jsonable(c.config)}
                          for c in plan.objectives]
    prov["advantage"], prov["agg"] = plan.advantage, plan.agg
    prov["theory"] = None if plan.theory is None else {"target": plan.theory.target, "params": plan.theory.params}
    return prov


def build_comparison(plan: Plan, out_dir, *, scale: str = "quick", seed: int = 0, device: str = "cpu",
                     names=None, progress: bool = False) -> list[Section]:
    """Run the comparison and write ``out_dir`` atomically (``sims.outputs.atomic_dir``): REPORT.md,
    one CSV per experiment, every figure (PNG), results.json, provenance.json (written last)."""
    import json

    from sims.experiments._plotting import write
    from sims.outputs import atomic_dir, check_report_dir
    from sims.report import jsonable

    check_report_dir("--out", out_dir)
    start = time.perf_counter()
    sections = run_comparison(plan, scale=scale, seed=seed, device=device, names=names, progress=progress)
    prov = provenance(plan, sections, scale, seed, device, time.perf_counter() - start)
    with atomic_dir(out_dir) as tmp:
        captions = {}
        for sec in sections:
            if sec.result is not None:
                sec.result.table.to_csv(Path(tmp) / f"{sec.name}.csv", index=False)
            captions[sec.name] = write(sec.figures, tmp) if sec.figures else {}
        summaries = {s.name: {"summary": s.result.summary if s.result else None, "notes": s.notes,
                              "objectives": s.covered} for s in sections}
        (tmp / "results.json").write_text(json.dumps(jsonable(summaries), indent=1, ensure_ascii=False))
        (tmp / "REPORT.md").write_text(render(plan, sections, captions, prov))
        (tmp / "provenance.json").write_text(json.dumps(jsonable(prov), indent=1, ensure_ascii=False))
    return sections
