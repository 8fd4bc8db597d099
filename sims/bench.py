"""``pgverify bench``: throughput of the Monte Carlo engine against the obvious alternatives.

One workload, measured several ways in the same run: estimate the mean gradient and the variance
trace of CISPO (verl's 1 ± 0.2 clip, ``token-mean``) with GRPO advantages (groups of K = 8) on a
``TabularPolicy`` with T = 64, V = 32, float32, sampling included:

* ``engine``: ``sims.engines.montecarlo.mc_gradient`` with the fused weight kernel of
  ``sims.engines.weights`` (``MCConfig(weights="fused")``; on the CPU, numba kernels for the
  sampling, the log-probs, the weights with the per-token bookkeeping, and the closed-form
  replica moments; streamed moments). The median of ``ENGINE_RUNS`` runs is reported; every run
  is in ``engine_seq_per_s_runs``, and ``engine_ms_per_mtok`` splits the time of one chunk into
  its stages (``sims.engines.montecarlo.profile_chunk``, milliseconds per million tokens);
* ``engine_autograd``: the same engine with ``weights="autograd"`` (one autograd call of the
  registered objective per chunk, with its validation and diagnostics: the reference path),
  ``ENGINE_RUNS`` runs interleaved with the fused ones so that both see the same load;
  ``fused_over_autograd`` is the ratio of the medians. ``*_seq_per_cpu_s`` divide by the
  process's CPU time instead of wall time (less sensitive to other processes on a shared
  machine);
* ``loop``: one autograd call through the policy logits per sampled sequence (its term of the
  replica's loss), accumulated into the replica's gradient;
* ``vmap``: ``torch.func.vmap(torch.func.grad(f))`` over replicas, where ``f`` is a
  validation-free re-implementation of the same per-replica CISPO loss (the registered
  objective validates its inputs with host reads, which ``vmap`` cannot trace);
* ``objective NAME`` (one entry per fused registry objective, its default config): the engine's
  fused and autograd paths and ``vmap(grad)`` of ``_surrogate_loss`` (``-Σ sg(w)·log π``
  through the logits, w from the torch formulas of ``sims.engines.weights``), sequences per
  second, with the ratios ``fused/autograd`` and ``fused/vmap``.

Plus ``engine_peak_rss_mb`` (the process's peak RSS after the fused engine at M/10 and then M
replicas, measured first: flat in M when the two agree), ``exact_seconds`` (the exact expected
gradient of one estimator on V = 4, T = 10, all 2^20 sequences), ``gru_engine_seq_per_s`` (the
engine on the same task with a GRU policy, H = 64, E = 32, whose per-replica gradients come
from ``vmap(grad)``, in chunks of ``GRU_CHUNK`` replicas) and ``peak_rss_mb`` (process peak
resident memory).

The numbers are in the README ("Performance"); the machine's speed varies from run to run, so
only figures from one run compare the paths. ``malloc`` records the allocator setting the run
had (``sims.malloc``: the console script keeps freed memory mapped; without it the engine
spends about half its time in page faults).
"""

from __future__ import annotations

import resource
import statistics
import time
from typing import Any

import torch

from policies.neural import GRUPolicy
from policies.perturb import perturb
from policies.tabular import TabularPolicy
from sims import objectives as O
from sims.advantages import StdConfig, grpo_advantages
from sims.engines.exact import exact_estimator_mean
from sims.engines.montecarlo import MCConfig, _normaliser, mc_gradient, profile_chunk
from sims.engines.weights import FUSED
from sims.malloc import describe as describe_malloc
from sims.registry import OBJECTIVES

T, V, K = 64, 32, 8
CHUNK = 1000  # replicas per chunk (512k tokens), MCConfig's default: with freed memory kept mapped
# (sims.malloc) 1,000 and 2,000 are within noise of each other, 200 is 2x slower (per-chunk overhead)
ENGINE_RUNS = 3
GRU_CHUNK = 100  # replicas per chunk on the GRU: 800 sequences per vmap call (5 were overhead-bound)
CONFIG = O.CispoConfig.verl(0.2, 0.2, agg="token-mean")
ADV = StdConfig()


