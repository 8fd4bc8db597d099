"""Running a sweep: finished cells skipped, the rest through an executor, each stored as it ends.

``run_sweep(spec, cells, directory, executor)``:

1. writes ``sweep.json`` (status ``running``, the spec) so DIR is a sweep directory from now on;
2. loads every finished cell from the store (``sims.sweeps.store``) and runs only the others,
   with a progress bar (cells done / total, ETA) on stderr; finished cells computed by another
   commit are reused too (their key is their config, not the code), with a line on stderr naming
   the commits, and listed in ``sweep.json`` (``reused_from_commits``);
3. stores each cell the moment its result arrives (atomically); a cell that raised, whose worker
   died, or whose worker runs another pgverify version is a failure, reported with its config
   and traceback, and the others go on;
4. when every cell has been tried, writes the tables (``table.parquet``, ``table.csv``), the
   summary (``SUMMARY.md``), the figures (``figures/*.png``), ``failed.json`` when cells failed,
   and ``sweep.json`` with the provenance (status ``complete`` or ``failed``), each file atomically.

An interruption (SIGINT, SIGTERM) stops the executor and writes no table: the cells finished so
far are on disk, and a rerun continues from them.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sims import outputs
from sims.sweeps.cells import FORMAT, Cell, run_cell_safely
from sims.sweeps.executor import Executor, TaskError
from sims.sweeps.provenance import git_commit, package_version, versions
from sims.sweeps.spec import Spec
from sims.sweeps.store import MARKER, CellStore, write_bytes_atomic

__all__ = ["Failure", "SweepOutcome", "run_sweep", "write_outputs"]


@dataclass(frozen=True)
class Failure:
    """A cell that produced no rows: its key, config, error and traceback."""

    key: str
    config: dict[str, Any]
    error: str
    traceback: str

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "config": self.config, "error": self.error, "traceback": self.traceback}


@dataclass
class SweepOutcome:
    """What a sweep did: cells skipped (already finished), run, failed; the table written."""

    n_cells: int
    skipped: int
    ran: int
    failures: list[Failure] = field(default_factory=list)
    table: Any = None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _describe(config: dict[str, Any]) -> str:
    keys = ("objective", "advantage", "policy", "horizon", "vocab", "divergence", "divergence_value",
            "group_size", "replicas", "seed")
    return ", ".join(f"{k}={config[k]!r}" for k in keys)


def _clean(commit: str | None) -> str | None:
    """A commit without its ``-dirty`` mark (uncommitted edits are not told apart)."""
    return None if commit is None else commit.removesuffix("-dirty")


def _result_failure(cell: Cell, result: Any, driver_version: str) -> Failure | None:
    if isinstance(result, TaskError):
        return Failure(cell.key, cell.config, result.error, result.traceback)
    if not result.get("ok"):
        return Failure(cell.key, cell.config, result["error"], result["traceback"])
    if result.get("version") != driver_version:
        return Failure(cell.key, cell.config, f"the worker runs pgverify {result.get('version')}, this driver "
                       f"{driver_version}; install the same version on every node", "")
    return None


def run_sweep(spec: Spec, cells: list[Cell], directory: str | os.PathLike, executor: Executor, *,
              device: str, address: str | None = None, progress: bool = True) -> SweepOutcome:
    """Run the sweep into ``directory`` (module doc); returns what happened."""
    from tqdm import tqdm

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    started, clock = _now(), time.perf_counter()
    base = {"status": "running", "started": started, "format": FORMAT, "spec_text": spec.text,
            "backend": executor.name, "workers": executor.workers, "address": address, "device": device,
            "cells": len(cells)}
    outputs.write_json_atomic(directory / MARKER, base)
    store = CellStore(directory)
    records = {}
    for cell in cells:
        record = store.load(cell.key, cell.config)
        if record is not None:
            records[cell.key] = record
    pending = [cell for cell in cells if cell.key not in records]
    outcome = SweepOutcome(n_cells=len(cells), skipped=len(cells) - len(pending), ran=len(pending))
    driver_version, commit = package_version(), git_commit()
    other = sorted({str(r.get("commit")) for r in records.values() if _clean(r.get("commit")) != _clean(commit)})
    if other:
        sys.stderr.write(f"pgverify sweep: {outcome.skipped} finished cells reused, some computed by other code "
                         f"(commit {', '.join(other)}; this is {commit}); remove {directory}/cells to recompute them\n")
    bar = tqdm(total=len(cells), initial=outcome.skipped, unit="cell", desc="sweep", file=sys.stderr,
               disable=not progress, mininterval=0.5, dynamic_ncols=True)
    try:
        with executor:
            for index, result in executor.map_unordered(run_cell_safely, [c.config for c in pending]):
                cell = pending[index]
                failure = _result_failure(cell, result, driver_version)
                if failure is None:
                    records[cell.key] = store.save(cell.key, cell.config, result, commit=commit)
                else:
                    outcome.failures.append(failure)
                    bar.write(f"pgverify sweep: cell {cell.key[:16]} failed ({_describe(cell.config)}): {failure.error}",
                              file=sys.stderr)
                bar.update(1)
    finally:
        bar.close()
    order = {c.key: c.index for c in cells}
    outcome.failures.sort(key=lambda f: order[f.key])
    provenance = dict(base, status="failed" if outcome.failures else "complete", finished=_now(),
                      wall_seconds=round(time.perf_counter() - clock, 3), commit=commit, versions=versions(),
                      reused_from_commits=other,
                      command=sys.argv, skipped=outcome.skipped, ran=outcome.ran,
                      failed=[f.key for f in outcome.failures],
                      cell_seconds=round(sum(r.get("seconds") or 0.0 for r in records.values()), 3))
    outcome.table = write_outputs(spec, cells, records, directory, provenance, outcome.failures)
    return outcome


def write_outputs(spec: Spec, cells: list[Cell], records: dict[str, dict[str, Any]], directory: Path,
                  provenance: dict[str, Any], failures: list[Failure]):
    """The tables, summary, figures, failures and provenance (module doc, step 4), each atomically;
    figures of an earlier run that this one did not draw are removed. Returns the table."""
    import matplotlib.pyplot as plt

    from sims.experiments._plotting import DPI
    from sims.sweeps.tables import (
        csv_text,
        figures,
        parquet_bytes,
        spec_summary,
        summary_markdown,
        tidy_table,
    )

    table = tidy_table(spec, cells, records)
    write_bytes_atomic(directory / "table.parquet", parquet_bytes(table))
    outputs.write_text_atomic(directory / "table.csv", csv_text(table))
    provenance = dict(provenance, spec=spec_summary(spec))
    outputs.write_text_atomic(directory / "SUMMARY.md", summary_markdown(
        spec, table, n_cells=len(cells), failed=[f.key[:16] for f in failures], provenance=provenance))
    fig_dir = directory / "figures"
    fig_dir.mkdir(exist_ok=True)
    drawn = {}
    for name, fig, caption in figures(spec, table):
        import io

        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=DPI)
        plt.close(fig)
        write_bytes_atomic(fig_dir / name, buffer.getvalue())
        drawn[name] = caption
    for old in fig_dir.glob("*.png"):
        if old.name not in drawn:
            old.unlink()
    failed_path = directory / "failed.json"
    if failures:
        outputs.write_text_atomic(failed_path, json.dumps([f.as_dict() for f in failures], indent=1) + "\n")
    elif failed_path.exists():
        failed_path.unlink()
    outputs.write_json_atomic(directory / MARKER, dict(provenance, figures=drawn))
    return table
