"""Resumable and fault-tolerant sweeps: a SIGKILLed sweep resumed gives the table of an uninterrupted
one; a raising cell is reported with its config and traceback while the others finish (exit 1); an
interrupted sweep keeps its finished cells and writes no table."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sims.sweeps import cells as cells_mod
from sims.sweeps import run as run_mod
from sims.sweeps.cli import main
from tests.sims.sweeps.conftest import TINY

ROOT = Path(__file__).resolve().parents[3]

# 12 cells of a fraction of a second each: a kill after the first stored cell lands mid-run
ONE_QUANTITY = (TINY.replace('quantities = ["bias", "variance", "zero_weight_frac", "ess", "dynamics"]',
                             'quantities = ["variance"]').replace("[dynamics]\nsteps = 2\n", ""))
KILLED = ONE_QUANTITY.replace("seeds = [0, 1]", "seeds = [0, 1, 2, 3, 4, 5]").replace("replicas = 40", "replicas = 2000")


def _stored(out: Path) -> list[Path]:
    return sorted((out / "cells").glob("*.json")) if (out / "cells").is_dir() else []


def test_killed_sweep_resumes_to_the_uninterrupted_table(tmp_path, capsys):
    spec = tmp_path / "killed.toml"
    spec.write_text(KILLED)
    out = tmp_path / "killed"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "sims.sweeps", str(spec), "--out", str(out), "--workers", "1",
                             "--no-progress"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not _stored(out) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err.decode()
    stored = _stored(out)
    assert 1 <= len(stored) < 12
    for path in stored:  # every stored cell is whole
        assert json.loads(path.read_text())["rows"]
    assert not (out / "table.csv").exists() and not (out / "table.parquet").exists()
    assert json.loads((out / "sweep.json").read_text())["status"] == "running"

    assert main([str(spec), "--out", str(out), "--resume", "--workers", "1", "--no-progress"]) == 0
    done = capsys.readouterr().out
    assert f"12 cells ({len(stored)} already finished, {12 - len(stored)} run, 0 failed)" in done
    fresh = tmp_path / "fresh"
    assert main([str(spec), "--out", str(fresh), "--workers", "1", "--no-progress"]) == 0
    for name in ("table.csv", "table.parquet"):
        assert (out / name).read_bytes() == (fresh / name).read_bytes()
    # a rerun into the same DIR (without --resume) skips every cell
    assert main([str(spec), "--out", str(out), "--workers", "1", "--no-progress"]) == 0
    assert "12 cells (12 already finished, 0 run, 0 failed)" in capsys.readouterr().out


def test_a_failing_cell_is_reported_and_the_others_finish(tmp_path, capsys, monkeypatch):
    tiny_spec_path = tmp_path / "one.toml"
    tiny_spec_path.write_text(ONE_QUANTITY)
    real = cells_mod.policy_pair

    def broken(config):
        if config["objective"] == "ppo_clip" and config["seed"] == 1:
            raise RuntimeError("planted failure")
        return real(config)

    monkeypatch.setattr(cells_mod, "policy_pair", broken)
    out = tmp_path / "out"
    assert main([str(tiny_spec_path), "--out", str(out), "--workers", "1", "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert "1 of 4 cells failed" in captured.err and "RuntimeError: planted failure" in captured.err
    assert "'objective': 'ppo_clip'" in captured.err and "Traceback" in captured.err  # config and traceback
    assert "3 run" not in captured.out and "4 run, 1 failed" in captured.out
    failed = json.loads((out / "failed.json").read_text())
    assert [f["config"]["seed"] for f in failed] == [1] and "broken" in failed[0]["traceback"]
    import pandas as pd

    table = pd.read_parquet(out / "table.parquet")
    assert table.groupby(["objective", "seed"]).ngroups == 3  # the three other cells are in the table
    assert json.loads((out / "sweep.json").read_text())["status"] == "failed"

    monkeypatch.setattr(cells_mod, "policy_pair", real)  # fixed: a rerun computes only the failed cell
    assert main([str(tiny_spec_path), "--out", str(out), "--workers", "1", "--no-progress"]) == 0
    assert "4 cells (3 already finished, 1 run, 0 failed)" in capsys.readouterr().out
    assert not (out / "failed.json").exists()


def test_an_interrupted_sweep_keeps_finished_cells_and_writes_no_table(tiny_spec_path, tmp_path, capsys,
                                                                          monkeypatch):
    real = run_mod.run_cell_safely
    calls = []

    def interrupted(config):
        calls.append(config)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(config)

    monkeypatch.setattr(run_mod, "run_cell_safely", interrupted)
    out = tmp_path / "out"
    assert main([str(tiny_spec_path), "--out", str(out), "--workers", "1", "--no-progress"]) == 130
    assert "interrupted (SIGINT); the finished cells are kept in" in capsys.readouterr().err
    assert len(_stored(out)) == 1 and not (out / "table.csv").exists()
    assert not [p for p in out.rglob("*") if p.name.startswith(".pgverify-")]  # no temporary file left


def test_cells_of_other_code_are_reused_and_named(tmp_path, capsys):
    spec = tmp_path / "one.toml"
    spec.write_text(ONE_QUANTITY)
    out = tmp_path / "out"
    assert main([str(spec), "--out", str(out), "--workers", "1", "--no-progress"]) == 0
    assert "other code" not in capsys.readouterr().err
    path = _stored(out)[0]
    record = json.loads(path.read_text())
    path.write_text(json.dumps(dict(record, commit="deadbeef")))
    assert main([str(spec), "--out", str(out), "--workers", "1", "--no-progress"]) == 0
    assert "some computed by other code (commit deadbeef" in capsys.readouterr().err
    assert json.loads((out / "sweep.json").read_text())["reused_from_commits"] == ["deadbeef"]
