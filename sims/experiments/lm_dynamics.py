"""Training dynamics on a tiny transformer LM, many seeds in parallel (entropy, over-learning, ablations).

The policy is ``policies.transformer`` (1 layer, d_model 32, 2 heads, V = 16, prompts as prefix
tokens), warmed up by supervised fitting to noisy demonstrations so that its prompts start at a
spread of pass rates (``_lm_train.WarmStart``, cached). Three tasks (``policies.lm_tasks``): reverse
the prompt (one correct answer), token sum mod 4 (V^T/4 correct answers) and "contains the target
token" (reward correlated with length, EOS). Each training step samples G = 8 prompts × K responses
per seed and takes ``n_updates`` optimiser steps on the registered algorithm's loss; S seeds run in
lockstep (``_lm_train``: the model on stacked parameters, one exact stacked loss, fused Adam / SGD). Seed s of
every algorithm draws from the same generator stream (common random numbers), so differences
between algorithms are paired by seed.

Algorithms: every algorithm of ``dynamics`` (GRPO, Dr.GRPO, DAPO, GSPO, CISPO, SGS-CISPO per p_mode
with and without the stop-gradient) plus the ablation ``cispo[rloo, token-mean]`` — CISPO with
SGS-CISPO's own advantage (RLOO), aggregation (token-mean), filter (dynamic sampling) and clip, so
SGS-CISPO − ablation isolates the factor S — a (k, τ) grid of SGS-CISPO, and plain SGD beside Adam.

Metrics per step and seed, from the training batch: reward, entropy per token (exact per-position
entropy at the sampled prefixes), KL(π‖π_init) per token (exact per position), fraction of valid
tokens with gradient weight exactly 0. Every ``eval_every`` steps, from ``n_eval`` fresh samples per
prompt: pass@k (unbiased estimator, Chen et al. 2021), distinct correct answers, and over-learning on
the prompts already solved at start (initial pass rate >= 0.9): their entropy drop and top-answer
mass. Bands are 95% intervals over seeds (``_common.metric_interval``: t-intervals, Wilson score
intervals for pass@k and the zero-gradient fraction).
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats

from policies.lm_tasks import ContainsTask, ReverseTask, SumModTask
from policies.table import eos_mask
from policies.transformer import LMShape, log_prob_fn, response_log_probs
from sims._checks import require
from sims.algorithms import ALGORITHMS, Algorithm
from sims.experiments import _lm_train as L
from sims.experiments._common import Estimate, Result, mean_interval, metric_interval, seeded
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
from sims.experiments.dynamics import ABLATION
from sims.experiments.dynamics import algorithms as tabular_algorithms

NAME = "lm_dynamics"
TITLE = "Training dynamics on a tiny transformer LM (many seeds in lockstep; SGS ablations, Adam and SGD)"

TASK_NAMES = ("reverse", "sum mod m", "contains token")
BATCH_METRICS = ("reward", "entropy", "kl_to_init", "zero_grad_frac")
EVAL_METRICS = ("pass@k", "eval_reward", "solutions", "eval_entropy", "overlearning", "top_mass_known",
                "answer_logp_rare", "rare_token_prob")
KNOWN = 0.9  # a prompt is "already solved" when its initial pass rate is at least this
RARE = 0.15  # a prompt's correct answer is "rare" when its initial pass rate is below this
WARM_CORRECT = (0.03, 0.1, 0.2, 0.35, 0.5, 0.7, 0.95, 0.99)  # demonstrations' correct fraction per prompt


def grid_name(k: float, tau: float) -> str:
    return f"sgs_cispo[k={k:g}, tau={tau:g}]"


def algorithms(grid: tuple[tuple[float, float], ...] = ()) -> dict[str, Algorithm]:
    """``dynamics.algorithms()`` (with the ablation) plus SGS-CISPO at each (k, τ) of ``grid``."""
    out = dict(tabular_algorithms())
    base = ALGORITHMS["sgs_cispo"]
    for k, tau in grid:
        cfg = dataclasses.replace(base.objective_config, k=float(k), tau=float(tau))
        out[grid_name(k, tau)] = dataclasses.replace(base, objective_config=cfg)
    return out


def bonus_name(base: str, beta: float) -> str:
    return f"{base} + entropy bonus {beta:g}"


@dataclass(frozen=True)
class Config:
    """Attributes:
        tasks: names from ``TASK_NAMES``; n_prompts: P (= len(warm_correct)); group_size: K.
        steps: sampling steps; n_updates: optimiser steps per batch; lr_adam, lr_sgd: learning rates.
        n_seeds: S seeds per (task, optimiser, algorithm), all in one vmapped run.
        algorithms: names run with Adam on every task (default: all of ``dynamics``);
        sgd_algorithms: names also run with plain SGD; grid: (k, τ) points of SGS-CISPO (sequence P,
        stop-gradient) run with Adam on ``grid_tasks``; bonus: (algorithm, β) variants with an entropy
        bonus (Adam, every task) — a power check, not part of the report by default.
        eval_every: steps between evaluations; n_eval: samples per prompt per evaluation; pass_k: k.
        d_model, n_layers, n_heads, d_ff, vocab: the LM; warm_steps, n_demo: the warm-up.
        dtype: "float32" or "float64".
    """

    tasks: tuple[str, ...] = TASK_NAMES
    group_size: int = 8
    steps: int = 40
    n_updates: int = 2
    lr_adam: float = 1e-3
    lr_sgd: float = 0.1
    n_seeds: int = 32
    algorithms: tuple[str, ...] | None = None
    sgd_algorithms: tuple[str, ...] = ("sgs_cispo[sequence]", ABLATION)
    grid: tuple[tuple[float, float], ...] = ((5.0, 0.5), (20.0, 0.5), (10.0, 0.2), (10.0, 0.8))
    grid_tasks: tuple[str, ...] = ("sum mod m",)
    bonus: tuple[tuple[str, float], ...] = ()
    eval_every: int = 10
    n_eval: int = 32
    pass_k: int = 8
    warm_correct: tuple[float, ...] = WARM_CORRECT
    warm_steps: int = 300
    n_demo: int = 32
    d_model: int = 32
    n_layers: int = 1
    n_heads: int = 2
    d_ff: int = 64
    vocab: int = 16
    dtype: str = "float32"

    def __post_init__(self) -> None:
        for name in ("group_size", "steps", "n_updates", "eval_every", "n_eval", "pass_k", "warm_steps", "n_demo",
                     "d_model", "n_layers", "n_heads", "d_ff", "vocab"):
            value = getattr(self, name)
            require(isinstance(value, int) and not isinstance(value, bool) and value >= 1, name, value, "an int >= 1")
        require(isinstance(self.n_seeds, int) and self.n_seeds >= 2, "n_seeds", self.n_seeds, "an int >= 2")
        require(self.group_size >= 2, "group_size", self.group_size, "K >= 2 (group advantages)")
        require(self.pass_k <= self.n_eval, "pass_k", self.pass_k, f"k <= n_eval = {self.n_eval}")
        require(self.lr_adam > 0 and self.lr_sgd > 0, "lr_adam/lr_sgd", (self.lr_adam, self.lr_sgd), "both > 0")
        require(self.dtype in ("float32", "float64"), "dtype", self.dtype, "'float32' or 'float64'")
        for field in ("tasks", "grid_tasks"):
            unknown = set(getattr(self, field)) - set(TASK_NAMES)
            require(not unknown, field, sorted(unknown), "names from " + ", ".join(TASK_NAMES))
        require(len(self.warm_correct) >= 2, "warm_correct", self.warm_correct, "at least two prompts")
        known = set(algorithms(self.grid))
        for field in ("algorithms", "sgd_algorithms"):
            names = getattr(self, field) or ()
            unknown = set(names) - known
            require(not unknown, field, sorted(unknown), "names from " + ", ".join(known))
        for base, beta in self.bonus:
            require(base in known and beta >= 0, "bonus", (base, beta), "(an algorithm name, β >= 0)")

    @property
    def n_prompts(self) -> int:
        return len(self.warm_correct)

    @classmethod
    def tiny(cls) -> Config:
        return cls(tasks=("sum mod m",), steps=2, n_seeds=2, algorithms=("cispo", "sgs_cispo[sequence]", ABLATION),
                   sgd_algorithms=(ABLATION,), grid=(), eval_every=2, n_eval=8, pass_k=4, warm_steps=20,
                   n_demo=8, warm_correct=(0.2, 0.95), d_model=16, d_ff=32, vocab=8, group_size=4)

    @classmethod
    def quick(cls) -> Config:
        return cls(steps=6, n_seeds=4, eval_every=3, n_eval=16, warm_steps=150,
                   algorithms=("grpo", "cispo", "sgs_cispo[sequence]", ABLATION), grid=((5.0, 0.5),))

    @classmethod
    def full(cls) -> Config:
        return cls()

    @classmethod
    def large(cls) -> Config:
        """For a GPU or a cluster: 128 seeds, 200 steps, 64 samples per prompt per evaluation, the
        12-point (k, τ) grid on every task and SGD for every algorithm (108 runs; about 6 hours of
        one CPU core at the measured per-step costs, see the README)."""
        return cls(steps=200, n_seeds=128, n_eval=64,
                   grid=tuple((k, t) for k in (2.0, 5.0, 10.0, 20.0) for t in (0.2, 0.5, 0.8)),
                   grid_tasks=TASK_NAMES, sgd_algorithms=tuple(tabular_algorithms()))


# ---------------------------------------------------------------------------- tasks and the start
def make_task(name: str, config: Config):
    """The task ``name`` at the config's vocabulary and prompt count."""
    p, v = config.n_prompts, config.vocab
    if name == "reverse":
        return ReverseTask(vocab=v, prompt_len=4, n_prompts=p, seed=1)
    if name == "sum mod m":
        return SumModTask(vocab=v, modulus=4, horizon=4, n_prompts=p, seed=2)
    return ContainsTask(vocab=v, horizon=4, n_prompts=p, seed=3)


