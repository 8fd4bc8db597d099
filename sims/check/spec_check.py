"""Spec checks: does the loss produce the gradient weights of the objective it claims to be?

* ``check_spec_weights``: on random batches (``inputs.batches``; per-token advantages when the
  spec allows them), ``max |w - w_spec| <= SPEC_RTOL · max(|w_spec|, |w|)`` over the valid
  tokens, in float64. On a mismatch, Hypothesis shrinks the input and the card shows the
  smallest failing batch with the expected and actual weights.
* ``check_spec_regions``: the zero-weight intervals over (ratio, sign of A) and the boundedness
  in the ratio (``sims.check.regions``) equal the spec's, on ratios from 1e-6 to 1e6 — regions the
  random batches rarely reach (a missing dual-clip shows only at ρ > c with A < 0).
"""

from __future__ import annotations

from typing import Any, Callable

from sims.check.inputs import Batch, Layout, VariantError, batches, evaluate, rows
from sims.check.regions import format_map, maps_agree, region_map
from sims.check.result import CheckResult, max_mismatch, search
from sims.check.specs import Spec

__all__ = ["SPEC_RTOL", "check_spec_weights", "check_spec_regions", "weight_mismatch"]

SPEC_RTOL = 1e-6


def weight_mismatch(fn: Callable[..., Any], spec: Spec, b: Batch, rtol: float = SPEC_RTOL) -> str | None:
    """None when ``fn``'s weights equal the spec's on ``b``; else expected vs actual, in words."""
    try:
        _, w = evaluate(fn, b)
    except VariantError as exc:
        return str(exc)
    _, w_spec = evaluate(spec.loss, b)
    err, scale = max_mismatch(w, w_spec, b.mask)
    if err <= rtol * scale:
        return None
    return (f"max |w - w_spec| = {err:.3g} > {rtol:g} x {scale:.3g}\n"
            f"expected w = {rows(w_spec, b.mask)}\nactual   w = {rows(w, b.mask)}")


def check_spec_weights(fn: Callable[..., Any], spec: Spec, layout: Layout, *, examples: int, seed: int,
                       rtol: float = SPEC_RTOL) -> CheckResult:
    """The gradient weights equal the spec's on random batches (see the module docstring)."""
    strategy = batches(layout, per_token_adv=spec.advantage_level == "token")
    found = search(strategy, lambda b: weight_mismatch(fn, spec, b, rtol), examples=examples, seed=seed)
    name = f"spec: gradient weights equal {spec.name}'s"
    if found.failed:
        return CheckResult(name, "spec", False,
                           f"smallest failing input found (of {found.tried} tried, then shrunk):\n"
                           f"{found.example.describe()}\n{found.reason}",
                           {"tried": found.tried, "reason": found.reason, "spec": spec.describe(),
                            "input": _batch_data(found.example)})
    return CheckResult(name, "spec", True,
                       f"{found.tried} random batches: max |w - w_spec| <= {rtol:g} x max|w| (float64); "
                       f"spec {spec.describe()}", {"tried": found.tried, "rtol": rtol, "spec": spec.describe()})


def check_spec_regions(fn: Callable[..., Any], spec: Spec, layout: Layout) -> CheckResult:
    """Zero-weight intervals and ratio-boundedness equal the spec's (ρ in [1e-6, 1e6])."""
    name = f"spec: zero-weight regions and ratio bounds equal {spec.name}'s"
    expected = region_map(spec.loss, layout.group_size)
    try:
        actual = region_map(fn, layout.group_size)
    except VariantError as exc:
        return CheckResult(name, "spec", False, f"the loss failed on a one-token batch: {exc}")
    diff = maps_agree(actual, expected)
    data = {"actual": format_map(actual), "expected": format_map(expected)}
    if diff is not None:
        return CheckResult(name, "spec", False, f"{diff}\nactual:\n{format_map(actual)}\nspec:\n"
                           f"{format_map(expected)}", data)
    return CheckResult(name, "spec", True, format_map(actual), data)


def _batch_data(b: Batch) -> dict[str, Any]:
    valid = b.mask > 0
    return {name: [r[m].tolist() for r, m in zip(getattr(b, name), valid)]
            for name in ("logp", "old_logp", "adv")} | {"group_size": b.group_size}
