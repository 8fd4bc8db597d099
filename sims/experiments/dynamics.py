"""Training dynamics: a toy RL loop with several optimiser steps per batch.

Two tasks on a prompt-conditioned ``TabularPolicy`` (T = 4, V = 4, no EOS), every metric exact by
enumeration (4^4 sequences per prompt):

* ``difficulty spread``: R = 1[#token 0 >= 2], calibrated so the prompts start at pass rates
  ``Config.pass_rates`` (``policies.tasks.calibrate``);
* ``multi-solution``: R = 1[#token 0 >= 2] from a uniform start — 67 distinct correct answers
  per prompt, so collapse onto a few loses solutions: measured by pass@k and by the effective
  number of distinct correct answers exp(H(π | correct)).

Each step samples G prompts × K responses from the current policy (π_old), then takes
``n_updates`` Adam steps on the registered algorithm's loss (``algorithm_loss``) over the same
batch, so the ratios move away from 1. Logged per step, per seed: reward J, pass@k, entropy per
token, KL(π‖π_init) per token, solutions kept, and the fraction of tokens whose gradient weight is
exactly 0 in the last update. Bands are 95% intervals over seeds (``_common.metric_interval``: t-intervals,
Wilson score intervals for pass@k and the zero-gradient fraction).

Algorithms: the registry's GRPO (its k3 KL loss against the initial policy), Dr.GRPO, DAPO, GSPO,
CISPO, SGS-CISPO for each p_mode with and without the stop-gradient on S, and the ablation
``cispo[rloo, token-mean]``: CISPO with SGS-CISPO's own advantage (RLOO), aggregation (token-mean),
filter (dynamic sampling) and clip, so that SGS-CISPO − ablation isolates the factor S (the
registry's CISPO also differs in advantage and aggregation). ``summary["comparisons"][task]["adam"]``
(also ``summary["paired_vs_cispo_ablation"][task]``) holds those paired differences with the smallest
detectable difference; ``summary["uniform_correct_entropy"]`` the entropy per token of the policy
uniform over each prompt's correct answers.
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from policies.table import all_token_arrays
from policies.tabular import TabularPolicy
from policies.tasks import TokenCount, calibrate
from sims._checks import require
from sims.algorithms import ALGORITHMS, Algorithm, algorithm_loss
from sims.experiments._common import Result, mean_interval, metric_interval, seeded
from sims.experiments._plotting import MARKERS, PALETTE, Figure, fmt, join, legend_outside, line_kw, new_figure, plot_to, style
from sims.objectives import P_MODES, CispoConfig

NAME = "dynamics"
TITLE = "Training dynamics on toy tasks (reward, pass@k, entropy, KL, zero-gradient tokens)"

BASE_ALGORITHMS = ("grpo", "drgrpo", "dapo", "gspo", "cispo")
METRICS = ("reward", "pass@k", "entropy", "kl_to_init", "solutions", "zero_grad_frac")
ABLATION = "cispo[rloo, token-mean]"
SHARED_KEYS = {"entropy": "eval_entropy", "reward": "eval_reward"}
"""Metric names in ``summary["comparisons"]`` shared with ``lm_dynamics`` (one schema for the ledger);
here the values are exact (enumeration) at the final step."""


def ablated_cispo() -> Algorithm:
    """SGS-CISPO without S: the registry's ``sgs_cispo`` with objective ``cispo`` at the same clip
    and aggregation (same advantage, filter and everything else)."""
    base = ALGORITHMS["sgs_cispo"]
    c = base.objective_config
    return dataclasses.replace(base, name=ABLATION, objective="cispo",
                               objective_config=CispoConfig(eps_low=c.eps_low, eps_high=c.eps_high, agg=c.agg),
                               notes="ablation: SGS-CISPO with S = 1")


def algorithms() -> dict[str, Algorithm]:
    """The compared compositions: the registry's, SGS-CISPO per p_mode and stop-gradient, and the
    ablation ``ABLATION`` (SGS-CISPO with S = 1)."""
    out = {name: ALGORITHMS[name] for name in BASE_ALGORITHMS}
    base = ALGORITHMS["sgs_cispo"]
    for mode in P_MODES:
        for sg in (True, False):
            cfg = dataclasses.replace(base.objective_config, p_mode=mode, stop_grad_s=sg)
            out[f"sgs_cispo[{mode}{'' if sg else ', no sg'}]"] = dataclasses.replace(base, objective_config=cfg)
    out[ABLATION] = ablated_cispo()
    return out


def detectable(diff: np.ndarray, power: float = 0.8) -> float:
    """Smallest true mean difference a paired two-sided 95% t-interval detects with probability
    ``power``: (t_{0.975, n−1} + t_{power, n−1})·sd/√n, from the observed paired differences."""
    from scipy import stats as st

    n = diff.size
    return float((st.t.ppf(0.975, n - 1) + st.t.ppf(power, n - 1)) * diff.std(ddof=1) / np.sqrt(n))


def uniform_correct_entropy(task: str, config: Config) -> float:
    """Entropy per token of the policy uniform over each prompt's correct answers (by enumeration):
    log(N_correct) / T, the same for every prompt of both tasks (same reward)."""
    tokens = all_token_arrays(HORIZON, VOCAB, VOCAB ** HORIZON, "cpu")
    n_correct = int(REWARD(tokens, torch.ones(tokens.shape, dtype=torch.float64)).sum())
    return float(np.log(n_correct) / HORIZON)


@dataclass(frozen=True)
class Config:
    """Attributes:
        steps: sampling steps per run; n_updates: Adam steps per batch; lr: Adam learning rate.
        group_size: K; pass_rates: the difficulty-spread task's initial per-prompt pass rates
            (G = their number); n_prompts_multi: G of the multi-solution task.
        pass_k: k of pass@k; n_seeds: seeds per (task, algorithm).
        algorithms: names from ``algorithms()`` (all by default).
    """

    steps: int = 60
    n_updates: int = 4
    lr: float = 0.1
    group_size: int = 8
    pass_rates: tuple[float, ...] = (0.05, 0.2, 0.5, 0.8)
    n_prompts_multi: int = 4
    pass_k: int = 8
    n_seeds: int = 5
    algorithms: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "n_updates", "group_size", "pass_k", "n_prompts_multi"):
            value = getattr(self, name)
            require(isinstance(value, int) and value >= 1, name, value, "an int >= 1")
        require(isinstance(self.n_seeds, int) and self.n_seeds >= 2, "n_seeds", self.n_seeds, "an int >= 2")
        require(self.lr > 0, "lr", self.lr, "lr > 0")
        if self.algorithms is not None:
            unknown = set(self.algorithms) - set(algorithms())
            require(not unknown, "algorithms", sorted(unknown), "names from " + ", ".join(algorithms()))

    @classmethod
    def quick(cls) -> "Config":
        return cls(steps=25)

    @classmethod
    def full(cls) -> "Config":
        return cls(steps=150, n_seeds=8)

    @classmethod
    def tiny(cls) -> "Config":
        return cls(steps=3, n_seeds=2, algorithms=("grpo", "cispo"))


REWARD = TokenCount(0, threshold=2)
HORIZON, VOCAB = 4, 4


def initial_policy(task: str, config: Config, device: str) -> TabularPolicy:
    """The task's starting policy (see the module doc)."""
    if task == "difficulty spread":
        base = TabularPolicy(torch.zeros(HORIZON, VOCAB, dtype=torch.float64, device=device))
        return calibrate(base, REWARD, list(config.pass_rates))
    return TabularPolicy(torch.zeros(config.n_prompts_multi, HORIZON, VOCAB, dtype=torch.float64, device=device))


