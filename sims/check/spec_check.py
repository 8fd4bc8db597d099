"""Spec checks: does the loss produce the gradient weights of the objective it claims to be?

* ``check_spec_weights``: ``max |w - w_spec| <= SPEC_RTOL · max(|w_spec|, |w|)`` over the valid
  tokens, in float64, on random batches (``inputs.batches``; per-token advantages when the spec
  allows them) and, when they all pass, on the fixed targeted family of ``sims.check.targeted``
  (rows sweeping the mean log-ratio and mean KL across common sequence-gate thresholds: the same
  batches at every seed, so a sequence-level gate is found at every seed). Random first, so an
  ordinary mismatch gets Hypothesis' shrunk counterexample; a targeted mismatch shows the failing
  batch, reduced to one group when one fails alone. Both show the expected and actual weights.
* ``check_spec_regions``: the structural zero-weight intervals, the intervals where w/A < 0 and
  the boundedness in the ratio over (ratio, sign of A, base probability) (``sims.check.regions``)
  equal the spec's, on log-ratios in [-31, 31] — regions the random batches rarely reach (a
  missing dual-clip shows only at ρ > c with A < 0). Float64 underflow is not compared.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from sims.check.inputs import Batch, Layout, VariantError, batches, evaluate, rows
from sims.check.regions import format_map, maps_agree, region_map
from sims.check.result import CheckResult, max_mismatch, search
from sims.check.specs import Spec
from sims.check.targeted import (
    describe_failure,
    first_failure,
    sequence_gate_batches,
    simplify_targeted,
)

__all__ = ["SPEC_RTOL", "check_spec_weights", "check_spec_regions", "weight_mismatch"]

SPEC_RTOL = 1e-6


def weight_mismatch(fn: Callable[..., Any], spec: Spec, b: Batch, rtol: float = SPEC_RTOL,
                    dtype: torch.dtype = torch.float64) -> str | None:
    """None when ``fn``'s weights equal the spec's on ``b``; else expected vs actual, in words.

    Token by token, ``|w - w_spec| <= rtol · max|w_spec| + sensitivity``, where the sensitivity is
    how much the spec's own weight moves when the log-probs move by the rounding of the loss's
    dtype (``input_sensitivity``): the loss cannot be asked to resolve more. In float64 it is of
    order 1e-15; in float32/bfloat16 it covers a weight near a clip bound or gate that the dtype's
    rounding of the log-ratio moves a token across, and the cancellation in ``1 - e^{-x}`` at tiny
    log-ratios.
    """
    try:
        _, w = evaluate(fn, b)
    except VariantError as exc:
        return str(exc)
    _, w_spec = evaluate(spec.loss, b)
    err, scale = max_mismatch(w, w_spec, b.mask)
    if err <= rtol * scale:
        return None  # the allowance below only loosens: not needed
    slack = input_sensitivity(spec, b, w_spec, dtype)
    excess = ((w - w_spec).abs() - slack)[b.mask > 0]
    if float(excess.max()) <= rtol * scale:
        return None
    loose = int(((w - w_spec).abs() > rtol * scale)[b.mask > 0].sum()) - int((excess > rtol * scale).sum())
    note = (f" ({loose} more token(s) differ by less than the {str(dtype).replace('torch.', '')} rounding "
            "of their log-probs allows)") if loose else ""
    return (f"max |w - w_spec| = {err:.3g} > {rtol:g} x {scale:.3g} plus the input rounding allowance{note}\n"
            f"expected w = {rows(w_spec, b.mask)}\nactual   w = {rows(w, b.mask)}")


def input_sensitivity(spec: Spec, b: Batch, w_spec: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Per token, the largest change of the spec's weight when every log-prob (new, old, rollout)
    moves by ±δ, δ = 8 units in the last place of ``dtype`` at the token's magnitude (at least 1):
    about the rounding a loss computing in ``dtype`` applies to its log-ratios."""
    eps = torch.finfo(dtype).eps
    delta = lambda x: 8 * eps * torch.maximum(x.abs(), torch.ones_like(x))  # noqa: E731
    out = torch.zeros_like(w_spec)
    for moved in ("logp", "old_logp"):
        for sign in (1.0, -1.0):
            x = getattr(b, moved)
            _, w_moved = evaluate(spec.loss, b.with_(**{moved: torch.clamp(x + sign * delta(x), max=0.0)}))
            out = torch.maximum(out, (w_moved - w_spec).abs())
    return out


