"""verl: its policy-loss registry × aggregation modes, its KL penalty kinds, its rollout correction.

Each case calls the installed verl as its PPO actor does (``verl.workers.utils.losses.ppo_loss``):
the actor config is verl's own ``FSDPActorConfig`` (``clip_ratio_low/high``, ``clip_ratio_c``,
``loss_agg_mode``, ``loss_scale_factor``, ``tau_pos/neg``, ``policy_loss`` = its
``PolicyLossConfig``), ``config.global_batch_info`` is filled per call with ``dp_size = 1`` and
the global token and sequence counts (``batch_num_tokens``, ``global_batch_size``: pgverify's
micro-batch normalisers), and the loss is ``get_policy_loss_fn(loss_mode)(old_log_prob,
log_prob, advantages, response_mask, loss_agg_mode, config, rollout_is_weights)``.

* **Policy losses**: every entry of ``POLICY_LOSS_REGISTRY``, mapped
  to the registry objective its docstring or paper names (``vanilla`` → ``ppo_clip`` with verl's
  dual-clip c = ``clip_ratio_c`` and its ±20 log-ratio clamp; ``gspo`` → ``gspo_token`` with its
  clamp of log s at 10; ``geo_mean`` → ``gmpo``; ``gpg`` → ``reinforce``; ...). ``agg_loss`` is
  one function shared by the losses: every ``loss_agg_mode`` (and the unset ``loss_scale_factor``)
  is crossed with ``vanilla``, every other loss is checked at verl's default ``token-mean`` and at
  ``seq-mean-token-mean`` — enough to show a loss that ignores ``loss_agg_mode`` (and half the
  time of the full cross product, which ``--config`` does not change). An entry the adapter does
  not know is a row "not applicable: new in this version".
* **KL penalty kinds** (``kl_loss_type``): ``kl_penalty(log_prob, ref_log_prob, kind)``
  aggregated by ``agg_loss`` as ``ppo_loss`` does, against the ``kl`` spec (k1, k2, k3; the
  ``+`` kinds take k2's gradient by a straight-through trick).
* **Rollout correction**: the decoupled mode (``rollout_is`` token / sequence, TIS threshold or
  an IcePop band: ``compute_rollout_correction_weights`` on ``old_log_prob − rollout_log_probs``,
  passed to ``vanilla`` as ``rollout_is_weights``) against ``ppo_clip_rollout_is``; the bypass
  mode (``bypass_mode`` with ``loss_type`` ppo_clip / reinforce, old = rollout); the rejection
  options (``rollout_rs``) are listed as not applicable (no registry spec).

Minimal CPU install (measured; ``pip install 'pgverify[verl]'``): ``verl==0.9.1`` with
``ray``, ``omegaconf``, ``tensordict``, ``codetiming``, ``transformers``, ``accelerate``,
``peft`` and ``datasets`` — verl's own requirement list adds ``wandb``, ``tensorboard``,
``hydra-core`` and more that its loss code does not import.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sims.trainers._core import Adapter, Case, Note

AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm", "token-sum")
OTHER_AGG_MODES = ("token-mean", "seq-mean-token-mean")
KL_KINDS = ("kl", "k1", "abs", "mse", "k2", "low_var_kl", "k3", "k1+", "k3+", "full")
ROLLOUT_IS = (("token", "2.0"), ("sequence", "2.0"), ("token", "0.5_2.0"))
DEFAULTS: dict[str, Any] = {
    "clip_ratio_low": 0.2, "clip_ratio_high": 0.28, "clip_ratio_c": 3.0, "loss_scale_factor": 8,
    "tau_pos": 1.0, "tau_neg": 1.05, "dro_beta": 0.1, "kl_cov_ratio": 0.1, "ppo_kl_coef": 0.1,
    "clip_cov_ratio": 1.0, "clip_cov_lb": 1.0, "clip_cov_ub": 5.0,
}
CLAMP = {"log_ratio_min": -20.0, "log_ratio_max": 20.0}  # verl's "clamp for stability" of log ρ
E20 = r"2\.06115e-09|4\.85165e\+08"  # e^-20, e^20 as the region map prints them
CLAMP_NOTE = Note("spec: zero-weight regions", "clamp: verl clamps log ρ to ±20 before exp, so beyond it the weight "
                  "is exactly 0 — a silent gradient cut the registry spec does not state here.", E20)
COV_MICRO = Note("micro-batches", "batch coupling: the covariance and its top-k / random selection are taken over "
                 "the micro-batch, so micro-batch gradients cannot add up to the batch's (by the method's design; "
                 "the selection depends on how the batch is split).")
SUM_NORM_NOTES = tuple(Note(check, "normaliser: with loss_scale_factor unset, seq-mean-token-sum-norm divides by the "
                            "padded width loss_mask.shape[-1] (verl's documented fallback), so the loss and its "
                            "gradient change with padding; set loss_scale_factor to the generation budget.", when)
                       for check, when in (("padding", None), ("spec: gradient weights", None),
                                           ("spec: zero-weight regions", "absolute")))


def _actor_config(config: Mapping[str, Any], loss_mode: str, agg: str, *, scale: int | None,
                  rollout_correction: Mapping[str, Any] | None = None):
    """verl's own ``FSDPActorConfig`` with the knobs of ``config`` (the fields ``ppo_loss`` reads)."""
    from verl.trainer.config.algorithm import RolloutCorrectionConfig
    from verl.workers.config import FSDPActorConfig
    from verl.workers.config.actor import PolicyLossConfig

    policy = PolicyLossConfig(loss_mode=loss_mode, clip_cov_ratio=config["clip_cov_ratio"],
                              clip_cov_lb=config["clip_cov_lb"], clip_cov_ub=config["clip_cov_ub"],
                              kl_cov_ratio=config["kl_cov_ratio"], ppo_kl_coef=config["ppo_kl_coef"],
                              dro_beta=config["dro_beta"],
                              rollout_correction=RolloutCorrectionConfig(**(rollout_correction or {})))
    return FSDPActorConfig(strategy="fsdp", rollout_n=4, ppo_mini_batch_size=4, ppo_micro_batch_size_per_gpu=4,
                           clip_ratio=config["clip_ratio_low"], clip_ratio_low=config["clip_ratio_low"],
                           clip_ratio_high=config["clip_ratio_high"], clip_ratio_c=config["clip_ratio_c"],
                           loss_agg_mode=agg, loss_scale_factor=scale, tau_pos=config["tau_pos"],
                           tau_neg=config["tau_neg"], policy_loss=policy)