def lm_shape(task, config: Config) -> LMShape:
    return LMShape(vocab=config.vocab, prompt_len=task.prompt_len, horizon=task.horizon, d_model=config.d_model,
                   n_heads=config.n_heads, n_layers=config.n_layers, d_ff=config.d_ff)


@dataclass
class Start:
    """A task's warmed-up start and what is measured on it once, before training."""

    task: Any
    shape: LMShape
    params: dict[str, torch.Tensor]
    pass_rate: np.ndarray  # [P] initial pass rate (exact for reverse, else from n_ref samples)
    entropy_known: float  # entropy per token on the known prompts (n_ref samples)
    known: np.ndarray  # [P] bool: initial pass rate >= KNOWN
    rare: np.ndarray  # [P] bool: initial pass rate < RARE
    rare_token: np.ndarray | None  # [P] answer position with the lowest initial probability (reverse)


N_REF = 512  # samples per prompt behind the initial pass rates and entropies


def prepare(name: str, config: Config, device: str) -> Start:
    """Warm start (cached) and its initial measurements (``N_REF`` samples per prompt, fixed stream)."""
    task = make_task(name, config)
    shape = lm_shape(task, config)
    warm = L.WarmStart(correct=config.warm_correct, n_demo=config.n_demo, steps=config.warm_steps, seed=11)
    dtype = getattr(torch, config.dtype)
    params = {k: v.to(dtype=dtype, device=device) for k, v in L.warm_start(task, shape, warm).items()}
    stacked = L.stack(params, 1)
    ev = evaluate(stacked, task, shape, [torch.Generator().manual_seed(99)], N_REF, None, None, None, 1)
    pass_rate = ev["per_prompt_pass"][0].cpu().numpy().astype(float)
    rare_token = None
    if hasattr(task, "answers"):
        ans = task.answers().to(device)
        with torch.no_grad():
            lp = log_prob_fn(params, task.prompt_tokens.to(device), ans, shape.n_heads)
        pass_rate = lp.sum(-1).exp().double().cpu().numpy()
        rare_token = lp.argmin(-1).cpu().numpy()
    known = pass_rate >= KNOWN
    h = ev["per_prompt_entropy_sums"]
    entropy_known = float(h[0][0, known].sum() / h[1][0, known].sum()) if known.any() else float("nan")
    return Start(task, shape, params, pass_rate, entropy_known, known, pass_rate < RARE, rare_token)


