"""``pgverify report``: run every experiment, decide every claim, write the report directory.

The directory holds ``REPORT.md`` (ledger with findings and every part's evidence, published results,
one section per experiment with its figures, their captions and its summary as tables),
``<experiment>.png`` and ``<experiment>_<suffix>.png`` (every figure of ``figures(result)``), ``<experiment>.csv`` (tidy tables), ``claims.json``
(the ledger: id, verdict, summary, evidence), ``published.json`` and ``provenance.json`` (git
commit, versions, device, seed, scale, every config).

Writes are atomic: everything goes to a temporary sibling directory first; only when it is
complete is the old directory moved aside, the new one renamed into place, and the old one
removed. An interrupted run leaves the previous report as it was.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from sims.claims import ClaimVerdict, ledger_rows, method_markdown, part_finding, published
from sims.claims import ledger as decide_ledger
from sims.experiments import EXPERIMENTS, config_for
from sims.experiments._common import LEVEL, Estimate, Result
from sims.experiments._plotting import write
from sims.malloc import describe as describe_malloc

if TYPE_CHECKING:
    from sims.sweeps.executor import Executor, TaskError


def experiment_seed(seed: int, name: str) -> int:
    """The seed experiment ``name`` runs with: stable, distinct per experiment."""
    return int(seed) * 100_003 + zlib.crc32(name.encode()) % 100_000


COST_ORDER = ("lm_dynamics", "dynamics", "survival", "sgs", "difficulty", "bias_variance", "kl_estimators",
              "gspo_weight", "length_bias")
"""The order experiments are submitted to a pool (longest first at full scale, measured
2026-12-01 on the idle machine: 247 (283 with the warm starts not cached), 165, 76, 27, 15, 13, 7, 6, 2 s), so the longest does not start last. Scheduling
only: every experiment is a pure function of its config and seed."""


def run_experiment(item: tuple[str, Any, int, str]) -> tuple[str, Result | TaskError]:
    """One experiment as an executor cell (``sims.sweeps.executor``): ``item`` is
    ``(name, config, seed, device)``; returns ``(name, Result)`` with ``Result.seconds`` set, or
    ``(name, TaskError)`` with the traceback when the experiment raised (never raises itself)."""
    import traceback

    from sims.sweeps.executor import TaskError

    name, cfg, seed, device = item
    start = time.perf_counter()
    try:
        result = EXPERIMENTS[name].run(cfg, seed=seed, device=device)
    except Exception as exc:  # noqa: BLE001 (returned to the driver, which names the experiment)
        return name, TaskError(f"{type(exc).__name__}: {exc}", traceback.format_exc())
    return name, dataclasses.replace(result, seconds=time.perf_counter() - start)


class ExperimentError(RuntimeError):
    """An experiment raised in a worker; the message names it and carries its traceback."""


def run_experiments(scale: str, *, seed: int = 0, device: str = "cpu", names=None,
                    progress: bool = False, overrides: dict[str, Any] | None = None,
                    executor: Executor | None = None) -> dict[str, Result]:
    """Run the experiments (all, or ``names``) at ``scale``; ``overrides`` maps a name to a config.
    Each ``Result.seconds`` is its wall time.

    ``executor``: None runs them here one after the other; otherwise each experiment is one cell
    of that executor (``sims.sweeps.executor``: a local process pool or Ray tasks), submitted in
    ``COST_ORDER``. The results do not depend on which (each experiment is a pure function of its
    config and seed; tested bit-identical). An experiment that raises in a worker raises
    ``ExperimentError`` here.

    ``progress``: a tqdm bar on stderr when it is a terminal; otherwise one line per experiment
    with its elapsed time ("[3/9] survival done in 12.3 s"), so logs of CI and nohup runs are not
    silent for minutes."""
    names = list(names or EXPERIMENTS)
    items = {name: (name, (overrides or {}).get(name) or config_for(name, scale), experiment_seed(seed, name), device)
             for name in names}
    tty = progress and sys.stderr.isatty()
    if progress and not tty:
        where = "" if executor is None else f" on {executor.name} ({executor.workers} workers)"
        sys.stderr.write(f"pgverify: running {len(names)} experiments at {scale} scale{where}\n")
        sys.stderr.flush()
    bar = None
    if tty:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(names), desc="experiments", file=sys.stderr)
    out: dict[str, Result] = {}

    def finished(name: str, result: Result) -> None:
        out[name] = result
        if bar is not None:
            bar.update(1)
        elif progress:
            sys.stderr.write(f"[{len(out)}/{len(names)}] {name} done in {result.seconds:.1f} s\n")
            sys.stderr.flush()

    if executor is None:
        for name in names:
            if bar is not None:
                bar.set_postfix_str(name)
            start = time.perf_counter()
            _, cfg, exp_seed, dev = items[name]
            kwargs: dict[str, Any] = {"seed": exp_seed, "device": dev}
            if name == "dynamics" and bar is not None:
                kwargs["progress"] = lambda jobs: tqdm(jobs, desc="  training runs", leave=False, file=sys.stderr)
            result = EXPERIMENTS[name].run(cfg, **kwargs)
            finished(name, dataclasses.replace(result, seconds=time.perf_counter() - start))
    else:
        from sims.sweeps.executor import TaskError

        order = sorted(names, key=lambda n: COST_ORDER.index(n) if n in COST_ORDER else len(COST_ORDER))
        for index, value in executor.map_unordered(run_experiment, [items[n] for n in order]):
            if isinstance(value, TaskError):  # a worker died: every unfinished cell of the pool fails with it
                unfinished = [n for n in order if n not in out]
                raise ExperimentError(f"a worker of the {executor.name} backend stopped ({value.error}) while "
                                      f"{len(unfinished)} experiments were unfinished: {', '.join(unfinished)}; "
                                      "the report was not written (rerun, or use --workers 1)")
            name, result = value
            if isinstance(result, TaskError):
                raise ExperimentError(f"experiment {name} failed on {executor.name}: {result.error}"
                                      + (f"\n{result.traceback}" if result.traceback else ""))
            finished(name, result)
    if bar is not None:
        bar.close()
    return {name: out[name] for name in names}


def jsonable(x: Any) -> Any:
    """``x`` as JSON-ready data: Estimates and dataclasses as dicts, numpy scalars as Python
    numbers, non-finite floats as strings."""
    if isinstance(x, Estimate):
        return x.as_dict()
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: jsonable(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return str(x)
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return repr(x)


def provenance(scale: str, seed: int, device: str, results: dict[str, Result], seconds: float,
               backend: dict[str, Any] | None = None) -> dict[str, Any]:
    """Where the numbers come from: commit, versions, machine, seeds, configs, how long each
    experiment took and where it ran (``backend``: name and workers; default this process)."""
    import matplotlib
    import pandas
    import scipy
    import sympy
    import torch

    def git(*args):
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                                  cwd=Path(__file__).resolve().parent).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    dev = device
    if device.startswith("cuda") and torch.cuda.is_available():
        dev = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain")),
        "command": " ".join(["pgverify", *sys.argv[1:]]) if sys.argv and "pgverify" in sys.argv[0] else None,
        "scale": scale, "seed": seed, "device": dev,
        "experiment_seeds": {name: experiment_seed(seed, name) for name in results},
        "python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "malloc": describe_malloc(),
        "versions": {"torch": torch.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
                     "sympy": sympy.__version__, "pandas": pandas.__version__, "matplotlib": matplotlib.__version__},
        "confidence_level": LEVEL,
        "seconds": round(seconds, 1),
        "experiment_seconds": {name: None if res.seconds is None else round(res.seconds, 1)
                               for name, res in results.items()},
        "backend": backend or {"name": "in-process", "workers": 1},
        "configs": {name: jsonable(res.config) for name, res in results.items()},
    }


def _cell(x: Any) -> str:
    """A table cell: an Estimate with its interval, a float to 4 significant digits, a list as
    prose; never a Python repr. Pipes are escaped so Markdown keeps the columns."""
    if isinstance(x, Estimate):
        out = str(x)
    elif isinstance(x, bool) or isinstance(x, np.bool_):
        out = "yes" if x else "no"
    elif isinstance(x, (float, np.floating)):
        out = f"{float(x):.4g}"
    elif isinstance(x, (int, np.integer)):
        out = str(int(x))
    elif x is None:
        out = "—"
    elif isinstance(x, (list, tuple)):
        out = ", ".join(_cell(v) for v in x) if x else "—"
    elif isinstance(x, dict):
        out = "; ".join(f"{k}: {_cell(v)}" for k, v in x.items())
    else:
        out = str(x)
    return out.replace("|", "\\|").replace("\n", " ")


def _md_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    import pandas as pd

    frame = pd.DataFrame([{c: _cell(r.get(c)) for c in columns} for r in rows], columns=[_cell(c) for c in columns])
    return frame.to_markdown(index=False, disable_numparse=True)


def _is_leaf(x: Any) -> bool:
    return not isinstance(x, dict) or isinstance(x, Estimate)


def summary_tables(summary: dict[str, Any], title: str = "") -> list[tuple[str, str]]:
    """``summary`` as Markdown tables: (heading, table) pairs. Leaves at one level form a
    quantity/value table; a dict of leaves is a key/value table; a dict of dicts of leaves is a
    grid (the longer key set down the rows); deeper dicts recurse with the key in the heading."""
    out: list[tuple[str, str]] = []
    leaves = {k: v for k, v in summary.items() if _is_leaf(v)}
    if leaves:
        out.append((title, _md_table([{"quantity": k, "value": v} for k, v in leaves.items()], ["quantity", "value"])))
    for key, v in summary.items():
        if _is_leaf(v):
            continue
        head = f"{title} / {key}" if title else str(key)
        if all(_is_leaf(x) for x in v.values()):
            out.append((head, _md_table([{"key": k, "value": x} for k, x in v.items()], ["key", "value"])))
        elif all(isinstance(x, dict) and all(_is_leaf(y) for y in x.values()) for x in v.values()):
            outer = list(v)
            inner = list(dict.fromkeys(k for x in v.values() for k in x))
            if len(inner) > len(outer):  # the longer key set down the rows
                rows = [{"": i, **{o: v[o].get(i) for o in outer}} for i in inner]
                out.append((head, _md_table(rows, ["", *outer])))
            else:
                rows = [{"": o, **{i: v[o].get(i) for i in inner}} for o in outer]
                out.append((head, _md_table(rows, ["", *inner])))
        else:
            out += summary_tables(v, head)
    return out


_MARK = {True: "holds", False: "fails", None: "undecided"}


def _figure_links(stems: tuple[str, ...], captions: dict[str, str]) -> str:
    files = [f for stem in stems for f in captions if f == stem or f.startswith(stem.removesuffix(".png") + "_")]
    return ", ".join(f"[{f}]({f})" for f in dict.fromkeys(files)) or ", ".join(f"[{f}]({f})" for f in stems)


def _robust_cell(r: dict[str, Any] | None) -> str:
    if r is None:
        return ""
    return "stable" if r["status"] == "stable" else "fragile: " + "; ".join(r["flips"])


def render_markdown(results: dict[str, Result], ledger: list[ClaimVerdict], pubs: list[dict], prov: dict,
                    captions: dict[str, dict[str, str]] | None = None,
                    robust: dict[str, dict[str, Any]] | None = None) -> str:
    """REPORT.md's text; ``captions`` maps an experiment to {figure file: caption} (every figure
    the report directory holds); ``robust`` the ledger's robustness records (rule 12)."""
    robust = robust or {}
    captions = captions or {name: {f"{name}.png": ""} for name in results}
    all_captions = {f: c for caps in captions.values() for f, c in caps.items()}
    out = [
        "# pgverify report",
        "",
        f"Generated by `pgverify report` ({prov['scale']} scale, seed {prov['seed']}, device {prov['device']}, "
        f"commit `{(prov['git_commit'] or 'unknown')[:12]}`{' + local changes' if prov['git_dirty'] else ''}, "
        f"{prov['created']}, {prov['seconds']} s). Never edited by hand. Intervals are {int(LEVEL * 100)}% "
        "confidence intervals, written value [low, high]; exact numbers come from enumeration and carry none. "
        "Provenance: [provenance.json](provenance.json); the ledger as JSON: [claims.json](claims.json).",
        "",
        "## Method",
        "",
        method_markdown(),
        "",
        "## Claims ledger",
        "",
        "Verdicts follow from the parts (sims/claims.py, rule 10): every part holds → holds; every part fails → "
        "fails; every part undecided → inconclusive; otherwise partly. A part is undecided when its interval "
        "straddles the minimal effect δ, when no setup resolves δ, or (at quick scale) when only the full sweep can "
        "decide it. Robustness (rule 12): each verdict re-decided with every δ halved and doubled and on each "
        "independent half of the samples and seeds; stable when nothing flips it. The finding names the parts that "
        "fail or are undecided, with the leading evidence; every part's full evidence follows below.",
        "",
        _md_table([{"id": c.id, "claim": c.claim, "verdict": f"**{c.verdict}**",
                    "robustness": _robust_cell(robust.get(c.id)), "finding": c.finding}
                   for c in ledger], ["id", "claim", "verdict", "robustness", "finding"]),
        "",
    ]
    for c in ledger:
        out += [f"### {c.id}: {c.verdict}", "", f"*{c.claim}*", "", f"**Finding.** {c.finding}.", ""]
        for p in c.parts:
            note = (" The interval straddles the decision boundary, so this part is left undecided."
                    if p.holds is None else "")
            words = p.text if p.holds is None else part_finding(p)
            out.append(f"- **{_MARK[p.holds]}** — {words}. Evidence: {p.evidence}.{note}")
        out += ["", "Figures: " + _figure_links(c.figures, all_captions), ""]
    n_agree = sum(p["agrees"] for p in pubs)
    n_unres = sum(p.get("agreement") == "unresolved" for p in pubs)
    n_dis = len(pubs) - n_agree - n_unres
    out += ["## Published results reproduced", "",
            f"{n_agree} of {len(pubs)} agree, {n_dis} disagree, {n_unres} unresolved. A reproduction agrees when our interval, widened on each side by the "
            "published value's rounding (half a unit in its last printed digit: the rounding column), contains the "
            "published value; an exact reproduction agrees when it equals the value within that rounding. No other "
            "tolerance is used. A Monte Carlo interval wider than ±10% of the value (RESOLVES) cannot reproduce it and "
            "is marked unresolved, never agreeing.", "",
            _md_table([{"result": p["name"], "published": p.get("printed", f"{p['published']:.6g}"),
                        "ours": Estimate(p["ours"], p["low"], p["high"]), "rounding": f"{p['tolerance']:.2g}",
                        "agrees": {"agrees": "yes", "disagrees": "**no**", "unresolved": "**unresolved**"}[
                            p.get("agreement", "agrees" if p["agrees"] else "disagrees")], "basis": p.get("basis", ""),
                        "source": p["source"]} for p in pubs],
                      ["result", "published", "ours", "rounding", "agrees", "basis", "source"]), ""]
    out += ["## Experiments", ""]
    number = 0
    for name, res in results.items():
        module = EXPERIMENTS[name]
        doc = (module.__doc__ or "").strip().split("\n\n")
        out += [f"### {module.TITLE}", "", " ".join(doc[0].split()), ""]
        for fname, caption in captions.get(name, {}).items():
            number += 1
            out += [f"![Figure {number}: {fname}]({fname})", "", f"**Figure {number}** (`{fname}`). {caption}", ""]
        out += [f"Data: [{name}.csv]({name}.csv). Summary (the numbers the ledger reads):", ""]
        for head, table in summary_tables(res.summary):
            if head:
                out += [f"*{head}*", ""]
            out += [table, ""]
    return "\n".join(out)


