"""pytest-benchmark view of ``pgverify bench`` (skipped unless ``--benchmark-only``): the Monte
Carlo engine (fused weight kernels and the autograd path), the per-sample autograd loop and
``torch.func.vmap`` on the same CISPO workload, every fused objective on both engine paths, and
the exact engine on 2^20 sequences. Throughput in sequences per second is in extra_info."""

from __future__ import annotations

import functools

import pytest

from sims import bench
from sims.engines.weights import FUSED
from sims.registry import OBJECTIVES

CASES = {"engine": (bench.bench_engine, 2_000),
         "engine_autograd": (functools.partial(bench.bench_engine, weights="autograd"), 2_000),
         "loop": (bench.bench_loop, 20), "vmap": (bench.bench_vmap, 500), "gru": (bench.bench_gru, 40)}


@pytest.mark.parametrize("name", list(CASES))
def test_bench_mc_gradient(benchmark, name):
    fn, n = CASES[name]
    seq_per_s = benchmark.pedantic(fn, args=("cpu", n), rounds=3, iterations=1)
    benchmark.extra_info["seq_per_s"] = seq_per_s
    assert seq_per_s > 0


@pytest.mark.parametrize("weights", ["fused", "autograd"])
@pytest.mark.parametrize("name", list(FUSED))
def test_bench_engine_per_objective(benchmark, name, weights):
    config = OBJECTIVES[name].config_cls()
    seq_per_s = benchmark.pedantic(bench.bench_engine, args=("cpu", 1_000, name, config, weights),
                                   rounds=3, iterations=1)
    benchmark.extra_info["seq_per_s"] = seq_per_s
    assert seq_per_s > 0


def test_bench_exact_engine(benchmark):
    seconds = benchmark.pedantic(bench.bench_exact, args=("cpu",), rounds=1, iterations=1)
    assert seconds > 0
