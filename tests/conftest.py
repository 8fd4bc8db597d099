"""pytest configuration: Hypothesis profiles and automatic skipping of GPU tests.

Hypothesis profiles (choose with ``HYPOTHESIS_PROFILE``; CI defaults to ``ci``):

* ``dev``: 25 examples per property, random seeds (quick local runs);
* ``ci``: 200 examples per property, derandomized so that a CI failure replays exactly.
"""

from __future__ import annotations

import os

if os.environ.get("PYTEST_XDIST_WORKER"):  # one thread per xdist worker: -n N workers use N cores, no oversubscription
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import pytest
import torch
from hypothesis import HealthCheck, settings

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

settings.register_profile("dev", max_examples=25, deadline=None)
settings.register_profile(
    "ci", max_examples=200, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA; torch.cuda.is_available() is False")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def tiny_experiments():
    """Every experiment run once on its ``tiny`` sweep (seed 0), shared by the experiment,
    ledger and report tests."""
    from sims.report import run_experiments

    return run_experiments("tiny", seed=0)
