"""``pgverify sweep SPEC.toml [--backend local|ray] [--address ADDR] [--workers N] [--out DIR]
[--resume] [--device D]`` and ``pgverify sweep --example``.

Everything is checked before any cell runs, each problem an exit code 2 naming the option or
spec key, the value and what is allowed: the spec (``sims.sweeps.spec``, then every cell's configs),
the output directory (``sims.sweeps.store.check_sweep_dir``), the device, the backend (Ray
installed, the address reachable, GPUs on the cluster for ``--device cuda``). Exit code 0 when
every cell finished, 1 when some failed (named on stderr, with their configs and tracebacks),
130/143 when stopped by SIGINT/SIGTERM (finished cells kept, no table written).

This module imports nothing heavy: the command imports torch and the rest when it runs.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def _error(message: str) -> int:
    sys.stderr.write(f"pgverify sweep: error: {message}\n")
    return 2


def parse_workers(text: str) -> int:
    """An argparse ``type`` for ``--workers``: an int >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--workers {text!r} is not an integer; allowed: an integer >= 1")
    if value < 1:
        raise argparse.ArgumentTypeError(f"--workers {value} is out of range; allowed: an integer >= 1")
    return value


def add_parser(sub: Any) -> None:
    """Add the ``sweep`` subcommand to the ``pgverify`` parser's subparsers."""
    p = sub.add_parser(
        "sweep", help="run a grid of cells (objectives x settings x tasks x seeds) on a local pool or Ray",
        description="Run the grid a TOML spec names (see --example and the README's Sweeps section): every cell "
                    "a pure function of its config and seed, stored in DIR/cells as it finishes (a rerun into the "
                    "same DIR skips finished cells), then the tidy table (Parquet and CSV), SUMMARY.md, figures and "
                    "provenance (sweep.json). Exit codes: 0 every cell finished, 1 some cells failed (named), 2 usage "
                    "error, 130/143 stopped by SIGINT/SIGTERM (finished cells kept).")
    p.add_argument("spec", nargs="?", metavar="SPEC.toml", help="the sweep spec")
    p.add_argument("--example", action="store_true", help="print a small commented example spec and exit")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local: a process pool on this machine (default); ray: Ray tasks (pip install pgverify[ray])")
    p.add_argument("--address", metavar="ADDR", default=None,
                   help="with --backend ray: a running cluster's head (HOST:PORT, ray://HOST:PORT or auto); "
                        "default: start a local Ray instance")
    p.add_argument("--workers", type=parse_workers, default=None, metavar="N",
                   help="processes (local) or CPUs of the local Ray instance (default: the number of cores)")
    p.add_argument("--out", default="sweep", metavar="DIR",
                   help="output directory: new, empty or an earlier sweep's (finished cells reused; default sweep/)")
    p.add_argument("--resume", action="store_true",
                   help="continue the sweep in DIR (it must be an earlier sweep's directory); finished cells are "
                        "skipped with or without this flag")
    p.add_argument("--device", default="cpu", help="torch device of the cells, e.g. cpu or cuda (default cpu); with "
                                                   "ray, each cuda cell requests one GPU")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=command)


def check_backend(args: argparse.Namespace) -> str | None:
    """A usage-error message for the backend options (``args.backend``, ``address``, ``workers``), or
    None. Shared by ``pgverify sweep`` and ``pgverify report``."""
    if args.backend == "local":
        if args.address is not None:
            return f"--address {args.address!r} needs --backend ray; allowed: --backend ray --address ADDR"
        return None
    try:
        import ray  # noqa: F401
    except ImportError:
        return "--backend ray needs Ray, which is not installed; allowed: pip install 'pgverify[ray]', or --backend local"
    from sims.sweeps.executor import check_ray_address, ray_address

    address, source = ray_address(args.address)
    if address is not None:
        if args.workers is not None:
            return (f"--workers sets the CPUs of a local Ray instance; with {source} set the cluster's resources "
                    f"decide; allowed: {source.split(' ')[0]} without --workers")
        return check_ray_address(address, label=source)
    return None


