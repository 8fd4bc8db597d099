"""The executor seam: run ``fn`` over items on a local process pool or a Ray cluster.

One small interface, ``Executor.map_unordered(fn, items)``, yields ``(index, fn(items[index]))`` as
each call finishes, in whatever order they finish; the caller stores each result at once. ``fn``
must be a module-level function (it is pickled by name) that returns its failures instead of
raising (``sims.sweeps.cells.run_cell_safely``); an exception that escapes it anyway — a crashed
worker process, a Ray task that failed after its retries — is yielded as ``TaskError``. Anything
that runs independent pure cells can sit on it (a ``pgverify report`` experiment's cells too).

* ``LocalExecutor(workers)``: with one worker, the calls run in this process one after the other;
  with more, a ``concurrent.futures.ProcessPoolExecutor`` of ``forkserver`` processes (started from a
  clean server process, never forked from a threaded parent) that ignore SIGINT, so Ctrl-C reaches
  only this process, which stops the pool; a worker whose driver was SIGKILLed exits within a
  second.
* ``RayExecutor(address, workers, device)``: ``ray.init(address=ADDR)`` joins a running cluster;
  without an address a local Ray instance with ``workers`` CPUs is started (and stopped at the end).
  Each call is a Ray task with ``num_cpus=1`` (``num_gpus=1`` with a CUDA device) and
  ``max_retries=RAY_RETRIES`` retries when its worker dies. Every node needs pgverify installed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "RAY_RETRIES",
    "Executor",
    "LocalExecutor",
    "RayExecutor",
    "TaskError",
    "check_ray_address",
    "default_workers",
]

RAY_RETRIES = 3
PRELOAD = ["sims.sweeps._forkserver_quiet", "sims.sweeps.cells", "torch", "sims.engines.montecarlo", "sims.engines.exact"]


def default_workers() -> int:
    """The number of CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class TaskError:
    """A call that did not return: the error and its traceback text."""

    error: str
    traceback: str = ""


class Executor:
    """Runs independent calls; ``name`` and ``workers`` go into the provenance."""

    name = "executor"
    workers = 1

    def map_unordered(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        raise NotImplementedError

    def close(self) -> None:
        """Stop whatever is still running (called on normal end and on interruption)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - a process of another user has that pid
        return True
    return True


def _watch_driver(pid: int, interval: float) -> None:
    while _alive(pid):
        time.sleep(interval)
    os._exit(1)  # the driver is gone (SIGKILL): nobody will read this worker's result


def _worker_init(driver_pid: int, interval: float = 1.0) -> None:
    """In each pool worker: ignore SIGINT (the driver handles Ctrl-C and stops the pool), and exit
    within ``interval`` seconds of the driver's death — a SIGKILLed driver cannot stop its workers,
    which would otherwise wait on the pool's queue forever."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_driver, args=(driver_pid, interval), daemon=True).start()


class LocalExecutor(Executor):
    """In this process (one worker) or a forkserver process pool (several)."""

    name = "local"

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool = None
        self._unfinished = False

    def map_unordered(self, fn, items):
        if self.workers == 1:
            for i, item in enumerate(items):
                yield i, fn(item)
            return
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        # SIGINT and SIGTERM blocked while the forkserver and the workers start (they inherit the
        # mask across exec) until the forkserver's first preload, ``_forkserver_quiet``, ignores
        # SIGINT: a Ctrl-C during its preload (torch: seconds) cannot raise there and print a
        # traceback; here a signal is delivered when the mask is restored.
        from sims.outputs import defer_signals

        with defer_signals():
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=context, initializer=_worker_init,
                                             initargs=(os.getpid(),))
            futures = {self._pool.submit(fn, item): i for i, item in enumerate(items)}
            self._unfinished = True
        for future in as_completed(futures):
            try:
                yield futures[future], future.result()
            except Exception as exc:  # noqa: BLE001 (a worker died: BrokenProcessPool; or unpicklable)
                yield futures[future], TaskError(f"{type(exc).__name__}: {exc}")
        self._unfinished = False

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if not self._unfinished:
            pool.shutdown(wait=True)
            return
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        # running calls are not cancelled by shutdown; end the workers now (their cells are not stored)
        for process in processes:
            if process.is_alive():
                process.terminate()
        pool.shutdown(wait=True)


def ray_address(address: str | None) -> tuple[str | None, str]:
    """The cluster address to join and where it came from: ``--address``, else the environment's
    ``RAY_ADDRESS`` (which ``ray.init`` would read anyway), else None (start a local instance)."""
    if address is not None:
        return address, "--address"
    env = os.environ.get("RAY_ADDRESS") or None
    return env, "RAY_ADDRESS (from the environment)"


def check_ray_address(address: str, timeout: float = 5.0, label: str = "--address") -> str | None:
    """A message saying why ``address`` (``host:port``, ``ray://host:port`` or ``auto``) cannot be
    reached, or None. ``auto`` is left to ``ray.init``; otherwise a TCP connection is tried.
    ``label`` names where the address came from."""
    if address == "auto":
        return None
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        return f"{label} {address!r} is not host:port; allowed: HOST:PORT, ray://HOST:PORT or auto"
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return None
    except OSError as exc:
        return (f"{label} {address!r} cannot be reached ({exc}); allowed: the address of a running Ray cluster's "
                "head (HOST:PORT, ray://HOST:PORT or auto), or no address (unset RAY_ADDRESS) for a local Ray "
                "instance")


class RayExecutor(Executor):
    """Ray tasks on a cluster (``address``) or on a local instance of ``workers`` CPUs."""

    name = "ray"

    def __init__(self, address: str | None, workers: int | None, device: str = "cpu") -> None:
        import logging

        import ray

        self._ray = ray
        kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
        if address is None:
            ray.init(num_cpus=workers, **kw)
        else:
            ray.init(address=address, **kw)
        resources = ray.cluster_resources()
        self.workers = int(resources.get("CPU", 0))
        self.gpus = int(resources.get("GPU", 0))
        self.address = address
        self._options = {"num_cpus": 1, "max_retries": RAY_RETRIES}
        if device.startswith("cuda"):
            self._options["num_gpus"] = 1
        self._pending: list = []

    def map_unordered(self, fn, items):
        ray = self._ray
        remote = ray.remote(fn).options(**self._options)
        refs = {remote.remote(item): i for i, item in enumerate(items)}
        self._pending = list(refs)
        while self._pending:
            done, self._pending = ray.wait(self._pending, num_returns=1)
            ref = done[0]
            try:
                yield refs[ref], ray.get(ref)
            except Exception as exc:  # noqa: BLE001 (the task failed after its retries: worker died, node lost)
                yield refs[ref], TaskError(f"{type(exc).__name__}: {exc}")

    def close(self) -> None:
        ray = self._ray
        for ref in self._pending:
            with contextlib.suppress(Exception):  # a task that ended meanwhile cannot be cancelled
                ray.cancel(ref, force=True)
        self._pending = []
        ray.shutdown()
