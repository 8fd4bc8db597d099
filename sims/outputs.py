"""Where the pgverify commands write, and how they stop.

Three small jobs, each a pure function or a context manager without imports beyond the standard
library (the CLI imports this module before torch):

- **Checking output paths before any work.** ``check_file_path`` (a ``--json FILE``: its
  directory exists and is writable, it is not a directory) and ``check_report_dir`` (a report
  ``--out DIR``: new, empty, or a previous pgverify report, recognised by its
  ``provenance.json``; never a file or a directory holding someone else's files) raise
  ``OutputError`` naming the option and the path; the CLI turns it into exit code 2.
- **Writing atomically, with the usual permissions.** ``atomic_dir`` builds a directory beside
  its target and swaps it into place only when complete (a previous report is replaced, an
  interrupted run leaves it as it was and removes the temporary directory); ``write_text_atomic``
  and ``write_json_atomic`` do the same for one file. ``tempfile`` creates 0700 directories and
  0600 files; these get ``0o777 & ~umask`` and ``0o666 & ~umask`` like any other created file.
- **Stopping cleanly on a signal.** ``handle_signals`` makes SIGTERM raise ``Terminated`` (a
  ``KeyboardInterrupt``, so every ``except BaseException`` cleanup runs as for Ctrl-C) and
  ignores repeated signals while the cleanup runs; ``exit_code`` gives 130 (SIGINT) or 143
  (SIGTERM). A signal that arrives inside a numba kernel or a torch op is raised when the kernel
  returns to Python.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

__all__ = ["OutputError", "Terminated", "umask", "check_file_path", "check_report_dir", "is_report_dir",
           "atomic_dir", "write_text_atomic", "write_json_atomic", "handle_signals", "exit_code",
           "REPORT_MARKER"]

REPORT_MARKER = "provenance.json"  # every pgverify report directory holds it


class OutputError(ValueError):
    """An output path that cannot be used; the message names the option and the path."""


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when SIGTERM arrives (see ``handle_signals``)."""

    signum = signal.SIGTERM


def umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current


def _writable_dir(option: str, path: str, parent: str) -> None:
    if not os.path.isdir(parent):
        raise OutputError(f"{option} {path!r}: the directory {parent!r} does not exist; allowed: a path in an "
                          "existing directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {path!r}: the directory {parent!r} is not writable")


def check_file_path(option: str, path: str | os.PathLike) -> None:
    """``OutputError`` unless a file can be written at ``path``: it is not a directory, its directory
    exists and is writable (the file is written beside it first, then renamed)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise OutputError(f"{option} {path!r} is a directory; allowed: a file path")
    _writable_dir(option, path, os.path.dirname(os.path.abspath(path)))


def is_report_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a directory written by ``pgverify report`` (it holds provenance.json)."""
    return os.path.isfile(os.path.join(os.fspath(path), REPORT_MARKER))


def check_report_dir(option: str, path: str | os.PathLike) -> None:
    """``OutputError`` unless ``path`` may become a report directory: it does not exist, or is an
    empty directory, or a previous report (replaced whole); never a file, never a directory with
    other files. Its parent must exist and be writable (the report is built beside it)."""
    path = os.fspath(path)
    if os.path.lexists(path) and not os.path.isdir(path):
        raise OutputError(f"{option} {path!r} is a file, not a directory; allowed: a new directory, an empty "
                          "one, or a previous pgverify report")
    if os.path.isdir(path) and os.listdir(path) and not is_report_dir(path):
        raise OutputError(f"{option} {path!r} is a non-empty directory that is not a pgverify report (it has no "
                          f"{REPORT_MARKER}); its files are left alone; allowed: a new directory, an empty one, "
                          "or a previous pgverify report")
    _writable_dir(option, path, os.path.dirname(os.path.abspath(path)))


def defer_signals():
    """Block SIGINT and SIGTERM for a few system calls that must not be split (or while a pool's
    processes start, ``sims.sweeps.executor``); a signal that arrives meanwhile is delivered when
    the block ends."""
    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover - not POSIX
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def blocked():
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
    return blocked()


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike, option: str = "--out") -> Iterator[Path]:
    """Yield a new temporary directory beside ``target``; when the block completes, put it in
    ``target``'s place (a previous report, or an empty directory, is moved aside and removed).
    On any exception, KeyboardInterrupt included, the temporary directory is removed and
    ``target`` is left as it was. The target is checked again just before the swap, so a directory
    that gained someone else's files meanwhile is not replaced (``OutputError``)."""
    out = Path(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        os.chmod(tmp, 0o777 & ~umask())
        yield tmp
        check_report_dir(option, out)
        with defer_signals():
            old = None
            if os.path.lexists(out):
                old = out.parent / f".{out.name}.old-{os.getpid()}-{time.time_ns()}"
                out.rename(old)
            tmp.rename(out)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it into place: never a
    half-written file; permissions ``0o666 & ~umask``."""
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".pgverify-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            os.fchmod(fh.fileno(), 0o666 & ~umask())
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """``data`` as indented JSON, written by ``write_text_atomic``."""
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def exit_code(exc: BaseException) -> int:
    """The shell's code for a command stopped by ``exc``: 143 for SIGTERM, 130 for SIGINT."""
    return 128 + int(getattr(exc, "signum", signal.SIGINT))


def stop_message(exc: BaseException) -> str:
    """The one line printed on stderr when a command is stopped by a signal."""
    if isinstance(exc, Terminated):
        return "pgverify: terminated (SIGTERM); partial output removed\n"
    return "pgverify: interrupted (SIGINT); partial output removed\n"


@contextlib.contextmanager
def handle_signals() -> Iterator[None]:
    """While the block runs: SIGINT raises KeyboardInterrupt and SIGTERM raises ``Terminated``, once;
    later signals are ignored so the cleanup that follows is not cut short. The previous handlers
    are restored afterwards. Outside the main thread this does nothing."""
    fired = []

    def handler(signum, frame):
        if fired:
            return
        fired.append(signum)
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    try:
        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