def exact_metrics(policy: TabularPolicy, init: TabularPolicy, pass_k: int) -> dict[str, float]:
    """Metrics of every prompt by enumeration, averaged over prompts."""
    out = {m: 0.0 for m in METRICS if m != "zero_grad_frac"}
    n = policy.n_prompts
    for g in range(n):
        tokens, mask, prob = policy.enumerate(prompt=g)
        prompts = torch.full_like(tokens[:, 0], g)
        logp = policy.log_prob(tokens, prompts).sum(-1)
        logq = init.log_prob(tokens, prompts).sum(-1)
        r = REWARD(tokens, mask)
        j = float(prob @ r)
        out["reward"] += j / n
        out["pass@k"] += (1 - (1 - j) ** pass_k) / n
        out["entropy"] += float(-(prob * logp).sum()) / HORIZON / n
        out["kl_to_init"] += float((prob * (logp - logq)).sum()) / HORIZON / n
        pc = prob * r / max(j, 1e-300)
        h = float(-(pc[pc > 0] * pc[pc > 0].log()).sum())
        out["solutions"] += float(np.exp(h)) / n
    return out


def train(task: str, name: str, algorithm: Algorithm, init: TabularPolicy, config: Config, seed: int,
          device: str) -> list[dict]:
    """One run from ``init``: ``config.steps`` steps; returns one row per (step, metric)."""
    logits = init.logits.clone().requires_grad_(True)
    opt = torch.optim.Adam([logits], lr=config.lr)
    gen = seeded(seed, zlib.crc32(f"{task}/{name}".encode()) % 10_000)
    g, k = init.n_prompts, config.group_size
    prompts = torch.arange(g, device=device).repeat_interleave(k)
    rows: list[dict] = []
    for step in range(config.steps + 1):
        policy = TabularPolicy(logits.detach())
        metrics = exact_metrics(policy, init, config.pass_k)
        if step == config.steps:
            metrics["zero_grad_frac"] = np.nan
            rows += [{"task": task, "algorithm": name, "seed": seed, "step": step, "metric": m, "value": v}
                     for m, v in metrics.items()]
            break
        tokens, mask = policy.sample(g * k, generator=gen, prompts=prompts)
        rewards = REWARD(tokens, mask).reshape(g, k)
        old_logp = policy.log_prob(tokens, prompts)
        ref_logp = init.log_prob(tokens, prompts)
        zero = np.nan
        for _ in range(config.n_updates):
            logp = TabularPolicy(logits).log_prob(tokens, prompts)
            try:
                loss, _ = algorithm_loss(algorithm, logp, old_logp, rewards, mask, ref_logp=ref_logp,
                                         max_len=HORIZON)
            except ValueError:  # dynamic sampling dropped every group: nothing to learn from
                zero = 1.0
                break
            opt.zero_grad()
            (grad_logp,) = torch.autograd.grad(loss, logp, retain_graph=True)
            loss.backward()
            opt.step()
            zero = float(((grad_logp == 0) & (mask > 0)).sum() / mask.sum())
        metrics["zero_grad_frac"] = zero
        rows += [{"task": task, "algorithm": name, "seed": seed, "step": step, "metric": m, "value": v}
                 for m, v in metrics.items()]
    return rows


