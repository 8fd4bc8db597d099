r"""Keep freed memory mapped in pgverify's own processes (glibc's ``mallopt``).

The Monte Carlo engine streams chunks: every chunk allocates the same few ``[N, T]`` tensors
(tokens, mask, the reward's temporaries), uses them and frees them. glibc's ``malloc`` returns
freed memory at the top of the heap to the kernel once it exceeds ``M_TRIM_THRESHOLD`` and serves
blocks above ``M_MMAP_THRESHOLD`` with fresh ``mmap``s, so the next chunk touches new pages, one
page fault per 4 KiB. On the 2-core VM that was about 1,000 faults per chunk of 256k tokens,
about half of the engine's time (the bench task: 450-640k sequences/s with 466-1,235 faults per
chunk, 960-990k with 22; ``pgverify bench`` reports the setting it ran with).

``retain_freed_memory`` raises both thresholds — the mmap threshold to glibc's own maximum for
its dynamic threshold (32 MiB on 64-bit), the trim threshold to 256 MiB — so chunk-sized blocks
are reused from the heap. It is what glibc's dynamic threshold converges to for large blocks,
except that the heap keeps up to 256 MiB of freed memory instead of returning it to the kernel
(resident until reused; the peak of memory in use is unchanged). The ``pgverify`` console
script calls it at start (``sims.cli.entry``) and exports the same values as
``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` to its worker processes; the Python API
never changes the allocator of a process it does not own (call it yourself to get the same
speed). A user's own ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or malloc tunable in
``GLIBC_TUNABLES`` wins: then nothing is changed.
"""

from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: mallopt refuses more
TRIM_THRESHOLD = 256 * 1024 * 1024
ENV = {"MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD, "MALLOC_TRIM_THRESHOLD_": TRIM_THRESHOLD}


def _glibc() -> bool:
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def _users_setting() -> list[str]:
    """The malloc settings glibc read from this process's environment at start: ``MALLOC_*``
    thresholds, or malloc tunables in ``GLIBC_TUNABLES`` (the user's own choice, or exported to
    this process by its pgverify parent)."""
    own = [name for name in sorted(ENV) if name in os.environ]
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        own.append("GLIBC_TUNABLES")
    return own


def retain_freed_memory() -> str:
    """Raise glibc's mmap and trim thresholds in this process and export them to its children
    (module docstring). Returns what was done, for provenance: ``"glibc: mmap threshold 32 MiB,
    trim threshold 256 MiB"``, or why nothing was (not glibc; the thresholds or malloc tunables
    already set in the environment; libc or ``mallopt`` not available or refusing). Never raises:
    a failure leaves the allocator as it was (or, if only the second call failed, says so)."""
    if not _glibc():
        return f"unchanged: not glibc ({platform.system()} {platform.libc_ver()[0] or 'libc'})"
    own = _users_setting()
    if own:
        return f"unchanged: {', '.join(own)} set in the environment (glibc read it at start)"
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own libc, no ldconfig lookup
    except (OSError, AttributeError) as exc:
        return f"unchanged: mallopt not available ({exc})"
    if not mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD):
        return "unchanged: mallopt refused the mmap threshold"
    if not mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD):
        return f"partly: mmap threshold {MMAP_THRESHOLD >> 20} MiB, mallopt refused the trim threshold"
    os.environ.update({name: str(value) for name, value in ENV.items()})
    return f"glibc: mmap threshold {MMAP_THRESHOLD >> 20} MiB, trim threshold {TRIM_THRESHOLD >> 20} MiB"


def describe() -> str:
    """The allocator setting this process's children start with, and that a pgverify process
    runs with (for ``pgverify bench`` and provenance): the exported thresholds, the user's
    ``GLIBC_TUNABLES``, glibc's defaults, or not glibc."""
    if not _glibc():
        return f"not glibc ({platform.system()} {platform.libc_ver()[0] or 'libc'}): the platform's allocator"
    values = [f"{name}={os.environ[name]}" for name in sorted(ENV) if name in os.environ]
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        values.append(f"GLIBC_TUNABLES={os.environ['GLIBC_TUNABLES']}")
    return ", ".join(values) if values else "glibc defaults (dynamic mmap and trim thresholds)"