def write_figures(name: str, result: Result, directory: Path) -> dict[str, str]:
    """Every figure of experiment ``name`` into ``directory``; returns {file name: caption}."""
    module = EXPERIMENTS[name]
    if hasattr(module, "figures"):
        return write(module.figures(result), directory)
    written = module.plot(result, directory / f"{name}.png")  # an experiment without captions
    return dict(written) if isinstance(written, dict) else {f"{name}.png": ""}


def _own_files(previous: Path) -> set[str]:
    """The names a previous report wrote itself: the list in its ``provenance.json`` (``files``),
    or, for a report written before that list existed, the report's fixed names and every
    ``<experiment>.csv`` / ``<experiment>*.png`` of the experiments it records."""
    try:
        prov = json.loads((previous / "provenance.json").read_text())
    except (OSError, ValueError):
        prov = {}
    if isinstance(prov.get("files"), list):
        return set(prov["files"])
    names = set(prov.get("configs") or EXPERIMENTS)
    return {p.name for p in previous.iterdir() if p.name in FIXED_FILES
            or (p.suffix == ".csv" and p.stem in names)
            or (p.suffix == ".png" and any(p.stem == n or p.stem.startswith(n + "_") for n in names))}


FIXED_FILES = ("REPORT.md", "claims.json", "published.json", "provenance.json")


