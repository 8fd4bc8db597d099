"""Where pgverify keeps its caches: never the user's working directory.

``$PGVERIFY_CACHE_DIR``, else ``$XDG_CACHE_HOME/pgverify``, else ``~/.cache/pgverify``. No heavy
imports here: the CLI calls it before torch or Hypothesis is loaded.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_cache_dir"]


def default_cache_dir() -> Path:
    """``$PGVERIFY_CACHE_DIR``, else ``$XDG_CACHE_HOME/pgverify``, else ``~/.cache/pgverify``."""
    if os.environ.get("PGVERIFY_CACHE_DIR"):
        return Path(os.environ["PGVERIFY_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pgverify"
