"""The checker's inputs, and the one way a loss is evaluated: its value and gradient weights.

Batches are ``G`` groups of ``K`` consecutive rows (``Layout``), left-aligned with padding on the
right, in float64. Hypothesis draws them from bounded domains, so a failing example shrinks to a
small readable one:

* log-probs: the old log-prob ``b - max(d, 0)`` and the new ``b + min(d, 0)`` from a base
  ``b ∈ [-6, -0.01]`` and a log-ratio ``d = scale·u``, ``u ∈ [-1, 1]``, so both are valid
  (<= 0) and ``logp - old_logp = d`` exactly;
* ``scale`` per batch from ``RATIO_SCALES`` (1e-4 reaches GSPO's 3e-4 clip window, 0.3 PPO's
  0.2, 3 ratios up to e³ ≈ 20 beyond CISPO's cap 5);
* advantages in [-3, 3], per sequence (broadcast over its tokens) or per token; 0 on padding;
* padding filler: finite values that a correct loss never reads;
* rollout log-probs (``rollout=True``, for losses that correct a training/rollout mismatch): a
  third policy ``rollout_logp`` whose log-ratio to ``old_logp`` is drawn like ``d``; the three
  log-probs are shifted together so the largest is the base (all stay <= 0, ratios exact);
* ``round_to``: the values rounded to the loss dtype (``Layout.finish``), so the spec and the
  loss see the same numbers.

``evaluate(fn, batch)`` calls the loss and returns its value and ``w = -∂loss/∂logp``; any
exception or malformed return becomes a ``VariantError`` carrying the reason.
"""

from __future__ import annotations

import math
import os
import traceback
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch
from hypothesis import strategies as st
from torch import Tensor

__all__ = ["Batch", "Layout", "VariantError", "evaluate", "call", "loss_of", "raised", "batches", "simpler",
           "single_token_batch",
           "RATIO_SCALES", "DTYPE"]

DTYPE = torch.float64
RATIO_SCALES = (1e-4, 0.3, 3.0)
PAD_FILLER = -0.7  # log-prob and advantage filler on padding


