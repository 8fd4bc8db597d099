"""The ``pgverify`` command line.

``pgverify list [--json]`` prints every registered objective, advantage estimator, aggregation,
KL estimator, group filter and algorithm with its parts and reference. ``pgverify claims [--quick]
[--seed S] [--device D] [--json FILE]`` runs the experiments and prints the claims ledger
(``--from DIR``: the ledger of an existing report, nothing re-run); ``pgverify report [--out DIR]
[--quick] [--device D] [--seed S]`` writes the full report (``sims.report``); ``pgverify bench``
measures the engines; ``pgverify check TARGET [--spec NAME] ...`` regression-tests a loss
(``sims.check``). Usage errors exit with code 2 and a message naming the problem; output paths
are checked before any work (``sims.outputs``); SIGINT and SIGTERM stop a command with one line on
stderr and exit code 130 or 143, nothing half-written.

Imports are lazy: ``pgverify --help`` and ``--version`` load no torch, sympy, numba or pandas.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
from typing import Any, Callable, Sequence

from sims import outputs

# The names ``check --spec`` accepts, kept here so that ``--help`` needs no registry (torch);
# tests/sims/test_cli.py asserts it equals sims.check.specs.SPEC_NAMES.
CHECK_SPEC_NAMES = ("reinforce", "seq_is", "ppo_clip", "gspo", "gspo_token", "gmpo", "cispo", "sapo", "sgs_cispo",
                    "dro", "dppo_tv", "dppo_kl", "kl_cov", "clip_cov", "ppo_clip_rollout_is", "kl")
# The sweep scales (``report --scale``), kept here for the same reason; equals sims.experiments.SCALES (tested).
SCALE_CHOICES = ("tiny", "quick", "full", "large")


# Subcommands that live in their own room: each module defines ``add_parser(sub)``, which adds its
# subparser and sets ``func``. Such a module imports nothing heavy at import time (``--help`` stays
# fast); its command imports torch and the rest inside ``func``.
COMMAND_MODULES: tuple[str, ...] = ("sims.derive", "sims.compare", "sims.sweeps.cli", "sims.trainers.cli")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pgverify")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
        return "unknown"


def registry_listing() -> dict[str, list[dict[str, Any]]]:
    """Everything ``pgverify list`` shows, as JSON-ready data."""
    from sims.algorithms import ALGORITHMS, describe
    from sims.plugins import PLUGIN_NAMES
    from sims.registry import (ADVANTAGES, AGGREGATIONS, GROUP_FILTERS, KL_ESTIMATORS, OBJECTIVES, PLUGIN_ERRORS,
                               config_dict)

    return {
        "objectives": [
            {"name": s.name, "summary": s.summary, "advantage_level": s.advantage_level,
             "config": config_dict(s.config_cls()), "reference": s.reference,
             "plugin": PLUGIN_NAMES.get(s.name)}
            for s in OBJECTIVES.values()
        ],
        "plugin_errors": [dataclasses.asdict(e) for e in PLUGIN_ERRORS],
        "advantages": [
            {"name": s.name, "summary": s.summary, "config": config_dict(s.config_cls()),
             "reference": s.reference}
            for s in ADVANTAGES.values()
        ],
        "aggregations": [dataclasses.asdict(s) for s in AGGREGATIONS.values()],
        "algorithms": [describe(a) for a in ALGORITHMS.values()],
        "kl_estimators": [dataclasses.asdict(s) for s in KL_ESTIMATORS.values()],
        "group_filters": [
            {"name": s.name, "summary": s.summary, "config": config_dict(s.config_cls()),
             "reference": s.reference}
            for s in GROUP_FILTERS.values()
        ],
    }


def _fmt_config(cfg: dict[str, Any] | None) -> str:
    if not cfg:
        return "-"
    return ", ".join(f"{k}={v!r}" for k, v in cfg.items())


def format_listing(listing: dict[str, list[dict[str, Any]]]) -> str:
    """The human-readable form of ``registry_listing()``."""
    out: list[str] = []

    def section(title: str, rows: list[str]) -> None:
        out.append(f"{title} ({len(rows)})")
        out.extend(rows)
        out.append("")

    section("Objectives", [
        f"  {o['name']:<11} {o['summary']}\n{'':14}config: {_fmt_config(o['config'])}\n"
        f"{'':14}advantage level: {o['advantage_level']}; ref: {o['reference']}"
        + (f"\n{'':14}plugin: {o['plugin']}" if o.get("plugin") else "")
        for o in listing["objectives"]])
    if listing.get("plugin_errors"):
        section("Plugins that could not be loaded (entry point group pgverify.objectives)", [
            f"  {e['entry_point']} = {e['value']}: {e['reason']}" for e in listing["plugin_errors"]])
    section("Advantage estimators  (rewards [G, K] -> advantages [G, K])", [
        f"  {a['name']:<11} {a['summary']}\n{'':14}config: {_fmt_config(a['config'])}; "
        f"ref: {a['reference']}" for a in listing["advantages"]])
    section("Aggregations  (per-token loss L [B, T], mask m -> scalar)", [
        f"  {a['name']:<24} {a['formula']}\n{'':26}ref: {a['reference']}"
        for a in listing["aggregations"]])
    section("KL estimators  (x = logp - ref_logp)", [
        f"  {k['name']:<4} value {k['value']:<16} d/dlogp {k['grad_factor']:<12} {k['summary']}"
        for k in listing["kl_estimators"]])
    section("Group filters", [
        f"  {f['name']:<17} {f['summary']}; config: {_fmt_config(f['config'])}; ref: {f['reference']}"
        for f in listing["group_filters"]])
    section("Algorithms  (advantage + objective + aggregation + filter + KL)", [
        f"  {a['name']:<10} advantage={a['advantage']} objective={a['objective']} "
        f"agg={a['aggregation']} filter={a['group_filter']} "
        f"kl={_fmt_config(a['kl']) if a['kl'] else None}\n"
        f"{'':13}objective config: {_fmt_config(a['objective_config'])}\n"
        f"{'':13}ref: {a['reference']}" + (f"\n{'':13}notes: {a['notes']}" if a["notes"] else "")
        for a in listing["algorithms"]])
    return "\n".join(out).rstrip() + "\n"


def _cmd_list(args: argparse.Namespace) -> int:
    listing = registry_listing()
    if args.json:
        json.dump(listing, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_listing(listing))
    return 0


def backend_device_error(command: str, args: argparse.Namespace) -> str | None:
    """``_device_error`` for a run on this machine (``--backend local`` or a local Ray instance);
    joining a Ray cluster (``--address``) only the device kind is checked here, since the workers'
    devices count. Shared by ``pgverify report`` and ``pgverify sweep``."""
    if args.backend == "local" or args.address is None:
        return _device_error(command, args.device)
    if args.device.split(":")[0] not in ("cpu", "cuda"):
        return f"pgverify {command}: error: --device {args.device!r} is not supported; allowed: cpu, cuda, cuda:N\n"
    return None


def _device_error(command: str, device: str) -> str | None:
    """A usage-error message when ``device`` cannot be used, else None."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        return f"pgverify {command}: error: --device {device!r} is not a torch device; allowed: cpu, cuda, cuda:N\n"
    if dev.type == "cuda" and not torch.cuda.is_available():
        return (f"pgverify {command}: error: --device {device!r} is not available "
                "(torch.cuda.is_available() is False); allowed: cpu\n")
    if dev.type not in ("cpu", "cuda"):
        return f"pgverify {command}: error: --device {device!r} is not supported; allowed: cpu, cuda, cuda:N\n"
    return None


