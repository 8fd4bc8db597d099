"""The executor seam: the same spec gives bit-identical tables with 1 and 2 local workers and on a
local Ray instance; a dead worker is a TaskError, not a crash; unreachable Ray addresses are named."""

from __future__ import annotations

import functools
import os
import socket

import pytest

from sims.sweeps.cells import expand, run_cell
from sims.sweeps.cli import main
from sims.sweeps.executor import LocalExecutor, TaskError, check_ray_address
from sims.sweeps.spec import parse_spec
from tests.sims.sweeps.conftest import TINY

TABLES = ("table.csv", "table.parquet")


def _same_tables(a, b) -> None:
    for name in TABLES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_the_tables_differ_when_the_seeds_do(tiny_reference):
    """The identity tests below could not fail if every cell gave the same numbers: other seeds give
    other numbers."""
    cell = expand(parse_spec(TINY))[0]
    assert run_cell(dict(cell.config, seed=7)) != run_cell(cell.config)
    assert "0.1" in (tiny_reference / "table.csv").read_text()


def test_two_local_workers_give_the_same_tables(tiny_reference, tiny_spec_path, tmp_path):
    out = tmp_path / "two"
    assert main([str(tiny_spec_path), "--out", str(out), "--workers", "2", "--no-progress"]) == 0
    _same_tables(tiny_reference, out)


def test_a_dead_worker_is_a_task_error():
    with LocalExecutor(2) as pool:
        results = dict(pool.map_unordered(functools.partial(os._exit), [3, 4]))
    assert set(results) == {0, 1} and all(isinstance(r, TaskError) for r in results.values())
    assert "BrokenProcessPool" in results[0].error


def test_ray_local_instance_gives_the_same_tables(tiny_reference, tiny_spec_path, tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "ray"
    assert main([str(tiny_spec_path), "--out", str(out), "--backend", "ray", "--workers", "2", "--no-progress"]) == 0
    _same_tables(tiny_reference, out)
    import json

    provenance = json.loads((out / "sweep.json").read_text())
    assert provenance["backend"] == "ray" and provenance["workers"] == 2 and provenance["status"] == "complete"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_addresses_are_checked():
    port = _closed_port()
    assert "cannot be reached" in check_ray_address(f"127.0.0.1:{port}")
    assert "cannot be reached" in check_ray_address(f"ray://127.0.0.1:{port}")
    assert "is not host:port" in check_ray_address("localhost")
    with socket.socket() as server:  # a listening port is reachable
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert check_ray_address(f"127.0.0.1:{server.getsockname()[1]}") is None


def test_a_worker_exits_when_its_driver_is_gone(monkeypatch):
    import subprocess

    from sims.sweeps import executor

    finished = subprocess.Popen(["true"])
    finished.wait()
    exits = []
    monkeypatch.setattr(executor.os, "_exit", lambda code: exits.append(code))
    executor._watch_driver(finished.pid, 0.0)  # returns at once: the driver is dead
    assert exits == [1] and executor._alive(os.getpid())


def test_sigint_is_blocked_while_the_pool_starts():
    """The forkserver and its workers inherit the signal mask across exec: with SIGINT blocked while
    they start, a Ctrl-C during the forkserver's torch preload cannot print a traceback there."""
    import signal

    from sims.outputs import defer_signals

    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    with defer_signals():
        assert signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])


def test_ray_address_comes_from_the_option_then_the_environment(monkeypatch):
    from sims.sweeps.executor import ray_address

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert ray_address(None) == (None, "RAY_ADDRESS (from the environment)")
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert ray_address(None) == ("10.0.0.1:6379", "RAY_ADDRESS (from the environment)")
    assert ray_address("auto") == ("auto", "--address")
