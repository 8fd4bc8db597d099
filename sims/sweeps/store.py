"""The sweep directory and its cell store.

``DIR/cells/<key>.json`` holds one finished cell (its config, rows, seconds and the worker's
pgverify version) under its content hash (``sims.sweeps.cells.cell_key``), written atomically the
moment the cell finishes: a killed sweep loses no finished cell, and a rerun of the same spec into
the same DIR (or ``--resume``) skips every cell already there. A cell whose file is missing,
unreadable or of another config is computed again. ``DIR/sweep.json`` marks DIR as a sweep
directory (written before the first cell, rewritten with the provenance at the end).

``check_sweep_dir`` vets DIR before any work: new, empty, or a sweep directory; never a file or a
directory holding someone else's files (``sims.outputs.OutputError``). ``write_bytes_atomic`` is
``sims.outputs.write_text_atomic`` for bytes (Parquet, PNG).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from sims import outputs

__all__ = ["MARKER", "CellStore", "check_sweep_dir", "is_sweep_dir", "read_marker", "write_bytes_atomic"]

MARKER = "sweep.json"


def is_sweep_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a directory written by ``pgverify sweep`` (it holds sweep.json)."""
    return os.path.isfile(os.path.join(os.fspath(path), MARKER))


def read_marker(path: str | os.PathLike) -> dict[str, Any] | None:
    """The sweep.json of a sweep directory, or None when it is missing or unreadable."""
    try:
        with open(os.path.join(os.fspath(path), MARKER), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def check_sweep_dir(option: str, path: str | os.PathLike, *, resume: bool = False) -> None:
    """``OutputError`` unless ``path`` may hold a sweep: it does not exist (its parent is a writable
    directory), or it is an empty writable directory, or a previous sweep directory. With
    ``resume``, it must be a previous sweep directory."""
    path = os.fspath(path)
    allowed = "allowed: a new directory, an empty one, or a previous pgverify sweep directory"
    if os.path.lexists(path) and not os.path.isdir(path):
        raise outputs.OutputError(f"{option} {path!r} is a file, not a directory; {allowed}")
    if resume and not is_sweep_dir(path):
        raise outputs.OutputError(f"--resume: {option} {path!r} is not a sweep directory (it has no {MARKER}), so "
                                  "there is nothing to resume; allowed: the DIR of an earlier pgverify sweep, or "
                                  "no --resume")
    if os.path.isdir(path):
        if os.listdir(path) and not is_sweep_dir(path):
            raise outputs.OutputError(f"{option} {path!r} is a non-empty directory that is not a pgverify sweep "
                                      f"directory (it has no {MARKER}); its files are left alone; {allowed}")
        if not os.access(path, os.W_OK | os.X_OK):
            raise outputs.OutputError(f"{option} {path!r}: the directory is not writable")
        return
    outputs.check_file_path(option, path)  # its parent exists and is writable


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place: never a
    half-written file; permissions ``0o666 & ~umask``."""
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".pgverify-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o666 & ~outputs.umask())
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class CellStore:
    """Finished cells of a sweep directory, one JSON file per cell key."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory) / "cells"

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def load(self, key: str, config: dict[str, Any]) -> dict[str, Any] | None:
        """The stored record of the cell ``key`` if it is there, readable and of this ``config``."""
        try:
            with open(self.path(key), encoding="utf-8") as fh:
                record = json.load(fh)
        except (OSError, ValueError):
            return None
        if not (isinstance(record, dict) and record.get("config") == config and isinstance(record.get("rows"), list)):
            return None
        return record

    def save(self, key: str, config: dict[str, Any], result: dict[str, Any], *,
             commit: str | None = None) -> dict[str, Any]:
        """Store a finished cell atomically, with the driver's ``commit``; returns the record."""
        self.directory.mkdir(parents=True, exist_ok=True)
        record = {"key": key, "config": config, "rows": result["rows"], "seconds": result.get("seconds"),
                  "version": result.get("version"), "commit": commit}
        outputs.write_text_atomic(self.path(key), json.dumps(record, indent=1) + "\n")
        return record
