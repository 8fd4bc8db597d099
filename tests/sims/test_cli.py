"""``pgverify list`` shows every registered part; usage errors exit with code 2."""

from __future__ import annotations

import json

import pytest

from sims.algorithms import ALGORITHMS
from sims.cli import main
from sims.registry import ADVANTAGES, AGGREGATIONS, GROUP_FILTERS, KL_ESTIMATORS, OBJECTIVES


def test_list_text_names_everything(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for registry in (OBJECTIVES, ADVANTAGES, AGGREGATIONS, KL_ESTIMATORS, GROUP_FILTERS, ALGORITHMS):
        for name in registry:
            assert name in out
    assert "arXiv:2506.13585" in out  # references are shown


def test_list_json_has_every_kind(capsys):
    assert main(["list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"objectives", "advantages", "aggregations", "algorithms"} <= set(data)
    assert [o["name"] for o in data["objectives"]] == list(OBJECTIVES)
    assert [a["name"] for a in data["advantages"]] == list(ADVANTAGES)
    assert [a["name"] for a in data["aggregations"]] == list(AGGREGATIONS)
    assert [a["name"] for a in data["algorithms"]] == list(ALGORITHMS)
    dapo = next(a for a in data["algorithms"] if a["name"] == "dapo")
    assert (dapo["advantage"], dapo["objective"], dapo["aggregation"], dapo["group_filter"]) == (
        "grpo", "ppo_clip", "prompt-token-mean", "dynamic_sampling")
    assert dapo["objective_config"]["eps_high"] == 0.28


@pytest.mark.parametrize("argv", [[], ["bogus"], ["list", "--yaml"]])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "usage: pgverify" in capsys.readouterr().err
