"""verl's matrix: complete, its conforming cases conform when re-run, and verl's own vanilla loss
with its dual-clip dropped, or with the global normaliser ignored, differs by the right check.
Skipped only where verl's loss code cannot be imported (CI installs it)."""

from __future__ import annotations

import pytest

core_algos = pytest.importorskip("verl.trainer.ppo.core_algos", reason="verl's loss code is not installed")

from sims.trainers import verl as V
from sims.trainers._core import parse_config, run_case
from tests.sims.trainers.conftest import EXAMPLES, assert_complete, committed, pick

TOKEN_MEAN = "loss_agg_mode=token-mean"


@pytest.fixture(scope="module")
def cases():
    return V.cases(parse_config(V.ADAPTER, {}))


def test_committed_matrix_is_complete(cases):
    doc = committed("verl")
    assert_complete(doc, cases)
    assert doc["version"] in V.ADAPTER.tested and doc["settings"]["config"] == V.DEFAULTS


def test_vanilla_conforms_as_committed(cases):
    row = run_case(pick(cases, "vanilla", TOKEN_MEAN), examples=EXAMPLES)
    assert row["verdict"] == "conforms", row["summary"]
    assert {r["verdict"] for r in committed("verl")["rows"] if r["loss"] == "vanilla" and r["option"] == TOKEN_MEAN} \
        == {"conforms"}


def test_vanilla_without_its_dual_clip_differs_by_the_regions(cases, monkeypatch):
    from verl.workers.config import FSDPActorConfig

    original = FSDPActorConfig.get
    monkeypatch.setattr(FSDPActorConfig, "get",  # verl reads clip_ratio_c with config.get: make it unreachable
                        lambda self, key, default=None: 1e12 if key == "clip_ratio_c" else original(self, key, default))
    row = run_case(pick(cases, "vanilla", TOKEN_MEAN), examples=EXAMPLES)
    assert row["verdict"] == "differs"
    assert "spec: zero-weight regions and ratio bounds equal ppo_clip's" in [f["check"] for f in row["failed"]]


def test_vanilla_ignoring_the_global_normaliser_differs_by_the_micro_batches(cases, monkeypatch):
    original = core_algos.agg_loss

    def local_agg(*args, batch_num_tokens=None, global_batch_size=None, **kw):
        return original(*args, **kw)  # normalise by the micro-batch's own counts

    monkeypatch.setattr(core_algos, "agg_loss", local_agg)
    row = run_case(pick(cases, "vanilla", TOKEN_MEAN), examples=EXAMPLES)
    assert row["verdict"] == "differs"
    assert [f["check"] for f in row["failed"]] == ["micro-batches sum to the batch"]