def _usage_error(command: str, message: str) -> int:
    sys.stderr.write(f"pgverify {command}: error: {message}\n")
    return 2


def _read_ledger(command: str, directory: str) -> list[dict[str, Any]] | str:
    """The ledger (claims.json) of the report in ``directory``, or a usage-error message."""
    import os

    path = os.path.join(directory, "claims.json")
    if not os.path.isdir(directory):
        return f"--from {directory!r} is not a directory; allowed: a directory written by pgverify report"
    if not os.path.isfile(path):
        return f"--from {directory!r} has no claims.json; allowed: a directory written by pgverify report"
    try:
        with open(path, encoding="utf-8") as fh:
            ledger = json.load(fh)
        if not (isinstance(ledger, list) and all(isinstance(c, dict) and {"id", "verdict", "summary"} <= set(c)
                                                 for c in ledger)):
            raise ValueError("not a list of claims with id, verdict and summary")
    except (OSError, ValueError) as exc:
        return f"--from {directory!r}: claims.json cannot be read ({exc})"
    return ledger


def _print_ledger(rows: list[dict[str, Any]]) -> None:
    for c in rows:
        claim = (c.get("evidence") or {}).get("claim", "") if isinstance(c.get("evidence"), dict) else ""
        rob = c.get("robustness") or {}
        status = rob.get("status", "")
        if rob.get("flips"):
            status += " (" + "; ".join(rob["flips"]) + ")"
        sys.stdout.write(f"{c['id']}  {c['verdict']:<12} {claim}\n{'':18}{c['summary']}\n"
                         + (f"{'':18}robustness: {status}\n" if status else ""))