def _carry_foreign(previous: Path, tmp: Path) -> set[str]:
    """Everything in the previous report that the report did not write itself — another
    command's output (``pgverify conform --out reports``, a subdirectory or its two files) or a
    user's file — is copied into the new report instead of being removed with the old one; only
    the report's own files are ever replaced. Returns the names carried."""
    if not previous.is_dir():
        return set()
    own = _own_files(previous)
    carried = set()
    for entry in previous.iterdir():
        if entry.name in own:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, tmp / entry.name, symlinks=True)
        else:
            shutil.copy2(entry, tmp / entry.name, follow_symlinks=False)
        carried.add(entry.name)
    return carried


def write_report(out_dir: str | os.PathLike, results: dict[str, Result], *, scale: str, seed: int, device: str,
                 seconds: float, before_swap: Callable[[Path], None] | None = None,
                 backend: dict[str, Any] | None = None) -> list[ClaimVerdict]:
    """Write the report directory atomically (see the module doc); returns the ledger. ``out_dir``
    must be new, empty or a previous report (``sims.outputs.check_report_dir``; ``OutputError``
    otherwise, before anything is written), and its parent must exist."""
    from sims.outputs import atomic_dir, check_report_dir

    check_report_dir("--out", out_dir)
    ledger, robust = decide_ledger(results, scale)
    pubs = published(results)
    prov = provenance(scale, seed, device, results, seconds, backend)
    with atomic_dir(out_dir) as tmp:
        carried = _carry_foreign(Path(out_dir), tmp)
        captions = {}
        for name, res in results.items():
            res.table.to_csv(tmp / f"{name}.csv", index=False)
            captions[name] = write_figures(name, res, tmp)
        (tmp / "claims.json").write_text(json.dumps(jsonable(ledger_rows(ledger, robust)), indent=1, ensure_ascii=False))
        (tmp / "published.json").write_text(json.dumps(jsonable(pubs), indent=1, ensure_ascii=False))
        (tmp / "REPORT.md").write_text(render_markdown(results, ledger, pubs, prov, captions, robust))
        prov["files"] = sorted({p.name for p in tmp.iterdir()} - carried | {"provenance.json"})
        (tmp / "provenance.json").write_text(json.dumps(prov, indent=1, ensure_ascii=False))  # last: the marker
        if before_swap is not None:
            before_swap(tmp)
    return ledger


def build_report(out_dir, *, scale: str = "full", seed: int = 0, device: str = "cpu",
                 progress: bool = False, executor: Executor | None = None) -> list[ClaimVerdict]:
    """Run everything at ``scale`` (here, or as cells of ``executor``: ``run_experiments``) and
    write ``out_dir``; returns the ledger."""
    start = time.perf_counter()
    results = run_experiments(scale, seed=seed, device=device, progress=progress, executor=executor)
    backend = None if executor is None else {"name": executor.name, "workers": executor.workers}
    return write_report(out_dir, results, scale=scale, seed=seed, device=device,
                        seconds=time.perf_counter() - start, backend=backend)
