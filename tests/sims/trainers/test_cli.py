"""``pgverify conform``: a missing or untested trainer, an unknown knob or loss, and an unusable
--out exit 2 with a message naming the fix, before any check runs; the module imports nothing
heavy."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

from sims.cli import main


def _missing(monkeypatch, package):
    real = importlib.metadata.version

    def version(name):
        if name == package:
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)
    monkeypatch.setattr(importlib.metadata, "version", version)


def test_missing_trainer_exits_2_with_the_pip_command(monkeypatch, capsys):
    for trainer in ("verl", "trl", "openrlhf"):
        _missing(monkeypatch, trainer)
        assert main(["conform", trainer]) == 2
        err = capsys.readouterr().err
        assert f"{trainer} is not installed" in err and "pip install" in err


def test_untested_version_exits_2(monkeypatch, capsys):
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.0.1")
    assert main(["conform", "trl"]) == 2
    assert "--allow-untested" in capsys.readouterr().err


def test_bad_config_examples_and_out_exit_2(capsys, tmp_path):
    assert main(["conform", "verl", "--config", "clip_ratio_hihg=0.3"]) == 2
    assert "clip_ratio_high (default 0.28)" in capsys.readouterr().err
    assert main(["conform", "openrlhf", "--examples", "0"]) == 2
    assert "--examples 0" in capsys.readouterr().err
    assert main(["conform", "openrlhf", "--jobs", "0"]) == 2
    assert "--jobs 0" in capsys.readouterr().err
    assert main(["conform", "openrlhf", "--out", str(tmp_path / "missing" / "deeper")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "file").write_text("user data")
    assert main(["conform", "openrlhf", "--out", str(tmp_path / "file")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert (tmp_path / "file").read_text() == "user data"


def test_out_is_created_when_its_parent_exists(tmp_path, capsys, monkeypatch):
    import sims.trainers._core as core

    doc = {"trainer": "openrlhf", "version": "0.11.2", "counts": dict.fromkeys(core.VERDICTS, 0), "rows": []}
    monkeypatch.setattr(core, "run_matrix", lambda adapter, **kw: doc)  # the matrix itself is tested elsewhere
    monkeypatch.setattr(core, "to_markdown", lambda d: "# matrix\n")
    out = tmp_path / "new"
    assert main(["conform", "openrlhf", "--jobs", "1", "-q", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["openrlhf.json", "openrlhf.md"]
    assert (out / "openrlhf.md").read_text() == "# matrix\n"


def test_pool_workers_restore_the_default_signal_actions():
    """Forked workers inherit pgverify's SIGTERM handler (``sims.outputs.handle_signals``), which
    raises ``Terminated``: every worker the pool ended printed that traceback (regression)."""
    code = ("import signal; from sims.outputs import handle_signals; from sims.trainers._core import "
            "quiet_worker_signals\nwith handle_signals():\n    before = signal.getsignal(signal.SIGTERM)\n"
            "    quiet_worker_signals()\n    print(before is signal.SIG_DFL, signal.getsignal(signal.SIGTERM) is "
            "signal.SIG_DFL, signal.getsignal(signal.SIGINT) is signal.SIG_IGN)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True", "True"]


def test_the_cli_module_imports_nothing_heavy():
    code = ("import sys, sims.trainers.cli, sims.trainers; "
            "print(sorted(m for m in ('torch', 'verl', 'trl', 'openrlhf', 'sympy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
