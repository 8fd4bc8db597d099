"""OpenRLHF: ``PolicyLoss`` and its options, and its KL estimators.

OpenRLHF's loss code is ``openrlhf/models/loss.py`` and ``openrlhf/models/utils.py``; the
package ``openrlhf.models`` imports its ``Actor`` at import time, which needs ``flash_attn``
(CUDA only), and ``utils.py`` imports ``deepspeed`` for a helper the losses never call. So
``load_loss_modules`` loads those two installed files as they are, under a package
``openrlhf.models`` whose ``__init__`` is not run, and — only when ``deepspeed`` cannot be
imported — with a placeholder ``deepspeed`` module that raises on any use. Nothing of
OpenRLHF is copied: the checked functions are the installed ones.

* **PolicyLoss**: ``policy_loss_type`` (ppo, gspo) × ``token_level_loss`` (token-mean over the
  global ``batch_num_tokens``, or the mean of per-sequence token means over the global
  ``global_batch_size``) × ``dual_clip``, and the train/rollout mismatch correction
  ``is_correction_level`` (token, seq) × ``is_correction_mode`` (mask, clip) ×
  ``is_correction_gating`` (ratio; binary_kl and tv are not applicable: no registry spec), fed
  the rollout policy's log-probs as ``rollout_log_probs``. ppo → ``ppo_clip`` with OpenRLHF's
  ±20 log-ratio clamp; gspo → ``gspo`` (sequence form); the correction → ``ppo_clip_rollout_is``.
* **KL estimators**: ``compute_approx_kl(log_probs, log_probs_base, kl_estimator)`` for k1, k2,
  k3, with ``unbiased_gradient`` off and on, aggregated by ``masked_mean`` as the actor does,
  against the ``kl`` spec, fed in float32 (the function casts its inputs with ``.float()``).

Minimal CPU install (measured; ``pip install 'pgverify[openrlhf]'`` installs nothing extra):
``pip install --no-deps openrlhf==0.11.2`` — its declared requirements include
``flash-attn``, ``deepspeed`` and ``bitsandbytes``, which need CUDA to build or run.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sims.trainers._core import Adapter, Case, Note

DEFAULTS: dict[str, Any] = {"clip_eps_low": 0.2, "clip_eps_high": 0.28, "dual_clip": 3.0,
                            "is_correction_low": 0.5, "is_correction_high": 5.0}
CLAMP = {"log_ratio_min": -20.0, "log_ratio_max": 20.0}
E20 = r"2\.06115e-09|4\.85165e\+08"
CLAMP_NOTE = Note("spec: zero-weight regions", "clamp: OpenRLHF clamps log ρ to ±20 before exp, so beyond it the "
                  "weight is exactly 0 — a silent gradient cut the spec does not state here.", E20)
MODULE = "openrlhf.models"


class _Placeholder(types.ModuleType):
    """Stands in for ``deepspeed`` when it is not installed: any attribute use raises."""

    def __getattr__(self, name: str):
        if name.startswith("__"):  # module introspection (__file__, __spec__ ...): a plain missing attribute
            raise AttributeError(name)
        raise ImportError(f"deepspeed is not installed (pgverify loaded OpenRLHF's loss code without it); "
                          f"deepspeed.{name} is not available")


def load_loss_modules() -> tuple[types.ModuleType, types.ModuleType]:
    """OpenRLHF's installed ``openrlhf.models.loss`` and ``openrlhf.models.utils``, loaded without
    running ``openrlhf/models/__init__.py`` (see the module docstring)."""
    if f"{MODULE}.loss" in sys.modules and f"{MODULE}.utils" in sys.modules:
        return sys.modules[f"{MODULE}.loss"], sys.modules[f"{MODULE}.utils"]
    root = importlib.util.find_spec("openrlhf")
    if root is None or not root.submodule_search_locations:
        raise ImportError("openrlhf is not installed")
    folder = Path(next(iter(root.submodule_search_locations))) / "models"
    if importlib.util.find_spec("deepspeed") is None and "deepspeed" not in sys.modules:
        sys.modules["deepspeed"] = _Placeholder("deepspeed")
    if MODULE not in sys.modules:
        package = types.ModuleType(MODULE)
        package.__path__ = [str(folder)]  # a package whose __init__ (Actor, flash_attn) is not run
        sys.modules[MODULE] = package
    out = []
    for name in ("utils", "loss"):
        spec = importlib.util.spec_from_file_location(f"{MODULE}.{name}", folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        out.append(module)
    return out[1], out[0]


def policy_loss(kwargs: Mapping[str, Any], rollout: bool) -> Callable[[], Callable[..., Any]]:
    """A maker of ``PolicyLoss(**kwargs).forward`` with the global normalisers (dp_size 1)."""

    def make():
        loss_mod, _ = load_loss_modules()
        module = loss_mod.PolicyLoss(**kwargs)

        if rollout:
            def openrlhf_policy_loss(log_probs, old_log_probs, advantages, action_mask, rollout_log_probs,
                                     batch_num_tokens, global_batch_size):
                return module(log_probs, old_log_probs, advantages, action_mask=action_mask,
                              rollout_log_probs=rollout_log_probs, batch_num_tokens=batch_num_tokens,
                              global_batch_size=global_batch_size)[0]
        else:
            def openrlhf_policy_loss(log_probs, old_log_probs, advantages, action_mask, batch_num_tokens,
                                     global_batch_size):
                return module(log_probs, old_log_probs, advantages, action_mask=action_mask,
                              batch_num_tokens=batch_num_tokens, global_batch_size=global_batch_size)[0]
        openrlhf_policy_loss.__qualname__ = "openrlhf.PolicyLoss"
        return openrlhf_policy_loss

    return make


def kl_loss(estimator: str, unbiased: bool) -> Callable[[], Callable[..., Any]]:
    """``masked_mean(compute_approx_kl(log_probs, log_probs_base, kl_estimator), action_mask)``."""

    def make():
        _, utils = load_loss_modules()

        def openrlhf_kl(log_probs, log_probs_base, action_mask):
            kl = utils.compute_approx_kl(log_probs, log_probs_base, kl_estimator=estimator,
                                         unbiased_gradient=unbiased)
            return utils.masked_mean(kl, action_mask, dim=None)

        openrlhf_kl.__qualname__ = f"openrlhf.compute_approx_kl[{estimator}]"
        return openrlhf_kl

    return make


def cases(config: Mapping[str, Any]) -> list[Case]:
    """Every case of the installed OpenRLHF (see the module docstring)."""
    load_loss_modules()  # fails here, with the reason, if the loss code cannot be loaded
    c = config
    eps = {"eps_low": c["clip_eps_low"], "eps_high": c["clip_eps_high"]}
    base = {"clip_eps_low": c["clip_eps_low"], "clip_eps_high": c["clip_eps_high"]}
    out: list[Case] = []
    for loss_type in ("ppo", "gspo"):
        for token_level in (True, False):
            for dual in (None, c["dual_clip"]):
                kw = base | {"policy_loss_type": loss_type, "token_level_loss": token_level, "dual_clip": dual}
                agg = "token-mean" if token_level and loss_type == "ppo" else "seq-mean-token-mean"
                params = {"agg": agg} | eps | ({"dual_clip_c": dual} if dual else {})
                notes: tuple[Note, ...] = (CLAMP_NOTE,)
                if loss_type == "ppo":
                    spec, params, claim = "ppo_clip", params | CLAMP, "PPO clip (arXiv:1707.06347)"
                else:
                    spec, claim = "gspo", "GSPO (arXiv:2507.18071), sequence form"
                    if token_level:
                        notes += (Note("spec", "aggregation: PolicyLoss forces token_level_loss=False for gspo "
                                       "(documented in its __init__: GSPO is a per-sample mean), so the requested "
                                       "token-level aggregation is overridden."),)
                        params = params | {"agg": "token-mean"}
                if dual:
                    claim += f", dual-clip c = {dual:g} (arXiv:1912.09729)"
                option = f"policy_loss_type={loss_type}, token_level_loss={token_level}, dual_clip={dual}"
                out.append(Case("PolicyLoss", option, claim, spec, params, policy_loss(kw, rollout=False),
                                settings=kw, notes=notes))
    lo, hi = c["is_correction_low"], c["is_correction_high"]
    for level in ("token", "seq"):
        for mode in ("mask", "clip"):
            for gating in ("ratio", "binary_kl", "tv"):
                kw = base | {"policy_loss_type": "ppo", "is_correction_level": level, "is_correction_mode": mode,
                             "is_correction_gating": gating,
                             "is_correction_threshold": (lo, hi) if gating == "ratio" else (0.0, 0.1)}
                option = f"is_correction_level={level}, is_correction_mode={mode}, is_correction_gating={gating}"
                if mode == "clip" and (level == "seq" or gating != "ratio"):
                    out.append(Case("PolicyLoss", option, "train/rollout correction", settings=kw, not_applicable=(
                        "not applicable: OpenRLHF refuses this combination (clip needs token level and ratio "
                        "gating)")))
                    continue
                if gating != "ratio":
                    out.append(Case("PolicyLoss", option, "train/rollout trust-region gate", settings=kw,
                                    not_applicable=(f"not applicable: the registry has no spec that gates by the "
                                                    f"{gating} divergence between π_rollout and π_old")))
                    continue
                params = ({"agg": "token-mean"} | eps | CLAMP
                          | {"rollout_is_level": "token" if level == "token" else "sequence",
                             "rollout_is_mode": "band" if mode == "mask" else "truncate",
                             "rollout_is_lo": lo, "rollout_is_hi": hi})
                notes = (CLAMP_NOTE,)
                if level == "seq":
                    notes += (Note("spec", "sequence gate: OpenRLHF gates a sequence by the geometric mean of its "
                                   "token ratios and keeps each survivor's per-token weight, where the registry's "
                                   "sequence level weights by the product of the ratios (the sequence IS ratio)."),)
                out.append(Case("PolicyLoss", option, "PPO clip × train/rollout IS weight (TIS / IcePop-style band)",
                                "ppo_clip_rollout_is", params, policy_loss(kw, rollout=True), settings=kw,
                                notes=notes))
    kl_note = Note("spec: zero-weight regions", "clamp: compute_approx_kl clamps every estimate to [-10, 10] (k3 also "
                   "its log-ratio at -10), so where the estimate passes 10 its gradient is exactly 0 — meant for "
                   "stability, but the KL pull vanishes where the policy is far from the reference.")
    for estimator in ("k1", "k2", "k3"):
        for unbiased in (False, True):
            spec_est = "k2" if unbiased else estimator
            claim = (f"{estimator} value with the reverse-KL gradient (k2's, straight-through)" if unbiased
                     else f"Schulman's {estimator}")
            out.append(Case("compute_approx_kl", f"kl_estimator={estimator}, unbiased_gradient={unbiased}", claim,
                            "kl", {"estimator": spec_est, "agg": "token-mean"}, kl_loss(estimator, unbiased),
                            feed={"dtype": "float32"},  # compute_approx_kl casts to float32 (.float()) itself
                            settings={"kl_estimator": estimator, "unbiased_gradient": unbiased},
                            notes=(kl_note, Note("spec: gradient weights", kl_note.sentence)) if not unbiased
                            else (kl_note,)))
    return out


ADAPTER = Adapter(
    trainer="openrlhf", package="openrlhf", tested=("0.11.2",),
    install="pip install --no-deps openrlhf==0.11.2  (its full requirements need CUDA; the loss code needs only "
            "torch)",
    defaults=DEFAULTS, cases=cases, import_check="openrlhf")
