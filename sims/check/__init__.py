"""``pgverify check``: regression-test any policy-gradient loss against a spec and a property battery.

The loss under test is ``fn(logp, old_logp, adv, mask) -> loss | (loss, diagnostics)``. Sections:

* contract (``contract``): a finite 0-d loss, no gradient to ``old_logp``/``adv``, finite on extremes;
* spec (``spec_check``, ``regions``): gradient weights and zero-weight regions equal a registry
  objective's (``specs``);
* properties (``properties``): padding, permutation, group locality, advantage equivariance,
  on-policy reduction to REINFORCE;
* profile (``properties``, ``regions``, ``profile``): which aggregation it behaves like, where its
  weight is zero, exact bias and variance next to the registry's objectives.

``run_checks`` runs them and returns a ``CheckReport``; ``assert_matches_spec`` / ``assert_passes``
and the pytest fixture ``pgverify_check`` put the same checks in a test suite; ``check_objective``
(``battery``) runs the registry's theory ↔ torch battery on any objective, a plugin's included.
"""

import importlib
from typing import Any

# Lazy (PEP 562): ``sims.check.target`` (a light module) can be imported without the checkers,
# which import the report, matplotlib and the profile (seconds); the names below load on first use.
_EXPORTS = {
    "check": "sims.check.api", "assert_matches_spec": "sims.check.api", "assert_passes": "sims.check.api",
    "run_checks": "sims.check.runner", "CheckReport": "sims.check.runner", "CheckResult": "sims.check.result",
    "Layout": "sims.check.inputs", "make_spec": "sims.check.specs", "SPEC_NAMES": "sims.check.specs",
    "load_target": "sims.check.target", "bind_params": "sims.check.target", "UsageError": "sims.check.target",
    "check_objective": "sims.check.battery", "BatteryReport": "sims.check.battery",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'sims.check' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
