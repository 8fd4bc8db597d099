"""``pgverify list`` shows every registered part; ``pgverify check`` exits 0/1/2 (pass, fail, usage error)
with a card and JSON; usage errors exit with code 2."""

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


def test_bench_quick_writes_json(tmp_path, capsys, monkeypatch):
    from sims import bench

    fake = {"device": "cpu", "T": 64, "V": 32, "engine_seq_per_s": 1.0, "engine_seq_per_s_runs": [0.5, 1.0, 2.0],
            "engine_ms_per_mtok": {"sample": 1.5, "log-probs": 2.0},
            "loop_seq_per_s": 1.0, "vmap_seq_per_s": 1.0, "exact_seconds": 1.0, "peak_rss_mb": 1.0}
    monkeypatch.setattr(bench, "run_bench", lambda device, quick: fake)
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--json", str(out)]) == 0
    assert json.loads(out.read_text()) == fake
    out_text = capsys.readouterr().out
    assert "engine_seq_per_s " in out_text and "engine_seq_per_s_runs 0.5, 1.0, 2.0" in out_text
    assert "sample 1.50; log-probs 2.00" in out_text


def test_bench_rejects_an_unavailable_device(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert main(["bench", "--device", "cuda"]) == 2
    assert "--device 'cuda' is not available" in capsys.readouterr().err


@pytest.mark.slow
def test_real_quick_bench_produces_every_key():
    # the un-mocked quick bench: every measurement runs and is positive
    from sims.bench import run_bench
    result = run_bench("cpu", quick=True)
    for key in ("engine_seq_per_s", "loop_seq_per_s", "vmap_seq_per_s", "exact_seconds",
                "gru_engine_seq_per_s", "peak_rss_mb"):
        assert result[key] > 0, key
    assert (result["device"], result["T"], result["V"]) == ("cpu", 64, 32)
    runs = result["engine_seq_per_s_runs"]
    assert len(runs) == 3 and result["engine_seq_per_s"] == sorted(runs)[1]  # the median
    from sims.engines.montecarlo import STAGES
    stages = result["engine_ms_per_mtok"]
    assert list(stages) == list(STAGES) and all(v > 0 for v in stages.values())


# ----------------------------------------------------------------------------- pgverify check

VARIANTS = '''
import torch

def cispo(logp, old_logp, adv, mask, cap=5.0):
    weight = torch.exp(logp - old_logp).clamp(max=cap).detach()
    return (-weight * adv.detach() * logp * mask).sum() / mask.sum()

def cispo_with_diagnostics(logp, old_logp, adv, mask):
    return cispo(logp, old_logp, adv, mask), {"mean_ratio": torch.exp(logp - old_logp).mean()}

def not_detached(logp, old_logp, adv, mask):
    weight = torch.exp(logp - old_logp).clamp(max=5.0)
    return (-weight * adv * logp * mask).sum() / mask.sum()

def two_args(logp, old_logp):
    return logp.sum()

NOT_CALLABLE = 3
'''
FAST = ["--examples", "10", "--no-profile"]


@pytest.fixture
def variants(tmp_path):
    path = tmp_path / "variants.py"
    path.write_text(VARIANTS)
    return str(path)


def test_check_passes_a_correct_loss_and_writes_json(variants, tmp_path, capsys):
    out_json = tmp_path / "check.json"
    code = main(["check", f"{variants}:cispo", "--spec", "cispo", "--param", "cap=5", "--json", str(out_json), *FAST])
    out = capsys.readouterr().out
    assert code == 0 and "PASSED: all 11 checks passed" in out
    doc = json.loads(out_json.read_text())
    assert doc["passed"] is True and len(doc["checks"]) == 11
    assert all(set(c) >= {"name", "passed", "detail"} and c["passed"] is True for c in doc["checks"])
    assert doc["spec"].startswith("cispo(") and doc["settings"]["examples"] == 10
    assert not list(tmp_path.glob(".pgverify-*"))  # the temporary file was renamed
    assert main(["check", f"{variants}:cispo_with_diagnostics", "--spec", "cispo", *FAST]) == 0


def test_check_exits_1_when_a_check_fails(variants, capsys):
    assert main(["check", f"{variants}:not_detached", "--strict-constants", *FAST]) == 1
    out = capsys.readouterr().out
    assert "FAIL  contract: old_logp and adv are constants" in out and "FAILED: " in out


def test_check_feeds_constants_as_trainers_do_unless_strict(variants, capsys):
    main(["check", f"{variants}:not_detached", *FAST])
    out = capsys.readouterr().out
    assert "old_logp and adv are constants" not in out and "without requires_grad" in out


def test_check_internal_error_exits_3_with_the_card_and_traceback(variants, tmp_path, capsys, monkeypatch):
    import sims.check.runner as runner

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug in pgverify")

    monkeypatch.setattr(runner, "check_extremes", broken)
    out_json = tmp_path / "check.json"
    assert main(["check", f"{variants}:cispo", "--json", str(out_json), *FAST]) == 3
    captured = capsys.readouterr()
    assert "contract: returns a finite 0-d loss" in captured.out  # the card of what ran
    assert "internal error" in captured.err and "ZeroDivisionError: a bug in pgverify" in captured.err
    doc = json.loads(out_json.read_text())
    assert doc["internal_error"]["step"] == "contract: extremes" and "Traceback" in doc["internal_error"]["traceback"]


def test_check_trainer_options(variants, capsys):
    for extra in (["--dtype", "float32"], ["--mask-dtype", "int"], ["--adv-shape", "token", "--spec", "cispo"],
                  ["--rtol", "1e-5", "--spec", "cispo"], ["--arg", "logp=logp", "--arg", "old_logp=old_logp",
                                                          "--arg", "adv=adv", "--arg", "mask=mask"]):
        assert main(["check", f"{variants}:cispo", *extra, *FAST]) == 0, extra
    out = capsys.readouterr().out
    assert "fed: float32 inputs" in out and "int mask" in out


def test_check_leaves_the_working_directory_untouched(variants, tmp_path):
    import os
    import subprocess
    import sys

    work = tmp_path / "work"
    work.mkdir()
    env = dict(os.environ, PGVERIFY_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("HYPOTHESIS_STORAGE_DIRECTORY", None)
    done = subprocess.run([sys.executable, "-m", "sims", "check", f"{variants}:cispo", "--examples", "5",
                           "--no-profile-table"],
                          cwd=work, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert list(work.iterdir()) == []  # no .hypothesis/, nothing else


def test_check_with_a_spec_mismatch_shows_expected_and_actual_weights(variants, capsys):
    assert main(["check", f"{variants}:cispo", "--spec", "cispo", "--spec-param", "eps_high=1.0", *FAST]) == 1
    out = capsys.readouterr().out
    assert "FAIL  spec: gradient weights equal cispo's" in out
    assert "expected w = " in out and "actual   w = " in out and "smallest failing input found" in out


@pytest.mark.parametrize("args, message", [
    (["{dir}/missing.py:f"], "does not exist"),
    (["{file}:NOT_CALLABLE"], "is a int, not callable"),
    (["{file}:absent"], "has no attribute 'absent'"),
    (["{file}:two_args"], "wrong signature"),
    (["{file}:cispo", "--spec", "cispoo"], "--spec 'cispoo' is unknown; allowed: reinforce"),
    (["{file}:cispo", "--spec", "cispo", "--spec-param", "eps=1"], "--spec-param 'eps' is not a field"),
    (["{file}:cispo", "--param", "tau=1"], "--param 'tau' is not a parameter of cispo"),
    (["{file}:cispo", "--spec-param", "eps_high=1"], "--spec-param needs --spec NAME"),
    (["{file}:cispo", "--param", "cap"], "--param 'cap' is not name=value"),
    (["{file}:cispo", "--param", "cap=abc"], "--param cap='abc' is a str; allowed: a float"),
    (["{file}:cispo", "--arg", "logp=nope"], "has no parameter 'nope'"),
    (["{file}:cispo", "--factory", "cfg"], "--factory 'cfg' is not NAME=MODULE:FUNCTION"),
    (["{file}:cispo", "--json", "{dir}/missing/out.json"], "does not exist"),
    (["{file}:cispo", "--json", "{dir}"], "is a directory"),
])
def test_check_usage_errors_exit_2_with_a_message(variants, tmp_path, capsys, args, message):
    argv = ["check", *(a.format(dir=tmp_path, file=variants) for a in args), *FAST]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("pgverify check: error: ") and message in err


@pytest.mark.parametrize("args", [["{file}:cispo", "--examples", "0"], ["{file}:cispo", "--group-size", "x"],
                                  ["{file}:cispo", "--rtol", "-1"], ["{file}:cispo", "--dtype", "float16"],
                                  ["{file}:cispo", "--mask-dtype", "half"]])
def test_check_bad_numbers_exit_2(variants, capsys, args):
    with pytest.raises(SystemExit) as exc:
        main(["check", *(a.format(file=variants) for a in args)])
    assert exc.value.code == 2


def test_check_console_entry_point_exit_codes(variants):
    import subprocess
    import sys

    run = lambda *a: subprocess.run([sys.executable, "-m", "sims", "check", *a, *FAST],  # noqa: E731
                                    capture_output=True, text=True)
    assert run(f"{variants}:cispo").returncode == 0
    assert run(f"{variants}:not_detached").returncode == 1
    missing = run("nowhere.py:f")
    assert missing.returncode == 2 and "nowhere.py" in missing.stderr


# ----------------------------------------------------------------------------- the surface a user touches

import os  # noqa: E402
import signal  # noqa: E402
import stat  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

HEAVY = ("torch", "sympy", "numba", "pandas", "hypothesis")


def _no_work(monkeypatch):
    """Make any experiment run or bench fail the test: usage errors must come before work."""
    import sims.bench
    import sims.report

    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the output path was checked")

    for module, name in ((sims.report, "run_experiments"), (sims.report, "build_report"), (sims.bench, "run_bench")):
        monkeypatch.setattr(module, name, forbidden)


def _fake_report(path, text="old report"):
    path.mkdir()
    (path / "provenance.json").write_text("{}")
    (path / "REPORT.md").write_text(text)
    return {p.name: p.read_bytes() for p in path.iterdir()}


def test_help_and_version_are_fast_and_import_nothing_heavy(tmp_path):
    probe = ("import sys, time\nstart = time.perf_counter()\nfrom sims.cli import main\n"
             "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
             f"print(time.perf_counter() - start, [m for m in {HEAVY!r} if m in sys.modules])")
    for argv in (["--help"], ["--version"], ["check", "--help"], ["report", "--help"]):
        done = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, check=True)
        seconds, heavy = done.stdout.strip().splitlines()[-1].split(" ", 1)
        assert heavy == "[]", (argv, heavy)
        assert float(seconds) < 1.0, (argv, seconds)
    walls, bare = [], []
    for _ in range(3):  # the whole command, interpreter start included; the best of 3 on a shared machine
        start = time.perf_counter()
        version = subprocess.run([sys.executable, "-m", "sims", "--version"], capture_output=True, text=True)
        walls.append(time.perf_counter() - start)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare.append(time.perf_counter() - start)
    from importlib.metadata import version as pkg_version

    assert version.returncode == 0 and version.stdout.strip() == f"pgverify {pkg_version('pgverify')}"
    # under 1 s beyond the interpreter's own start (which alone takes ~1 s on a saturated 2-core machine)
    assert min(walls) - min(bare) < 1.0, (walls, bare)


def test_check_spec_names_in_the_help_are_the_registry_s():
    from sims.check.specs import SPEC_NAMES
    from sims.cli import CHECK_SPEC_NAMES, build_parser

    assert CHECK_SPEC_NAMES == SPEC_NAMES
    check = build_parser()._subparsers._group_actions[0].choices["check"]
    assert ", ".join(SPEC_NAMES) in " ".join(check.format_help().split())


def test_every_subcommand_has_a_description():
    from sims.cli import build_parser

    for name, sub in build_parser()._subparsers._group_actions[0].choices.items():
        assert sub.description and len(sub.description) > 40, name


def test_report_refuses_a_file_and_leaves_it_untouched(tmp_path, monkeypatch, capsys):
    _no_work(monkeypatch)
    target = tmp_path / "notes.txt"
    target.write_text("my notes")
    assert main(["report", "--out", str(target)]) == 2
    assert "--out" in capsys.readouterr().err and target.read_text() == "my notes"
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_report_refuses_a_foreign_directory_and_its_files_survive(tmp_path, monkeypatch, capsys):
    _no_work(monkeypatch)
    target = tmp_path / "mine"
    target.mkdir()
    (target / "thesis.tex").write_text("years of work")
    assert main(["report", "--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pgverify report: error: --out ") and "not a pgverify report" in err
    assert [p.name for p in target.iterdir()] == ["thesis.tex"] and (target / "thesis.tex").read_text() == "years of work"


@pytest.mark.parametrize("argv, option", [
    (["report", "--out", "{missing}/rep"], "--out"),
    (["report", "--out", "{locked}/rep"], "--out"),
    (["claims", "--quick", "--json", "{missing}/c.json"], "--json"),
    (["claims", "--quick", "--json", "{locked}/c.json"], "--json"),
    (["claims", "--quick", "--json", "{tmp}"], "--json"),
    (["bench", "--quick", "--json", "{missing}/b.json"], "--json"),
    (["bench", "--quick", "--json", "{locked}/b.json"], "--json"),
])
def test_unusable_output_paths_exit_2_before_any_work(tmp_path, monkeypatch, capsys, argv, option):
    _no_work(monkeypatch)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    real = os.access  # root may write anywhere: make os.access say what the mode says
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if os.path.abspath(p) == str(locked)
                        and mode & os.W_OK else real(p, mode, **kw))
    argv = [a.format(missing=tmp_path / "missing", locked=locked, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    path = argv[-1]
    assert err.startswith(f"pgverify {argv[0]}: error: {option} ") and repr(path) in err, err
    assert "Traceback" not in err and not (tmp_path / "missing").exists() and not list(locked.iterdir())


def _ledger_dir(tmp_path):
    d = tmp_path / "rep"
    _fake_report(d)
    rows = [{"id": "C01", "verdict": "partly", "summary": "holds except: the baseline lowers the variance",
             "evidence": {"claim": "REINFORCE is unbiased"}},
            {"id": "C02", "verdict": "holds", "summary": "all 2 parts hold", "evidence": {"claim": "seq IS"}}]
    (d / "claims.json").write_text(json.dumps(rows))
    return d, rows


def test_claims_from_prints_an_existing_report_s_ledger(tmp_path, capsys, monkeypatch):
    _no_work(monkeypatch)
    d, rows = _ledger_dir(tmp_path)
    out = tmp_path / "ledger.json"
    assert main(["claims", "--from", str(d), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "C01  partly       REINFORCE is unbiased" in text and "holds except: the baseline" in text
    assert "C02  holds" in text and json.loads(out.read_text()) == rows
    (d / "claims.json").unlink()
    assert main(["claims", "--from", str(d)]) == 2
    assert "has no claims.json" in capsys.readouterr().err
    assert main(["claims", "--from", str(tmp_path / "nowhere")]) == 2
    assert main(["claims", "--from", str(d), "--quick"]) == 2
    assert "--quick cannot be combined" in capsys.readouterr().err


def test_claims_takes_seed_and_device(monkeypatch, capsys):
    import sims.claims
    import sims.report

    seen = {}
    monkeypatch.setattr(sims.report, "run_experiments", lambda scale, **kw: seen.update(kw, scale=scale) or {})
    monkeypatch.setattr(sims.claims, "decide", lambda results, scale="full": seen.update(decided_at=scale) or [])
    assert main(["claims", "--quick", "--seed", "7", "--device", "cpu"]) == 0
    assert (seen["scale"], seen["seed"], seen["device"], seen["progress"]) == ("quick", 7, "cpu", True)
    assert seen["decided_at"] == "quick"  # rule 11: the ledger knows the scale its evidence came from
    assert main(["claims", "--device", "tpu"]) == 2


def test_claims_from_is_fast_and_writes_with_the_umask_permissions(tmp_path):
    d, _ = _ledger_dir(tmp_path)
    out = tmp_path / "ledger.json"
    probe = ("import sys\nfrom sims.cli import main\ncode = main(sys.argv[1:])\n"
             f"print(code, [m for m in {HEAVY!r} if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", probe, "claims", "--from", str(d), "--json", str(out)],
                          capture_output=True, text=True, umask=0o022)
    assert done.stdout.strip().splitlines()[-1] == "0 []", done.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


def test_progress_lines_when_stderr_is_not_a_terminal(monkeypatch, capsys):
    import types

    import sims.report

    import pandas as pd

    from sims.experiments._common import Result

    fake = types.SimpleNamespace(run=lambda cfg, seed, device: Result("ran", cfg, pd.DataFrame(), {}))
    monkeypatch.setattr(sims.report, "EXPERIMENTS", {"alpha": fake, "beta": fake})
    out = sims.report.run_experiments("quick", progress=True, overrides={"alpha": 1, "beta": 2})
    assert {n: r.config for n, r in out.items()} == {"alpha": 1, "beta": 2}
    assert all(r.seconds >= 0 for r in out.values())
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "pgverify: running 2 experiments at quick scale"
    assert err[1].startswith("[1/2] alpha done in ") and err[2].startswith("[2/2] beta done in ")
    assert err[2].endswith(" s")


@pytest.mark.slow
def test_report_replaces_a_previous_report_with_the_umask_permissions(tiny_experiments, tmp_path, monkeypatch,
                                                                       capsys):
    import sims.report

    monkeypatch.setattr(sims.report, "run_experiments", lambda *a, **kw: tiny_experiments)
    out = tmp_path / "rep"
    _fake_report(out)
    (out / "stale.png").write_text("from the previous report")  # listed as the previous report's own file
    (out / "provenance.json").write_text('{"files": ["provenance.json", "REPORT.md", "stale.png"]}')
    old = os.umask(0o022)
    try:
        assert main(["report", "--out", str(out)]) == 0
    finally:
        os.umask(old)
    assert "wrote " in capsys.readouterr().out
    names = {p.name for p in out.iterdir()}
    assert "stale.png" not in names and {"REPORT.md", "claims.json", "provenance.json"} <= names
    assert "old report" not in (out / "REPORT.md").read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["rep"]  # no temporary or old directory left
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {0o644}


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_a_report_cleanly(tmp_path, signum, code):
    out = tmp_path / "rep"
    before = _fake_report(out)
    proc = subprocess.Popen([sys.executable, "-m", "sims", "report", "--quick", "--out", str(out)],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        first = proc.stderr.readline()  # printed once the experiments start (torch imported)
        assert first.startswith("pgverify: running"), first
        time.sleep(1.5)  # inside the first experiment: torch ops and numba kernels
        proc.send_signal(signum)
        stdout, rest = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = first + rest
    assert proc.returncode == code, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("pgverify: ")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the previous report intact
    assert [p.name for p in tmp_path.iterdir()] == ["rep"]  # no temporary directory left


def test_the_console_script_ignores_further_signals_after_a_stop():
    """``entry`` (the console script): after 130/143 a second SIGINT/SIGTERM (``timeout`` signals
    the command and then its group) must not interrupt the interpreter's exit with a traceback."""
    code = ("import signal, sims.cli as c\n"
            "for rc in (0, 130, 143):\n"
            "    signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            "    signal.signal(signal.SIGTERM, signal.SIG_DFL)\n"
            "    c.main = lambda rc=rc: rc\n"
            "    print(c.entry(), signal.getsignal(signal.SIGINT) is signal.SIG_IGN,"
            " signal.getsignal(signal.SIGTERM) is signal.SIG_IGN)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:3] == ["0 False False", "130 True True", "143 True True"]
