r"""Targeted inputs for sequence-level gates, which random batches rarely hit.

A sequence-level gate drops (or rescales) a whole sequence by a statistic of its tokens: TRL's
off-policy sequence mask (DeepSeek-V3.2 OPSM) drops sequences with A < 0 whose mean per-token KL
``mean(old_logp - logp)`` exceeds δ = 0.5; verl / GSPO-style gates act on the mean log-ratio;
k3-style gates on ``mean(e^-d - 1 + d)``. On random batches (``inputs.batches``) a row's mean
log-ratio concentrates near 0 as the row grows, and the tokens a gate would change are often
already clipped by the surrogate, so such a gate is found at some seeds and missed at others.

``sequence_gate_batches(layout)`` is a fixed, deterministic family (the same at every seed) of
batches whose rows sweep the mean log-ratio ``m`` over ``±MEAN_LOG_RATIOS`` = ±{0.05, 0.1, 0.2,
0.3, 0.5, 0.7, 1, 1.5, 2, 3} — both sides of every threshold in common use (δ = 0.5 KL, log 2
for a ratio cap 2, ±0.2 PPO windows, 3e-4..0.05 GSPO windows sit between 0 and the first step)
in both the mean log-ratio and the mean k1 KL ``-m`` (k3 = e^-m - 1 + m is monotone in |m| on
each side, so it is swept too) — with each advantage sign, in two token patterns:

* ``constant``: every token has log-ratio ``m`` (lengths cycling through 1..max_width);
* ``probe``: the first token has log-ratio 0 (ratio 1: inside every clip window, so the
  surrogate keeps its gradient and only a sequence gate can drop it) and the other n - 1 tokens
  ``n·m/(n-1)``, so the row mean is still ``m`` (lengths cycling through 2..max_width).

Advantages are per row (valid for token- and sequence-level specs), magnitudes cycling through
``ADV_MAGNITUDES`` = (1, 0.5, 2) inside the random batches' [-3, 3]; the base log-prob (the
larger of logp and old_logp) cycles over tokens through ``BASES`` = (-0.1, -1, -3), inside the
random batches' [-6, -0.01]. Rows are packed in order into batches of ``layout.max_groups``
groups of ``layout.group_size`` rows (the last batch is filled up from the start of the family),
so each group mixes advantage signs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch

from sims.check.inputs import DTYPE, Batch, Layout, assemble

__all__ = ["MEAN_LOG_RATIOS", "ADV_MAGNITUDES", "BASES", "Row", "gate_rows", "sequence_gate_batches",
           "first_failure", "simplify_targeted", "describe_failure"]

MEAN_LOG_RATIOS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0)
ADV_MAGNITUDES = (1.0, 0.5, 2.0)
BASES = (-0.1, -1.0, -3.0)


@dataclass(frozen=True)
class Row:
    """One sequence of the family: its per-token log-ratios and its advantage."""

    log_ratios: tuple[float, ...]
    adv: float

    @property
    def mean_log_ratio(self) -> float:
        return sum(self.log_ratios) / len(self.log_ratios)


def _pattern(m: float, pattern: str, n: int) -> tuple[float, ...]:
    """``n`` log-ratios with mean ``m``: all ``m`` (constant), or 0 then ``n·m/(n-1)`` (probe)."""
    if pattern == "constant":
        return (m,) * n
    if n < 2:
        raise ValueError(f"n={n!r} is invalid for the probe pattern; allowed: n >= 2")
    return (0.0,) + (n * m / (n - 1),) * (n - 1)


def gate_rows(max_width: int) -> list[Row]:
    """The family's rows, in order (module docstring): for each |m| in ``MEAN_LOG_RATIOS``, each
    sign of m, each pattern, each sign of A. The probe pattern needs ``max_width >= 2``."""
    if not (isinstance(max_width, int) and max_width >= 1):
        raise ValueError(f"max_width={max_width!r} is invalid; allowed: an int >= 1")
    patterns = ("constant", "probe") if max_width >= 2 else ("constant",)
    out: list[Row] = []
    for magnitude in MEAN_LOG_RATIOS:
        for m in (magnitude, -magnitude):
            for pattern in patterns:
                for a_sign in (1.0, -1.0):
                    i = len(out)
                    lo = 1 if pattern == "constant" else 2
                    n = lo + (i // 2) % (max_width - lo + 1)
                    out.append(Row(_pattern(m, pattern, n), a_sign * ADV_MAGNITUDES[i % len(ADV_MAGNITUDES)]))
    return out


def _batch(rows: list[Row], group_size: int) -> Batch:
    """The batch of ``rows`` (token ``t`` of the family's running token count has base
    ``BASES[t % 3]``; logp = base + min(d, 0), old_logp = base - max(d, 0))."""
    width = max(len(r.log_ratios) for r in rows)
    d = torch.zeros(len(rows), width, dtype=DTYPE)
    base = torch.full((len(rows), width), BASES[0], dtype=DTYPE)
    adv = torch.zeros(len(rows), width, dtype=DTYPE)
    t = 0
    for i, r in enumerate(rows):
        n = len(r.log_ratios)
        d[i, :n] = torch.tensor(r.log_ratios, dtype=DTYPE)
        base[i, :n] = torch.tensor([BASES[(t + j) % len(BASES)] for j in range(n)], dtype=DTYPE)
        adv[i, :n] = r.adv
        t += n
    return assemble(base + torch.clamp(d, max=0.0), base - torch.clamp(d, min=0.0), adv,
                    [len(r.log_ratios) for r in rows], group_size)


def sequence_gate_batches(layout: Layout) -> list[Batch]:
    """The targeted family as batches shaped by ``layout`` (module docstring)."""
    rows = gate_rows(layout.max_width)
    per_batch = layout.group_size * layout.max_groups
    n_batches = -(-len(rows) // per_batch)
    padded = [rows[i % len(rows)] for i in range(n_batches * per_batch)]
    return [_batch(padded[i:i + per_batch], layout.group_size) for i in range(0, len(padded), per_batch)]


def first_failure(cases: list[Batch], failure: Callable[[Batch], str | None]) -> tuple[int, Batch] | None:
    """``(index, batch)`` of the first case on which ``failure`` returns a reason, else None."""
    for i, b in enumerate(cases):
        if failure(b) is not None:
            return i, b
    return None


def _group(b: Batch, g: int) -> Batch:
    """Group ``g`` of ``b`` alone, cut to its longest row."""
    k = b.group_size
    rows = slice(g * k, (g + 1) * k)
    lengths = b.lengths[rows]
    width = max(lengths)
    cut = lambda x: None if x is None else x[rows, :width].contiguous()  # noqa: E731
    return replace(assemble(cut(b.logp), cut(b.old_logp), cut(b.adv), lengths, k, cut(b.rollout_logp)),
                   labels=b.labels)


def simplify_targeted(b: Batch, failure: Callable[[Batch], str | None]) -> Batch:
    """The first single group of ``b`` that still fails, else ``b`` (at most ``n_groups`` calls).
    Tokens are not cut: that would change the row means the family is built on."""
    if b.n_groups == 1:
        return b
    for g in range(b.n_groups):
        one = _group(b, g)
        if failure(one) is not None:
            return one
    return b


def describe_failure(index: int, total: int, reduced: bool) -> str:
    """The card's line saying where a targeted counterexample came from."""
    shown = "one group of it that fails alone" if reduced else "the batch"
    return (f"targeted input {index + 1} of {total} failed (sequence-level gate family: row mean log-ratios "
            f"±{', ±'.join(f'{m:g}' for m in MEAN_LOG_RATIOS)}; sims.check.targeted); {shown}:")