def _fill(actor, batch_num_tokens: int, global_batch_size: int) -> None:
    """``config.global_batch_info`` as ``ppo_loss`` fills it before every call (dp_size 1)."""
    actor.global_batch_info["dp_size"] = 1
    actor.global_batch_info["batch_num_tokens"] = batch_num_tokens
    actor.global_batch_info["global_batch_size"] = global_batch_size
    actor.global_batch_info["loss_scale_factor"] = actor.loss_scale_factor


def policy_loss(config: Mapping[str, Any], loss_mode: str, agg: str, scale: int | None,
                rollout_correction: Mapping[str, Any] | None = None) -> Callable[[], Callable[..., Any]]:
    """A maker of verl's registered policy loss ``loss_mode`` as ``ppo_loss`` calls it."""

    def make():
        from verl.trainer.ppo.core_algos import get_policy_loss_fn

        actor = _actor_config(config, loss_mode, agg, scale=scale, rollout_correction=rollout_correction)
        fn = get_policy_loss_fn(loss_mode)

        def verl_policy_loss(old_log_prob, log_prob, advantages, response_mask, batch_num_tokens,
                             global_batch_size):
            _fill(actor, batch_num_tokens, global_batch_size)
            return fn(old_log_prob=old_log_prob, log_prob=log_prob, advantages=advantages,
                      response_mask=response_mask, loss_agg_mode=actor.loss_agg_mode, config=actor,
                      rollout_is_weights=None)

        verl_policy_loss.__qualname__ = f"verl.{loss_mode}"
        return verl_policy_loss

    return make


