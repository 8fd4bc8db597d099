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
    assert len(ledger) == 15 and all(set(c) == {"id", "verdict", "summary", "evidence", "robustness"} for c in ledger)
    for c in ledger:  # rule 12: every verdict re-decided under perturbed δ and on each half of the samples
        rob = c["robustness"]
        assert rob["status"] in ("stable", "fragile") and rob["verdict"] == c["verdict"]
        assert set(rob["verdicts"]) == {"δ × 0.5", "δ × 2", "half 1 of the samples", "half 2 of the samples"}
        assert (rob["status"] == "fragile") == bool(rob["flips"])
    assert "## Method" in (out / "REPORT.md").read_text()
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


@pytest.fixture(scope="module")
def written(tiny_experiments, tmp_path_factory):
    out = tmp_path_factory.mktemp("rep") / "rep"
    ledger = write_report(out, tiny_experiments, scale="tiny", seed=0, device="cpu", seconds=1.0)
    return out, ledger, (out / "REPORT.md").read_text()


def test_every_figure_is_shown_with_a_caption(written):
    import re

    out, _, text = written
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert len(pngs) > 8  # experiments with several messages write several figures
    for name in pngs:
        assert f"]({name})" in text, name
        m = re.search(rf"\*\*Figure \d+\*\* \(`{re.escape(name)}`\)\. (.+)", text)
        assert m and len(m.group(1)) > 80, name


def test_report_has_no_python_reprs_code_blocks_or_cut_numbers(written):
    import re

    _, _, text = written
    assert "['" not in text and "{'" not in text and "```" not in text
    # every interval is complete: "[low, high]" with two whole numbers
    for m in re.finditer(r"\[(?=[-\d])([^\]]*)\]", text):
        inner = m.group(1)
        if inner.startswith(("1e-3", "0.01")) or "(" in inner:  # ranges like [1e-3, 1e3], [0.01, 100]
            continue
        parts = inner.split(", ")
        assert len(parts) == 2 and all(re.fullmatch(r"-?\d+(\.\d+)?(e[+-]\d+)?", p) for p in parts), inner
    # Markdown tables keep their columns (pipes inside cells are escaped)
    for block in re.findall(r"((?:^\|.*\|$\n?)+)", text, flags=re.M):
        widths = {len(re.findall(r"(?<!\\)\|", row)) for row in block.strip().splitlines()}
        assert len(widths) == 1, block[:200]


def test_every_part_is_rendered_as_a_finding_with_its_evidence(written):
    from sims.claims import NEGATION, part_finding

    _, ledger, text = written
    for c in ledger:
        assert c.finding in text.replace("\\|", "|")
        for p in c.parts:
            assert p.text in NEGATION, p.text  # every part has words for its failing outcome
            assert p.evidence in text, (c.id, p.text)
            assert part_finding(p) in text.replace("\\|", "|"), (c.id, p.text)
        failing = [p for p in c.parts if p.holds is False]
        for p in failing:
            assert NEGATION[p.text] in c.finding


def test_summaries_are_tables(written, tiny_experiments):
    from sims.report import summary_tables

    _, _, text = written
    for res in tiny_experiments.values():
        tables = summary_tables(res.summary)
        assert tables and all(t.startswith("|") for _, t in tables)
        for _, t in tables:
            assert t in text


# ----------------------------------------------------------------------------- the executor seam

SEAM_NAMES = ("dynamics", "gspo_weight", "kl_estimators", "length_bias")  # a cheap subset (tiny: ~5 s)


def _same(a, b) -> None:
    """Two runs' results identical: tables bit for bit, summaries as JSON (NaN equals NaN there)."""
    import pandas as pd

    from sims.report import jsonable

    assert list(a) == list(b)
    for name in a:
        pd.testing.assert_frame_equal(a[name].table, b[name].table, check_exact=True)
        assert json.dumps(jsonable(a[name].summary), sort_keys=True) == json.dumps(jsonable(b[name].summary),
                                                                                    sort_keys=True), name


def test_experiments_on_a_process_pool_equal_the_in_process_run(tiny_experiments):
    from sims.report import run_experiments
    from sims.sweeps.executor import LocalExecutor

    with LocalExecutor(2) as executor:
        pooled = run_experiments("tiny", names=SEAM_NAMES, executor=executor)
    _same({n: tiny_experiments[n] for n in SEAM_NAMES}, pooled)
    assert all(r.seconds is not None and r.seconds > 0 for r in pooled.values())


def test_experiments_on_ray_equal_the_in_process_run(tiny_experiments):
    pytest.importorskip("ray")  # CI installs the ray extra, so this runs there
    from sims.report import run_experiments
    from sims.sweeps.executor import RayExecutor

    with RayExecutor(None, 2) as executor:
        on_ray = run_experiments("tiny", names=SEAM_NAMES, executor=executor)
    _same({n: tiny_experiments[n] for n in SEAM_NAMES}, on_ray)


