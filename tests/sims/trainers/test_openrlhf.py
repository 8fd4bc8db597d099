"""OpenRLHF's matrix: complete; its loss code loads without flash_attn (CUDA-only) and without
deepspeed; PolicyLoss conforms when re-run, and with its dual-clip dropped it differs by the
regions. Skipped only where openrlhf is not installed (CI installs it with --no-deps)."""

from __future__ import annotations

import importlib.util

import pytest

if importlib.util.find_spec("openrlhf") is None:
    pytest.skip("openrlhf is not installed", allow_module_level=True)

from sims.trainers import openrlhf as R
from sims.trainers._core import parse_config, run_case
from tests.sims.trainers.conftest import EXAMPLES, assert_complete, committed, pick

OPTION = "policy_loss_type=ppo, token_level_loss=True, dual_clip=3.0"


@pytest.fixture(scope="module")
def cases():
    return R.cases(parse_config(R.ADAPTER, {}))


def test_committed_matrix_is_complete(cases):
    doc = committed("openrlhf")
    assert_complete(doc, cases)
    assert doc["version"] in R.ADAPTER.tested and doc["settings"]["config"] == R.DEFAULTS


def test_the_loss_modules_are_the_installed_files():
    loss, utils = R.load_loss_modules()
    origin = importlib.util.find_spec("openrlhf").submodule_search_locations[0]
    assert loss.__file__.startswith(origin) and utils.__file__.startswith(origin)
    assert hasattr(loss, "PolicyLoss") and hasattr(utils, "compute_approx_kl")


def test_policy_loss_with_and_without_its_dual_clip(cases, monkeypatch):
    row = run_case(pick(cases, "PolicyLoss", OPTION), examples=EXAMPLES)
    assert row["verdict"] == "conforms", row["summary"]
    loss, _ = R.load_loss_modules()
    original = loss.PolicyLoss.__init__

    def without_dual_clip(self, *args, **kw):
        original(self, *args, **kw)
        self.dual_clip = None  # the option is accepted, then never applied

    monkeypatch.setattr(loss.PolicyLoss, "__init__", without_dual_clip)
    row = run_case(pick(cases, "PolicyLoss", OPTION), examples=EXAMPLES)
    assert row["verdict"] == "differs"
    assert "spec: zero-weight regions and ratio bounds equal ppo_clip's" in [f["check"] for f in row["failed"]]
