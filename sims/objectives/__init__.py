r"""Policy-gradient objectives as small pure torch functions.

Every objective has the signature ``loss_fn(logp, old_logp, adv, mask, *, config) -> (loss,
diagnostics)``:

* ``logp``      ``[B, T]`` log π_θ(o_t | o_<t) of the sampled tokens (carries gradient);
* ``old_logp``  ``[B, T]`` log π_old of the same tokens (treated as a constant: detached);
* ``adv``       ``[B, T]`` advantages, usually one value per sequence broadcast over its tokens
  (treated as a constant: detached);
* ``mask``      ``[B, T]`` 1 on valid tokens, 0 on padding; every sequence has a valid token.

The loss is a 0-d tensor, produced by the per-token loss ``L`` and the config's aggregation
(``sims.aggregation``). Diagnostics are detached 0-d tensors. The gradient of every objective is
``∇_θ loss = -Σ_it w_it ∇_θ log π_θ(o_it)`` with the *gradient weight* ``w = -∂loss/∂logp``,
written in each docstring as ``w_it = c_it · (...)`` where ``c_it`` is the aggregation's
per-token normaliser (``sims.aggregation.token_weights``). Notation: ratio ρ = exp(logp -
old_logp), clip(x, a, b) = min(max(x, a), b), sg = stop-gradient, 1[·] an indicator, σ the
logistic sigmoid. Clip ranges are always ``[1 - eps_low, 1 + eps_high]``; ``eps_low=None``
means no lower bound.

No log-ratio is clamped: ratios are computed exactly, so a huge log-ratio overflows as it
would in float arithmetic rather than being silently altered.

One module per family, mirroring ``theory/``: ``reinforce`` (REINFORCE, TIS/MIS, sequence IS,
DRO), ``ppo_clip`` (with OPSM), ``gspo`` (GSPO, GSPO-token with optional dual-clip, GMPO),
``cispo`` (CISPO, SGS-CISPO), ``sapo``, ``dppo`` (DPPO binary TV / KL trust regions) and
``rollout`` (rollout-correction weights, PPO x rollout IS; objectives taking ``rollout_logp``);
each symbolic twin is the ``theory`` module of the same name. ``cov`` (KL-Cov, Clip-Cov) selects
tokens by a batch covariance and has no per-sequence twin. Every public name is re-exported here,
so ``from sims.objectives import cispo`` gives the function.
"""

from sims.objectives.cispo import (
    P_MODES,
    CispoConfig,
    SgsCispoConfig,
    cispo,
    sgs_cispo,
    sgs_scale,
)
from sims.objectives.cov import (
    SELECTIONS,
    ClipCovConfig,
    KlCovConfig,
    clip_cov,
    kl_cov,
    token_covariance,
    top_covariance_tokens,
)
from sims.objectives.dppo import DppoConfig, binary_kl, dppo_kl, dppo_tv
from sims.objectives.gspo import GmpoConfig, GspoConfig, gmpo, gspo, gspo_token
from sims.objectives.ppo_clip import PpoClipConfig, opsm_mask, ppo_clip
from sims.objectives.reinforce import DroConfig, ReinforceConfig, SeqIsConfig, dro, reinforce, seq_is
from sims.objectives.rollout import (
    ROLLOUT_LEVELS,
    ROLLOUT_MODES,
    PpoClipRolloutIsConfig,
    ppo_clip_rollout_is,
    rollout_is_weight,
)
from sims.objectives.sapo import SapoConfig, sapo

__all__ = [
    "ReinforceConfig", "reinforce",
    "SeqIsConfig", "seq_is",
    "PpoClipConfig", "ppo_clip",
    "GspoConfig", "gspo", "gspo_token",
    "GmpoConfig", "gmpo",
    "CispoConfig", "cispo",
    "SapoConfig", "sapo",
    "SgsCispoConfig", "sgs_cispo", "sgs_scale", "P_MODES",
    "DroConfig", "dro",
    "DppoConfig", "dppo_tv", "dppo_kl", "binary_kl",
    "KlCovConfig", "kl_cov", "ClipCovConfig", "clip_cov", "SELECTIONS",
    "token_covariance", "top_covariance_tokens",
    "PpoClipRolloutIsConfig", "ppo_clip_rollout_is", "rollout_is_weight",
    "ROLLOUT_LEVELS", "ROLLOUT_MODES", "opsm_mask",
]
