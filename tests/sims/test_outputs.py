"""Output paths are checked before any work, written atomically with the umask's permissions, and a
signal stops a command cleanly (sims/outputs.py)."""

from __future__ import annotations

import os
import signal
import stat

import pytest

from sims import outputs
from sims.outputs import OutputError


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _previous_report(path):
    path.mkdir()
    (path / "provenance.json").write_text("{}")
    (path / "REPORT.md").write_text("old report")
    return {p.name: p.read_bytes() for p in path.iterdir()}


def _unwritable(monkeypatch, directory):
    """``directory`` unwritable, also for root (who may write anywhere): os.access says no."""
    directory.chmod(0o500)
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if os.path.abspath(p) == str(directory)
                        and mode & os.W_OK else real(p, mode, **kw))


def test_file_path_checks(tmp_path, monkeypatch):
    outputs.check_file_path("--json", tmp_path / "new.json")  # fine: a new file in an existing directory
    with pytest.raises(OutputError, match=r"--json .* is a directory"):
        outputs.check_file_path("--json", tmp_path)
    with pytest.raises(OutputError, match=r"--json '.*missing/x.json': the directory .* does not exist"):
        outputs.check_file_path("--json", tmp_path / "missing" / "x.json")
    locked = tmp_path / "locked"
    locked.mkdir()
    _unwritable(monkeypatch, locked)
    with pytest.raises(OutputError, match=r"--json '.*locked/x.json': the directory .* is not writable"):
        outputs.check_file_path("--json", locked / "x.json")


def test_report_dir_checks(tmp_path, monkeypatch):
    outputs.check_report_dir("--out", tmp_path / "new")  # does not exist yet
    (tmp_path / "empty").mkdir()
    outputs.check_report_dir("--out", tmp_path / "empty")
    _previous_report(tmp_path / "old")
    outputs.check_report_dir("--out", tmp_path / "old")
    (tmp_path / "file").write_text("mine")
    with pytest.raises(OutputError, match=r"--out '.*file' is a file"):
        outputs.check_report_dir("--out", tmp_path / "file")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"--out '.*mine' is a non-empty directory that is not a pgverify report"):
        outputs.check_report_dir("--out", tmp_path / "mine")
    with pytest.raises(OutputError, match=r"does not exist"):
        outputs.check_report_dir("--out", tmp_path / "missing" / "rep")
    _unwritable(monkeypatch, tmp_path / "empty")
    with pytest.raises(OutputError, match=r"is not writable"):
        outputs.check_report_dir("--out", tmp_path / "empty" / "rep")


def test_atomic_dir_replaces_a_previous_report_with_the_umask_permissions(tmp_path, umask022):
    out = tmp_path / "rep"
    _previous_report(out)
    with outputs.atomic_dir(out) as tmp:
        assert tmp.parent == tmp_path and tmp != out
        (tmp / "provenance.json").write_text("{}")
        (tmp / "REPORT.md").write_text("new report")
    assert (out / "REPORT.md").read_text() == "new report"
    assert [p.name for p in tmp_path.iterdir()] == ["rep"]  # neither the temporary nor the old directory left
    assert _mode(out) == 0o755 and _mode(out / "REPORT.md") == 0o644


def test_atomic_dir_keeps_the_previous_report_when_interrupted(tmp_path):
    out = tmp_path / "rep"
    before = _previous_report(out)
    with pytest.raises(KeyboardInterrupt):
        with outputs.atomic_dir(out) as tmp:
            (tmp / "REPORT.md").write_text("half")
            raise KeyboardInterrupt
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["rep"]


def test_atomic_dir_does_not_replace_a_directory_that_gained_foreign_files(tmp_path):
    out = tmp_path / "rep"
    with pytest.raises(OutputError, match="not a pgverify report"):
        with outputs.atomic_dir(out) as tmp:
            (tmp / "REPORT.md").write_text("new")
            out.mkdir()
            (out / "mine.txt").write_text("mine")  # someone used the path meanwhile
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["rep"]


@pytest.mark.parametrize("mask, dir_mode, file_mode", [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_permissions_follow_the_umask(tmp_path, mask, dir_mode, file_mode):
    old = os.umask(mask)
    try:
        assert outputs.umask() == mask
        outputs.write_json_atomic(tmp_path / "a.json", {"x": 1})
        with outputs.atomic_dir(tmp_path / "rep") as tmp:
            (tmp / "f.txt").write_text("x")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.json") == file_mode
    assert _mode(tmp_path / "rep") == dir_mode and _mode(tmp_path / "rep" / "f.txt") == file_mode


def test_write_text_atomic_leaves_no_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "out.json"
    target.write_text("previous")

    def broken(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(KeyboardInterrupt):
        outputs.write_text_atomic(target, "new")
    assert target.read_text() == "previous" and [p.name for p in tmp_path.iterdir()] == ["out.json"]


@pytest.mark.parametrize("signum, exc_type, code", [(signal.SIGINT, KeyboardInterrupt, 130),
                                                      (signal.SIGTERM, outputs.Terminated, 143)])
def test_signals_raise_once_and_give_the_shell_exit_code(signum, exc_type, code):
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with outputs.handle_signals():
        with pytest.raises(exc_type) as caught:
            os.kill(os.getpid(), signum)  # the handler runs at the next bytecode
            for _ in range(1000):
                pass
        os.kill(os.getpid(), signum)  # a second signal during the cleanup is ignored
        for _ in range(1000):
            pass
    assert type(caught.value) is exc_type and outputs.exit_code(caught.value) == code
    assert ("SIGTERM" if code == 143 else "SIGINT") in outputs.stop_message(caught.value)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before  # restored