def decoupled_rollout_loss(config: Mapping[str, Any], level: str, threshold: str) -> Callable[[], Callable[..., Any]]:
    """``vanilla`` with the decoupled rollout weights: ``compute_rollout_correction_weights`` on
    ``old_log_prob - rollout_log_probs`` (as ``compute_rollout_correction_and_add_to_batch``)."""

    def make():
        import torch
        from verl.trainer.ppo.core_algos import get_policy_loss_fn
        from verl.trainer.ppo.rollout_corr_helper import (
            compute_rollout_correction_weights,
        )

        actor = _actor_config(config, "vanilla", "token-mean", scale=config["loss_scale_factor"])
        fn = get_policy_loss_fn("vanilla")

        def verl_decoupled(old_log_prob, log_prob, advantages, response_mask, rollout_log_probs, batch_num_tokens,
                           global_batch_size):
            _fill(actor, batch_num_tokens, global_batch_size)
            with torch.no_grad():
                weights, _ = compute_rollout_correction_weights(
                    old_log_prob - rollout_log_probs, response_mask.to(old_log_prob.dtype), rollout_is=level,
                    rollout_is_threshold=threshold)
            return fn(old_log_prob=old_log_prob, log_prob=log_prob, advantages=advantages,
                      response_mask=response_mask, loss_agg_mode="token-mean", config=actor,
                      rollout_is_weights=weights)

        verl_decoupled.__qualname__ = f"verl.vanilla+rollout_is={level}"
        return verl_decoupled

    return make


def kl_loss(kind: str) -> Callable[[], Callable[..., Any]]:
    """verl's KL loss term: ``agg_loss(kl_penalty(log_prob, ref_log_prob, kind), token-mean)``."""

    def make():
        from verl.trainer.ppo.core_algos import agg_loss, kl_penalty

        def verl_kl_loss(log_prob, ref_log_prob, response_mask):
            kld = kl_penalty(logprob=log_prob, ref_logprob=ref_log_prob, kl_penalty=kind)
            return agg_loss(loss_mat=kld, loss_mask=response_mask, loss_agg_mode="token-mean")

        verl_kl_loss.__qualname__ = f"verl.kl_penalty[{kind}]"
        return verl_kl_loss

    return make


def _ignored_agg(sentence: str) -> tuple[Note, ...]:
    """The notes of a loss that ignores the configured aggregation: its weights, and the region
    map's absolute scale, differ by the normaliser."""
    return (Note("spec: gradient weights", sentence), Note("spec: zero-weight regions", sentence, "absolute"))


def _policy_spec(loss_mode: str, c: Mapping[str, Any], agg: str) -> tuple[str, dict[str, Any], str, tuple[Note, ...]]:
    """(spec, params, claim, notes) of one registered loss under aggregation ``agg``."""
    eps = {"eps_low": c["clip_ratio_low"], "eps_high": c["clip_ratio_high"]}
    a = {"agg": agg} | ({"max_len": c["loss_scale_factor"]} if agg == "seq-mean-token-sum-norm" else {})
    table: dict[str, tuple[str, dict[str, Any], str, tuple[Note, ...]]] = {
        "vanilla": ("ppo_clip", a | eps | {"dual_clip_c": c["clip_ratio_c"]} | CLAMP,
                    "PPO clip (arXiv:1707.06347) with dual-clip c = clip_ratio_c (arXiv:1912.09729)", ()),
        "gspo": ("gspo_token", a | eps | {"log_ratio_max": 10.0},
                 "GSPO-token (arXiv:2507.18071), s_i,t = sg(s_i)·π/sg(π), log s clamped at 10", ()),
        "sapo": ("sapo", a | {"tau_pos": c["tau_pos"], "tau_neg": c["tau_neg"]} | CLAMP,
                 "SAPO soft gate (arXiv:2511.20347)",
                 _ignored_agg("aggregation: verl's sapo always aggregates with seq-mean-token-mean (its code comment "
                              "says SAPO needs it), so the configured loss_agg_mode is silently ignored.")),
        "gpg": ("reinforce", a, "GPG (arXiv:2504.02546): REINFORCE -A·log π without a ratio", ()),
        "geo_mean": ("gmpo", a | eps, "GMPO (arXiv:2507.20673), geometric mean of sign-aware clipped ratios",
                     _ignored_agg("aggregation: geo_mean ends with torch.mean over sequences, so any loss_agg_mode "
                                  "other than seq-mean-token-mean is silently ignored.")
                     + (Note("micro-batches", "normaliser: geo_mean divides by its own micro-batch's sequence count "
                             "(torch.mean) and ignores global_batch_size, so micro-batch gradients do not add up to "
                             "the batch's — unlike every other verl loss; looks unintended."),)),
        "dro": ("dro", a | {"beta": c["dro_beta"]}, "DRO (Kimi k1.5, arXiv:2501.12599): A·log π − β/2 (log ρ)²", ()),
        "cispo": ("cispo", a | eps, "CISPO (MiniMax-M1, arXiv:2506.13585) with verl's two-sided clip", ()),
        "dppo_tv": ("dppo_tv", a | {"delta_low": c["clip_ratio_low"], "delta_high": c["clip_ratio_high"],
                                    "is_cap": c["clip_ratio_c"]},
                    "DPPO Binary-TV (arXiv:2602.04879), TIS cap clip_ratio_c", ()),
        "dppo_kl": ("dppo_kl", a | {"delta_low": c["clip_ratio_low"], "delta_high": c["clip_ratio_high"],
                                    "is_cap": c["clip_ratio_c"]},
                    "DPPO Binary-KL (arXiv:2602.04879), TIS cap clip_ratio_c", ()),
        "kl_cov": ("kl_cov", a | {"kl_cov_ratio": c["kl_cov_ratio"], "ppo_kl_coef": c["ppo_kl_coef"]},
                   "KL-Cov (arXiv:2505.22617, sec. 4)", (COV_MICRO,)),
        "clip_cov": ("clip_cov", a | eps | {"clip_cov_ratio": c["clip_cov_ratio"], "clip_cov_lb": c["clip_cov_lb"],
                                            "clip_cov_ub": c["clip_cov_ub"], "selection": "random"},
                     "Clip-Cov (arXiv:2505.22617, sec. 4), random draw of the detached tokens",
                     (COV_MICRO, Note("contract: deterministic", "randomness: clip_cov draws the tokens it detaches with "
                           "torch.randperm from the global RNG, so the same batch gives different gradients as the "
                           "RNG moves (intended by the method's random selection)."),)),
    }
    spec, params, claim, notes = table[loss_mode]
    return spec, params, claim, notes + (CLAMP_NOTE,)


