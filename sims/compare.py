"""``pgverify compare NAME_OR_TARGET... [--theory T] [--advantage NAME] [--agg NAME] [--param ...]
[--out DIR] [--quick] [--device D] [--seed S]``: a comparison report for the objectives you choose.

Each positional is a registry objective name (``pgverify list``, plugins included) or a user target
``path.py:function`` (a torch loss ``fn(logp, old_logp, adv, mask, **params)`` that aggregates with
``--agg``); ``--theory path.py:function`` gives the derivation of the (single) user target. The
experiments are run by ``sims.comparison`` and the report is written atomically to ``--out``.
This module imports nothing heavy (``add_parser`` only).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(sub: Any) -> None:
    from sims.cli import _seed

    p = sub.add_parser(
        "compare", help="compare registry objectives and your own loss side by side in a report",
        description="Run the experiments that apply to a per-token objective (bias and variance versus T, the "
                    "sequence-ratio weight, the gradient-survival map, length bias, difficulty weighting under "
                    "--advantage, a short training run) for every objective named, registry names and your "
                    "targets alike, and write a report (REPORT.md, PNG, CSV, JSON, provenance) to --out. "
                    "Exit code 2 for a usage error, 3 when an experiment failed (the report says which).")
    p.add_argument("objectives", nargs="+", metavar="NAME_OR_TARGET",
                   help="a registry objective (pgverify list) or path/to/loss.py:function")
    p.add_argument("--theory", metavar="FILE.py:FUNCTION",
                   help="the derivation of the user target (theory.api), for the symbolic survival map")
    p.add_argument("--advantage", default="grpo", metavar="NAME",
                   help="advantage estimator for the difficulty and training experiments (default grpo)")
    p.add_argument("--agg", default="seq-mean-token-mean", metavar="NAME",
                   help="aggregation of the baselines and the one your target implements (default "
                        "seq-mean-token-mean)")
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="a keyword setting of the user target (repeatable)")
    p.add_argument("--theory-param", action="append", metavar="NAME=VALUE",
                   help="a setting of the derivation given with --theory (repeatable)")
    p.add_argument("--out", default="compare", metavar="DIR",
                   help="output directory: new, empty or a previous report (default compare/)")
    p.add_argument("--quick", action="store_true", help="the quick sweeps (same as --scale quick)")
    p.add_argument("--scale", choices=("tiny", "quick", "full"), default=None,
                   help="sweep size: tiny (a smoke run, seconds), quick, full (default full, or quick with --quick)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    p.add_argument("--seed", type=_seed, default=0, help="base seed (default 0)")
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args: argparse.Namespace) -> int:
    from sims import outputs
    from sims.check.target import UsageError

    if args.quick and args.scale not in (None, "quick"):
        sys.stderr.write(f"pgverify compare: error: --quick and --scale {args.scale} disagree; allowed: one of them\n")
        return 2
    try:
        outputs.check_report_dir("--out", args.out)
    except outputs.OutputError as exc:
        sys.stderr.write(f"pgverify compare: error: {exc}\n")
        return 2
    from sims.cli import _device_error

    error = _device_error("compare", args.device)
    if error:
        sys.stderr.write(error)
        return 2
    from sims.comparison import build_comparison, resolve

    try:
        plan = resolve(args.objectives, theory=args.theory, advantage=args.advantage, agg=args.agg,
                       params=args.param, theory_params=args.theory_param)
    except UsageError as exc:
        sys.stderr.write(f"pgverify compare: error: {exc}\n")
        return 2
    scale = args.scale or ("quick" if args.quick else "full")
    try:
        sections = build_comparison(plan, args.out, scale=scale, seed=args.seed, device=args.device, progress=True)
    except outputs.OutputError as exc:
        sys.stderr.write(f"pgverify compare: error: {exc}\n")
        return 2
    sys.stdout.write(f"wrote {args.out}/REPORT.md: {', '.join(o.label for o in plan.objectives)}\n")
    failed = [s for s in sections if s.failed]
    for s in failed:
        sys.stderr.write(f"pgverify compare: internal error in experiment {s.name}: {s.notes[0]}\n")
    return 3 if failed else 0