def run(config: Config, *, seed: int = 0, device: str = "cpu", progress=None) -> Result:
    """All (task, algorithm, seed) runs; table: task, algorithm, seed, step, metric, value."""
    algs = algorithms()
    names = config.algorithms or tuple(algs)
    rows: list[dict] = []
    jobs = [(task, name, s) for task in ("difficulty spread", "multi-solution") for name in names
            for s in range(config.n_seeds)]
    inits = {task: initial_policy(task, config, device) for task in ("difficulty spread", "multi-solution")}
    for task, name, s in (progress(jobs) if progress else jobs):
        rows += train(task, name, algs[name], inits[task], config, seed * 1000 + s, device)
    table = pd.DataFrame(rows)
    return Result(NAME, config, table, summarise(table, config))


def final(table: pd.DataFrame, task: str, name: str, metric: str, step: int) -> np.ndarray:
    """Per-seed values of ``metric`` at ``step`` (ordered by seed)."""
    sel = (table.task == task) & (table.algorithm == name) & (table.metric == metric) & (table.step == step)
    return table[sel].sort_values("seed")["value"].to_numpy(float)


def summarise(table: pd.DataFrame, config: Config) -> dict[str, Any]:
    """Final-step means with 95% intervals over seeds, and paired differences SGS − CISPO."""
    last = config.steps
    out: dict[str, Any] = {"steps": last, "n_seeds": config.n_seeds, "final": {}, "paired_vs_cispo": {},
                           "initial": {}, "comparisons": {}, "paired_vs_cispo_ablation": {},
                           "uniform_correct_entropy": {}}
    names = list(dict.fromkeys(table.algorithm))
    for task in dict.fromkeys(table.task):
        out["initial"][task] = {m: float(final(table, task, names[0], m, 0).mean()) for m in METRICS if m != "zero_grad_frac"}
        out["final"][task] = {name: {m: metric_interval(m, final(table, task, name, m, last if m != "zero_grad_frac" else last - 1))
                                     for m in METRICS} for name in names}
        if "cispo" in names:
            base = {m: final(table, task, "cispo", m, last) for m in ("entropy", "reward", "solutions")}
            out["paired_vs_cispo"][task] = {
                name: {m: mean_interval(final(table, task, name, m, last) - base[m]) for m in base}
                for name in names if name.startswith("sgs_cispo")}
        out["uniform_correct_entropy"][task] = uniform_correct_entropy(task, config)
        if ABLATION in names:
            base = {m: final(table, task, ABLATION, m, last) for m in ("entropy", "reward", "solutions")}
            out["comparisons"][task] = {"adam": {
                name: {**{SHARED_KEYS.get(m, m): mean_interval(final(table, task, name, m, last) - base[m]) for m in base},
                       "detectable_entropy_difference": detectable(final(table, task, name, "entropy", last)
                                                                   - base["entropy"])}
                for name in names if name.startswith("sgs_cispo")}}
            out["paired_vs_cispo_ablation"][task] = out["comparisons"][task]["adam"]
    return out