# ---------------------------------------------------------------------------- metrics
def pass_at_k_table(n: int, k: int) -> torch.Tensor:
    """``[n + 1]``: the unbiased pass@k estimate 1 − C(n − c, k)/C(n, k) for c = 0..n correct of n
    samples (Chen et al. 2021, arXiv:2107.03374, eq. 1)."""
    return torch.tensor([1 - math.comb(n - c, k) / math.comb(n, k) for c in range(n + 1)], dtype=torch.float64)


def sequence_keys(tokens: torch.Tensor, mask: torch.Tensor, vocab: int) -> torch.Tensor:
    """An int64 key per response that identifies its valid prefix (padding mapped to the symbol V)."""
    sym = torch.where(mask > 0, tokens, torch.full_like(tokens, vocab))
    powers = (vocab + 1) ** torch.arange(tokens.shape[-1], device=tokens.device)
    return (sym * powers).sum(-1)


def per_group_distinct(keys: torch.Tensor, ok: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For ``keys, ok [S, P, n]``: ``(distinct [S, P], top [S, P])`` — the number of distinct keys
    among the ``ok`` responses, and the largest count of one key among all responses."""
    s, p, n = keys.shape
    group = torch.arange(s * p, device=keys.device).reshape(s, p, 1).expand(s, p, n)
    span = int(keys.max()) + 1
    joint = group.reshape(-1) * span + keys.reshape(-1)
    uniq, counts = torch.unique(joint, return_counts=True)
    top = torch.zeros(s * p, dtype=torch.int64, device=keys.device).scatter_reduce(
        0, uniq // span, counts, reduce="amax")
    ok_uniq = torch.unique(joint[ok.reshape(-1)])
    distinct = torch.bincount(ok_uniq // span, minlength=s * p)
    return distinct.reshape(s, p), top.reshape(s, p)


def evaluate(params, task, shape: LMShape, generators, n_eval: int, start: Start | None, k: int | None,
             table: torch.Tensor | None, n_seeds: int) -> dict[str, Any]:
    """Eval metrics of stacked ``params`` from ``n_eval`` fresh samples per prompt per seed (module
    doc); with ``start`` None only the per-prompt pass rates and entropy sums are returned."""
    p0 = next(iter(params.values()))
    n_prompts = task.n_prompts
    ids = torch.arange(n_prompts, device=p0.device).repeat_interleave(n_eval)
    prompts = task.prompt_tokens.to(p0.device)
    u = L.draw_uniforms(generators, ids.shape[0], shape.horizon, p0.dtype, p0.device)
    tokens = L.stacked_sample(params, prompts, u, shape.n_heads, n_eval)
    mask = eos_mask(tokens, task.eos, p0.dtype)
    s, b, t = tokens.shape
    reward = task.reward(tokens.reshape(s * b, t), mask.reshape(s * b, t), ids.repeat(s)).reshape(s, n_prompts, n_eval)
    with torch.no_grad():
        lp = torch.func.vmap(response_log_probs, in_dims=(0, None, 0, None, None))(params, prompts, tokens,
                                                                                   shape.n_heads, n_eval)
    h = (-(lp.exp() * lp).sum(-1) * mask).reshape(s, n_prompts, n_eval * t).sum(-1).double()
    m = mask.reshape(s, n_prompts, n_eval * t).sum(-1).double()
    out: dict[str, Any] = {"per_prompt_pass": reward.mean(-1), "per_prompt_entropy_sums": (h, m)}
    if start is None:
        return out
    correct = reward.sum(-1).to(torch.int64)  # (S, P)
    keys = sequence_keys(tokens, mask, shape.vocab).reshape(s, n_prompts, n_eval)
    distinct, top = per_group_distinct(keys, reward > 0)
    known = torch.as_tensor(start.known, device=h.device)
    metrics = {
        "pass@k": table.to(h.device)[correct].mean(-1),
        "eval_reward": reward.double().mean((1, 2)),
        "solutions": distinct.double().mean(-1),
        "eval_entropy": h.sum(-1) / m.sum(-1),
        "overlearning": (start.entropy_known - h[:, known].sum(-1) / m[:, known].sum(-1)) if known.any()
        else torch.full((s,), float("nan"), dtype=torch.float64),
        "top_mass_known": (top[:, known].double() / n_eval).mean(-1) if known.any()
        else torch.full((s,), float("nan"), dtype=torch.float64),
    }
    if start.rare_token is not None and start.rare.any():
        ans = task.answers().to(p0.device)
        with torch.no_grad():
            alp = torch.func.vmap(log_prob_fn, in_dims=(0, None, None, None))(
                params, task.prompt_tokens.to(p0.device), ans, shape.n_heads).double()  # (S, P, T)
        rare = torch.as_tensor(start.rare, device=alp.device)
        pos = torch.as_tensor(start.rare_token, device=alp.device)
        tok = alp.gather(-1, pos.reshape(1, -1, 1).expand(s, -1, 1)).squeeze(-1).exp()  # (S, P)
        metrics["answer_logp_rare"] = alp.sum(-1)[:, rare].mean(-1)
        metrics["rare_token_prob"] = tok[:, rare].mean(-1)
    else:
        metrics["answer_logp_rare"] = metrics["rare_token_prob"] = torch.full((s,), float("nan"), dtype=torch.float64)
    out["metrics"] = metrics
    return out


# ---------------------------------------------------------------------------- one run
def stream(seed: int, task: str, s: int, kind: str) -> torch.Generator:
    """Seed s's generator for ``kind`` ("train" or "eval") on ``task`` — the same for every algorithm."""
    return seeded(seed, zlib.crc32(f"{task}/{kind}".encode()) % 100_000 * 1_000 + s)


def train_run(start: Start, task_name: str, algorithm: Algorithm, optimiser: L.Optimiser, config: Config, seed: int,
              entropy_bonus: float = 0.0) -> dict[str, np.ndarray]:
    """All seeds of one (task, algorithm, optimiser) in lockstep; returns ``{metric: [n_points, S]}``
    for the batch metrics (steps 0..steps−1) and the eval metrics (every ``eval_every`` and the last)."""
    task, shape = start.task, start.shape
    s = config.n_seeds
    spec = L.StepSpec(shape, task.prompt_tokens.to(next(iter(start.params.values())).device), task.eos, task.reward,
                      config.group_size, config.n_updates, algorithm, optimiser, entropy_bonus)
    params = L.stack(start.params, s)
    state = L.init_state(optimiser, params)
    train_gens = [stream(seed, task_name, i, "train") for i in range(s)]
    eval_gens = [stream(seed, task_name, i, "eval") for i in range(s)]
    table = pass_at_k_table(config.n_eval, config.pass_k)
    batch = {m: [] for m in BATCH_METRICS}
    evals = {m: [] for m in EVAL_METRICS}
    for step in range(config.steps + 1):
        if step % config.eval_every == 0 or step == config.steps:
            ev = evaluate(params, task, shape, eval_gens, config.n_eval, start, config.pass_k, table, s)["metrics"]
            for m in EVAL_METRICS:
                evals[m].append(ev[m].cpu().numpy())
        if step == config.steps:
            break
        params, state, b = L.stacked_step(spec, params, state, train_gens, ref_params=start.params)
        with torch.no_grad():
            tok = b["tokens"]
            init_lp = response_log_probs(start.params, spec.prompt_tokens.repeat(s, 1), tok.reshape(-1, tok.shape[-1]),
                                         shape.n_heads, config.group_size).reshape(b["logp_full"].shape)
        lp, mask = b["logp_full"], b["mask"]
        kl = ((lp.exp() * (lp - init_lp)).sum(-1) * mask).sum((1, 2)) / mask.sum((1, 2))
        values = {"reward": b["rewards"].double().mean((1, 2)), "entropy": L.token_entropy(lp, mask).double(),
                  "kl_to_init": kl.double(), "zero_grad_frac": b["zero_grad_frac"].double()}
        for m in BATCH_METRICS:
            batch[m].append(values[m].cpu().numpy())
    return {m: np.stack(v) for m, v in (batch | evals).items()}


def eval_steps(config: Config) -> list[int]:
    return sorted({*range(0, config.steps, config.eval_every), config.steps})


def jobs(config: Config) -> list[tuple[str, str, str, float]]:
    """(task, optimiser, algorithm, entropy bonus) of every run, in order."""
    names = config.algorithms or tuple(tabular_algorithms())
    out = []
    for task in config.tasks:
        out += [(task, "adam", n, 0.0) for n in names]
        out += [(task, "adam", grid_name(k, t), 0.0) for k, t in config.grid if task in config.grid_tasks]
        out += [(task, "adam", bonus_name(n, beta), beta) for n, beta in config.bonus]
        out += [(task, "sgd", n, 0.0) for n in config.sgd_algorithms]
    return out


def run(config: Config, *, seed: int = 0, device: str = "cpu", progress=None) -> Result:
    """Every run of ``jobs(config)``. Table: task, optimiser, algorithm, step, metric, mean, low, high
    (95% band over seeds, ``metric_interval``); the per-seed values behind the summary stay in memory."""
    algs = algorithms(config.grid)
    starts = {t: prepare(t, config, device) for t in config.tasks}
    per_seed: dict[tuple[str, str, str], dict[str, np.ndarray]] = {}
    todo = jobs(config)
    for task, opt, name, beta in (progress(todo) if progress else todo):
        base = name.split(" + entropy bonus")[0]
        optimiser = L.Optimiser(opt, config.lr_adam if opt == "adam" else config.lr_sgd)
        per_seed[(task, opt, name)] = train_run(starts[task], task, algs[base], optimiser, config, seed, beta)
    table = tidy(per_seed, config)
    return Result(NAME, config, table, summarise(per_seed, starts, config))


def _band(metric: str, x: np.ndarray) -> tuple[float, float, float]:
    """(mean, low, high) of ``metric`` over the seeds with a finite value (``metric_interval``)."""
    x = x[np.isfinite(x)]
    if x.size < 2:
        return (float(x.mean()) if x.size else float("nan"),) + (float("nan"),) * 2
    e = metric_interval(metric, x, halves=False)
    return e.value, e.low, e.high


def tidy(per_seed, config: Config) -> pd.DataFrame:
    rows = []
    ev_steps = eval_steps(config)
    for (task, opt, name), values in per_seed.items():
        for metric, arr in values.items():
            steps = range(arr.shape[0]) if metric in BATCH_METRICS else ev_steps
            for step, x in zip(steps, arr):
                mean, low, high = _band(metric, x)
                rows.append({"task": task, "optimiser": opt, "algorithm": name, "step": step, "metric": metric,
                             "mean": mean, "low": low, "high": high, "n_seeds": int(np.isfinite(x).sum())})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------- summary
def detectable(diff: np.ndarray, power: float = 0.8) -> float:
    """Smallest true mean difference the paired t-interval detects with probability ``power`` (two
    sided, 95%): (t_{0.975, n−1} + t_{power, n−1})·sd/√n — from the observed spread of the paired
    differences."""
    n = diff.size
    return float((stats.t.ppf(0.975, n - 1) + stats.t.ppf(power, n - 1)) * diff.std(ddof=1) / math.sqrt(n))


def _final(values: dict[str, np.ndarray], metric: str) -> np.ndarray:
    return values[metric][-1]


COMPARED = ("eval_entropy", "overlearning", "solutions", "eval_reward", "top_mass_known")


def compare(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, Any]:
    """Paired differences a − b at the last evaluation (95% t-interval over seeds) of entropy,
    over-learning, distinct correct answers, reward and top-answer mass, and the smallest detectable
    entropy difference (``detectable``)."""
    out: dict[str, Any] = {}
    for m in COMPARED:
        d = _final(a, m) - _final(b, m)
        out[m] = mean_interval(d) if np.isfinite(d).all() else Estimate(float("nan"), float("nan"), float("nan"))
    d = _final(a, "eval_entropy") - _final(b, "eval_entropy")
    out["detectable_entropy_difference"] = detectable(d)
    return out


def summarise(per_seed, starts: dict[str, Start], config: Config) -> dict[str, Any]:
    """Final values, initial state, and the comparisons the ledger reads (module doc)."""
    out: dict[str, Any] = {"steps": config.steps, "n_seeds": config.n_seeds, "initial": {}, "final": {},
                           "comparisons": {}, "paired_vs_cispo_ablation": {}, "registry_cispo_vs_ablation": {}, "sensitivity": {}, "c10": {},
                           "uniform_correct_entropy": {}}
    for task, st in starts.items():
        first = next(v for (t, _, _), v in per_seed.items() if t == task)
        out["initial"][task] = {
            "pass_rate_min": float(st.pass_rate.min()), "pass_rate_max": float(st.pass_rate.max()),
            "known_prompts": int(st.known.sum()), "rare_prompts": int(st.rare.sum()),
            "entropy": float(first["eval_entropy"][0].mean()), "entropy_known": st.entropy_known,
            "solutions": float(first["solutions"][0].mean())}
        out["uniform_correct_entropy"][task] = st.task.uniform_correct_entropy()
    for (task, opt, name), values in per_seed.items():
        out["final"].setdefault(task, {}).setdefault(opt, {})[name] = {
            m: metric_interval(m, _final(values, m)) if np.isfinite(_final(values, m)).all() else None
            for m in ("eval_reward", "pass@k", "eval_entropy", "solutions", "overlearning", "top_mass_known")}
    for task, st in starts.items():
        for opt in ("adam", "sgd"):
            base = per_seed.get((task, opt, ABLATION))
            if base is None:
                continue
            variants = {n: v for (t, o, n), v in per_seed.items() if t == task and o == opt and n.startswith("sgs_cispo")
                        and not n.startswith("sgs_cispo[k=")}
            variants |= {n: v for (t, o, n), v in per_seed.items() if t == task and o == opt and "entropy bonus" in n}
            out["comparisons"].setdefault(task, {})[opt] = {n: compare(v, base) for n, v in variants.items()}
            if opt == "adam":
                out["paired_vs_cispo_ablation"][task] = out["comparisons"][task][opt]
            if (task, opt, "cispo") in per_seed:
                out["registry_cispo_vs_ablation"].setdefault(task, {})[opt] = compare(per_seed[(task, opt, "cispo")], base)
            grid = {n: compare(v, base)["eval_entropy"] for (t, o, n), v in per_seed.items()
                    if t == task and o == opt and n.startswith("sgs_cispo[k=")}
            if grid:
                out["sensitivity"].setdefault(task, {})[opt] = grid
        if st.rare.any() and st.rare_token is not None:
            rows = {}
            for (t, o, n), v in per_seed.items():
                if t != task or o != "adam":
                    continue
                rise = v["answer_logp_rare"][-1] - v["answer_logp_rare"][0]
                est = mean_interval(rise)
                rows[n] = {"answer_logp_rise": est, "rare_token_prob_initial": float(v["rare_token_prob"][0].mean()),
                           "rare_token_prob_final": mean_interval(v["rare_token_prob"][-1]), "rises": est.low > 0}
            out["c10"][task] = rows
    return out


# ---------------------------------------------------------------------------- figures
METRIC_LABELS = {"reward": "reward (batch pass rate)", "entropy": "entropy (nats / token)",
                 "kl_to_init": "KL to π_init (nats / token)", "zero_grad_frac": "tokens with w = 0",
                 "pass@k": "pass@k", "eval_reward": "pass rate", "solutions": "distinct correct answers",
                 "eval_entropy": "entropy (nats / token)", "overlearning": "entropy drop on solved prompts",
                 "top_mass_known": "top-answer mass (solved prompts)", "answer_logp_rare": "log π(answer), rare prompts",
                 "rare_token_prob": "π(rarest answer token)"}


def _curves(ax, table: pd.DataFrame, task: str, opt: str, metric: str, names: list[str]) -> None:
    sub = table[(table.task == task) & (table.optimiser == opt) & (table.metric == metric)]
    for i, name in enumerate(names):
        g = sub[sub.algorithm == name].sort_values("step")
        if g.empty:
            continue
        ax.plot(g.step, g["mean"], **line_kw(i, markevery=max(1, len(g) // 6)), lw=1.2, label=name)
        ax.fill_between(g.step, g["low"], g["high"], color=PALETTE[i], alpha=0.15, lw=0)
    ax.set_xlabel("training step")
    ax.set_ylabel(METRIC_LABELS[metric])


def figures(result: Result) -> list[Figure]:
    """(1) entropy per token over training, SGS-CISPO vs the ablation and CISPO, per task and
    optimiser; (2) paired final differences SGS − ablation (entropy, over-learning, distinct
    answers) with 95% intervals; (3) reward, pass@k, KL and zero-gradient fraction for every
    algorithm (Adam); (4) C10: the rare answers' log-probability under the clip algorithms."""
    table, cfg, summary = result.table, result.config, result.summary
    tasks = list(dict.fromkeys(table.task))
    opts = [o for o in ("adam", "sgd") if (table.optimiser == o).any()]
    key = ["sgs_cispo[sequence]", ABLATION, "cispo", "sgs_cispo[token]", "sgs_cispo[geometric]"]
    key += [n for n in dict.fromkeys(table.algorithm) if "entropy bonus" in n]
    figs = []
    with style():
        fig, axes = new_figure(len(opts), len(tasks), width=6.5, height=2.3 * len(opts) + 0.8, sharex=True)
        for r, opt in enumerate(opts):
            for c, task in enumerate(tasks):
                ax = axes[r][c]
                _curves(ax, table, task, opt, "eval_entropy", key)
                ax.axhline(summary["uniform_correct_entropy"][task], color="0.5", lw=0.8, ls=":",
                           label="uniform over correct answers")
                ax.set_title(f"{task} ({opt})")
        legend_outside(fig, list(axes.flat), ncol=3)
    comp = summary["comparisons"]
    parts = []
    for task in tasks:
        for opt in opts:
            d = comp.get(task, {}).get(opt, {}).get("sgs_cispo[sequence]")
            if d:
                parts.append(f"{task}/{opt}: {d['eval_entropy']} (detectable ≥ {fmt(d['detectable_entropy_difference'], 2)})")
    figs.append(Figure(NAME, fig, (
        f"Entropy per token over {cfg.steps} steps on the tiny transformer ({cfg.n_updates} optimiser steps per batch, "
        f"G = {cfg.n_prompts} prompts × K = {cfg.group_size}; mean over {cfg.n_seeds} seeds, 95% bands; from "
        f"{cfg.n_eval} fresh samples per prompt every {cfg.eval_every} steps). The dotted line is the entropy of the "
        "policy uniform over each prompt's correct answers: what a solved, non-collapsed policy keeps. Compare "
        f"SGS-CISPO (sequence P) with its ablation {ABLATION} (same advantage, aggregation, filter and clip): the "
        "paired final difference SGS − ablation is " + "; ".join(parts) + " nats/token.")))
    # (2) paired differences
    with style():
        fig, axes = new_figure(1, 3, width=6.5, height=3.6, sharey=True)
        labels = []
        rows = []
        for task in tasks:
            for opt in opts:
                for n, d in comp.get(task, {}).get(opt, {}).items():
                    rows.append((f"{task} / {opt} / {n.replace('sgs_cispo', 'sgs')}", d))
        y = np.arange(len(rows))[::-1]
        for ax, metric, xlabel in zip(axes[0], ("eval_entropy", "overlearning", "solutions"),
                                      ("Δ entropy (nats/token)", "Δ over-learning", "Δ distinct answers")):
            v = np.array([d[metric].value for _, d in rows])
            lo = np.array([d[metric].low for _, d in rows])
            hi = np.array([d[metric].high for _, d in rows])
            ax.errorbar(v, y, xerr=[v - lo, hi - v], ls="none", marker="o", color=PALETTE[0])
            ax.axvline(0, color="k", lw=0.8)
            ax.set_xlabel(xlabel)
            ax.grid(axis="y", visible=False)
        labels = [r[0] for r in rows]
        axes[0][0].set_yticks(y, labels, fontsize=6)
        axes[0][0].set_ylabel("task / optimiser / variant")
        fig.suptitle(f"SGS-CISPO variant − {ABLATION}, paired by seed, 95% CI", fontsize=8)
    excl = [lab for lab, d in rows if d["eval_entropy"].excludes(0)]
    figs.append(Figure(f"{NAME}_paired", fig, (
        f"Paired final differences between each SGS-CISPO variant and the ablation {ABLATION} on the same seeds "
        f"({cfg.n_seeds}), at step {cfg.steps}: entropy per token (positive: SGS keeps more), over-learning (entropy "
        "drop on prompts solved at the start; negative: SGS sharpens them less) and distinct correct answers among "
        f"{cfg.n_eval} samples per prompt. {len(excl)} of {len(rows)} entropy intervals exclude 0"
        + (f" ({join(excl[:4])}{', …' if len(excl) > 4 else ''})." if excl else "."))))
    # (3) learning curves of every algorithm, Adam, first task with many algorithms
    names = [n for n in dict.fromkeys(table[table.optimiser == "adam"].algorithm) if not n.startswith("sgs_cispo[k=")
             and "entropy bonus" not in n][:12]
    with style():
        metrics = ("reward", "pass@k", "kl_to_init", "zero_grad_frac")
        fig, axes = new_figure(len(metrics), len(tasks), width=6.5, height=1.7 * len(metrics) + 1.0, sharex=True)
        for c, task in enumerate(tasks):
            for r, metric in enumerate(metrics):
                _curves(axes[r][c], table, task, "adam", metric, names)
                if r == 0:
                    axes[r][c].set_title(task)
                if r < len(metrics) - 1:
                    axes[r][c].set_xlabel("")
        legend_outside(fig, list(axes.flat), ncol=4)
    fin = summary["final"]
    rew = {t: {n: fin[t]["adam"][n]["eval_reward"].value for n in names if n in fin[t]["adam"]} for t in tasks}
    figs.append(Figure(f"{NAME}_learning", fig, (
        "Reward (batch pass rate), pass@k (unbiased, from fresh samples), KL(π ‖ π_init) per token and the fraction "
        f"of valid tokens whose gradient weight is exactly 0, for every algorithm with Adam (95% bands over {cfg.n_seeds} "
        "seeds: t-bands, Wilson score bands for the bounded pass@k and zero-gradient fraction). Final pass rates: " + "; ".join(
            f"{t}: {fmt(min(r.values()))}–{fmt(max(r.values()))}" for t, r in rew.items() if r) + ".")))
    # (4) C10
    if summary["c10"]:
        task = next(iter(summary["c10"]))
        c10_names = [n for n in ("grpo", "dapo", "drgrpo", "cispo", "sgs_cispo[sequence]", ABLATION)
                     if n in summary["c10"][task]]
        with style():
            fig, axes = new_figure(1, 2, width=6.5, height=2.9)
            _curves(axes[0][0], table, task, "adam", "answer_logp_rare", c10_names)
            _curves(axes[0][1], table, task, "adam", "rare_token_prob", c10_names)
            legend_outside(fig, list(axes.flat), ncol=3)
        c10 = summary["c10"][task]
        figs.append(Figure(f"{NAME}_c10", fig, (
            f"C10 on the {task} task: the log-probability of the correct answer of the prompts that start below a "
            f"{RARE:g} pass rate (left) and the probability of their rarest answer token (right), over training "
            f"(95% bands over {cfg.n_seeds} seeds). Rise from start to end of log π(answer): "
            + "; ".join(f"{n}: {c10[n]['answer_logp_rise']}" for n in c10_names) + ".")))
    return figs


def plot(result: Result, path) -> dict[str, str]:
    """Write ``figures(result)`` (the first at ``path``); returns {file name: caption}."""
    return plot_to(figures(result), path)
