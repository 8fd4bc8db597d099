"""TRL's matrix: complete, and its default GRPO loss (dapo) conforms when re-run through a
GRPOTrainer made without a model. Skipped only where TRL cannot be imported (CI installs it)."""

from __future__ import annotations

import pytest

pytest.importorskip("trl.trainer.grpo_trainer", reason="TRL is not installed")

from sims.trainers import trl as T
from sims.trainers._core import parse_config, run_case
from tests.sims.trainers.conftest import EXAMPLES, assert_complete, committed, pick


@pytest.fixture(scope="module")
def cases():
    return T.cases(parse_config(T.ADAPTER, {}))


def test_committed_matrix_is_complete(cases):
    doc = committed("trl")
    assert_complete(doc, cases)
    assert doc["version"] in T.ADAPTER.tested and doc["settings"]["config"] == T.DEFAULTS


def test_dapo_conforms_as_committed(cases):
    option = "importance_sampling_level=token"
    row = run_case(pick(cases, "dapo", option), examples=EXAMPLES)
    assert row["verdict"] == "conforms", row["summary"]
    assert [r["verdict"] for r in committed("trl")["rows"] if (r["loss"], r["option"]) == ("dapo", option)] \
        == ["conforms"]


def test_the_trainer_is_built_from_grpo_config_without_a_model():
    from trl import GRPOConfig

    args = GRPOConfig(output_dir="unused", use_cpu=True, report_to=[], loss_type="cispo", epsilon_high=5.0)
    t = T.make_trainer(args)
    assert (t.loss_type, t.epsilon_low, t.epsilon_high, t.beta) == ("cispo", 0.2, 5.0, args.beta)
