"""``pgverify sweep``: --example, registration, a light import, and every usage error exits 2 before
any work (no output directory created, a foreign one untouched)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sims.sweeps.cells import expand
from sims.sweeps.cli import main
from sims.sweeps.example import EXAMPLE
from sims.sweeps.spec import parse_spec
from tests.sims.sweeps.conftest import TINY


def test_example_is_printed_and_is_a_valid_spec(capsys):
    assert main(["--example"]) == 0
    out = capsys.readouterr().out
    assert out == EXAMPLE
    assert len(expand(parse_spec(out))) == 24  # as its comment says


def test_registered_in_the_pgverify_cli():
    from sims.cli import COMMAND_MODULES

    assert "sims.sweeps.cli" in COMMAND_MODULES


def test_the_module_imports_nothing_heavy():
    code = ("import sys, sims.sweeps.cli; heavy = [m for m in ('torch', 'pandas', 'numba', 'sympy', 'ray') "
            "if m in sys.modules]; print(heavy)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


def _run(tmp_path, capsys, *argv, spec_text=TINY):
    spec = tmp_path / "spec.toml"
    spec.write_text(spec_text)
    out = tmp_path / "out"
    code = main([str(spec) if a == "SPEC" else str(out) if a == "OUT" else a for a in argv])
    return code, capsys.readouterr().err, out


@pytest.mark.parametrize("spec_text, words", [
    (TINY.replace("replicas = 40", "replicas = 41"), ["spec.toml: replicas = 41 is invalid", "multiple of 20"]),
    (TINY + "\nbatch = 3\n", ["dynamics.batch: unknown key"]),
    (TINY.replace("seeds = [0, 1]", "seeds = []"), ["seeds = []", "zero cells"]),
    (TINY.replace("eps_high = 0.28", "eps_high = -1.0"), ["objectives.ppo_clip", "eps_high=-1.0 is invalid"]),
])
def test_bad_specs_exit_2_before_any_work(tmp_path, capsys, spec_text, words):
    code, err, out = _run(tmp_path, capsys, "SPEC", "--out", "OUT", spec_text=spec_text)
    assert code == 2 and err.startswith("pgverify sweep: error: ")
    for word in words:
        assert word in err
    assert not out.exists()


def test_usage_errors_exit_2(tmp_path, capsys):
    assert main([]) == 2 and "SPEC.toml is missing" in capsys.readouterr().err
    assert main([str(tmp_path / "nope.toml")]) == 2 and "cannot be read" in capsys.readouterr().err
    code, err, _ = _run(tmp_path, capsys, "SPEC", "--example")
    assert code == 2 and "cannot be combined" in err
    code, err, _ = _run(tmp_path, capsys, "SPEC", "--out", "OUT", "--address", "127.0.0.1:1")
    assert code == 2 and "--address '127.0.0.1:1' needs --backend ray" in err
    code, err, _ = _run(tmp_path, capsys, "SPEC", "--out", "OUT", "--device", "cuda:7")
    assert code == 2 and "--device 'cuda:7'" in err
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "spec.toml"), "--workers", "0"])
    assert exc.value.code == 2 and "--workers 0 is out of range" in capsys.readouterr().err


def test_output_directories_are_checked(tmp_path, capsys):
    foreign = tmp_path / "out"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    code, err, _ = _run(tmp_path, capsys, "SPEC", "--out", "OUT")
    assert code == 2 and "not a pgverify sweep directory" in err
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    code, err, _ = _run(tmp_path, capsys, "SPEC", "--out", str(tmp_path / "file"))
    assert code == 2 and "is a file" in err
    code, err, _ = _run(tmp_path, capsys, "SPEC", "--out", str(tmp_path / "new"), "--resume")
    assert code == 2 and "nothing to resume" in err
    code, err, _ = _run(tmp_path, capsys, "SPEC", "--out", str(tmp_path / "missing" / "deeper"))
    assert code == 2 and "does not exist" in err


def test_ray_backend_usage_errors(tmp_path, capsys):
    pytest.importorskip("ray")
    from tests.sims.sweeps.test_executor import _closed_port

    address = f"127.0.0.1:{_closed_port()}"
    code, err, out = _run(tmp_path, capsys, "SPEC", "--out", "OUT", "--backend", "ray", "--address", address)
    assert code == 2 and f"--address {address!r} cannot be reached" in err and not out.exists()
    code, err, _ = _run(tmp_path, capsys, "SPEC", "--out", "OUT", "--backend", "ray", "--address", address,
                        "--workers", "2")
    assert code == 2 and "with --address set the cluster's resources decide" in err


def test_readme_shows_the_example_and_every_spec_key():
    from pathlib import Path

    from sims.sweeps.spec import AXES, DYNAMICS_KEYS

    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    section = readme[readme.index("## Sweeps: `pgverify sweep`"):]
    assert EXAMPLE in section
    for key in ("quantities", *AXES, "[objectives.NAME]", "[advantages.NAME]", "[dynamics]", *DYNAMICS_KEYS):
        assert f"`{key}`" in section, key
