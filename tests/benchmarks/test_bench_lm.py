"""pytest-benchmark view of the lockstep trainer (skipped unless ``--benchmark-only``): seed-steps
per second of S = 32 seeds in lockstep (stacked model, stacked loss, fused Adam) against the
per-seed Python loop on the same work (``sims.experiments._lm_train.bench_lockstep``)."""

from __future__ import annotations

from sims.experiments._lm_train import bench_lockstep


def test_bench_lockstep_vs_per_seed_loop(benchmark):
    out = benchmark.pedantic(bench_lockstep, args=("cpu",), kwargs={"quick": True}, rounds=1, iterations=1)
    for label in ("G8xK8", "G2xK4"):
        row = out[f"lm_lockstep_{label}"]
        benchmark.extra_info[f"{label}_vectorised_over_loop"] = row["vectorised_over_loop"]
        assert row["vectorised_seed_steps_per_s"] > 0 and row["loop_seed_steps_per_s"] > 0
