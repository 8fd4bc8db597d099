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
exactly 0 in the last update. Bands are 95% t-intervals over seeds.

Algorithms: the registry's GRPO (its k3 KL loss against the initial policy), Dr.GRPO, DAPO, GSPO,
CISPO, and SGS-CISPO for each p_mode with and without the stop-gradient on S.
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from policies.tabular import TabularPolicy
from policies.tasks import TokenCount, calibrate
from sims._checks import require
from sims.algorithms import ALGORITHMS, Algorithm, algorithm_loss
from sims.experiments._common import Result, mean_interval, save, seeded
from sims.objectives import P_MODES

NAME = "dynamics"
TITLE = "Training dynamics on toy tasks (reward, pass@k, entropy, KL, zero-gradient tokens)"

BASE_ALGORITHMS = ("grpo", "drgrpo", "dapo", "gspo", "cispo")
METRICS = ("reward", "pass@k", "entropy", "kl_to_init", "solutions", "zero_grad_frac")


def algorithms() -> dict[str, Algorithm]:
    """The compared compositions: the registry's, plus SGS-CISPO per p_mode and stop-gradient."""
    out = {name: ALGORITHMS[name] for name in BASE_ALGORITHMS}
    base = ALGORITHMS["sgs_cispo"]
    for mode in P_MODES:
        for sg in (True, False):
            cfg = dataclasses.replace(base.objective_config, p_mode=mode, stop_grad_s=sg)
            out[f"sgs_cispo[{mode}{'' if sg else ', no sg'}]"] = dataclasses.replace(base, objective_config=cfg)
    return out


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
    out: dict[str, Any] = {"steps": last, "final": {}, "paired_vs_cispo": {}, "initial": {}}
    names = list(dict.fromkeys(table.algorithm))
    for task in dict.fromkeys(table.task):
        out["initial"][task] = {m: float(final(table, task, names[0], m, 0).mean()) for m in METRICS if m != "zero_grad_frac"}
        out["final"][task] = {name: {m: mean_interval(final(table, task, name, m, last if m != "zero_grad_frac" else last - 1))
                                     for m in METRICS} for name in names}
        if "cispo" in names:
            base = {m: final(table, task, "cispo", m, last) for m in ("entropy", "reward", "solutions")}
            out["paired_vs_cispo"][task] = {
                name: {m: mean_interval(final(table, task, name, m, last) - base[m]) for m in base}
                for name in names if name.startswith("sgs_cispo")}
    return out


def plot(result: Result, path) -> None:
    """Rows of panels per task: reward, pass@k, entropy, KL, solutions, zero-grad fraction over
    steps, mean and 95% band over seeds per algorithm (SGS variants dashed)."""
    table = result.table
    tasks = list(dict.fromkeys(table.task))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(tasks), len(METRICS), figsize=(3.0 * len(METRICS), 2.7 * len(tasks)), squeeze=False)
    for row, task in enumerate(tasks):
        for col, metric in enumerate(METRICS):
            ax = axes[row][col]
            sub = table[(table.task == task) & (table.metric == metric)].dropna(subset=["value"])
            for i, (name, g) in enumerate(sub.groupby("algorithm", sort=False)):
                stats_ = g.groupby("step")["value"].agg(["mean", "std", "count"])
                half = 1.96 * stats_["std"] / np.sqrt(stats_["count"])
                style = "--" if name.startswith("sgs") else "-"
                ax.plot(stats_.index, stats_["mean"], style, lw=1, label=name, c=f"C{i % 10}")
                ax.fill_between(stats_.index, stats_["mean"] - half, stats_["mean"] + half, alpha=0.12, color=f"C{i % 10}")
            ax.set_title(f"{task}: {metric}", fontsize=8)
            ax.set_xlabel("step", fontsize=7)
    axes[0][0].legend(fontsize=5)
    save(fig, path)
