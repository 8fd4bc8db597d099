"""Experiments (bsuite pattern): each module has a frozen ``Config`` with ``quick()``, ``full()``
and ``tiny()`` sweeps, ``run(config, *, seed, device) -> Result`` (a tidy table, a summary the
claims ledger reads, published results reproduced), ``figures(result)`` (each figure with its caption;
``_plotting``) and ``plot(result, path)``, which writes them. See ``_common``.

``EXPERIMENTS`` lists them in report order; the report and the ledger iterate over it.
"""

from __future__ import annotations

from types import ModuleType

from sims.experiments import (bias_variance, difficulty, dynamics, gspo_weight, kl_estimators, length_bias,
                              lm_dynamics, sgs, survival)

EXPERIMENTS: dict[str, ModuleType] = {m.NAME: m for m in (
    bias_variance, gspo_weight, survival, length_bias, difficulty, sgs, dynamics, lm_dynamics, kl_estimators)}

SCALES = ("tiny", "quick", "full", "large")


def config_for(name: str, scale: str):
    """The ``scale`` sweep (``tiny``, ``quick``, ``full`` or ``large``) of experiment ``name``; an
    experiment without a ``large`` sweep (a GPU or cluster scale) runs its ``full`` one there."""
    if scale not in SCALES:
        raise ValueError(f"scale={scale!r} is invalid; allowed: {', '.join(SCALES)}")
    cls = EXPERIMENTS[name].Config
    return getattr(cls, scale if hasattr(cls, scale) else "full")()
