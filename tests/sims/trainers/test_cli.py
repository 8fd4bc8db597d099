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
    assert main(["conform", "openrlhf", "--out", str(tmp_path / "missing")]) == 2
    assert "not an existing directory" in capsys.readouterr().err


def test_the_cli_module_imports_nothing_heavy():
    code = ("import sys, sims.trainers.cli, sims.trainers; "
            "print(sorted(m for m in ('torch', 'verl', 'trl', 'openrlhf', 'sympy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
