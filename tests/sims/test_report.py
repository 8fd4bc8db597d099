"""The report writer: a complete directory, atomic replacement, and the CLI's usage errors."""

from __future__ import annotations

import json

import pytest

from sims import cli
from sims.report import write_report

pytestmark = pytest.mark.slow


@pytest.fixture
def tiny(tiny_experiments):
    return tiny_experiments


def test_report_directory_is_complete(tiny, tmp_path):
    out = tmp_path / "rep"
    write_report(out, tiny, scale="tiny", seed=0, device="cpu", seconds=1.0)
    names = {p.name for p in out.iterdir()}
    assert {"REPORT.md", "claims.json", "provenance.json", "published.json"} <= names
    for exp in tiny:
        assert {f"{exp}.png", f"{exp}.csv"} <= names
    ledger = json.loads((out / "claims.json").read_text())
    assert len(ledger) == 15 and all(set(c) == {"id", "verdict", "summary", "evidence"} for c in ledger)
    prov = json.loads((out / "provenance.json").read_text())
    assert {"git_commit", "versions", "device", "seed", "configs", "experiment_seeds"} <= set(prov)
    text = (out / "REPORT.md").read_text()
    assert "## Claims ledger" in text and "C15" in text


def test_interrupted_report_leaves_the_old_one_intact(tiny, tmp_path):
    out = tmp_path / "rep"
    write_report(out, tiny, scale="tiny", seed=0, device="cpu", seconds=1.0)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def interrupt(_tmp):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_report(out, tiny, scale="tiny", seed=1, device="cpu", seconds=1.0, before_swap=interrupt)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["rep"]  # no temporary directory left behind


@pytest.mark.parametrize("argv, message", [
    (["report", "--seed", "abc"], "seed"),
    (["report", "--seed", "-1"], "seed"),
    (["report", "--bogus"], "unrecognized"),
    (["claims", "--json"], "--json"),
])
def test_bad_options_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("device", ["cuda:7", "tpu", "nonsense"])
def test_bad_device_exits_2(device, capsys, tmp_path):
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("CUDA present")
    assert cli.main(["report", "--device", device, "--out", str(tmp_path / "r")]) == 2
    assert "--device" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