def check_spec_weights(fn: Callable[..., Any], spec: Spec, layout: Layout, *, examples: int, seed: int,
                       rtol: float = SPEC_RTOL) -> CheckResult:
    """The gradient weights equal the spec's on ``examples`` random batches, then on the targeted
    family (see the module docstring); in ``layout.round_to`` precision."""
    failure = lambda b: weight_mismatch(fn, spec, b, rtol, layout.round_to)  # noqa: E731
    name = f"spec: gradient weights equal {spec.name}'s"
    strategy = batches(layout, per_token_adv=spec.advantage_level == "token")
    found = search(strategy, failure, examples=examples, seed=seed)
    if found.failed:
        return CheckResult(name, "spec", False,
                           f"smallest failing input found (of {found.tried} tried, then shrunk):\n"
                           f"{found.example.describe()}\n{found.reason}",
                           {"tried": found.tried, "reason": found.reason, "spec": spec.describe(),
                            "input": _batch_data(found.example)})
    targeted = [layout.finish(b) for b in sequence_gate_batches(layout)]
    hit = first_failure(targeted, failure)
    tried = found.tried + (len(targeted) if hit is None else hit[0] + 1)
    if hit is not None:
        index, batch = hit
        example = simplify_targeted(batch, failure)
        reason = failure(example)
        return CheckResult(name, "spec", False,
                           f"{found.tried} random batches passed; "
                           f"{describe_failure(index, len(targeted), example is not batch)}\n"
                           f"{example.describe()}\n{reason}",
                           {"tried": tried, "targeted": len(targeted), "reason": reason,
                            "spec": spec.describe(), "input": _batch_data(example)})
    return CheckResult(name, "spec", True,
                       f"{found.tried} random + {len(targeted)} targeted batches: max |w - w_spec| <= {rtol:g} x "
                       f"max|w| ({str(layout.round_to).replace('torch.', '')} inputs); spec {spec.describe()}",
                       {"tried": tried, "targeted": len(targeted), "rtol": rtol, "spec": spec.describe()})


def check_spec_regions(fn: Callable[..., Any], spec: Spec, layout: Layout, rtol: float = 1e-6) -> CheckResult:
    """Zero-weight and w/A < 0 intervals and ratio-boundedness equal the spec's at every base
    probability (log ρ in [-31, 31]; ``sims.check.regions``), interval ends and maxima to ``rtol``
    relative (the loss dtype's tolerance)."""
    name = f"spec: zero-weight regions and ratio bounds equal {spec.name}'s"
    float64 = layout.round_to == torch.float64
    expected = region_map(spec.loss, layout.group_size, detect_underflow=float64)
    try:
        actual = region_map(fn, layout.group_size, detect_underflow=float64)
    except VariantError as exc:
        return CheckResult(name, "spec", False, f"the loss failed on a one-token batch: {exc}")
    diff = maps_agree(actual, expected, rtol)
    show = lambda rm: format_map(rm, penalty=spec.is_penalty)  # noqa: E731
    data = {"actual": show(actual), "expected": show(expected)}
    if diff is not None:
        if spec.is_penalty:
            diff = diff.replace("A > 0: ", "").replace("A < 0: ", "").replace("ρ", "π/π_ref")
        return CheckResult(name, "spec", False, f"{diff}\nactual:\n{show(actual)}\nspec:\n{show(expected)}", data)
    return CheckResult(name, "spec", True, show(actual), data)


def _batch_data(b: Batch) -> dict[str, Any]:
    return b.as_json()