def test_an_experiment_that_raises_in_a_cell_is_named():
    from sims.report import ExperimentError, run_experiments
    from sims.sweeps.executor import LocalExecutor

    with pytest.raises(ExperimentError, match="experiment kl_estimators failed on local: AttributeError"):
        run_experiments("tiny", names=["kl_estimators"], overrides={"kl_estimators": object()},
                        executor=LocalExecutor(1))


@pytest.mark.parametrize("argv, message", [
    (["report", "--quick", "--scale", "full"], "--quick is --scale quick"),
    (["report", "--address", "127.0.0.1:1"], "needs --backend ray"),
    (["report", "--backend", "ray", "--address", "127.0.0.1:1"], "cannot be reached"),
    (["report", "--backend", "ray", "--address", "nonsense"], "is not host:port"),
])
def test_bad_scale_or_backend_exits_2_before_any_work(argv, message, capsys, tmp_path):
    assert cli.main([*argv, "--out", str(tmp_path / "r")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_scale_choices_are_the_experiments_scales():
    from sims.experiments import SCALES

    assert cli.SCALE_CHOICES == SCALES


def test_a_new_report_keeps_every_file_it_did_not_write_and_records_its_own(tiny, tmp_path):
    """Regression: ``pgverify conform verl --out reports`` writes reports/verl.json and verl.md (and
    a user may keep notes there); regenerating the report deleted them with the old report. The
    provenance lists the report's own files, each experiment's time and the backend."""
    import dataclasses

    out = tmp_path / "rep"
    write_report(out, tiny, scale="tiny", seed=0, device="cpu", seconds=1.0)
    (out / "verl.json").write_text('{"trainer": "verl"}')
    (out / "notes.txt").write_text("user data")
    (out / "conform").mkdir()  # pgverify conform --out reports/conform: a subdirectory
    (out / "conform" / "trl.json").write_text("{}")
    timed = {n: dataclasses.replace(r, seconds=1.26) for n, r in tiny.items()}
    write_report(out, timed, scale="tiny", seed=1, device="cpu", seconds=9.0, backend={"name": "ray", "workers": 4})
    assert (out / "verl.json").read_text() == '{"trainer": "verl"}'
    assert (out / "notes.txt").read_text() == "user data"
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["experiment_seconds"] == {n: 1.3 for n in tiny}
    assert prov["backend"] == {"name": "ray", "workers": 4}
    own = set(prov["files"])
    assert {"REPORT.md", "provenance.json", "claims.json"} <= own and "notes.txt" not in own
    assert (out / "conform" / "trl.json").read_text() == "{}"
    assert {p.name for p in out.iterdir()} == own | {"verl.json", "notes.txt", "conform"}


def test_a_report_written_before_the_file_list_has_its_own_files_recognised_by_name(tmp_path):
    from sims.report import _own_files

    old = tmp_path / "old"
    old.mkdir()
    (old / "provenance.json").write_text(json.dumps({"configs": {"dynamics": {}, "sgs": {}}}))
    for name in ("REPORT.md", "claims.json", "dynamics.csv", "dynamics.png", "dynamics_final.png", "sgs.csv",
                 "verl.json", "verl.md", "notes.txt", "sgsx.png"):
        (old / name).write_text("x")
    assert _own_files(old) == {"provenance.json", "REPORT.md", "claims.json", "dynamics.csv", "dynamics.png",
                               "dynamics_final.png", "sgs.csv"}


def test_a_dead_worker_is_reported_with_every_unfinished_experiment():
    from sims.report import ExperimentError, run_experiments
    from sims.sweeps.executor import Executor, TaskError

    class Broken(Executor):
        name, workers = "local", 2

        def map_unordered(self, fn, items):
            yield 0, TaskError("BrokenProcessPool: a process in the process pool was terminated abruptly")

    with pytest.raises(ExperimentError) as exc:
        run_experiments("tiny", names=["kl_estimators", "length_bias"], executor=Broken())
    message = str(exc.value)
    assert "a worker of the local backend stopped (BrokenProcessPool" in message
    assert "2 experiments were unfinished: kl_estimators, length_bias" in message


def test_ray_address_from_the_environment_is_named(monkeypatch, capsys, tmp_path):
    pytest.importorskip("ray")
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    assert cli.main(["report", "--backend", "ray", "--out", str(tmp_path / "r")]) == 2
    assert "RAY_ADDRESS (from the environment) '127.0.0.1:1' cannot be reached" in capsys.readouterr().err