def _cmd_claims(args: argparse.Namespace) -> int:
    if args.json:
        try:
            outputs.check_file_path("--json", args.json)
        except outputs.OutputError as exc:
            return _usage_error("claims", str(exc))
    if args.from_dir is not None:
        given = [opt for opt, value in (("--quick", args.quick), ("--seed", args.seed), ("--device", args.device))
                 if value not in (None, False)]
        if given:
            return _usage_error("claims", f"--from reads an existing report; {', '.join(given)} cannot be "
                                          "combined with it")
        ledger = _read_ledger("claims", args.from_dir)
        if isinstance(ledger, str):
            return _usage_error("claims", ledger)
        _print_ledger(ledger)
        if args.json:
            outputs.write_json_atomic(args.json, ledger)
        return 0
    device = args.device or "cpu"
    error = _device_error("claims", device)
    if error:
        sys.stderr.write(error)
        return 2
    from sims.claims import ledger, ledger_rows
    from sims.report import jsonable, run_experiments

    scale = _scale("claims", args)
    if scale is None:
        return 2
    results = run_experiments(scale, seed=args.seed or 0, device=device, progress=True)
    rows = jsonable(ledger_rows(*ledger(results, scale)))
    del results
    _print_ledger(rows)
    if args.json:
        outputs.write_json_atomic(args.json, rows)
    return 0


def _scale(command: str, args: argparse.Namespace) -> str | None:
    """The sweep scale of ``--quick`` / ``--scale`` (default full); None after a usage error when
    both are given and disagree."""
    if args.quick and args.scale not in (None, "quick"):
        _usage_error(command, f"--quick is --scale quick; it cannot be combined with --scale {args.scale}")
        return None
    return "quick" if args.quick else (args.scale or "full")


