"""``pgverify report``: run every experiment, decide every claim, write the report directory.

The directory holds ``REPORT.md`` (ledger, published results, one section per experiment with its
figure and summary), ``<experiment>.png``, ``<experiment>.csv`` (tidy tables), ``claims.json``
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
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from sims.claims import ClaimVerdict, decide, published
from sims.experiments import EXPERIMENTS, config_for
from sims.experiments._common import LEVEL, Estimate, Result


def experiment_seed(seed: int, name: str) -> int:
    """The seed experiment ``name`` runs with: stable, distinct per experiment."""
    return int(seed) * 100_003 + zlib.crc32(name.encode()) % 100_000


def run_experiments(scale: str, *, seed: int = 0, device: str = "cpu", names=None,
                    progress: bool = False, overrides: dict[str, Any] | None = None) -> dict[str, Result]:
    """Run the experiments (all, or ``names``) at ``scale``; ``overrides`` maps a name to a config."""
    from tqdm.auto import tqdm

    names = list(names or EXPERIMENTS)
    out = {}
    bar = tqdm(names, desc="experiments", disable=not progress, file=sys.stderr)
    for name in bar:
        bar.set_postfix_str(name)
        module = EXPERIMENTS[name]
        cfg = (overrides or {}).get(name) or config_for(name, scale)
        kwargs = {"seed": experiment_seed(seed, name), "device": device}
        if name == "dynamics" and progress:
            kwargs["progress"] = lambda jobs: tqdm(jobs, desc="  training runs", leave=False, file=sys.stderr)
        out[name] = module.run(cfg, **kwargs)
    return out


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


def provenance(scale: str, seed: int, device: str, results: dict[str, Result], seconds: float) -> dict[str, Any]:
    """Where the numbers come from: commit, versions, machine, seeds, configs."""
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
        "torch_threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
                     "sympy": sympy.__version__, "pandas": pandas.__version__, "matplotlib": matplotlib.__version__},
        "confidence_level": LEVEL,
        "seconds": round(seconds, 1),
        "configs": {name: jsonable(res.config) for name, res in results.items()},
    }


def _md_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    import pandas as pd

    return pd.DataFrame(rows, columns=columns).to_markdown(index=False)


def render_markdown(results: dict[str, Result], ledger: list[ClaimVerdict], pubs: list[dict], prov: dict) -> str:
    """REPORT.md's text."""
    out = [
        "# pgverify report",
        "",
        f"Generated by `pgverify report` ({prov['scale']} scale, seed {prov['seed']}, device {prov['device']}, "
        f"commit `{(prov['git_commit'] or 'unknown')[:12]}`{' + local changes' if prov['git_dirty'] else ''}, "
        f"{prov['created']}, {prov['seconds']} s). Never edited by hand. Intervals are {int(LEVEL * 100)}% "
        "confidence intervals; exact numbers come from enumeration and carry none. Provenance: "
        "[provenance.json](provenance.json); the ledger as JSON: [claims.json](claims.json).",
        "",
        "## Claims ledger",
        "",
        "Verdicts follow from the parts (sims/claims.py): all parts hold → holds; some fail → partly; "
        "all fail → fails; none fails but some are undecided → inconclusive.",
        "",
        _md_table([{"id": c.id, "claim": c.claim, "verdict": f"**{c.verdict}**", "summary": c.summary}
                   for c in ledger], ["id", "claim", "verdict", "summary"]),
        "",
    ]
    for c in ledger:
        out += [f"### {c.id}: {c.verdict}", "", f"*{c.claim}*", ""]
        for p in c.parts:
            mark = {True: "holds", False: "fails", None: "undecided"}[p.holds]
            out.append(f"- **{mark}** — {p.text}. {p.evidence}.")
        out += ["", "Figures: " + ", ".join(f"[{f}]({f})" for f in c.figures), ""]
    n_agree = sum(p["agrees"] for p in pubs)
    out += ["## Published results reproduced", "",
            f"{n_agree} of {len(pubs)} agree (|ours − published| ≤ tolerance, or the published value lies in our interval).", "",
            _md_table([{"result": p["name"], "published": f"{p['published']:.6g}",
                        "ours": str(Estimate(p["ours"], p["low"], p["high"])), "tolerance": f"{p['tolerance']:.2g}",
                        "agrees": "yes" if p["agrees"] else "**no**", "source": p["source"]} for p in pubs],
                      ["result", "published", "ours", "tolerance", "agrees", "source"]), ""]
    out += ["## Experiments", ""]
    for name, res in results.items():
        module = EXPERIMENTS[name]
        doc = (module.__doc__ or "").strip().split("\n\n")
        out += [f"### {module.TITLE}", "", " ".join(doc[0].split()), "",
                f"![{name}]({name}.png)", "", f"Data: [{name}.csv]({name}.csv). Summary:", "", "```",
                json.dumps(jsonable(res.summary), indent=1, ensure_ascii=False)[:6000], "```", ""]
    return "\n".join(out)


def write_report(out_dir: str | os.PathLike, results: dict[str, Result], *, scale: str, seed: int, device: str,
                 seconds: float, before_swap: Callable[[Path], None] | None = None) -> list[ClaimVerdict]:
    """Write the report directory atomically (see the module doc); returns the ledger."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    ledger = decide(results)
    pubs = published(results)
    prov = provenance(scale, seed, device, results, seconds)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for name, res in results.items():
            res.table.to_csv(tmp / f"{name}.csv", index=False)
            EXPERIMENTS[name].plot(res, tmp / f"{name}.png")
        (tmp / "claims.json").write_text(json.dumps([jsonable(c.as_dict()) for c in ledger], indent=1, ensure_ascii=False))
        (tmp / "published.json").write_text(json.dumps(jsonable(pubs), indent=1, ensure_ascii=False))
        (tmp / "provenance.json").write_text(json.dumps(prov, indent=1, ensure_ascii=False))
        (tmp / "REPORT.md").write_text(render_markdown(results, ledger, pubs, prov))
        if before_swap is not None:
            before_swap(tmp)
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}-{time.time_ns()}"
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ledger


def build_report(out_dir, *, scale: str = "full", seed: int = 0, device: str = "cpu",
                 progress: bool = False) -> list[ClaimVerdict]:
    """Run everything at ``scale`` and write ``out_dir``; returns the ledger."""
    start = time.perf_counter()
    results = run_experiments(scale, seed=seed, device=device, progress=progress)
    return write_report(out_dir, results, scale=scale, seed=seed, device=device,
                        seconds=time.perf_counter() - start)
