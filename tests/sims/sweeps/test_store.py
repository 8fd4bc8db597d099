"""The cell store keeps whole records under their key and ignores anything else; the sweep directory
check refuses files and foreign directories."""

from __future__ import annotations

import pytest

from sims import outputs
from sims.sweeps.store import MARKER, CellStore, check_sweep_dir, write_bytes_atomic


def test_store_round_trip_and_refusals(tmp_path):
    store = CellStore(tmp_path)
    config = {"objective": "cispo", "seed": 0}
    assert store.load("k", config) is None
    rows = [{"quantity": "q", "value": float("nan"), "low": 0.1, "high": 0.30000000000000004, "method": "exact"}]
    store.save("k", config, {"rows": rows, "seconds": 1.5, "version": "0.1.0"})
    record = store.load("k", config)
    assert record["rows"][0]["high"] == 0.30000000000000004 and record["seconds"] == 1.5
    assert store.load("k", dict(config, seed=1)) is None  # another config under the same name is not reused
    store.path("k").write_text("{not json")
    assert store.load("k", config) is None


def test_sweep_dir_check(tmp_path):
    check_sweep_dir("--out", tmp_path / "new")
    empty = tmp_path / "empty"
    empty.mkdir()
    check_sweep_dir("--out", empty)
    with pytest.raises(outputs.OutputError, match="nothing to resume"):
        check_sweep_dir("--out", empty, resume=True)
    (empty / MARKER).write_text("{}")
    check_sweep_dir("--out", empty, resume=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x").write_text("")
    with pytest.raises(outputs.OutputError, match="not a pgverify sweep directory"):
        check_sweep_dir("--out", tmp_path / "other")


def test_write_bytes_atomic_replaces_with_usual_permissions(tmp_path):
    path = tmp_path / "f.bin"
    write_bytes_atomic(path, b"one")
    write_bytes_atomic(path, b"two")
    assert path.read_bytes() == b"two" and (path.stat().st_mode & 0o777) == 0o666 & ~outputs.umask()
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]