@dataclass(frozen=True)
class Layout:
    """How the checker's batches are shaped.

    Attributes:
        group_size: K, rows per group (prompt); B is always a multiple of it.
        max_groups: G is drawn from 1..max_groups.
        max_width: T (the padded width) is drawn from 1..max_width.
        rollout: draw rollout log-probs too (the loss takes ``rollout_logp``).
        per_sequence_adv: one advantage per sequence always (the loss takes ``[B]`` advantages).
        round_to: round every drawn value to this dtype (the loss's dtype).
        labels: how ``old_logp`` and the ratio are named in counterexamples.
    """

    group_size: int = 4
    max_groups: int = 3
    max_width: int = 6
    rollout: bool = False
    per_sequence_adv: bool = False
    round_to: torch.dtype = torch.float64
    labels: tuple[str, str, str] = ("old_logp", "ratio", "rollout_logp")

    def __post_init__(self) -> None:
        for name in ("group_size", "max_groups", "max_width"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise ValueError(f"{name}={value!r} is invalid; allowed: an int >= 1")
        if self.round_to not in (torch.float64, torch.float32, torch.bfloat16):
            raise ValueError(f"round_to={self.round_to!r} is invalid; allowed: torch.float64, float32, bfloat16")

    def finish(self, b: "Batch") -> "Batch":
        """``b`` with every value rounded to ``round_to`` (and back to float64), ``labels``, and
        (with ``rollout``) rollout log-probs equal to the old ones where ``b`` has none."""
        if self.rollout and b.rollout_logp is None:
            b = replace(b, rollout_logp=b.old_logp.clone())
        if self.round_to == torch.float64:
            return replace(b, labels=self.labels)
        r = lambda x: None if x is None else x.to(self.round_to).to(DTYPE)  # noqa: E731
        return replace(b, logp=r(b.logp), old_logp=r(b.old_logp), adv=r(b.adv), rollout_logp=r(b.rollout_logp),
                       labels=self.labels)


@dataclass(frozen=True)
class Batch:
    """One input batch, ``[B, T]`` float64 tensors (``mask`` 1 on valid tokens).

    ``rollout_logp`` is the rollout policy's log-probs (None unless the loss takes them);
    ``labels`` names ``old_logp`` and the ratio in ``describe`` (a KL penalty's second input is the
    reference policy: ``("ref_logp", "π/π_ref")``).
    """

    logp: Tensor
    old_logp: Tensor
    adv: Tensor
    mask: Tensor
    group_size: int
    rollout_logp: Tensor | None = None
    labels: tuple[str, str, str] = ("old_logp", "ratio", "rollout_logp")

    @property
    def lengths(self) -> list[int]:
        return [int(x) for x in self.mask.sum(-1).tolist()]

    @property
    def n_groups(self) -> int:
        return self.logp.shape[0] // self.group_size

    def with_(self, **changes: Tensor) -> "Batch":
        return replace(self, **changes)

    def describe(self) -> str:
        """The batch as text (valid tokens only), for counterexamples."""
        old, ratio, third = self.labels
        lines = [f"B={self.logp.shape[0]} (G={self.n_groups} x K={self.group_size}), T={self.logp.shape[1]}, "
                 f"lengths={self.lengths}"]
        for name, label in (("logp", "logp"), ("old_logp", old), ("rollout_logp", third), ("adv", "adv")):
            if getattr(self, name) is not None:
                lines.append(f"{label:<13}= {rows(getattr(self, name), self.mask)}")
        lines.append(f"{ratio:<13}= {rows(torch.exp(self.logp - self.old_logp), self.mask)}")
        if self.rollout_logp is not None and third == "sampling_logp":
            lines.append(f"{'π/π_sampling':<13}= {rows(torch.exp(self.logp - self.rollout_logp), self.mask)}")
        elif self.rollout_logp is not None:
            lines.append(f"{'π_old/π_roll':<13}= {rows(torch.exp(self.old_logp - self.rollout_logp), self.mask)}")
        lines.append(f"padding: logp and {old} {PAD_FILLER}, adv 0 (the full tensors are in the JSON)"
                     if any(n < self.logp.shape[1] for n in self.lengths) else "no padding")
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        """The batch as JSON: valid tokens per row, and the full padded tensors (padding fillers
        included), so the input can be rebuilt exactly."""
        valid = self.mask > 0
        names = ("logp", "old_logp", "adv") + (("rollout_logp",) if self.rollout_logp is not None else ())
        return ({name: [r[m].tolist() for r, m in zip(getattr(self, name), valid)] for name in names}
                | {"group_size": self.group_size}
                | {"full": {name: getattr(self, name).tolist() for name in names + ("mask",)}})

    def tensors(self) -> tuple[Tensor, ...]:
        """``(logp, old_logp, adv, mask[, rollout_logp])``: the loss's positional inputs."""
        core = (self.logp, self.old_logp, self.adv, self.mask)
        return core if self.rollout_logp is None else (*core, self.rollout_logp)

    def rows_(self, index) -> "Batch":
        """The batch of rows ``index`` (a slice or index tensor), same group size and labels."""
        pick = lambda x: None if x is None else x[index]  # noqa: E731
        return replace(self, logp=self.logp[index], old_logp=self.old_logp[index], adv=self.adv[index],
                       mask=self.mask[index], rollout_logp=pick(self.rollout_logp))


def rows(x: Tensor, mask: Tensor) -> str:
    """Valid entries of each row, 6 significant digits: ``[[a, b], [c]]``."""
    return "[" + ", ".join("[" + ", ".join(f"{v:.6g}" for v in r[m > 0].tolist()) + "]"
                           for r, m in zip(x, mask)) + "]"


class VariantError(Exception):
    """The loss under test raised, or returned something that is not a loss."""


_OWN = (os.sep + "sims" + os.sep, os.sep + "torch" + os.sep, os.sep + "hypothesis" + os.sep)


def raised(exc: BaseException) -> str:
    """``raised TypeError: message (at file.py:12 in fn)``: the exception and the innermost frame
    of the loss's own code (not pgverify's, torch's or Hypothesis'), so the card points at it."""
    where = ""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if not any(part in frame.filename for part in _OWN):
            where = f" (at {frame.filename}:{frame.lineno} in {frame.name})"
            break
    return f"raised {type(exc).__name__}: {exc}{where}"


def loss_of(out: Any) -> Tensor:
    """The loss tensor of a ``loss`` or ``(loss, diagnostics)`` return value (validated)."""
    if isinstance(out, tuple):
        if len(out) != 2:
            raise VariantError(f"returned a tuple of {len(out)} items; allowed: loss or (loss, diagnostics)")
        out = out[0]
    if not isinstance(out, Tensor):
        raise VariantError(f"returned {type(out).__name__}; allowed: a 0-d torch.Tensor")
    if out.dim() != 0:
        raise VariantError(f"returned a tensor of shape {tuple(out.shape)}; allowed: a 0-d tensor")
    if not out.is_floating_point():
        raise VariantError(f"returned a {out.dtype} tensor; allowed: a floating 0-d tensor")
    return out


def call(fn: Callable[..., Any], batch: Batch, logp: Tensor, **normalisers: int) -> Any:
    """``fn`` on ``batch`` with ``logp`` in place of the batch's (copies of the other tensors;
    ``rollout_logp`` and global normalisers only when there are any)."""
    rest = [x.clone() for x in batch.tensors()[1:]]
    return fn(logp, *rest, **normalisers)


def evaluate(fn: Callable[..., Any], batch: Batch, **normalisers: int) -> tuple[float, Tensor]:
    """``(loss value, w [B, T])`` with ``w = -∂loss/∂logp`` (zeros where the loss ignores logp).

    A non-finite loss or weight anywhere (padding included) is a ``VariantError``: NaN or inf is a
    failure of whichever check meets it, never a value it compares.

    ``normalisers`` (``global_tokens``, ``global_sequences``) are passed on to ``fn``: the
    micro-batch property calls each micro-batch with the whole batch's counts."""
    logp = batch.logp.clone().requires_grad_(True)
    try:
        loss = loss_of(call(fn, batch, logp, **normalisers))
        if not loss.requires_grad:
            return float(loss), torch.zeros_like(batch.logp)
        (grad,) = torch.autograd.grad(loss, logp, allow_unused=True)
    except VariantError:
        raise
    except Exception as exc:  # the variant's own failure is evidence, reported by the check
        raise VariantError(raised(exc)) from exc
    w = torch.zeros_like(batch.logp) if grad is None else -grad.detach().to(DTYPE)
    value = float(loss.detach().to(DTYPE))
    if not math.isfinite(value):
        raise VariantError(f"returned a non-finite loss ({value})")
    if not bool(torch.isfinite(w).all()):
        bad = tuple((~torch.isfinite(w)).nonzero()[0].tolist())
        raise VariantError(f"gradient weight {float(w[bad])} at index {bad} is not finite")
    return value, w


GRID = 1e-3  # resolution of drawn values: integers shrink in far fewer steps than floats


def _floats(lo: float, hi: float, n: int):
    """``n`` values in [lo, hi] on a grid of ``GRID`` (drawn as integers, so they shrink fast, to
    short decimals, towards the end nearest 0)."""
    grid = st.integers(round(lo / GRID), round(hi / GRID)).map(lambda i: i * GRID)
    return st.lists(grid, min_size=n, max_size=n)


@st.composite
def batches(draw, layout: Layout, *, per_token_adv: bool, min_groups: int = 1,
            scales: tuple[float, ...] = RATIO_SCALES, on_policy: bool = False) -> Batch:
    """A Hypothesis strategy of ``Batch`` (see the module docstring for the domains).

    Values are drawn for the valid tokens only (padding gets the filler), so the shrinker works
    on what the loss reads; the padded width is the longest length plus 0 or more extra columns.
    ``layout.rollout`` adds rollout log-probs; ``layout.round_to`` rounds every value to the
    loss dtype; ``layout.per_sequence_adv`` forces one advantage per sequence.
    """
    per_token_adv = per_token_adv and not layout.per_sequence_adv
    g = draw(st.integers(min_groups, max(min_groups, layout.max_groups)))
    k = layout.group_size
    b = g * k
    lengths = draw(st.lists(st.integers(1, layout.max_width), min_size=b, max_size=b))
    width = max(lengths) + draw(st.integers(0, layout.max_width - max(lengths)))
    scale = 0.0 if on_policy else draw(st.sampled_from(scales))
    n = sum(lengths)
    base = _scatter(draw(_floats(-6.0, -0.01, n)), lengths, width)
    d = scale * _scatter(draw(_floats(-1.0, 1.0, n)), lengths, width)
    if per_token_adv:
        adv = _scatter(draw(_floats(-3.0, 3.0, n)), lengths, width)
    else:
        adv = torch.tensor(draw(_floats(-3.0, 3.0, b)), dtype=DTYPE)[:, None].expand(b, width)
    if not layout.rollout:
        out = assemble(base + torch.clamp(d, max=0.0), base - torch.clamp(d, min=0.0), adv, lengths, k)
    else:
        r_scale = 0.0 if on_policy else draw(st.sampled_from(scales))
        e = r_scale * _scatter(draw(_floats(-1.0, 1.0, n)), lengths, width)  # log π_old - log π_roll
        new, old, roll = d, torch.zeros_like(d), -e
        top = torch.maximum(torch.maximum(new, old), roll)
        out = assemble(base + new - top, base + old - top, adv, lengths, k, rollout_logp=base + roll - top)
    return layout.finish(out)


def _scatter(values: list[float], lengths: list[int], width: int) -> Tensor:
    """Row ``i`` takes the next ``lengths[i]`` values, left-aligned; the rest is 0."""
    out = torch.zeros(len(lengths), width, dtype=DTYPE)
    start = 0
    for i, n in enumerate(lengths):
        out[i, :n] = torch.tensor(values[start:start + n], dtype=DTYPE)
        start += n
    return out


def assemble(logp: Tensor, old_logp: Tensor, adv: Tensor, lengths: list[int], group_size: int,
             rollout_logp: Tensor | None = None) -> Batch:
    """A batch with mask from ``lengths`` and the filler on padding."""
    width = logp.shape[1]
    mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).to(DTYPE)
    pad = mask == 0
    filler = torch.full_like(logp, PAD_FILLER)
    fill = lambda x: None if x is None else torch.where(pad, filler, x)  # noqa: E731
    return Batch(fill(logp), fill(old_logp), torch.where(pad, torch.zeros_like(adv), adv).contiguous(), mask,
                 group_size, fill(rollout_logp))