def make_executor(args: argparse.Namespace, workers: int):
    """The executor ``args`` names (``backend``, ``address``, ``device``) with ``workers``, or a
    usage-error message when Ray cannot start or lacks a GPU for a CUDA device."""
    from sims.sweeps.executor import LocalExecutor, RayExecutor

    if args.backend == "local":
        return LocalExecutor(workers)
    from sims.sweeps.executor import ray_address

    address, source = ray_address(args.address)
    try:
        executor = RayExecutor(address, None if address else workers, args.device)
    except Exception as exc:  # noqa: BLE001 (whatever ray.init raises, the run cannot start: a usage error)
        where = f"{source} {address!r}" if address else "a local Ray instance"
        return f"--backend ray with {where}: Ray could not start or connect ({type(exc).__name__}: {exc})"
    if args.device.startswith("cuda") and executor.gpus == 0:
        executor.close()
        return f"--device {args.device!r}: the Ray cluster has no GPU; allowed: cpu, or a cluster with GPUs"
    return executor


def command(args: argparse.Namespace) -> int:
    if args.example:
        from sims.sweeps.example import EXAMPLE

        if args.spec is not None:
            return _error(f"--example prints the example spec; SPEC {args.spec!r} cannot be combined with it")
        sys.stdout.write(EXAMPLE)
        return 0
    if args.spec is None:
        return _error("SPEC.toml is missing; allowed: a spec file (pgverify sweep --example prints one)")
    try:
        with open(args.spec, "rb") as fh:
            text = fh.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return _error(f"SPEC {args.spec!r} cannot be read ({exc}); allowed: a UTF-8 TOML file")
    from sims import outputs
    from sims.sweeps.store import check_sweep_dir

    try:
        check_sweep_dir("--out", args.out, resume=args.resume)
    except outputs.OutputError as exc:
        return _error(str(exc))
    message = check_backend(args)
    if message:
        return _error(message)
    from sims.cli import backend_device_error

    device_message = backend_device_error("sweep", args)
    if device_message:
        sys.stderr.write(device_message)
        return 2
    from sims.sweeps.cells import expand
    from sims.sweeps.spec import SpecError, parse_spec

    try:
        spec = parse_spec(text)
        cells = expand(spec, device=args.device)
    except SpecError as exc:
        return _error(f"{args.spec}: {exc}")
    from sims.sweeps.executor import default_workers

    workers = args.workers or default_workers()
    executor = make_executor(args, min(workers, len(cells)) if args.backend == "local" else workers)
    if isinstance(executor, str):
        return _error(executor)
    from sims.sweeps.run import run_sweep

    try:
        outcome = run_sweep(spec, cells, args.out, executor, device=args.device, address=args.address,
                            progress=not args.no_progress)
    except KeyboardInterrupt as exc:  # SIGINT, or SIGTERM through sims.outputs.handle_signals
        signal_name = "SIGTERM" if isinstance(exc, outputs.Terminated) else "SIGINT"
        sys.stderr.write(f"pgverify sweep: interrupted ({signal_name}); the finished cells are kept in "
                         f"{args.out}/cells and no table was written; rerun to continue\n")
        return outputs.exit_code(exc)
    sys.stdout.write(f"wrote {args.out}/table.parquet, table.csv, SUMMARY.md, figures/: {outcome.n_cells} cells "
                     f"({outcome.skipped} already finished, {outcome.ran} run, {len(outcome.failures)} failed)\n")
    if outcome.failures:
        for f in outcome.failures:
            sys.stderr.write(f"\npgverify sweep: cell {f.key[:16]} failed: {f.error}\nconfig: {f.config}\n"
                             f"{f.traceback}")
        sys.stderr.write(f"\npgverify sweep: {len(outcome.failures)} of {outcome.n_cells} cells failed: "
                         + ", ".join(f.key[:16] for f in outcome.failures)
                         + f" (details in {args.out}/failed.json; a rerun retries them)\n")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m sims.sweeps ARGS`` = ``pgverify sweep ARGS``: the same command and exit codes,
    with the same SIGINT/SIGTERM handling as ``sims.cli.main``."""
    from sims import outputs

    parser = argparse.ArgumentParser(prog="pgverify")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    with outputs.handle_signals():
        try:
            args = parser.parse_args(["sweep", *(sys.argv[1:] if argv is None else argv)])
            return args.func(args)
        except KeyboardInterrupt as exc:
            sys.stderr.write(outputs.stop_message(exc))
            return outputs.exit_code(exc)
