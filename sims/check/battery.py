"""The theory ↔ torch battery on one objective: what every registry objective passes
(``tests/theory/test_battery.py``), runnable on any ``ObjectiveSpec`` — a plugin's from its own
test suite (``check_objective("my_objective")``, or the ``pgverify_objective`` pytest fixture).

On ``examples`` random batches (float64; log-probs in [−6, −0.01], log-ratios in [−1, 1],
advantages in [−3, 3], 1–3 groups of 1–3 rows, lengths 1..T ≤ 7, every aggregation in turn, the
given configs in turn, rollout log-probs drawn when the objective takes them; all from one
``torch.Generator`` seeded by ``seed``):

* **contract**: ``sims.plugins.contract_problems`` (an ObjectiveSpec, frozen config, theory, reference);
* **weights**: ``−∂loss/∂logp`` equals the derived weight ``theory.weights.batch_weights`` to
  ``REL_TOL`` = 1e-10 relative to the batch's largest weight (float64 rounding only);
* **zeros**: the torch weight is exactly 0 on exactly the valid tokens where the derived weight is
  0 (a clip, mask or gate drops the gradient where the derivation says, nowhere else);
* **gradcheck**: ``torch.autograd.gradcheck`` where the surrogate has no stop-gradient around a
  ℓ-dependent quantity (``theory._core.stops_gradient``): there the gradient must be the
  derivative of the loss value.

A batch-coupled objective (no theory) gets the contract only, the rest marked not applicable.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

__all__ = ["BatteryReport", "check_objective", "REL_TOL"]

REL_TOL = 1e-10
GRADCHECK_EXAMPLES = 5


@dataclass(frozen=True)
class BatteryReport:
    """``results``: (check, passed (None: not applicable), detail); ``passed`` when none failed."""

    name: str
    results: tuple[tuple[str, bool | None, str], ...]

    @property
    def passed(self) -> bool:
        return all(ok is not False for _, ok, _ in self.results)

    def card(self) -> str:
        mark = {True: "PASS", False: "FAIL", None: "n/a "}
        lines = [f"theory <-> torch battery: {self.name}"]
        lines += [f"  {mark[ok]}  {check}: {detail}" for check, ok, detail in self.results]
        return "\n".join(lines) + "\n"


def _batch(g: torch.Generator, per_token_adv: bool, rollout: bool):
    n_groups, k = (int(torch.randint(1, 4, (1,), generator=g)) for _ in range(2))
    width = int(torch.randint(1, 8, (1,), generator=g))
    b = n_groups * k
    d = torch.float64
    logp = -(0.01 + 5.99 * torch.rand(b, width, generator=g, dtype=d))
    old = torch.clamp(logp - (2 * torch.rand(b, width, generator=g, dtype=d) - 1), max=0.0)
    lengths = torch.randint(1, width + 1, (b,), generator=g)
    mask = (torch.arange(width)[None, :] < lengths[:, None]).to(d)
    shape = (b, width) if per_token_adv else (b, 1)
    adv = (3 * (2 * torch.rand(*shape, generator=g, dtype=d) - 1)).expand(b, width).clone() * mask
    extra = {}
    if rollout:
        extra["rollout_logp"] = torch.clamp(old - (2 * torch.rand(b, width, generator=g, dtype=d) - 1), max=0.0)
    return logp, old, adv, mask, k, extra


def check_objective(objective: Any, *, examples: int = 50, seed: int = 0,
                    configs: Sequence[Any] | None = None) -> BatteryReport:
    """Run the battery on ``objective`` (a registry name, plugins included, or an ``ObjectiveSpec``)
    with ``configs`` (instances of its config class; default: its default config)."""
    from sims.aggregation import AGGREGATIONS
    from sims.plugins import contract_problems
    from sims.registry import OBJECTIVES, ObjectiveSpec, get_objective
    from theory._core import stops_gradient
    from theory.weights import batch_weights

    spec = objective if isinstance(objective, ObjectiveSpec) else get_objective(objective)
    if examples < 1:
        raise ValueError(f"examples={examples!r} is invalid; allowed: an int >= 1")
    results: list[tuple[str, bool | None, str]] = []
    problems = contract_problems(spec, set(OBJECTIVES) - {spec.name})
    results.append(("contract", not problems, "; ".join(problems) or "ObjectiveSpec, frozen config, theory, reference"))
    if problems or spec.theory is None:
        why = "the contract failed" if problems else f"batch-coupled ({spec.batch_coupled}): no derivation"
        results += [(c, None, f"not run: {why}") for c in ("weights", "zeros", "gradcheck")]
        return BatteryReport(spec.name, tuple(results))
    configs = list(configs or [spec.config_cls()])
    aggs = [a for a in AGGREGATIONS]
    g = torch.Generator().manual_seed(seed)
    weight_fail = zero_fail = grad_fail = None
    checked_grad = 0
    for i in range(examples):
        logp, old, adv, mask, k, extra = _batch(g, spec.advantage_level == "token", bool(spec.inputs))
        cfg = dataclasses.replace(configs[i % len(configs)], agg=aggs[i % len(aggs)], max_len=logp.shape[1],
                                  group_size=k)
        x = logp.clone().requires_grad_(True)
        try:
            loss, _ = spec.loss_fn(x, old, adv, mask, config=cfg, **extra)
            (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
        except Exception as exc:  # noqa: BLE001 (the objective's own failure is the finding)
            weight_fail = weight_fail or f"example {i} ({cfg.agg}): the loss raised {type(exc).__name__}: {exc}"
            continue
        w_torch = np.zeros(logp.shape) if grad is None else -grad.numpy()
        w = batch_weights(spec.theory, logp, old, adv, mask, cfg, **{k_: v.numpy() for k_, v in extra.items()})
        valid = mask.numpy() > 0
        scale = max(float(np.abs(w).max()), np.finfo(np.float64).tiny)
        err = float(np.abs(w_torch - w)[valid].max())
        if err > REL_TOL * scale and weight_fail is None:
            weight_fail = (f"example {i} (agg={cfg.agg}, B={logp.shape[0]}, T={logp.shape[1]}): max |w_torch - "
                           f"w_derived| = {err:.3g} > {REL_TOL:g} x {scale:.3g}\nderived w = {np.round(w, 6).tolist()}\n"
                           f"torch   w = {np.round(w_torch, 6).tolist()}")
        bad = valid & ((w_torch == 0) != (w == 0))
        if bad.any() and zero_fail is None:
            r, t = map(int, np.argwhere(bad)[0])
            zero_fail = (f"example {i}: token ({r}, {t}) has torch w = {w_torch[r, t]:.6g}, derived w = {w[r, t]:.6g} "
                         f"(ratio {float(torch.exp(logp[r, t] - old[r, t])):.6g}, A = {float(adv[r, t]):.3g})")
        if checked_grad < GRADCHECK_EXAMPLES and not stops_gradient(spec.theory, cfg):
            checked_grad += 1
            fn = lambda z: spec.loss_fn(z, old, adv, mask, config=cfg, **extra)[0]  # noqa: E731
            try:
                ok = torch.autograd.gradcheck(fn, (logp.clone().requires_grad_(True),), eps=1e-7, atol=1e-6,
                                              rtol=1e-5, raise_exception=False)
            except Exception as exc:  # noqa: BLE001
                ok, grad_fail = False, f"example {i}: gradcheck raised {type(exc).__name__}: {exc}"
            if not ok and grad_fail is None:
                grad_fail = f"example {i} (agg={cfg.agg}): the gradient is not the derivative of the loss value"
    results.append(("weights", weight_fail is None, weight_fail or
                    f"{examples} random batches: autograd = derived weight to {REL_TOL:g} relative"))
    results.append(("zeros", zero_fail is None, zero_fail or "zero exactly where the derivation says"))
    results.append(("gradcheck", None if checked_grad == 0 else grad_fail is None,
                    grad_fail or (f"{checked_grad} batches" if checked_grad else
                                  "not applicable: the surrogate stops the gradient by design")))
    return BatteryReport(spec.name, tuple(results))
