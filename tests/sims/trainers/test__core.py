"""The conformance core on pgverify's own reference losses (no trainer needed): a conforming case
conforms, a planted bug differs with the adapter's sentence, notes match only their evidence, the
row and the document follow the documented schema, the Markdown shows every row."""

from __future__ import annotations

import json

import pytest

from sims.trainers._core import (
    SCHEMA,
    VERDICTS,
    Adapter,
    Case,
    ConformError,
    Note,
    installed_version,
    parse_config,
    run_case,
    run_matrix,
    select,
    to_markdown,
)
from tests.sims.check.correct import ppo_clip
from tests.sims.check.planted import ppo_without_dual_clip

EXAMPLES = 3
ROW_KEYS = {"loss", "option", "settings", "claim", "spec", "spec_params", "spec_text", "verdict", "summary",
            "failed", "checks"}


def _case(fn, note=None, **kw) -> Case:
    return Case("ppo", "dual_clip_c=3", "PPO with dual-clip", "ppo_clip", {"dual_clip_c": 3.0},
                lambda: fn, feed={"params": kw} if kw else {}, notes=(note,) if note else ())


def _adapter(cases) -> Adapter:
    return Adapter("toy", "pgverify", ("0.1.0",), "pip install pgverify", {"eps": 0.2}, lambda config: cases,
                   "sims")


def test_a_conforming_loss_conforms():
    row = run_case(_case(lambda logp, old_logp, adv, mask: ppo_clip(logp, old_logp, adv, mask, dual_clip_c=3.0)),
                   examples=EXAMPLES)
    assert row["verdict"] == "conforms" and row["failed"] == []
    assert row["summary"] == "conforms to ppo_clip(dual_clip_c=3)"
    assert set(row) == ROW_KEYS and row["checks"]["run"] == row["checks"]["passed"] > 5


def test_a_missing_dual_clip_differs_with_the_matching_sentence_only():
    notes = (Note("spec: zero-weight regions", "dual-clip: dropped.", r"ρ > 3"),
             Note("spec: zero-weight regions", "a clamp at 20.", r"4\.85165e\+08"))
    case = _case(ppo_without_dual_clip)
    row = run_case(Case(case.loss, case.option, case.claim, case.spec, case.spec_params, case.make, notes=notes),
                   examples=EXAMPLES)
    assert row["verdict"] == "differs"
    assert "spec: zero-weight regions and ratio bounds equal ppo_clip's" in [f["check"] for f in row["failed"]]
    assert "dual-clip: dropped." in row["summary"] and "a clamp at 20." not in row["summary"]
    assert all(f["reason"] and f["detail"] for f in row["failed"])
    json.dumps(row, allow_nan=False)  # strict JSON


def test_not_applicable_and_error_rows():
    na = run_case(Case("x", "", "claim", not_applicable="no spec"), examples=EXAMPLES)
    assert na["verdict"] == "not applicable" and na["summary"] == "no spec"

    def broken():
        raise ValueError("the trainer refused its config")
    err = run_case(Case("x", "", "claim", "ppo_clip", {}, broken), examples=EXAMPLES)
    assert err["verdict"] == "error" and "refused its config" in err["summary"]
    with pytest.raises(ValueError, match="not both"):
        Case("x", "", "claim", "ppo_clip", {}, broken, not_applicable="why")


def test_matrix_document_and_markdown():
    cases = [Case("a", "", "claim", not_applicable="no spec"), Case("b", "o=1", "claim", not_applicable="none")]
    doc = run_matrix(_adapter(cases), version="0.1.0", config={"eps": 0.2}, examples=EXAMPLES)
    assert doc["schema"] == SCHEMA and set(doc["counts"]) == set(VERDICTS)
    assert doc["counts"]["not applicable"] == 2 and [r["loss"] for r in doc["rows"]] == ["a", "b"]
    md = to_markdown(doc)
    assert "| `a` | (defaults) | **not applicable** |" in md and "| `b` | o=1 |" in md
    assert [r["loss"] for r in run_matrix(_adapter(cases), version="0.1.0", config={}, losses=["b"],
                                          examples=EXAMPLES)["rows"]] == ["b"]


def test_bad_requests_are_conform_errors():
    ad = _adapter([Case("a", "", "claim", not_applicable="no spec")])
    with pytest.raises(ConformError, match="allowed: eps"):
        parse_config(ad, {"epz": 1})
    with pytest.raises(ConformError, match="a float"):
        parse_config(ad, {"eps": "wide"})
    assert parse_config(ad, {"eps": 1}) == {"eps": 1.0}
    with pytest.raises(ConformError, match="allowed: a"):
        select(ad.cases({}), ["b"])
    missing = Adapter("toy", "no-such-distribution-pgverify", ("1",), "pip install it", {}, lambda c: [], "x")
    with pytest.raises(ConformError, match="not installed; install its loss code with: pip install it"):
        installed_version(missing)
    untested = Adapter("toy", "pgverify", ("0.0.0",), "pip install it", {}, lambda c: [], "x")
    with pytest.raises(ConformError, match="--allow-untested"):
        installed_version(untested)
    assert installed_version(untested, allow_untested=True)
