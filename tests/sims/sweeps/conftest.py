"""Shared tiny specs of the sweep tests (each cell well under a second)."""

from __future__ import annotations

import pytest

# 4 cells: 2 objectives x 2 seeds, every quantity (dynamics with 2 steps)
TINY = """\
quantities = ["bias", "variance", "zero_weight_frac", "ess", "dynamics"]
seeds = [0, 1]
replicas = 40
horizon = 2
vocab = 2
divergence_value = 0.1
group_size = 2
[objectives.cispo]
[objectives.ppo_clip]
eps_high = 0.28
[advantages.grpo]
[dynamics]
steps = 2
"""


@pytest.fixture
def tiny_spec_path(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


@pytest.fixture(scope="session")
def tiny_reference(tmp_path_factory):
    """TINY swept once in this process (local backend, one worker): the reference directory."""
    from sims.sweeps.cli import main

    root = tmp_path_factory.mktemp("sweep-reference")
    spec = root / "tiny.toml"
    spec.write_text(TINY)
    out = root / "out"
    assert main([str(spec), "--out", str(out), "--workers", "1", "--no-progress"]) == 0
    return out
