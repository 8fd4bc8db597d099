r"""The property battery: what any policy-gradient loss should satisfy, with no spec needed.

Pass/fail properties (random batches, Hypothesis-shrunk counterexamples; invariances hold to
``PROP_RTOL`` = 1e-9 relative, i.e. float64 summation order only):

* **padding invariance** — extra padding columns and new filler values on padding change neither
  the loss nor the weights of valid tokens, and padding gets weight 0;
* **batch-permutation invariance** — reordering the groups, and the rows within each group,
  permutes the weights and keeps the loss;
* **group locality** — changing the advantages of other groups leaves a group's weights alone
  (a loss that re-normalises advantages over the batch fails);
* **zero advantage, zero weight** — a sequence with A = 0 gets weight 0 (a penalty term
  hidden in the loss fails);
* **advantage scale equivariance** — w(cA) = c·w(A) for c > 0;
* **on-policy reduction to REINFORCE** — at ρ = 1, w_it = s_it·A_it with s_it > 0 finite;
* **micro-batches sum to the batch** (when the loss takes global normalisers) — micro-batches of
  whole groups, each called with the whole batch's token and sequence counts, have gradients
  that sum to the full-batch gradient (a loss that normalises by its own micro-batch fails).

Characterisations (``profile`` entries; they describe and never fail):

* the on-policy scale s_it: which registered aggregation's normaliser ``token_weights`` it equals
  (exactly, or up to a constant κ), hence its length pattern (1/|o_i| = length bias); whether it
  differs between A > 0 and A < 0;
* how the weights change when the batch is duplicated (mean-like, or growing with the
  micro-batch size).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Callable

import torch
from hypothesis import strategies as st
from torch import Tensor

from sims.aggregation import AGGREGATIONS, token_weights
from sims.check.inputs import DTYPE, Batch, Layout, assemble, batches, evaluate, rows
from sims.check.result import CheckResult, max_mismatch, randomised_check

__all__ = ["PROP_RTOL", "PROPERTIES", "pattern_batches", "scale_pattern", "batch_scaling", "check_microbatch",
           "global_counts", "split_groups", "prop_rtol"]

PROP_RTOL = 1e-9


def prop_rtol(dtype: torch.dtype) -> float:
    """Invariance tolerance for a loss computed in ``dtype``: 1e-9 in float64 (summation order
    only), else 64 units in the last place of the dtype (a reordered sum of a few dozen terms)."""
    return PROP_RTOL if dtype == torch.float64 else 64 * torch.finfo(dtype).eps
ZERO_RTOL = 1e-12
TINY_ADV = 1e-150  # |A| below this is treated as 0 (its weight may underflow)


def _compare(label: str, actual: Tensor, expected: Tensor, mask: Tensor, rtol: float = PROP_RTOL) -> str | None:
    err, scale = max_mismatch(actual, expected, mask)
    if err <= rtol * scale:
        return None
    return (f"{label}: max difference {err:.3g} > {rtol:g} x {scale:.3g}\n"
            f"  before: {rows(expected, mask)}\n  after:  {rows(actual, mask)}")


def _loss_differs(a: float, b: float, rtol: float = PROP_RTOL, terms: float = 0.0) -> str | None:
    """A message when losses ``a`` and ``b`` differ by more than ``rtol`` of their scale: the larger
    of |a|, |b| and ``terms``, the magnitude of the summed per-token terms (``_term_scale``), since a
    mean of terms that cancel keeps the rounding error of the terms, not of the mean."""
    if abs(a - b) <= rtol * max(abs(a), abs(b), terms, 1e-300) or (a == b):
        return None
    return f"loss changes from {a:.10g} to {b:.10g}"


def _term_scale(w: Tensor, b: Batch) -> float:
    """Σ|w|·max(1, max|ℓ|): bounds Σ|per-token loss terms| for surrogates linear in the ratio
    (|term| = |w|) or in the log-prob (|term| = |w|·|ℓ|)."""
    valid = b.mask > 0
    return float(w[valid].abs().sum()) * max(1.0, float(b.logp[valid].abs().max()))


# ----------------------------------------------------------------------------- padding


def _pad(b: Batch, extra: int, filler: float) -> Batch:
    """``extra`` more padding columns, and ``filler`` in every padded logp/old_logp/adv entry."""
    n = b.logp.shape[0]

    def widen(x: Tensor) -> Tensor:
        return torch.cat([x, torch.zeros(n, extra, dtype=x.dtype)], dim=1)

    mask = widen(b.mask)
    pad = mask == 0
    fill = lambda x, v: torch.where(pad, torch.full_like(x, v), x)  # noqa: E731
    roll = None if b.rollout_logp is None else fill(widen(b.rollout_logp), filler / 3)
    return replace(b, logp=fill(widen(b.logp), filler), old_logp=fill(widen(b.old_logp), -filler / 2),
                   adv=fill(widen(b.adv), 3.0 - filler), mask=mask, rollout_logp=roll)


def _padding_failure(fn, case, rtol: float = PROP_RTOL) -> str | None:
    b, extra, filler = case
    loss, w = evaluate(fn, b)
    padded = _pad(b, extra, filler)
    loss2, w2 = evaluate(fn, padded)
    width = b.logp.shape[1]
    problem = (_loss_differs(loss, loss2, rtol, _term_scale(w, b))
               or _compare("valid-token weights", w2[:, :width], w, b.mask, rtol))
    if problem:
        return problem
    pad_w = float((w2 * (1 - padded.mask)).abs().max())
    if pad_w > ZERO_RTOL * max(float(w.abs().max()), 1e-300):
        return f"padding gets weight {pad_w:.3g} (must be 0)"
    return None


def check_padding(fn, layout: Layout, *, examples: int, seed: int, rtol: float = PROP_RTOL) -> CheckResult:
    strategy = st.tuples(batches(layout, per_token_adv=False), st.integers(1, 3), st.floats(-9.0, 9.0))
    return _property("padding invariance", fn, strategy, _padding_failure, examples, seed, rtol,
                     lambda c: f"{c[0].describe()}\nwith {c[1]} extra padding column(s), filler {c[2]:.6g}",
                     "extra padding columns and arbitrary filler values on padding change neither the loss "
                     "nor any valid token's weight; padding gets weight 0")


# ----------------------------------------------------------------------------- permutation


def _permutation(b: Batch, seed: int) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    k, g = b.group_size, b.n_groups
    order = torch.randperm(g, generator=gen)
    return torch.cat([order[j] * k + torch.randperm(k, generator=gen) for j in range(g)])


def _permutation_failure(fn, case, rtol: float = PROP_RTOL) -> str | None:
    b, perm_seed = case
    perm = _permutation(b, perm_seed)
    loss, w = evaluate(fn, b)
    shuffled = b.rows_(perm)
    loss2, w2 = evaluate(fn, shuffled)
    return (_loss_differs(loss, loss2, rtol, _term_scale(w, b))
            or _compare("weights (permuted back)", w2, w[perm], shuffled.mask, rtol))


def check_permutation(fn, layout: Layout, *, examples: int, seed: int, rtol: float = PROP_RTOL) -> CheckResult:
    strategy = st.tuples(batches(layout, per_token_adv=False), st.integers(0, 2**31 - 1))
    return _property("batch-permutation invariance", fn, strategy, _permutation_failure, examples, seed, rtol,
                     lambda c: f"{c[0].describe()}\nrow order {_permutation(c[0], c[1]).tolist()}",
                     "reordering the groups and the rows within each group permutes the weights and keeps "
                     "the loss")


# ----------------------------------------------------------------------------- group locality


def _locality_failure(fn, case, rtol: float = PROP_RTOL) -> str | None:
    b, factor, shift = case
    k = b.group_size
    _, w = evaluate(fn, b)
    adv = b.adv.clone()
    adv[k:] = (adv[k:] * factor + shift) * b.mask[k:]
    _, w2 = evaluate(fn, b.with_(adv=adv))
    return _compare("group 0's weights after changing the other groups' advantages", w2[:k], w[:k], b.mask[:k],
                    rtol)


def check_locality(fn, layout: Layout, *, examples: int, seed: int, rtol: float = PROP_RTOL) -> CheckResult:
    if layout.max_groups < 2:
        return CheckResult("group locality", "property", True, "not testable with one group per batch "
                           "(max_groups = 1)")
    strategy = st.tuples(batches(layout, per_token_adv=False, min_groups=2), st.floats(0.1, 10.0),
                         st.floats(-3.0, 3.0))
    return _property("group locality", fn, strategy, _locality_failure, examples, seed, rtol,
                     lambda c: f"{c[0].describe()}\nother groups' advantages -> A x {c[1]:.6g} + {c[2]:.6g}",
                     "changing other groups' advantages leaves a group's weights unchanged (the loss does "
                     "not re-normalise advantages across prompts)")


# ----------------------------------------------------------------------------- zero advantage


def _zero_adv_failure(fn, case, rtol: float = PROP_RTOL) -> str | None:
    b, chosen = case
    zero_rows = torch.tensor([i for i, z in enumerate(chosen[: b.logp.shape[0]]) if z] or [0])
    adv = b.adv.clone()
    adv[zero_rows] = 0.0
    _, w = evaluate(fn, b.with_(adv=adv))
    others = torch.ones(w.shape[0], dtype=torch.bool)
    others[zero_rows] = False
    scale = float(w[others].abs().max()) if bool(others.any()) else 0.0
    if not bool(torch.isfinite(w[zero_rows]).all()):
        return (f"rows {zero_rows.tolist()} have A = 0 but non-finite weights {rows(w[zero_rows], b.mask[zero_rows])}")
    leaked = float(w[zero_rows].abs().max())
    if leaked > ZERO_RTOL * scale:  # scale 0 (every row has A = 0): any weight leaks
        return (f"rows {zero_rows.tolist()} have A = 0 but weights {rows(w[zero_rows], b.mask[zero_rows])} "
                "(a term that does not depend on A: a KL or entropy penalty inside the loss?)")
    return None


def check_zero_advantage(fn, layout: Layout, *, examples: int, seed: int, rtol: float = PROP_RTOL) -> CheckResult:
    strategy = st.tuples(batches(layout, per_token_adv=False),
                         st.lists(st.booleans(), min_size=layout.group_size * layout.max_groups,
                                  max_size=layout.group_size * layout.max_groups))
    return _property("zero advantage, zero weight", fn, strategy, _zero_adv_failure, examples, seed, rtol,
                     lambda c: c[0].describe(), "sequences with A = 0 get weight 0, at any ratio")


# ----------------------------------------------------------------------------- scale equivariance


def _scale_failure(fn, case, rtol: float = PROP_RTOL) -> str | None:
    b, c = case
    _, w = evaluate(fn, b)
    _, w2 = evaluate(fn, b.with_(adv=b.adv * c))
    return _compare(f"w(A x {c:.6g}) against {c:.6g} x w(A)", w2, c * w, b.mask, rtol)


def check_scale(fn, layout: Layout, *, examples: int, seed: int, rtol: float = PROP_RTOL) -> CheckResult:
    strategy = st.tuples(batches(layout, per_token_adv=False), st.floats(0.1, 10.0))
    return _property("advantage scale equivariance", fn, strategy, _scale_failure, examples, seed, rtol,
                     lambda c: f"{c[0].describe()}\nscale c = {c[1]:.6g}", "w(cA) = c·w(A) for c in [0.1, 10]")


# ----------------------------------------------------------------------------- REINFORCE


def _reinforce_failure(fn, b: Batch, rtol: float = PROP_RTOL) -> str | None:
    _, w = evaluate(fn, b)
    active = (b.mask > 0) & (b.adv.abs() > TINY_ADV)
    s = w / torch.where(active, b.adv, torch.ones_like(b.adv))
    bad = active & ~((s > 0) & torch.isfinite(s))
    if bool(bad.any()):
        i, t = bad.nonzero()[0].tolist()
        return (f"token ({i}, {t}) has A = {float(b.adv[i, t]):.6g} but w = {float(w[i, t]):.6g}: the on-policy "
                f"weight is not a positive multiple of A\nw = {rows(w, b.mask)}")
    return None


def check_reinforce(fn, layout: Layout, *, examples: int, seed: int, rtol: float = PROP_RTOL) -> CheckResult:
    return _property("on-policy reduction to REINFORCE", fn, batches(layout, per_token_adv=False, on_policy=True),
                     _reinforce_failure, examples, seed, rtol, lambda b: b.describe(),
                     "at ratio 1, w_it = s_it·A_it with s_it > 0 finite (a positively scaled REINFORCE)")


def _property(name: str, fn, strategy, failure: Callable[..., str | None], examples: int, seed: int, rtol: float,
              show: Callable[[Any], str], claim: str) -> CheckResult:
    return randomised_check(name, "property", strategy, lambda case: failure(fn, case, rtol), examples=examples,
                            seed=seed, claim=claim, show=show)


# ----------------------------------------------------------------------------- micro-batches


def global_counts(b: Batch) -> dict[str, int]:
    """The whole batch's normalisers: ``global_tokens`` (valid tokens) and ``global_sequences``."""
    return {"global_tokens": int((b.mask > 0).sum()), "global_sequences": int(b.logp.shape[0])}