def _reward(tokens, mask):
    """Binary: at least 3 occurrences of token 3 (about half of the samples succeed)."""
    return ((tokens == 3).sum(-1) >= 3).to(torch.float64)


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _policies(device: str):
    g = torch.Generator().manual_seed(0)
    old = TabularPolicy(TabularPolicy.random(T, V, generator=g, dtype=torch.float32).logits.to(device))
    return old, perturb(old, kl=0.01, generator=g)


def _replica_loss(logits, tokens, old_logp, adv, mask):
    """Per-replica CISPO loss through the logits (the loop and vmap baselines)."""
    lp = torch.log_softmax(logits, -1)
    logp = lp[torch.arange(logits.shape[0], device=logits.device)[None, :], tokens]  # (K, T)
    w = torch.clamp(torch.exp(logp - old_logp).detach(), 0.8, 1.2)
    return -(w * adv * logp * mask).sum() / mask.sum()


def _baseline_batch(old, n_rep: int, seed: int):
    tokens, mask = old.sample(n_rep * K, generator=torch.Generator().manual_seed(seed))
    adv = grpo_advantages(_reward(tokens, mask).reshape(n_rep, K).float(), config=ADV)
    old_logp = old.log_prob(tokens)
    shape = (n_rep, K, T)
    return (tokens.reshape(shape), old_logp.reshape(shape),
            (adv[:, :, None] * mask.reshape(shape)).float(), mask.reshape(shape).float())


def bench_engine(device: str, n_replicas: int, objective: str = "cispo", config=CONFIG,
                 weights: str = "fused") -> float:
    """Sequences per second of ``mc_gradient`` on the bench task with ``MCConfig.weights =
    weights`` (``"fused"`` or ``"autograd"``: a path that cannot run is an error, never a silent
    fallback; the path used is checked), after a small warm-up run (kernel compilation)."""
    return time_engine(device, n_replicas, objective, config, weights)[0]