METRIC_LABELS = {"reward": "reward J (pass rate)", "pass@k": "pass@k", "entropy": "entropy (nats / token)",
                 "kl_to_init": "KL(π ‖ π_init) (nats / token)", "solutions": "distinct correct answers kept",
                 "zero_grad_frac": "fraction of tokens with w = 0"}


def _curves(ax, table: pd.DataFrame, task: str, metric: str, names: list[str]) -> None:
    """Mean over seeds and its 95% band per algorithm (``metric_interval``: a t-band, or the Wilson
    band for ``BOUNDED_METRICS``), one series each."""
    sub = table[(table.task == task) & (table.metric == metric)].dropna(subset=["value"])
    for i, name in enumerate(names):
        g = sub[sub.algorithm == name]
        bands = [(step, metric_interval(metric, v.to_numpy(float), halves=False)) for step, v in g.groupby("step")["value"]]
        steps = np.array([s for s, _ in bands])
        mean, low, high = (np.array([getattr(e, a) for _, e in bands]) for a in ("value", "low", "high"))
        ax.plot(steps, mean, **line_kw(i, markevery=(2 * i, max(1, len(steps) // 6))), lw=1.2, label=name)
        ax.fill_between(steps, low, high, color=PALETTE[i], alpha=0.12, lw=0)
    ax.set_xlabel("training step")
    ax.set_ylabel(METRIC_LABELS[metric])


def figures(result: Result) -> list[Figure]:
    """(1) entropy over training per task; (2) final entropy per algorithm against the collapse
    threshold, and the paired SGS − CISPO differences; (3) reward and zero-gradient fraction over
    training. Means over seeds with 95% bands (``metric_interval``)."""
    table, cfg, summary = result.table, result.config, result.summary
    tasks = list(dict.fromkeys(table.task))
    names = list(dict.fromkeys(table.algorithm))
    last = summary["steps"]
    with style():
        fig, axes = new_figure(1, len(tasks), width=6.5, height=3.3, sharey=True)
        for ax, task in zip(axes[0], tasks):
            _curves(ax, table, task, "entropy", names)
            ax.set_title(task)
        legend_outside(fig, axes[0], ncol=4)
        entropy_fig = fig
    fin = summary["final"]
    init = summary["initial"]
    ent = {t: {n: fin[t][n]["entropy"] for n in names} for t in tasks}
    caption = (
        f"Policy entropy per token over {last} training steps ({cfg.n_updates} Adam steps per sampled batch, "
        f"G × K samples with K = {cfg.group_size}; mean over {cfg.n_seeds} seeds with 95% bands). The tasks start "
        f"at entropy {join(fmt(init[t]['entropy'], 4) for t in tasks)} nats/token. Look at where "
        "the curves end: "
        + "; ".join(f"{t}: highest {max(ent[t], key=lambda n: ent[t][n].value)} "
                    f"({ent[t][max(ent[t], key=lambda n: ent[t][n].value)]}), lowest "
                    f"{min(ent[t], key=lambda n: ent[t][n].value)} ({ent[t][min(ent[t], key=lambda n: ent[t][n].value)]})"
                    for t in tasks)
        + "."
    )
    kept = [n for n in names if all(ent[t][n].low > max(ent[t][m].high for m in names if m != n) for t in tasks)]
    if kept:
        caption += (f" {join(kept)} ends above every other algorithm on both tasks; its KL penalty to the "
                    "initial policy holds the entropy up." if kept == ["grpo"] else
                    f" {join(kept)} ends above every other algorithm on both tasks.")
    # (2) final entropy and the paired differences
    sgs_names = [n for n in names if n.startswith("sgs_cispo")]
    with style():
        has_paired = bool(summary["paired_vs_cispo"]) and bool(sgs_names)
        fig, axes = new_figure(1, 2 if has_paired else 1, width=6.5, height=3.4, sharey=True)
        ax_f = axes[0][0]
        y = np.arange(len(names))[::-1]
        for j, task in enumerate(tasks):
            h0 = init[task]["entropy"]  # exact (enumeration of the common initial policy)
            v = np.array([ent[task][n].value for n in names]) / h0
            err = [v - np.array([ent[task][n].low for n in names]) / h0, np.array([ent[task][n].high for n in names]) / h0 - v]
            ax_f.errorbar(v, y + (0.15 - 0.3 * j), xerr=err, ls="none", marker=MARKERS[j], color=PALETTE[j], label=task)
        ax_f.axvline(1.0, color=PALETTE[6], lw=1, ls="-", label="initial entropy")
        ax_f.axvline(0.9, color=PALETTE[7], lw=1, ls="--", label="0.9 × initial (no collapse)")
        ax_f.set_xlim(0, 1.05)
        ax_f.set_yticks(y, names)
        ax_f.set_xlabel(f"entropy at step {last} / initial entropy")
        ax_f.set_title("final entropy, 95% CI over seeds")
        ax_f.grid(axis="y", visible=False)
        if has_paired:
            ax_p = axes[0][1]
            for j, task in enumerate(t for t in tasks if t in summary["paired_vs_cispo"]):
                paired = summary["paired_vs_cispo"][task]
                rows = [n for n in names if n in paired]
                v = np.array([paired[n]["entropy"].value for n in rows])
                err = [v - [paired[n]["entropy"].low for n in rows], [paired[n]["entropy"].high for n in rows] - v]
                ax_p.errorbar(v, np.array([y[names.index(n)] for n in rows]) + (0.15 - 0.3 * j), xerr=err, ls="none",
                              marker=MARKERS[j], color=PALETTE[j])
            ax_p.axvline(0, color="k", lw=0.8)
            ax_p.set_xlabel("paired difference vs CISPO (nats / token)")
            ax_p.set_title("SGS-CISPO − CISPO, same seeds")
            ax_p.grid(axis="y", visible=False)
        legend_outside(fig, [ax_f], ncol=4)
        final_fig = fig
    covers = {t: [n for n, d in summary["paired_vs_cispo"].get(t, {}).items() if d["entropy"].low <= 0 <= d["entropy"].high]
              for t in tasks}
    cap2 = (
        f"Left: entropy at step {last} per algorithm and task as a fraction of the task's initial entropy "
        f"({join(fmt(init[t]['entropy'], 4) for t in tasks)} nats/token), against 0.9 × initial (dashed: the "
        "ledger's no-collapse threshold, C13). An interval left of the dashed line means that algorithm collapsed "
        f"entropy on that task; {sum(ent[t][n].high < 0.9 * init[t]['entropy'] for t in tasks for n in names)} of "
        f"{len(tasks) * len(names)} are. "
    )
    if has_paired:
        cap2 += ("Right: the paired difference in final entropy between each SGS-CISPO variant and CISPO on the same "
                 "seeds (positive: SGS keeps more entropy). ")
        for t in tasks:
            if covers[t]:
                cap2 += (f"On {t}, {len(covers[t])} of {len(summary['paired_vs_cispo'][t])} intervals cover 0 "
                         f"({join(covers[t]) if len(covers[t]) <= 3 else join(covers[t][:3]) + ', …'}): with "
                         f"{cfg.n_seeds} seeds those differences are not distinguishable from none. ")
    # (3) reward and zero-gradient fraction
    with style():
        fig, axes = new_figure(2, len(tasks), width=6.5, height=4.6, sharex=True)
        for col, task in enumerate(tasks):
            for row, metric in enumerate(("reward", "zero_grad_frac")):
                _curves(axes[row][col], table, task, metric, names)
                axes[row][col].set_ylim(-0.03, 1.03)
                if row == 0:
                    axes[row][col].set_title(task)
                    axes[row][col].set_xlabel("")
        legend_outside(fig, axes[0], ncol=4)
        learn_fig = fig
    rew = {t: min(fin[t][n]["reward"].value for n in names) for t in tasks}
    algs = algorithms()
    gets_grad = sorted({n for t in tasks for n in names if fin[t][n]["zero_grad_frac"].value < 0.5})
    with_kl = [n for n in gets_grad if n in algs and algs[n].kl is not None]
    zero = [n for n in names if n not in gets_grad]
    zg = {t: min(fin[t][n]["zero_grad_frac"].value for n in zero) for t in tasks} if zero else {}
    cap3 = (
        "Top: the expected reward (exact by enumeration) over training; bottom: the fraction of sampled tokens whose "
        "gradient weight is exactly 0 in the last update of each step (95% bands over seeds: t-bands for the reward, "
        "Wilson score bands for the zero-gradient fraction, which is bounded and exactly 0 on most seeds). Look at the two "
        f"together: once a task is solved (final reward at least {join(fmt(rew[t]) for t in tasks)}) most groups "
        "are all correct, their group-relative advantage is 0 and their tokens get no gradient"
    )
    if zg:
        cap3 += f": the final zero-gradient fraction is at least {join(fmt(zg[t]) for t in tasks)}"
        if gets_grad:
            cap3 += f" for every algorithm except {join(gets_grad)}"
            if with_kl:
                cap3 += (f" ({join(with_kl)}: {'its' if len(with_kl) == 1 else 'their'} KL penalty to the initial "
                         "policy gives every token a gradient)")
    cap3 += "."
    return [Figure(NAME, entropy_fig, caption), Figure(f"{NAME}_final", final_fig, cap2.strip()),
            Figure(f"{NAME}_learning", learn_fig, cap3)]


def plot(result: Result, path) -> dict[str, str]:
    """Write ``figures(result)`` (the first at ``path``); returns {file name: caption}."""
    return plot_to(figures(result), path)
