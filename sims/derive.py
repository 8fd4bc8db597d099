"""``pgverify derive FILE.py:FUNCTION [--param name=value ...] [--json]``: what a derivation says.

For a user's derivation ``losses(seq, params)`` (``theory.api``) it prints

* the derived per-token weight ``w_t = −∂(Σ_s L_s)/∂ℓ_t`` (stop-gradients removed), for a
  one-token sequence as ``w(ρ, A)`` and for a two-token sequence (``w_1``: does token 1's weight
  read token 2? a sequence ratio does), in plain text and LaTeX, settings as symbols;
* the regions over (ρ, sign A) at the numeric settings (``theory.regions.weight_regions``): per
  cell between the breakpoints, whether the weight is zero, bounded or unbounded, and its form;
* the on-policy reduction: w(1, A) = c·A for every A means REINFORCE scaled by c
  (``theory.api.on_policy_scale``);
* the nearest registry objective (its default config): the one whose one-token weight is closest
  on ρ ∈ [1e-2, 1e2] (401 log-spaced points) × A = ±1, by mean |w − w_reg| / mean |w_reg| (an
  objective whose weight reads the old log-prob itself is evaluated at ℓ_old = −1); with the
  difference ``w − w_reg`` simplified by sympy when that finishes within ``SIMPLIFY_SECONDS`` and
  otherwise (and always) where they differ on the grid.

Module import is light (no torch, sympy): ``add_parser`` only.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from typing import Any

SIMPLIFY_SECONDS = 3.0
GRID_POINTS = 401


def add_parser(sub: Any) -> None:
    p = sub.add_parser("derive", help="derive your objective's per-token weight, regions and on-policy reduction",
                       description="Derive the per-token gradient weight of your derivation losses(seq, params) "
                                   "(theory.api): the weight in text and LaTeX, the zero / bounded / unbounded "
                                   "regions over (ratio, sign of A), the on-policy reduction and the nearest "
                                   "registry objective. Exit code 2 for a usage error.")
    p.add_argument("target", metavar="FILE.py:FUNCTION", help="the derivation, e.g. examples/topr_theory.py:losses")
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="a setting of the derivation (repeatable); overrides its declared default")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_cmd_derive)


def _cmd_derive(args: argparse.Namespace) -> int:
    from sims.check.target import UsageError, parse_assignments

    try:
        params = parse_assignments("--param", args.param)
        result = derive(args.target, params)
    except UsageError as exc:
        sys.stderr.write(f"pgverify derive: error: {exc}\n")
        return 2
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_derivation(result))
    return 0


def _sstr(e) -> str:
    import sympy as sp

    return sp.sstr(e)


def _cell_text(lo, hi) -> str:
    import sympy as sp

    if lo == 0 and hi is sp.oo:
        return "every ρ"
    if lo == 0:
        return f"ρ < {_sstr(hi)}"
    if hi is sp.oo:
        return f"ρ > {_sstr(lo)}"
    return f"{_sstr(lo)} < ρ < {_sstr(hi)}"


def derive(target: str, params: dict[str, Any]) -> dict[str, Any]:
    """Everything ``pgverify derive`` reports, as JSON-ready data (``UsageError`` on bad input)."""
    import sympy as sp

    from sims.check.target import UsageError
    from sims.variants import load_theory
    from theory.api import (
        ADV,
        RHO,
        Sequence,
        derive_weights,
        on_policy_scale,
        ratio_weight,
        symbols,
        weight_regions,
    )

    theory = load_theory(target, params)
    entry, values = theory.entry, theory.params
    shown = symbols(entry, values)
    w1 = ratio_weight(entry, shown)
    seq = Sequence.make(2)
    w2 = [sp.simplify(w) for w in derive_weights(entry, seq, shown)]
    coupled = bool(w2[0].free_symbols & {seq.logp[1], seq.old_logp[1]})
    try:
        regions = weight_regions(entry, values)
    except (TypeError, ValueError, NotImplementedError) as exc:
        raise UsageError(f"theory {target!r}: the regions cannot be derived at {values}: {exc}") from exc
    scale = on_policy_scale(entry, values)
    at_one = sp.simplify(ratio_weight(entry, {k: _num(v) for k, v in values.items()}).subs(RHO, 1))
    out: dict[str, Any] = {
        "target": target, "reference": entry.reference, "params": values,
        "advantage_level": theory.advantage_level,
        "weight": {"text": _sstr(w1), "latex": sp.latex(w1), "of": "w(rho, A), one-token sequence"},
        "weights_two_tokens": [{"text": _sstr(w), "latex": sp.latex(w)} for w in w2],
        "sequence_coupled": coupled,
        "breakpoints": [_sstr(b) for b in entry.breakpoints({k: _num(v) for k, v in values.items()})],
        "regions": [{"sign": "A>0" if r.sign > 0 else "A<0", "ratio": _cell_text(r.lo, r.hi),
                     "lo": _sstr(r.lo), "hi": _sstr(r.hi),
                     "verdict": "zero" if r.zero else ("bounded" if r.bounded else "unbounded"),
                     "weight_over_abs_A": _sstr(r.weight), "left_limit": _sstr(r.left), "right_limit": _sstr(r.right)}
                    for r in regions],
        "on_policy": {"reinforce": scale is not None, "scale": None if scale is None else _sstr(scale),
                      "weight_at_rho_1": _sstr(at_one)},
    }
    out["nearest"] = nearest_registry(entry, values)
    del ADV
    return out


def _num(v: Any) -> Any:
    import sympy as sp

    return sp.nsimplify(v, rational=True) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


def _registry_weights() -> list[tuple[str, Any, dict[str, Any]]]:
    """(name, theory entry, default params) of every registry objective whose default one-token
    weight is a function of (ρ, A) alone."""
    import dataclasses

    from sims.registry import OBJECTIVES
    from theory._core import AGG_FIELDS

    out = []
    for name, spec in OBJECTIVES.items():
        if spec.theory is None or spec.inputs:
            continue
        cfg = spec.config_cls()
        params = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name not in AGG_FIELDS}
        out.append((name, spec.theory, params))
    return out


def _raw_ratio_weight(entry: Any, params: dict[str, Any]):
    """``theory._core.ratio_weight`` without its final ``simplify`` (seconds per registry entry):
    the one-token weight with ℓ = ℓ_old + log ρ, for numeric evaluation."""
    import sympy as sp

    from theory._core import ADV, RHO, Sequence, derive_weights

    seq = Sequence.make(1)
    (w,) = derive_weights(entry, seq, params)
    return w.subs(seq.adv[0], ADV).subs(seq.logp[0], seq.old_logp[0] + sp.log(RHO)).subs(seq.old_logp[0], -1)


def _grid_values(w, rho, signs):
    import numpy as np
    import sympy as sp

    from theory._core import ADV, RHO, lambdify

    free = w.free_symbols - {RHO, ADV}
    if free:
        return None
    fn = lambdify([RHO, ADV], w)
    try:
        with np.errstate(all="ignore"):
            vals = [[float(fn(float(r), float(a))) for r in rho] for a in signs]
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None
    del sp
    return np.array(vals)


@functools.lru_cache(maxsize=1)
def _registry_grids() -> tuple[tuple[str, dict[str, Any], Any, Any], ...]:
    """(name, default params, one-token weight, its values on the grid) of every comparable registry
    objective; computed once per process (the registry's defaults do not change)."""
    import numpy as np

    rho = np.logspace(-2, 2, GRID_POINTS)
    out = []
    for name, reg_entry, params in _registry_weights():
        try:
            reg_expr = _raw_ratio_weight(reg_entry, {k: _num(v) for k, v in params.items()})
        except Exception:  # noqa: BLE001 (an entry that needs symbols we cannot give: not comparable)
            continue
        reg = _grid_values(reg_expr, rho, (1.0, -1.0))
        if reg is not None and np.isfinite(reg).all():
            out.append((name, params, reg_expr, reg))
    return tuple(out)


def nearest_registry(entry: Any, values: dict[str, Any]) -> dict[str, Any] | None:
    """The registry objective (default config) nearest to the derivation's one-token weight, and
    how they differ (module docstring)."""
    import numpy as np

    from sims.registry import OBJECTIVES
    from theory._core import ratio_weight

    rho = np.logspace(-2, 2, GRID_POINTS)
    signs = (1.0, -1.0)
    mine_expr = ratio_weight(entry, {k: _num(v) for k, v in values.items()})
    mine = _grid_values(_raw_ratio_weight(entry, {k: _num(v) for k, v in values.items()}), rho, signs)
    if mine is None:
        return None
    best = None
    for name, params, reg_expr, reg in _registry_grids():
        dist = float(np.mean(np.abs(mine - reg))) / max(float(np.mean(np.abs(reg))), 1e-300)
        if best is None or dist < best[0]:
            best = (dist, name, params, reg_expr, reg)
    if best is None:
        return None
    dist, name, params, reg_expr, reg = best
    reg_entry = OBJECTIVES[name].theory
    reg_expr = ratio_weight(reg_entry, {k: _num(v) for k, v in params.items()})
    where = []
    for i, label in enumerate(("A>0", "A<0")):
        differ = ~np.isclose(mine[i], reg[i], rtol=1e-9, atol=1e-12)
        if differ.any():
            idx = np.flatnonzero(differ)
            runs = np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1)
            where += [f"{label}: {rho[r[0]]:.4g} <= ρ <= {rho[r[-1]]:.4g}" for r in runs]
    return {"name": name, "config": {k: v for k, v in params.items()}, "mean_rel_difference": dist,
            "registry_weight": _sstr(reg_expr), "difference": _simplified(mine_expr - reg_expr),
            "differs_on_grid": where or ["nowhere on the grid"], "grid": f"ρ in [0.01, 100] ({GRID_POINTS} points), A = ±1"}