def time_engine(device: str, n_replicas: int, objective: str = "cispo", config=CONFIG,
                weights: str = "fused") -> tuple[float, float]:
    """``bench_engine``'s sequences per second and sequences per CPU-second (the process's CPU
    time, all threads: less sensitive to other processes on a shared machine than wall time)."""
    old, new = _policies(device)
    mc = MCConfig(n_replicas=n_replicas, group_size=K, chunk=min(CHUNK, n_replicas // 20), n_batches=20,
                  weights=weights)
    small = MCConfig(n_replicas=40, group_size=K, chunk=2, n_batches=20, weights=weights)
    mc_gradient(new, old, _reward, objective, config, "grpo", ADV, small)  # warm-up
    _sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    result = mc_gradient(new, old, _reward, objective, config, "grpo", ADV, mc)
    _sync(device)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    assert result.weight_path == weights, result.weight_note
    return n_replicas * K / seconds, n_replicas * K / cpu_seconds


def bench_stages(device: str, repeats: int, weights: str = "fused") -> dict[str, float]:
    """Milliseconds per million tokens in each stage of the engine's chunk step (median of
    ``repeats`` chunks of ``CHUNK`` replicas; ``sims.engines.montecarlo.profile_chunk``)."""
    old, new = _policies(device)
    stages = profile_chunk(new, old, _reward, "cispo", CONFIG, "grpo", ADV, n_rep=CHUNK, group_size=K,
                           repeats=repeats, weights=weights)
    return {stage: seconds * 1e3 for stage, seconds in stages.items()}


def bench_engine_memory(device: str, replicas: tuple[int, ...]) -> dict[str, float]:
    """Process peak RSS (MB) after the fused engine has run at each replica count in turn
    (increasing): flat in M when the larger runs do not raise the peak."""
    out = {}
    for n in replicas:
        bench_engine(device, n)
        out[f"M={n}"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def bench_loop(device: str, n_replicas: int) -> float:
    old, new = _policies(device)
    start = time.perf_counter()
    tokens, old_logp, adv, mask = _baseline_batch(old, n_replicas, 1)
    s1 = torch.zeros(T, V, device=device)
    s2 = torch.zeros(T, V, device=device)
    for r in range(n_replicas):
        n_tokens = mask[r].sum()
        g = torch.zeros(T, V, device=device)
        for i in range(K):  # one sequence at a time: its share of the replica's token-mean loss
            logits = new.logits.detach().requires_grad_(True)
            loss = _replica_loss(logits, tokens[r, i:i + 1], old_logp[r, i:i + 1], adv[r, i:i + 1],
                                 mask[r, i:i + 1]) * mask[r, i].sum() / n_tokens
            g -= torch.autograd.grad(loss, logits)[0]
        s1 += g
        s2 += g * g
    _sync(device)
    return n_replicas * K / (time.perf_counter() - start)


def _surrogate_loss(entry, config):
    """A per-replica loss through the logits whose gradient is the objective's: ``-Σ sg(c·w⁰)·log π``
    with w⁰ the torch formulas of ``sims.engines.weights`` (tested equal to the registered
    objective's autograd weights) and c the aggregation's normaliser (an input)."""
    params = entry.params(config)

    def loss(logits, tokens, old_logp, adv, mask, scale):
        lp = torch.log_softmax(logits, -1)
        logp = lp[torch.arange(logits.shape[0], device=logits.device)[None, :], tokens]  # (K, T)
        d, x, a, m = (logp - old_logp).detach(), logp.detach(), adv, mask
        n = m.sum(-1, keepdim=True)
        sums = ((d * m).sum(-1, keepdim=True), (a * m).sum(-1, keepdim=True), (x * m).sum(-1, keepdim=True))
        w = entry.torch_weights(d, x, old_logp, a, m, n, *sums, params) * scale[:, None]
        return -(torch.where(m > 0, w, 0.0).detach() * logp).sum()

    return loss


def bench_vmap_objective(device: str, n_replicas: int, objective: str, config) -> float:
    """``vmap(grad)`` over replicas of ``_surrogate_loss`` (the same sampling, advantages and
    moment sums as the engine), sequences per second."""
    old, new = _policies(device)
    per_replica = torch.func.vmap(torch.func.grad(_surrogate_loss(FUSED[objective], config)),
                                  in_dims=(None, 0, 0, 0, 0, 0))

    def batch(n_rep, seed):
        tokens, old_logp, adv, mask = _baseline_batch(old, n_rep, seed)
        scale = _normaliser(config.agg, mask.reshape(n_rep * K, T), n_rep, 1, K, T).reshape(n_rep, K).float()
        return tokens, old_logp, adv, mask, scale

    per_replica(new.logits, *batch(2, 2))  # warm-up
    start = time.perf_counter()
    grads = -per_replica(new.logits, *batch(n_replicas, 1))  # (R, T, V)
    grads.sum(0), (grads * grads).sum(0)
    _sync(device)
    return n_replicas * K / (time.perf_counter() - start)


def bench_objectives(device: str, n_engine: int, n_vmap: int) -> dict[str, dict[str, float]]:
    """Every fused registry objective (its default config) on the bench task: the engine's fused
    and autograd paths and ``vmap(grad)``, sequences per second, measured one after another."""
    table = {}
    for name in FUSED:
        config = OBJECTIVES[name].config_cls()
        fused = bench_engine(device, n_engine, name, config, "fused")
        autograd = bench_engine(device, n_engine, name, config, "autograd")
        vmap = bench_vmap_objective(device, n_vmap, name, config)
        table[f"objective {name}"] = {"fused": fused, "autograd": autograd, "vmap": vmap,
                                      "fused/autograd": fused / autograd, "fused/vmap": fused / vmap}
    return table


def bench_vmap(device: str, n_replicas: int) -> float:
    old, new = _policies(device)
    per_replica = torch.func.vmap(torch.func.grad(_replica_loss), in_dims=(None, 0, 0, 0, 0))
    warm = _baseline_batch(old, 2, 2)
    per_replica(new.logits, *warm)
    start = time.perf_counter()
    tokens, old_logp, adv, mask = _baseline_batch(old, n_replicas, 1)
    grads = -per_replica(new.logits, tokens, old_logp, adv, mask)  # (R, T, V)
    grads.sum(0), (grads * grads).sum(0)  # the same mean/variance work as the engine
    _sync(device)
    return n_replicas * K / (time.perf_counter() - start)


def bench_gru(device: str, n_replicas: int) -> float:
    """Engine throughput on a GRU policy (H = 64, E = 32; per-replica ``vmap(grad)``), same task."""
    g = torch.Generator().manual_seed(0)
    old = GRUPolicy.random(T, V, generator=g, hidden=64, embed=32, dtype=torch.float32, device=device)
    new = perturb(old, kl=0.01, generator=g, n_states=256)
    mc = MCConfig(n_replicas=n_replicas, group_size=K, chunk=min(GRU_CHUNK, n_replicas // 20), n_batches=20)
    _sync(device)
    start = time.perf_counter()
    mc_gradient(new, old, _reward, "cispo", CONFIG, "grpo", ADV, mc)
    _sync(device)
    return n_replicas * K / (time.perf_counter() - start)


def bench_exact(device: str) -> float:
    g = torch.Generator().manual_seed(0)
    old = TabularPolicy(TabularPolicy.random(10, 4, generator=g).logits.to(device))
    new = perturb(old, kl=0.01, generator=g)
    reward = lambda tokens, mask: (tokens[:, 0] == 1).to(torch.float64)
    start = time.perf_counter()
    exact_estimator_mean(new, old, reward, "cispo", CONFIG)
    _sync(device)
    return time.perf_counter() - start


def run_bench(device: str = "cpu", *, quick: bool = False) -> dict[str, Any]:
    """All measurements as the JSON-ready dict ``pgverify bench --json`` writes."""
    n_engine, n_loop, n_vmap, n_gru = (2_000, 50, 500, 40) if quick else (40_000, 200, 4_000, 2_000)
    n_table, n_table_vmap = (400, 100) if quick else (8_000, 1_000)
    memory = bench_engine_memory(device, (n_engine // 10, n_engine))  # first: nothing else raised the peak yet
    timed = {"fused": [], "autograd": []}
    for _ in range(ENGINE_RUNS):  # interleaved, so both paths see the same load
        for path, values in timed.items():
            values.append(time_engine(device, n_engine, weights=path))
    runs, autograd_runs = ([wall for wall, _ in timed[p]] for p in ("fused", "autograd"))
    engine, autograd = statistics.median(runs), statistics.median(autograd_runs)
    per_cpu = {p: statistics.median(cpu for _, cpu in timed[p]) for p in timed}
    stages = bench_stages(device, 3 if quick else 20)
    autograd_stages = bench_stages(device, 3 if quick else 20, weights="autograd")
    loop = bench_loop(device, n_loop)
    vmap = bench_vmap(device, n_vmap)
    name = torch.cuda.get_device_name(device) if torch.device(device).type == "cuda" else "cpu"
    return {
        "device": name,
        "torch_threads": torch.get_num_threads(),
        "malloc": describe_malloc(),
        "T": T,
        "V": V,
        "engine_seq_per_s": engine,
        "engine_seq_per_s_runs": runs,
        "engine_autograd_seq_per_s": autograd,
        "engine_autograd_seq_per_s_runs": autograd_runs,
        "fused_over_autograd": engine / autograd,
        "engine_seq_per_cpu_s": per_cpu["fused"],
        "engine_autograd_seq_per_cpu_s": per_cpu["autograd"],
        "engine_ms_per_mtok": stages,
        "engine_autograd_ms_per_mtok": autograd_stages,
        "engine_peak_rss_mb": memory,
        "loop_seq_per_s": loop,
        "vmap_seq_per_s": vmap,
        "engine_over_loop": engine / loop,
        "engine_over_vmap": engine / vmap,
        "exact_seconds": bench_exact(device),
        "gru_engine_seq_per_s": bench_gru(device, n_gru),
        **bench_objectives(device, n_table, n_table_vmap),
        **__import__("sims.experiments._lm_train", fromlist=["bench_lockstep"]).bench_lockstep(device, quick=quick),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
