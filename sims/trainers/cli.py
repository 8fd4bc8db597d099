"""``pgverify conform TRAINER``: check every loss a trainer ships against the spec it claims.

Imports nothing heavy at import time (argparse only); the command imports the adapter, the
trainer and torch when it runs.
"""

from __future__ import annotations

import argparse
import sys

from sims.trainers import TRAINERS

DEFAULT_EXAMPLES = 10


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``conform`` to the ``pgverify`` subcommands."""
    p = sub.add_parser(
        "conform", help="check every loss a trainer ships (verl, TRL, OpenRLHF) and write its conformance matrix",
        description="Enumerate the installed trainer's policy losses and the options that change the objective, "
                    "check each against the registry objective its documentation or paper names (pgverify check: "
                    "contract, spec and property sections), and print the conformance matrix (Markdown). Exit 0 "
                    "when the matrix was written (whatever its verdicts), 2 on a usage problem (trainer not "
                    "installed or untested version, unknown --loss or --config, unusable --json/--out).")
    p.add_argument("trainer", choices=TRAINERS, help="the trainer whose installed package is checked")
    p.add_argument("--loss", action="append", metavar="NAME",
                   help="only this loss (the trainer's name, e.g. vanilla, dapo, PolicyLoss); repeatable")
    p.add_argument("--config", action="append", metavar="KEY=VALUE",
                   help="an adapter knob (e.g. clip_ratio_high=0.28); the error lists them; repeatable")
    p.add_argument("--json", metavar="FILE", help="write the matrix as JSON (schema: sims/trainers/_core.py)")
    p.add_argument("--out", metavar="DIR",
                   help="write DIR/TRAINER.json and DIR/TRAINER.md (DIR is created when its parent exists)")
    p.add_argument("--examples", type=int, default=DEFAULT_EXAMPLES,
                   help=f"random inputs per randomised check (default {DEFAULT_EXAMPLES})")
    p.add_argument("--seed", type=int, default=0, help="seed of the input search (default 0)")
    p.add_argument("--jobs", type=int, default=None,
                   help="check cases in this many worker processes (default: the core count; the matrix does not "
                        "depend on it)")
    p.add_argument("--allow-untested", action="store_true",
                   help="check a trainer version the adapter was not written against")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=_cmd_conform)


def _cmd_conform(args: argparse.Namespace) -> int:
    import importlib
    import os
    import time

    from sims import outputs
    from sims.cache import default_cache_dir
    from sims.check.target import UsageError, parse_assignments
    from sims.trainers._core import (
        ConformError,
        installed_version,
        parse_config,
        run_matrix,
        select,
        to_markdown,
    )

    os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(default_cache_dir() / "hypothesis"))
    adapter = importlib.import_module(f"sims.trainers.{args.trainer}").ADAPTER
    try:
        if args.examples < 1:
            raise ConformError(f"--examples {args.examples} is invalid; allowed: an int >= 1")
        if args.jobs is None:
            args.jobs = os.cpu_count() or 1
        if args.jobs < 1:
            raise ConformError(f"--jobs {args.jobs} is invalid; allowed: an int >= 1")
        config = parse_config(adapter, parse_assignments("--config", args.config))
        if args.json:
            outputs.check_file_path("--json", args.json)
        if args.out:
            parent = os.path.dirname(os.path.abspath(args.out))
            if os.path.exists(args.out) and not os.path.isdir(args.out):
                raise ConformError(f"--out {args.out!r} is not a directory; allowed: a directory, or a new one "
                                   "in an existing directory")
            if not os.path.isdir(parent):
                raise ConformError(f"--out {args.out!r}: its parent {parent!r} does not exist; allowed: a "
                                   "directory, or a new one in an existing directory")
            for name in (f"{args.trainer}.json", f"{args.trainer}.md"):
                if os.path.isdir(args.out):
                    outputs.check_file_path("--out", os.path.join(args.out, name))
        version = installed_version(adapter, allow_untested=args.allow_untested)
        try:
            importlib.import_module(adapter.import_check)
            cases = adapter.cases(config)
        except ImportError as exc:
            raise ConformError(f"{adapter.trainer} {version} is installed but its loss code cannot be imported "
                               f"({type(exc).__name__}: {exc}); install its minimal CPU set with: "
                               f"{adapter.install}") from exc
        select(cases, args.loss)
    except (ConformError, UsageError, outputs.OutputError) as exc:
        sys.stderr.write(f"pgverify conform: error: {exc}\n")
        return 2
    say = (lambda _m: None) if args.quiet else (lambda m: sys.stderr.write(f"  {m}\n"))
    start = time.perf_counter()
    doc = run_matrix(adapter, version=version, config=config, losses=args.loss, examples=args.examples,
                     seed=args.seed, jobs=args.jobs, progress=say)
    text = to_markdown(doc)
    sys.stdout.write(text)
    if args.json:
        outputs.write_json_atomic(args.json, doc)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        outputs.write_json_atomic(os.path.join(args.out, f"{args.trainer}.json"), doc)
        outputs.write_text_atomic(os.path.join(args.out, f"{args.trainer}.md"), text)
    c = doc["counts"]
    say(f"{adapter.trainer} {version}: {c['conforms']} conform, {c['differs']} differ, {c['not applicable']} not "
        f"applicable, {c['error']} errors ({time.perf_counter() - start:.0f} s)")
    return 0