def _simplified(expr) -> str | None:
    """``sympy.simplify(expr)`` as text if it finishes within ``SIMPLIFY_SECONDS`` (main thread,
    SIGALRM), else None."""
    import signal
    import threading

    import sympy as sp

    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        return None

    def stop(signum, frame):
        raise TimeoutError

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, SIMPLIFY_SECONDS)
    try:
        return _sstr(sp.piecewise_fold(sp.simplify(expr)))
    except TimeoutError:
        return None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def format_derivation(d: dict[str, Any]) -> str:
    """The text form of ``derive``'s result."""
    lines = [f"derivation {d['target']}" + (f"  ({d['reference']})" if d["reference"] else ""),
             (f"settings: {', '.join(f'{k}={v!r}' for k, v in d['params'].items()) or 'none'}; "
              f"advantage level: {d['advantage_level']}"), "",
             "per-token weight w = -dL/dlogp (stop-gradients removed), one-token sequence:",
             f"  w(rho, A) = {d['weight']['text']}", f"  LaTeX: {d['weight']['latex']}",
             "two-token sequence:"]
    for i, w in enumerate(d["weights_two_tokens"], 1):
        lines.append(f"  w_{i} = {w['text']}")
    lines.append("  token 1's weight reads token 2 (a sequence ratio or mean)" if d["sequence_coupled"] else
                 "  each token's weight reads its own token only")
    lines += ["", f"regions over (rho, sign A) (breakpoints: {', '.join(d['breakpoints']) or 'none'}):"]
    for r in d["regions"]:
        lines.append(f"  {r['sign']}, {r['ratio']}: {r['verdict']}; w/|A| = {r['weight_over_abs_A']}")
    op = d["on_policy"]
    lines += ["", "on-policy (rho = 1): " + (f"REINFORCE times {op['scale']} (w = {op['weight_at_rho_1']})"
                                           if op["reinforce"] else
                                           f"not REINFORCE up to a scale: w(1, A) = {op['weight_at_rho_1']}")]
    n = d.get("nearest")
    if n:
        lines += ["", f"nearest registry objective: {n['name']} ({', '.join(f'{k}={v!r}' for k, v in n['config'].items())})",
                  f"  its weight: {n['registry_weight']}",
                  f"  mean |w - w_reg| / mean |w_reg| on {n['grid']}: {n['mean_rel_difference']:.4g}",
                  f"  w - w_reg = {n['difference']}" if n["difference"] is not None else
                  f"  w - w_reg: sympy did not simplify it within {SIMPLIFY_SECONDS:g} s",
                  "  differs on: " + "; ".join(n["differs_on_grid"])]
    return "\n".join(lines) + "\n"
