"""Provenance of a sweep: the code (commit, versions), where it ran (backend, workers, device) and
the spec, written to ``sweep.json`` beside the tables."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["git_commit", "package_version", "versions"]


def package_version() -> str:
    """pgverify's installed version ("unknown" from a source tree without install)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pgverify")
    except PackageNotFoundError:  # pragma: no cover
        return "unknown"


def git_commit() -> str | None:
    """The commit of the source tree pgverify runs from, with ``-dirty`` when it has uncommitted
    changes; None when pgverify is not run from its own git checkout (an installed copy inside some
    other repository, e.g. a virtual environment in the user's project, is not that project)."""
    root = Path(__file__).resolve().parents[2]
    try:
        top = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        if Path(top).resolve() != root:
            return None
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def versions() -> dict[str, Any]:
    """Versions of Python, pgverify and the libraries a cell's numbers depend on."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform(),
                           "pgverify": package_version()}
    for name in ("torch", "numpy", "numba", "scipy", "pandas", "pyarrow", "ray"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out