def simpler(case: Any) -> list[Any]:
    """Smaller variants of a failing input, simplest first (``result.search`` keeps the first one
    that still fails, and repeats): one group alone, rows truncated to a common length, no extra
    padding column. ``case`` is a ``Batch`` or a tuple whose first item is one; other cases have
    no simpler variants. Hypothesis shrinks values well but gives up on structure within its
    budget; these few structural steps make a counterexample small and readable."""
    if isinstance(case, tuple) and case and isinstance(case[0], Batch):
        return [(b, *case[1:]) for b in simpler(case[0])]
    if not isinstance(case, Batch):
        return []
    b, k = case, case.group_size
    out = [_rows(b, slice(g * k, (g + 1) * k)) for g in range(b.n_groups)] if b.n_groups > 1 else []
    longest = max(b.lengths)
    out += [_truncate(b, cap) for cap in range(1, longest)]
    if b.logp.shape[1] > longest:
        out.append(_truncate(b, longest))
    return out


def _rows(b: Batch, rows_: slice) -> Batch:
    return b.rows_(rows_)


def _truncate(b: Batch, width: int) -> Batch:
    """Every row cut to at most ``width`` tokens, and the batch to ``width`` columns."""
    cut = lambda x: None if x is None else x[:, :width].contiguous()  # noqa: E731
    out = assemble(cut(b.logp), cut(b.old_logp), cut(b.adv), [min(n, width) for n in b.lengths], b.group_size,
                   cut(b.rollout_logp))
    return replace(out, labels=b.labels)


def single_token_batch(log_ratio: float, adv: float, group_size: int, *, base: float = -1.0,
                       rollout: bool = False) -> Batch:
    """K identical one-token sequences with ratio e^log_ratio and advantage ``adv`` (region maps);
    log-probs ``base + min(d, 0)`` and ``base - max(d, 0)`` as in ``batches``; with ``rollout``,
    the rollout policy equals the old one (π_old/π_roll = 1)."""
    k = group_size
    full = lambda v: torch.full((k, 1), v, dtype=DTYPE)  # noqa: E731
    old = full(base - max(log_ratio, 0.0))
    return Batch(full(base + min(log_ratio, 0.0)), old, full(adv), full(1.0), k, old.clone() if rollout else None)
