"""``pgverify list`` shows every registered part; usage errors exit with code 2."""

from __future__ import annotations

import json

import pytest

from sims.algorithms import ALGORITHMS
from sims.cli import main
from sims.registry import ADVANTAGES, AGGREGATIONS, GROUP_FILTERS, KL_ESTIMATORS, OBJECTIVES


def test_list_text_names_everything(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for registry in (OBJECTIVES, ADVANTAGES, AGGREGATIONS, KL_ESTIMATORS, GROUP_FILTERS, ALGORITHMS):
        for name in registry:
            assert name in out
    assert "arXiv:2506.13585" in out  # references are shown


def test_list_json_has_every_kind(capsys):
    assert main(["list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"objectives", "advantages", "aggregations", "algorithms"} <= set(data)
    assert [o["name"] for o in data["objectives"]] == list(OBJECTIVES)
    assert [a["name"] for a in data["advantages"]] == list(ADVANTAGES)
    assert [a["name"] for a in data["aggregations"]] == list(AGGREGATIONS)
    assert [a["name"] for a in data["algorithms"]] == list(ALGORITHMS)
    dapo = next(a for a in data["algorithms"] if a["name"] == "dapo")
    assert (dapo["advantage"], dapo["objective"], dapo["aggregation"], dapo["group_filter"]) == (
        "grpo", "ppo_clip", "prompt-token-mean", "dynamic_sampling")
    assert dapo["objective_config"]["eps_high"] == 0.28


@pytest.mark.parametrize("argv", [[], ["bogus"], ["list", "--yaml"]])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "usage: pgverify" in capsys.readouterr().err


def test_bench_quick_writes_json(tmp_path, capsys, monkeypatch):
    from sims import bench

    fake = {"device": "cpu", "T": 64, "V": 32, "engine_seq_per_s": 1.0, "loop_seq_per_s": 1.0,
            "vmap_seq_per_s": 1.0, "exact_seconds": 1.0, "peak_rss_mb": 1.0}
    monkeypatch.setattr(bench, "run_bench", lambda device, quick: fake)
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--json", str(out)]) == 0
    assert json.loads(out.read_text()) == fake
    assert "engine_seq_per_s" in capsys.readouterr().out


def test_bench_rejects_an_unavailable_device(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert main(["bench", "--device", "cuda"]) == 2
    assert "--device 'cuda' is not available" in capsys.readouterr().err


@pytest.mark.slow
def test_real_quick_bench_produces_every_key():
    # the un-mocked quick bench: every measurement runs and is positive
    from sims.bench import run_bench
    result = run_bench("cpu", quick=True)
    for key in ("engine_seq_per_s", "loop_seq_per_s", "vmap_seq_per_s", "exact_seconds",
                "gru_engine_seq_per_s", "peak_rss_mb"):
        assert result[key] > 0, key
    assert (result["device"], result["T"], result["V"]) == ("cpu", 64, 32)