def _cmd_report(args: argparse.Namespace) -> int:
    from sims.sweeps.cli import check_backend, make_executor

    scale = _scale("report", args)
    if scale is None:
        return 2
    error = backend_device_error("report", args)
    if error:
        sys.stderr.write(error)
        return 2
    try:
        outputs.check_report_dir("--out", args.out)
    except outputs.OutputError as exc:
        return _usage_error("report", str(exc))
    message = check_backend(args)
    if message:
        return _usage_error("report", message)
    from sims.report import ExperimentError, build_report

    executor = None
    try:
        if args.backend == "ray" or (args.workers or 1) > 1:
            from sims.sweeps.executor import default_workers

            executor = make_executor(args, args.workers or default_workers())
            if isinstance(executor, str):
                message, executor = executor, None
                return _usage_error("report", message)
        ledger = build_report(args.out, scale=scale, seed=args.seed, device=args.device, progress=True,
                              executor=executor)
    except outputs.OutputError as exc:  # the directory changed while the experiments ran
        return _usage_error("report", str(exc))
    except ExperimentError as exc:
        sys.stderr.write(f"pgverify report: error: {exc}\n")
        return 3
    finally:
        if executor is not None:
            executor.close()
    counts = {v: sum(c.verdict == v for c in ledger) for v in ("holds", "partly", "fails", "inconclusive")}
    sys.stdout.write(f"wrote {args.out}/REPORT.md: " + ", ".join(f"{n} {v}" for v, n in counts.items()) + "\n")
    return 0


def _int_option(field: str, low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: an int in [low, high) (no upper bound when ``high`` is None); anything
    else is a usage error naming ``field``, the value and what is allowed."""
    allowed = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high})"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{field} {text!r} is not an integer; allowed: {allowed}")
        if value < low or (high is not None and value >= high):
            raise argparse.ArgumentTypeError(f"{field} {value} is out of range; allowed: {allowed}")
        return value
    return parse


_seed = _int_option("seed", 0, 2 ** 31)


def _positive_float(field: str):
    """An argparse type: a finite float > 0, else an error naming ``field``."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{field} {text!r} is not a number; allowed: a float > 0")
        if not (value > 0 and value != float("inf")):
            raise argparse.ArgumentTypeError(f"{field} {value} is out of range; allowed: a finite float > 0")
        return value
    return parse


def _cmd_bench(args: argparse.Namespace) -> int:
    error = _device_error("bench", args.device)
    if error:
        sys.stderr.write(error)
        return 2
    if args.json:
        try:
            outputs.check_file_path("--json", args.json)
        except outputs.OutputError as exc:
            return _usage_error("bench", str(exc))
    from sims.bench import run_bench

    result = run_bench(args.device, quick=args.quick)
    def fmt(value) -> str:
        if isinstance(value, list):
            return ", ".join(fmt(v) for v in value)
        if isinstance(value, dict):
            return "; ".join(f"{k} {v:.2f}" for k, v in value.items())
        return f"{value:,.1f}" if isinstance(value, float) else str(value)

    width = max(len(key) for key in result)
    for key, value in result.items():
        sys.stdout.write(f"{key:<{width}} {fmt(value)}\n")
    if args.json:
        _write_json_atomic(args.json, result)
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    import os

    from sims.cache import default_cache_dir

    # Hypothesis keeps its files (mined constants) under .hypothesis/ in the working directory by
    # default: the user's directory stays untouched
    os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(default_cache_dir() / "hypothesis"))
    from sims.check import (
        Layout,
        UsageError,
        bind_params,
        load_target,
        make_spec,
        run_checks,
    )
    from sims.check.feed import DTYPES, Feed, aliases_for, resolve_names
    from sims.check.runner import CheckInternalError
    from sims.check.target import parse_assignments, parse_factories

    try:
        spec_params = parse_assignments("--spec-param", args.spec_param, dotted=True)
        params = parse_assignments("--param", args.param, dotted=True)
        names = {k: str(v) for k, v in parse_assignments("--arg", args.arg).items()}
        if spec_params and args.spec is None and args.theory is None:
            raise UsageError("--spec-param needs --spec NAME; allowed: --spec NAME --spec-param FIELD=VALUE")
        if args.theory is not None and args.spec is not None:
            raise UsageError("--theory and --spec are both given; allowed: one spec (a registry name or your derivation)")
        if args.theory is not None:
            from sims.variants import theory_spec

            spec = theory_spec(args.theory, spec_params, group_size=args.group_size)
        else:
            spec = None if args.spec is None else make_spec(args.spec, spec_params, group_size=args.group_size)
        raw = load_target(args.target)
        fn = bind_params(raw, params, parse_factories(args.factory))
        feed = Feed(dtype=DTYPES[args.dtype], mask_dtype=args.mask_dtype, adv_shape=args.adv_shape,
                    strict_constants=args.strict_constants,
                    names=resolve_names(fn, names, aliases=aliases_for(spec)))
        if args.json:
            _check_writable("--json", args.json)
    except UsageError as exc:
        sys.stderr.write(f"pgverify check: error: {exc}\n")
        return 2
    kinds = ("contract", "spec", "property") if args.no_profile else ("contract", "spec", "property", "profile")
    progress = (lambda step: sys.stderr.write(f"  {step}\n")) if args.verbose else None
    try:
        report = run_checks(fn, target=args.target, spec=spec, layout=Layout(group_size=args.group_size),
                            examples=args.examples, seed=args.seed, rtol=args.rtol, kinds=kinds, progress=progress,
                            feed=feed, profile_table=not args.no_profile_table)
    except CheckInternalError as exc:
        sys.stdout.write(exc.report.card())
        sys.stderr.write(f"pgverify check: internal error (a bug in pgverify, not in your loss) during "
                         f"{exc.step!r}; please report it with this traceback:\n{exc.traceback}")
        if args.json:
            _write_json_atomic(args.json, exc.report.as_dict() | {"internal_error": {"step": exc.step,
                                                                                   "traceback": exc.traceback}})
        return 3
    sys.stdout.write(report.card(verbose=args.verbose))
    if args.json:
        _write_json_atomic(args.json, report.as_dict())
    return 0 if report.passed else 1


