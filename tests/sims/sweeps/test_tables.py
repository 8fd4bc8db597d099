"""The outputs of a sweep: the tidy table (Parquet = CSV, one row per cell and quantity, the swept
fields as columns), the summary, one figure per quantity, and the provenance."""

from __future__ import annotations

import json

import pandas as pd

from sims.sweeps.cells import expand
from sims.sweeps.example import EXAMPLE
from sims.sweeps.spec import parse_spec
from sims.sweeps.tables import estimator_label, tidy_table
from tests.sims.sweeps.conftest import TINY

QUANTITIES = ["relative bias", "cosine", "variance trace", "relative variance", "zero-weight fraction",
              "ESS fraction", "dynamics J start", "dynamics J end", "dynamics KL to start"]


def test_tidy_table(tiny_reference):
    table = pd.read_parquet(tiny_reference / "table.parquet")
    csv = pd.read_csv(tiny_reference / "table.csv")
    pd.testing.assert_frame_equal(table.drop(columns="device"), csv.drop(columns="device"), check_dtype=False)
    assert len(table) == 4 * len(QUANTITIES)
    assert list(table["quantity"][:len(QUANTITIES)]) == QUANTITIES
    assert list(dict.fromkeys(table["estimator"])) == ["cispo", "ppo_clip"]
    assert set(table["seed"]) == {0, 1} and set(table["horizon"]) == {2}
    assert json.loads(table["objective_config"].iloc[-1])["eps_high"] == 0.28
    exact = table[table["method"] == "exact"]
    assert (exact["low"] == exact["value"]).all() and (exact["high"] == exact["value"]).all()
    mc = table[table["method"] == "monte carlo"]
    assert (mc["low"] < mc["high"]).all()


def test_summary_figures_and_provenance(tiny_reference):
    summary = (tiny_reference / "SUMMARY.md").read_text()
    for quantity in QUANTITIES:
        assert f"## {quantity}\n" in summary
    assert "Mean over seeds, 95% t-interval over the 2 seeds" in summary
    figures = sorted(p.name for p in (tiny_reference / "figures").iterdir())
    assert len(figures) == len(QUANTITIES) and all((tiny_reference / "figures" / f).read_bytes()[:4] == b"\x89PNG"
                                                  for f in figures)
    provenance = json.loads((tiny_reference / "sweep.json").read_text())
    assert provenance["status"] == "complete" and provenance["spec_text"] == TINY
    assert provenance["backend"] == "local" and provenance["workers"] == 1
    assert {"torch", "numpy", "pgverify", "python"} <= set(provenance["versions"])
    assert provenance["commit"] is None or len(provenance["commit"]) >= 40
    assert provenance["spec"]["objectives"] == {"cispo": {}, "ppo_clip": {"eps_high": [0.28]}}
    assert set(provenance["figures"]) == set(figures)


def test_labels_and_columns_of_swept_fields():
    spec = parse_spec(EXAMPLE)
    cells = expand(spec)
    labels = list(dict.fromkeys(estimator_label(spec, c.config) for c in cells))
    assert labels == ["cispo(eps_high=0.2) · grpo", "cispo(eps_high=0.2) · rloo", "cispo(eps_high=4.0) · grpo",
                      "cispo(eps_high=4.0) · rloo", "ppo_clip · grpo", "ppo_clip · rloo"]
    records = {c.key: {"rows": [{"quantity": "q", "value": 1.0, "low": 0.0, "high": 2.0, "method": "exact"}]}
               for c in cells[:12:3]}
    table = tidy_table(spec, cells, records)
    assert len(table) == 4 and table["cispo.eps_high"].dtype == "float64"
    assert table["cispo.eps_high"].isna().sum() == 0  # the first 12 cells are cispo's