def cases(config: Mapping[str, Any]) -> list[Case]:
    """Every case of the installed verl (see the module docstring)."""
    from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY

    out: list[Case] = []
    known = {"vanilla", "gspo", "sapo", "gpg", "geo_mean", "dro", "cispo", "dppo_tv", "dppo_kl", "kl_cov",
             "clip_cov", "bypass_mode"}
    for loss_mode in POLICY_LOSS_REGISTRY:
        if loss_mode == "bypass_mode":
            continue  # a rollout-correction mode: below
        if loss_mode not in known:
            out.append(Case(loss_mode, "", "registered in this verl version", not_applicable=(
                f"new in this verl version: the adapter does not know which objective {loss_mode!r} implements")))
            continue
        # agg_loss is one shared function: every mode is crossed with vanilla; every other loss is checked at
        # verl's default token-mean and at seq-mean-token-mean, which shows a loss that ignores loss_agg_mode
        for agg in AGG_MODES if loss_mode == "vanilla" else OTHER_AGG_MODES:
            # verl's fallback without loss_scale_factor (the padded width) once, on vanilla
            unset = agg == "seq-mean-token-sum-norm" and loss_mode == "vanilla"
            scales = [config["loss_scale_factor"]] + ([None] if unset else [])
            for scale in scales:
                spec, params, claim, notes = _policy_spec(loss_mode, config, agg)
                option = f"loss_agg_mode={agg}"
                if agg == "seq-mean-token-sum-norm":
                    option += f", loss_scale_factor={scale}"
                    if scale is None:
                        params = params | {"max_len": 8}
                        notes = SUM_NORM_NOTES + notes
                out.append(Case(loss_mode, option, claim, spec, params, policy_loss(config, loss_mode, agg, scale),
                                settings={"loss_mode": loss_mode, "loss_agg_mode": agg, "loss_scale_factor": scale},
                                notes=notes))
    out += _kl_cases()
    out += _rollout_cases(config)
    return out


