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
and the pytest fixture ``pgverify_check`` put the same checks in a test suite.
"""

from sims.check.api import assert_matches_spec, assert_passes, check
from sims.check.inputs import Layout
from sims.check.result import CheckResult
from sims.check.runner import CheckReport, run_checks
from sims.check.specs import SPEC_NAMES, make_spec
from sims.check.target import UsageError, bind_params, load_target

__all__ = ["check", "assert_matches_spec", "assert_passes", "run_checks", "CheckReport", "CheckResult",
           "Layout", "make_spec", "SPEC_NAMES", "load_target", "bind_params", "UsageError"]