def split_groups(b: Batch, pieces: int) -> list[Batch]:
    """``b`` cut into ``pieces`` micro-batches of whole groups (as trainers split a mini-batch;
    the first ones get the extra group when the groups do not divide evenly)."""
    k, g = b.group_size, b.n_groups
    sizes = [g // pieces + (1 if i < g % pieces else 0) for i in range(pieces)]
    out, start = [], 0
    for size in sizes:
        out.append(b.rows_(slice(start * k, (start + size) * k)))
        start += size
    return out


def _microbatch_failure(fn, case, rtol: float = PROP_RTOL) -> str | None:
    b, pieces = case
    pieces = min(pieces, b.n_groups)
    counts = global_counts(b)
    _, w_full = evaluate(fn, b, **counts)
    parts = [evaluate(fn, mb, **counts)[1] for mb in split_groups(b, pieces)]
    width = b.logp.shape[1]
    w_sum = torch.cat([torch.nn.functional.pad(w, (0, width - w.shape[1])) for w in parts])
    problem = _compare(f"sum of {pieces} micro-batch gradients (each told the global counts {counts}) against "
                       "the full batch", w_sum, w_full, b.mask, rtol)
    if problem is None:
        return None
    valid = (b.mask > 0) & (w_full != 0)
    factor = float((w_sum[valid] / w_full[valid]).median()) if bool(valid.any()) else math.nan
    return (f"{problem}\n  micro-batch weights / full-batch weights: median {factor:.6g} (a loss that normalises by "
            f"its own micro-batch instead of the global counts gives about the number of micro-batches, {pieces})")


def check_microbatch(fn, layout: Layout, *, examples: int, seed: int, rtol: float = PROP_RTOL) -> CheckResult:
    """Gradient accumulation: the micro-batch gradients, each computed with the whole batch's
    global normalisers, sum to the full-batch gradient (``fn`` must take the normalisers:
    ``feed.Feed.takes_normalisers``). A loss that ignores them (verl's GMPO ``geo_mean`` means over
    its micro-batch) grows with the number of micro-batches and fails."""
    if layout.max_groups < 2:
        return CheckResult("micro-batches sum to the batch", "property", True,
                           "not testable with one group per batch (max_groups = 1)")
    strategy = st.tuples(batches(layout, per_token_adv=False, min_groups=2), st.integers(2, layout.max_groups))
    return _property("micro-batches sum to the batch", fn, strategy, _microbatch_failure, examples, seed, rtol,
                     lambda c: (f"{c[0].describe()}\nsplit into {min(c[1], c[0].n_groups)} micro-batches of "
                                "whole groups"),
                     "splitting the batch into micro-batches of whole groups, each called with the global token and "
                     "sequence counts, and summing their gradients gives the full-batch gradient")


PROPERTIES = (check_padding, check_permutation, check_locality, check_zero_advantage, check_scale,
              check_reinforce)
"""The pass/fail properties, in the order of the report card. The last four assume a loss
that multiplies advantages; they are skipped for a penalty spec (``kl``)."""

PROPERTY_NAMES = {check_padding: "padding invariance", check_permutation: "batch-permutation invariance",
                  check_locality: "group locality", check_zero_advantage: "zero advantage, zero weight",
                  check_scale: "advantage scale equivariance", check_reinforce: "on-policy reduction to REINFORCE",
                  check_microbatch: "micro-batches sum to the batch"}
"""Each property's title (its name on the card, and in a spec's ``exempt_properties``)."""


# ----------------------------------------------------------------------------- characterisations


def pattern_batches(layout: Layout) -> list[Batch]:
    """On-policy batches with 1, 2 and 3 groups and varied lengths (they tell the aggregations
    apart: token counts differ between sequences, groups and batches)."""
    k, width = layout.group_size, max(layout.max_width, 3)
    gen = torch.Generator().manual_seed(2024)
    out = []
    for g in range(1, 4):
        b = g * k
        lengths = [1 + (7 * i + 3 * g) % width for i in range(b)]
        logp = -(0.05 + 3.0 * torch.rand(b, width, generator=gen, dtype=DTYPE))
        sign = torch.tensor([1.0 if i % 2 == 0 else -1.0 for i in range(b)], dtype=DTYPE)
        adv = (sign * (0.5 + 0.5 * (torch.arange(b) % 3)))[:, None].expand(b, width)
        out.append(assemble(logp, logp.clone(), adv, lengths, k))
    return out


LENGTH_PATTERN = {
    "token-mean": "1/N (N = valid tokens in the batch): every token weighs the same, so a long "
                  "sequence weighs more in total (DAPO)",
    "seq-mean-token-mean": "1/(B·|o_i|): each token of a long sequence weighs less — length bias "
                           "(GRPO; the Dr.GRPO critique)",
    "seq-mean-token-sum": "1/B: independent of length (REINFORCE)",
    "prompt-token-mean": "1/(G·N_g) (N_g = valid tokens of the group): tokens weigh the same within a "
                         "prompt (DAPO paper, eq. 8)",
    "token-sum": "1: no normalisation; the gradient grows with the batch size",
}


#: Which per-token count each aggregation divides by (for the ε estimate): N (batch tokens),
#: |o_i| (sequence tokens) or N_g (group tokens).
_COUNTED = {"token-mean": "batch", "seq-mean-token-mean": "sequence", "prompt-token-mean": "group"}


def _counts(b: Batch, kind: str) -> Tensor:
    """Per token, the valid-token count of its batch, sequence or group."""
    m = (b.mask > 0).to(DTYPE)
    if kind == "batch":
        return torch.full_like(m, float(m.sum()))
    if kind == "sequence":
        return m.sum(-1, keepdim=True).expand_as(m)
    k = b.group_size
    per_group = m.reshape(-1, k * m.shape[1]).sum(-1)
    return per_group.repeat_interleave(k)[:, None].expand_as(m)


def denominator_epsilon(ratio: Tensor, counts: Tensor) -> float:
    """The additive ε of a denominator ``n + ε``, from ``ratio = s/c = κ·n/(n + ε)`` per token.

    ``c/s = (1 + ε/n)/κ`` is linear in 1/n: the least-squares fit's slope over its intercept is
    ε (0 when every count is the same, where ε cannot be told from κ).
    """
    x, y = 1.0 / counts, 1.0 / ratio
    if float(x.max() - x.min()) == 0.0:
        return 0.0
    xm, ym = x.mean(), y.mean()
    slope = float(((x - xm) * (y - ym)).sum() / ((x - xm) ** 2).sum())
    return slope / float(ym - slope * xm)


def scale_pattern(fn, layout: Layout, rtol: float = 1e-6) -> list[CheckResult]:
    """Profile: the on-policy per-token scale s = w/A, the aggregation it matches, sign symmetry.

    An aggregation is identified when s / c_agg is constant to ``rtol`` relative (its spread
    max/min - 1), with ``rtol`` tied to the loss dtype (``feed.default_rtol``: 1e-6 in float64),
    so the usual ``+1e-8`` in a trainer's denominator (OpenRLHF's masked mean, verl's with a
    float mask) does not hide the aggregation; the ε such a denominator implies is estimated
    (``denominator_epsilon``) and reported with the spread.
    """
    s_all, c_all, s_neg, batches_ = [], {a: [] for a in AGGREGATIONS if a != "seq-mean-token-sum-norm"}, [], []
    for b in pattern_batches(layout):
        b = layout.finish(b)
        _, w = evaluate(fn, b)
        _, w_neg = evaluate(fn, b.with_(adv=-b.adv))
        valid = b.mask > 0
        batches_.append(b)
        s_all.append((w / b.adv)[valid])
        s_neg.append((w_neg / -b.adv)[valid])
        for a in c_all:
            c_all[a].append(token_weights(b.mask, agg=a, group_size=b.group_size)[valid])
    s, s_n = torch.cat(s_all), torch.cat(s_neg)
    out = []
    if not bool(((s > 0) & torch.isfinite(s)).all()):
        out.append(CheckResult("on-policy scale and aggregation", "profile", None,
                               "the on-policy weight is not a positive multiple of A on every token; no "
                               "aggregation is identified"))
    else:
        spreads = {}
        for a, cs in c_all.items():
            r = s / torch.cat(cs)
            spreads[a] = (float(r.max() / r.min() - 1.0), float(r.mean()))
        best = min(spreads, key=lambda a: spreads[a][0])
        spread, kappa = spreads[best]
        eps = 0.0
        if best in _COUNTED:
            counts = torch.cat([_counts(b, _COUNTED[best])[b.mask > 0] for b in batches_])
            eps = denominator_epsilon(s / torch.cat(c_all[best]), counts)
        data = {"aggregation": None, "kappa": None, "closest": best, "spread": spread, "rtol": rtol,
                "epsilon": eps, "scale_min": float(s.min()), "scale_max": float(s.max())}
        if spread <= rtol:
            data.update(aggregation=best, kappa=kappa)
            if abs(kappa - 1.0) <= max(1e-9, rtol):
                text = f"behaves like {best}: per-token scale {LENGTH_PATTERN[best]}"
            else:
                text = f"behaves like {best} x {kappa:.6g}: per-token scale {LENGTH_PATTERN[best]}, times {kappa:.6g}"
                if best == "seq-mean-token-sum" and abs(1 / kappa - round(1 / kappa)) < 1e-6:
                    text += f" (= seq-mean-token-sum-norm with max_len = {round(1 / kappa)}, Dr.GRPO)"
            text += f"; s / c spread {spread:.2g} (identified at <= {rtol:g})"
            if spread > 1e-12 and best in _COUNTED:
                text += f", consistent with a denominator n + ε, ε ≈ {eps:.2g}"
        else:
            text = (f"matches no registered aggregation: s / c_{best} (the closest) ranges over "
                    f"[{float((s / torch.cat(c_all[best])).min()):.4g}, "
                    f"{float((s / torch.cat(c_all[best])).max()):.4g}] (spread {spread:.3g} > {rtol:g}); the "
                    "per-token scale depends on more than lengths and batch shape")
        out.append(CheckResult("on-policy scale and aggregation", "profile", None, text, data))
    ratio = s / s_n
    if bool(torch.isfinite(ratio).all()) and float((ratio - 1).abs().max()) <= max(PROP_RTOL, rtol * 1e-3):
        sym = "the same for A > 0 and A < 0 (w(-A) = -w(A) on-policy)"
    else:
        sym = (f"differs between A > 0 and A < 0: s(A) / s(-A) ranges over "
               f"[{float(ratio.min()):.4g}, {float(ratio.max()):.4g}] on the same tokens")
    out.append(CheckResult("on-policy sign symmetry", "profile", None, f"the on-policy scale is {sym}",
                           {"ratio_min": float(ratio.min()), "ratio_max": float(ratio.max())}))
    return out


def batch_scaling(fn, layout: Layout) -> CheckResult:
    """Profile: how loss and weights change when the batch is duplicated (B -> 2B)."""
    b = pattern_batches(layout)[1]
    b = b.with_(old_logp=b.logp - 0.05)  # slightly off-policy: a penalty to old_logp/ref_logp is not 0
    loss, w = evaluate(fn, b)
    doubled = Batch(*(torch.cat([x, x]) for x in (b.logp, b.old_logp, b.adv, b.mask)), b.group_size)
    loss2, w2 = evaluate(fn, doubled)
    nz = (b.mask > 0) & (w != 0)
    y = (w2[: b.logp.shape[0]][nz] / w[nz]) if bool(nz.any()) else torch.tensor([math.nan])
    y_med = float(y.median())
    if abs(y_med - 0.5) < 1e-6:
        text = "each token's weight halves when the batch is duplicated: normalised by batch size (mean-like)"
    elif abs(y_med - 1.0) < 1e-6:
        text = ("each token's weight is unchanged when the batch is duplicated: the total gradient grows with "
                "the (micro-)batch size (sum-like; verl #3741)")
    else:
        text = f"duplicating the batch multiplies each token's weight by {y_med:.6g}"
    loss_ratio = loss2 / loss if loss != 0 else math.nan
    return CheckResult("batch-size scaling", "profile", None, f"{text}; loss x {loss_ratio:.6g}",
                       {"weight_factor": y_med, "loss_factor": loss_ratio})
