"""Shared by the trainer tests: the committed matrix of a trainer and a case picked from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPORTS = Path(__file__).resolve().parents[3] / "reports" / "conform"
EXAMPLES = 2  # the committed matrices use the CLI default; the tests re-check a few cases cheaply


def committed(trainer: str) -> dict:
    path = REPORTS / f"{trainer}.json"
    if not path.is_file():
        pytest.fail(f"{path} is missing: run pgverify conform {trainer} --out reports/conform")
    return json.loads(path.read_text())


def assert_complete(doc: dict, cases) -> None:
    """Every enumerated case has exactly one row, in order, and nothing else has one."""
    assert doc["settings"]["losses"] is None, "the committed matrix must cover every loss"
    assert [(r["loss"], r["option"]) for r in doc["rows"]] == [(c.loss, c.option) for c in cases]
    assert len({(c.loss, c.option) for c in cases}) == len(cases), "two cases share a (loss, option) key"


def pick(cases, loss: str, option: str):
    (case,) = [c for c in cases if c.loss == loss and c.option == option]
    return case
