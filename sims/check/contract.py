"""Contract checks: what every loss must do, whatever it computes (DESIGN.md, "User variant").

1. It returns a finite floating 0-d tensor (or ``(loss, diagnostics)`` with a mapping of finite
   values), and gradient reaches ``logp``.
2. Strict only (``--strict-constants``): ``old_logp`` and ``adv`` are constants: fed with
   ``requires_grad``, the gradient with respect to each is exactly zero (``None`` or all zeros) — a
   ratio that is not detached leaks gradient into ``old_logp``. By default they are fed as
   trainers feed them, without ``requires_grad`` (``sims.check.feed``), and this check is not run.
3. It stays finite on extreme but valid inputs: ratios 1e-6 and 1e6, log-probs down to -300 per
   token, every length 1..T in one batch, all single-token sequences, all advantages zero.
4. It is deterministic: the same batch gives bit-identical loss and weights when called twice
   with the global RNGs seeded alike, and when seeded differently (a loss that draws from the
   global RNG, like verl's Clip-Cov ``torch.randperm``, fails here and is named non-deterministic;
   its other checks are still reproducible because the RNGs are re-seeded before every call).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from sims.check.inputs import DTYPE, Batch, Layout, VariantError, assemble, batches, call, evaluate, loss_of, raised
from sims.check.result import CheckResult, randomised_check

__all__ = ["check_returns", "check_constants", "check_determinism", "check_extremes", "extreme_batches"]


def _diagnostics_problem(out: Any) -> str | None:
    if not isinstance(out, tuple):
        return None
    diag = out[1]
    if not isinstance(diag, Mapping):
        return f"diagnostics are a {type(diag).__name__}; allowed: a mapping name -> number"
    for key, value in diag.items():
        try:
            number = float(value.detach()) if isinstance(value, Tensor) else float(value)
        except (TypeError, ValueError, RuntimeError):
            return f"diagnostic {key!r} is {type(value).__name__}, not a number (a 0-d tensor or float)"
        if not math.isfinite(number):
            return f"diagnostic {key!r} = {number} is not finite"
    return None


def _returns_problem(fn: Callable[..., Any], b: Batch) -> str | None:
    logp = b.logp.clone().requires_grad_(True)
    try:
        out = call(fn, b, logp)
        loss = loss_of(out)
    except VariantError as exc:
        return str(exc)
    except Exception as exc:  # the variant's own failure
        return raised(exc)
    if not math.isfinite(float(loss.detach())):
        return f"loss = {float(loss.detach())} is not finite"
    if not loss.requires_grad:
        return "the loss does not depend on logp (no gradient reaches it)"
    return _diagnostics_problem(out)


def check_returns(fn: Callable[..., Any], layout: Layout, *, examples: int, seed: int) -> CheckResult:
    """Contract 1: a finite 0-d floating loss through which gradient reaches logp."""
    return randomised_check("contract: returns a finite 0-d loss that depends on logp", "contract",
                            batches(layout, per_token_adv=False), lambda b: _returns_problem(fn, b),
                            examples=examples, seed=seed,
                            claim="loss finite, 0-d, differentiable in logp; diagnostics (if any) finite")


def _constants_problem(fn: Callable[..., Any], b: Batch) -> str | None:
    logp = b.logp.clone().requires_grad_(True)
    old, adv = (x.clone().requires_grad_(True) for x in (b.old_logp, b.adv))
    rest = [] if b.rollout_logp is None else [b.rollout_logp.clone().requires_grad_(True)]
    try:
        loss = loss_of(fn(logp, old, adv, b.mask.clone(), *rest))
        if not loss.requires_grad:
            return None  # reported by contract 1
        grads = torch.autograd.grad(loss, (old, adv, *rest), allow_unused=True)
    except VariantError as exc:
        return str(exc)
    except Exception as exc:
        return raised(exc)
    for name, g in zip(("old_logp", "adv", "rollout_logp"), grads):
        if g is not None and bool((g != 0).any()):
            idx = tuple((g != 0).nonzero()[0].tolist())
            return (f"d loss / d {name} = {float(g[idx]):.6g} at index {idx} (must be exactly 0: "
                    f"{name} is a constant; detach it)")
    return None


def check_constants(fn: Callable[..., Any], layout: Layout, *, examples: int, seed: int) -> CheckResult:
    """Contract 2 (strict): fed with requires_grad, the gradient to old_logp and adv is exactly zero
    (``fn`` must be adapted with ``Feed(strict_constants=True)``)."""
    return randomised_check("contract: old_logp and adv are constants (zero gradient)", "contract",
                            batches(layout, per_token_adv=False), lambda b: _constants_problem(fn, b),
                            examples=examples, seed=seed, claim="d loss/d old_logp = d loss/d adv = 0 exactly")


def _determinism_problem(make: Callable[[int], Callable[..., Any]], b: Batch) -> str | None:
    """None when three calls (RNG seeds s, s, s + 1) give bit-identical loss and weights."""
    outs = []
    for rng in (0, 0, 1):
        outs.append(evaluate(make(rng), b))
    (l0, w0), (l1, w1), (l2, w2) = outs
    if not (_identical(l0, l1) and _identical_tensors(w0, w1)):
        return (f"two calls on the same batch with the global RNGs seeded alike differ (loss {l0:.10g} vs "
                f"{l1:.10g}, max weight difference {float((w0 - w1).abs().max()):.3g}): the loss is non-deterministic "
                "(state kept between calls, or a non-deterministic kernel)")
    if not (_identical(l0, l2) and _identical_tensors(w0, w2)):
        return (f"the loss depends on the global RNG state: the same batch with the RNGs seeded differently gives "
                f"loss {l0:.10g} vs {l2:.10g}, max weight difference {float((w0 - w2).abs().max()):.3g} "
                "(non-deterministic: it draws from torch/numpy/random's global generator; pass an explicit "
                "generator, or check it knowing its gradient is random)")
    return None


def _identical(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _identical_tensors(a: Tensor, b: Tensor) -> bool:
    """Bit-identical up to NaN == NaN (a NaN weight is the same answer twice)."""
    return bool(((a == b) | (torch.isnan(a) & torch.isnan(b))).all())


def check_determinism(make: Callable[[int], Callable[..., Any]], layout: Layout, *, examples: int,
                      seed: int) -> CheckResult:
    """Contract 4: ``make(rng_seed)`` is the adapted loss with the global RNGs seeded by
    ``rng_seed`` before every call; the same batch must give the same loss and weights for seeds
    0, 0 and 1."""
    return randomised_check("contract: deterministic (same inputs, same loss and weights)", "contract",
                            batches(layout, per_token_adv=False), lambda b: _determinism_problem(make, b),
                            examples=max(1, examples // 4), seed=seed,
                            claim="bit-identical loss and weights on repeated calls, whatever the global RNG state")


def extreme_batches(layout: Layout) -> dict[str, Batch]:
    """Named extreme but valid batches (width ``layout.max_width``; at least 2 groups of K rows,
    and enough rows for every length 1..width)."""
    k, width = layout.group_size, layout.max_width
    b = k * max(2, -(-width // k))
    full = [width] * b
    gen = torch.Generator().manual_seed(12345)
    base = -(0.01 + 5.99 * torch.rand(b, width, generator=gen, dtype=DTYPE))
    signs = torch.where(torch.arange(b) % 2 == 0, 1.0, -1.0).to(DTYPE)
    adv = (signs * (0.5 + torch.rand(b, generator=gen, dtype=DTYPE)))[:, None].expand(b, width)
    big = math.log(1e6)
    alternating = big * torch.where((torch.arange(width)[None, :] + torch.arange(b)[:, None]) % 2 == 0, 1.0, -1.0)

    def with_ratio(log_ratio: Tensor | float, lengths: list[int], a: Tensor = adv, bottom: Tensor = base) -> Batch:
        d = torch.as_tensor(log_ratio, dtype=DTYPE).expand(b, width)
        old = bottom - d.clamp(min=0)
        return layout.finish(assemble(bottom + d.clamp(max=0), old, a, lengths, k,
                                       old.clone() if layout.rollout else None))

    return {
        "all ratios 1e6": with_ratio(big, full),
        "all ratios 1e-6": with_ratio(-big, full),
        "ratios alternating 1e-6 / 1e6": with_ratio(alternating, full),
        "log-probs -300 per token, ratios 1e6": with_ratio(big, full, bottom=torch.full_like(base, -300.0)),
        f"every length 1..{width} in one batch": with_ratio(0.3, [1 + i % width for i in range(b)]),
        "single-token sequences": with_ratio(alternating, [1] * b),
        "all advantages zero": with_ratio(0.3, full, a=torch.zeros_like(adv)),
        "equal advantages within each group": with_ratio(0.3, full, a=torch.ones_like(adv)),
    }


def check_extremes(fn: Callable[..., Any], layout: Layout) -> CheckResult:
    """Contract 3: loss, weights and diagnostics stay finite on ``extreme_batches``."""
    failures: dict[str, str] = {}
    for label, b in extreme_batches(layout).items():
        problem = _returns_problem(fn, b)
        if problem is None:
            try:
                _, w = evaluate(fn, b)
            except VariantError as exc:
                problem = str(exc)
            else:
                if not bool(torch.isfinite(w).all()):
                    bad = tuple((~torch.isfinite(w)).nonzero()[0].tolist())
                    problem = f"gradient weight {float(w[bad])} at index {bad} is not finite"
        if problem is not None:
            failures[label] = problem
    name = "contract: finite on extreme valid inputs"
    n = len(extreme_batches(layout))
    if failures:
        reasons = set(failures.values())
        detail = (f"{next(iter(reasons))}\n(the same on each: {', '.join(failures)})" if len(reasons) == 1 and
                  len(failures) > 1 else "\n".join(f"{label}: {why}" for label, why in failures.items()))
        return CheckResult(name, "contract", False, f"{len(failures)} of {n} extreme batches fail:\n{detail}",
                           {"failures": failures})
    return CheckResult(name, "contract", True, f"{n} extreme batches (ratios 1e-6..1e6, log-probs -300, lengths "
                       f"1..{layout.max_width}, single tokens, zero or equal advantages): loss, weights and "
                       "diagnostics finite", {"cases": list(extreme_batches(layout))})