def _kl_cases() -> list[Case]:
    kl_note = Note("spec: zero-weight regions", "clamp: low_var_kl clamps the estimate to [-10, 10] (and the "
                   "log-ratio to ±20), so where k3 > 10 its gradient is exactly 0 (the verl #2928 class: meant for "
                   "stability, but the KL pull vanishes exactly where the policy is far from the reference).")
    specs = {"kl": "k1", "k1": "k1", "mse": "k2", "k2": "k2", "low_var_kl": "k3", "k3": "k3", "k1+": "k2",
             "k3+": "k2"}
    out = []
    for kind in KL_KINDS:
        settings = {"use_kl_loss": True, "kl_loss_type": kind}
        if kind not in specs:
            reason = ("not applicable: 'full' needs the whole vocabulary's logits (verl raises NotImplementedError "
                      "for per-token log-probs)" if kind == "full" else
                      "not applicable: |log π − log π_ref| is not a KL estimator of the registry (its gradient is "
                      "sign(x), neither k1's, k2's nor k3's)")
            out.append(Case("kl_penalty", f"kl_loss_type={kind}", "verl KL loss", settings=settings,
                            not_applicable=reason))
            continue
        claim = (f"{specs[kind]} value with k2's gradient (straight-through)" if kind.endswith("+")
                 else f"Schulman's {specs[kind]} estimator")
        out.append(Case("kl_penalty", f"kl_loss_type={kind}", claim, "kl",
                        {"estimator": specs[kind], "agg": "token-mean"}, kl_loss(kind), settings=settings,
                        notes=(kl_note,) + ((Note("spec: gradient weights", kl_note.sentence),)
                                            if specs[kind] == "k3" and not kind.endswith("+") else ())))
    return out


def _rollout_cases(config: Mapping[str, Any]) -> list[Case]:
    from verl.trainer.ppo.rollout_corr_helper import SUPPORTED_ROLLOUT_RS_OPTIONS

    eps = {"eps_low": config["clip_ratio_low"], "eps_high": config["clip_ratio_high"],
           "dual_clip_c": config["clip_ratio_c"]}
    out = []
    for level, threshold in ROLLOUT_IS:
        lo, _, hi = threshold.partition("_") if "_" in threshold else ("", "", threshold)
        band = {"rollout_is_mode": "band", "rollout_is_lo": float(lo)} if lo else {"rollout_is_mode": "truncate"}
        params = {"agg": "token-mean"} | eps | CLAMP | {"rollout_is_level": level, "rollout_is_hi": float(hi)} | band
        notes = (CLAMP_NOTE, Note("contract: returns", "crash: with an IcePop band, compute_is_metrics divides by "
                                  "the number of kept tokens, so a batch whose weights all fall outside the band "
                                  "raises ZeroDivisionError instead of returning a zero-gradient loss — a bug.",
                                  "ZeroDivisionError"))
        out.append(Case("rollout_correction", f"rollout_is={level}, rollout_is_threshold={threshold}",
                        "decoupled PPO with rollout IS weights π_old/π_rollout (TIS / IcePop)",
                        "ppo_clip_rollout_is", params, decoupled_rollout_loss(config, level, threshold),
                        settings={"rollout_is": level, "rollout_is_threshold": threshold, "bypass_mode": False},
                        notes=notes))
    for loss_type in ("ppo_clip", "reinforce"):
        for level in ("token", "sequence"):
            rc = {"bypass_mode": True, "loss_type": loss_type, "rollout_is": level, "rollout_is_threshold": 2.0}
            if loss_type == "ppo_clip":
                spec, params = "ppo_clip", {"agg": "token-mean"} | eps | CLAMP
                claim = "bypass: PPO clip with π_old = π_rollout (the clip is the IS correction)"
            else:
                spec, params = "reinforce", {"agg": "token-mean", "is_level": level, "is_mode": "truncate",
                                             "is_cap": 2.0}
                claim = "bypass: REINFORCE with the detached truncated IS weight π/π_rollout"
            out.append(Case("bypass_mode", f"loss_type={loss_type}, rollout_is={level}", claim, spec, params,
                            policy_loss(config, "bypass_mode", "token-mean", config["loss_scale_factor"], rc),
                            settings={"policy_loss.rollout_correction": rc},
                            notes=(CLAMP_NOTE,)))
    for rs in sorted(SUPPORTED_ROLLOUT_RS_OPTIONS):
        out.append(Case("rollout_rejection", f"rollout_rs={rs}", "rejection sampling of tokens / sequences",
                        settings={"rollout_rs": rs}, not_applicable=(
                            "not applicable: the registry has no spec for rejection by a k1/k2/k3 threshold "
                            "between π_old and π_rollout (a mask computed outside the loss)")))
    return out


ADAPTER = Adapter(
    trainer="verl", package="verl", tested=("0.9.1",),
    install="pip install 'pgverify[verl]'  (or: pip install --no-deps verl==0.9.1 and the packages listed in "
            "README 'Trainer conformance')",
    defaults=DEFAULTS, cases=cases, import_check="verl.trainer.ppo.core_algos")