def _check_writable(option: str, path: str) -> None:
    """UsageError unless ``path`` can be written: its parent exists and is writable, and it is not a
    directory (checked before any work; ``sims.outputs.check_file_path``)."""
    from sims.check.target import UsageError

    try:
        outputs.check_file_path(option, path)
    except outputs.OutputError as exc:
        raise UsageError(str(exc)) from None


def _write_json_atomic(path: str, data: Any) -> None:
    """Write JSON to a temporary file beside ``path``, then rename: never a half-written file; the
    usual permissions (``sims.outputs.write_json_atomic``)."""
    outputs.write_json_atomic(path, data)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgverify",
        description="Verify claims about policy-gradient objectives for LLM RL. Exit codes: 0 success, "
                    "1 a check failed (check), 2 usage error, 3 internal error (check), 130/143 stopped "
                    "by SIGINT/SIGTERM.",
    )
    parser.add_argument("--version", action="version", version=f"pgverify {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    p_list = sub.add_parser("list", help="list the registered objectives, estimators, "
                                         "aggregations, KL estimators, filters and algorithms",
                            description="List every registered objective, advantage estimator, aggregation, "
                                        "KL estimator, group filter and algorithm with its config and "
                                        "reference (a second or two).")
    p_list.add_argument("--json", action="store_true", help="print JSON instead of text")
    p_list.set_defaults(func=_cmd_list)
    p_bench = sub.add_parser("bench", help="throughput of the Monte Carlo engine vs a per-sample "
                                           "autograd loop and torch.func.vmap, and the exact engine",
                             description="Measure the sequences per second of the Monte Carlo engine against "
                                         "a per-sample autograd loop and torch.func.vmap(grad), the exact "
                                         "engine's time, the engine on a GRU policy and the peak memory.")
    p_bench.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    p_bench.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    p_bench.add_argument("--quick", action="store_true", help="smaller workloads (a few seconds)")
    p_bench.set_defaults(func=_cmd_bench)
    p_claims = sub.add_parser("claims", help="run the experiments and print the claims ledger C01-C15",
                              description="Run every experiment, decide the claims C01-C15 and print the "
                                          "ledger (verdict and what fails), without writing a report; or, "
                                          "with --from DIR, print the ledger of an existing report.")
    p_claims.add_argument("--quick", action="store_true", help="the quick sweeps (what CI runs); = --scale quick")
    p_claims.add_argument("--scale", choices=SCALE_CHOICES, default=None,
                          help="tiny, quick, full (default) or large (for a GPU or a cluster)")
    p_claims.add_argument("--seed", type=_seed, default=None, help="base seed (default 0)")
    p_claims.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default cpu)")
    p_claims.add_argument("--from", dest="from_dir", metavar="DIR",
                          help="print the ledger of the report in DIR (its claims.json); runs nothing")
    p_claims.add_argument("--json", metavar="FILE", help="also write the ledger as JSON to FILE")
    p_claims.set_defaults(func=_cmd_claims)
    p_report = sub.add_parser("report", help="run every experiment, decide every claim and write the report",
                              description="Run every experiment, decide every claim and write the report "
                                          "directory (REPORT.md, figures, CSV, claims.json, provenance.json). "
                                          "DIR must be new, empty or a previous report, which is replaced "
                                          "atomically; a file or a directory holding other files is refused.")
    p_report.add_argument("--out", default="reports", metavar="DIR",
                          help="output directory: new, empty or a previous report (default reports/)")
    p_report.add_argument("--quick", action="store_true", help="the quick sweeps (what CI runs); = --scale quick")
    p_report.add_argument("--scale", choices=SCALE_CHOICES, default=None,
                          help="tiny, quick, full (default; 7-10 min on 2 CPU cores) or large (the transformer "
                               "dynamics with 128 seeds: for a GPU or a cluster, README 'Scales')")
    p_report.add_argument("--backend", choices=("local", "ray"), default="local",
                          help="where the experiments run, each one a cell: local (this process, or a process "
                               "pool with --workers > 1; default) or ray (Ray tasks; pip install pgverify[ray])")
    from sims.sweeps.cli import parse_workers

    p_report.add_argument("--workers", type=parse_workers, default=None, metavar="N",
                          help="local: processes running experiments side by side (default 1: this process; each "
                               "experiment already uses every core); ray: CPUs of the local Ray instance "
                               "(default: the core count)")
    p_report.add_argument("--address", metavar="ADDR", default=None,
                          help="with --backend ray: a running cluster's head (HOST:PORT, ray://HOST:PORT or auto); "
                               "default: start a local Ray instance")
    p_report.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    p_report.add_argument("--seed", type=_seed, default=0, help="base seed (default 0)")
    p_report.set_defaults(func=_cmd_report)
    p_check = sub.add_parser(
        "check", help="regression-test a loss fn(logp, old_logp, adv, mask): contract, spec, properties, profile",
        description="Check a policy-gradient loss: the contract, its gradient weights against a spec "
                    "(--spec), a property battery, and a profile (aggregation, zero-weight regions, exact "
                    "bias and variance). The loss is fed as trainers feed it: old log-probs and advantages "
                    "without requires_grad, a bool mask, float64 unless --dtype; a trainer's own argument "
                    "names (verl's old_log_prob, log_prob, advantages, response_mask; TRL's "
                    "per_token_logps, completion_mask) are recognised. Exit code 0 if every check passes, "
                    "1 if any fails, 2 for a usage error, 3 for an internal error of pgverify.")
    p_check.add_argument("target", metavar="TARGET",
                         help="path/to/file.py:function or package.module:function")
    p_check.add_argument("--spec", metavar="NAME", help="compare with this registry objective (pgverify list), "
                                                        "'kl' for a KL penalty term, or OBJECTIVE+kl for an "
                                                        "objective plus a KL penalty; one of: "
                                                        + ", ".join(CHECK_SPEC_NAMES) + ", or OBJECTIVE+kl")
    p_check.add_argument("--theory", metavar="FILE.py:FUNCTION",
                         help="use your derivation losses(seq, params) (theory.api) as the spec: its settings and "
                              "agg (default token-mean) via --spec-param")
    p_check.add_argument("--spec-param", action="append", metavar="NAME=VALUE",
                         help="a field of the spec's config, e.g. eps_high=0.28 (repeatable); with OBJECTIVE+kl, "
                              "kl.coef=BETA (required), kl.estimator, kl.agg, kl.reference=third|old")
    p_check.add_argument("--param", action="append", metavar="NAME=VALUE",
                         help="a keyword setting of the target function (repeatable); NAME.FIELD=VALUE sets a "
                              "field of a config argument, e.g. config.clip_ratio=0.2")
    p_check.add_argument("--factory", action="append", metavar="NAME=MODULE:FUNCTION",
                         help="build the config argument NAME as FUNCTION(**its --param NAME.FIELD values) "
                              "(default: a namespace with those attributes)")
    p_check.add_argument("--arg", action="append", metavar="INPUT=PARAMETER",
                         help="pass pgverify's INPUT (logp, old_logp, adv, mask, rollout_logp, global_tokens, "
                              "global_sequences) as the target's PARAMETER (repeatable; trainers' usual names "
                              "are recognised without it)")
    p_check.add_argument("--dtype", choices=("float64", "float32", "bfloat16"), default="float64",
                         help="dtype of the tensors fed to the loss (default float64); the spec tolerance "
                              "follows it unless --rtol")
    p_check.add_argument("--mask-dtype", choices=("bool", "int", "float"), default="bool",
                         help="dtype of the mask fed to the loss (default bool, as trainers pass it)")
    p_check.add_argument("--adv-shape", choices=("token", "sequence"), default="token",
                         help="advantages per token [B, T] (default) or per sequence [B] (TRL)")
    p_check.add_argument("--rtol", type=_positive_float("--rtol"), default=None, metavar="R",
                         help="relative tolerance of the spec weight comparison (default: 1e-6 for float64, "
                              "1e-4 for float32, 5e-2 for bfloat16)")
    p_check.add_argument("--strict-constants", action="store_true",
                         help="also feed old_logp and adv with requires_grad and require zero gradient to them")
    p_check.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    p_check.add_argument("--group-size", type=_int_option("--group-size", 1), default=4, metavar="K",
                         help="rows per group (prompt) in the generated batches (default 4)")
    p_check.add_argument("--examples", type=_int_option("--examples", 1), default=100, metavar="N",
                         help="random inputs per randomised check (default 100)")
    p_check.add_argument("--seed", type=_seed, default=0, help="seed of the input search (default 0)")
    p_check.add_argument("--no-profile", action="store_true",
                         help="skip the profile (aggregation, regions, bias/variance table): faster")
    p_check.add_argument("--no-profile-table", action="store_true",
                         help="skip only the exact bias/variance table (its registry rows are cached on disk "
                              "after the first run)")
    p_check.add_argument("-v", "--verbose", action="store_true",
                         help="print each step to stderr, and every check's full evidence")
    p_check.set_defaults(func=_cmd_check)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pgverify`` console script; returns the exit code. SIGINT and SIGTERM
    stop any command with one line on stderr and exit code 130 or 143 (``sims.outputs``)."""
    with outputs.handle_signals():
        try:
            args = build_parser().parse_args(argv)
            return args.func(args)
        except KeyboardInterrupt as exc:
            sys.stderr.write(outputs.stop_message(exc))
            return outputs.exit_code(exc)


def entry() -> int:
    """The ``pgverify`` console script (and ``python -m sims``): ``main``; after a stop by SIGINT or
    SIGTERM (exit code 130 or 143) both signals are ignored for the rest of the process, so a second
    one — a repeated Ctrl-C, or ``timeout``, which signals the command and then its process group —
    cannot interrupt the interpreter's exit and print a traceback there. It first raises glibc's
    mmap and trim thresholds for this process and its workers (``sims.malloc``)."""
    import signal

    from sims.malloc import retain_freed_memory

    retain_freed_memory()  # pgverify's own process: chunk-sized blocks reused, not re-faulted
    code = main()
    if code in (130, 143):
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(entry())
