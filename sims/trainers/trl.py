"""TRL: every GRPO ``loss_type`` × ``importance_sampling_level``, and the options of its loss.

The loss is TRL's own ``GRPOTrainer._compute_loss`` on a trainer object made **without a
model**: ``GRPOTrainer.__new__`` and then the attributes ``_compute_loss`` reads, set from TRL's
own ``GRPOConfig`` exactly as ``GRPOTrainer.__init__`` sets them (``loss_type``,
``importance_sampling_level``, ``epsilon_low = epsilon``, ``epsilon_high = epsilon_high or
epsilon``, ``beta``, ``off_policy_mask_threshold``, ``top_entropy_quantile``,
``max_completion_length``, the entropy-bonus switches, ``use_vllm``, ``args``). What a model
would supply is replaced by the checker's tensors: ``_get_per_token_logps_and_entropies``
returns pgverify's ``logp`` (entropies zero, no auxiliary loss), and the ``inputs`` dict carries
``old_per_token_logps``, ``advantages`` ([B], as TRL stores them), ``completion_mask`` (int),
empty prompts, ``num_items_in_batch`` (the global token count, for the loss types that read it:
dapo, cispo, vespo) and ``ref_per_token_logps`` when ``beta > 0``. The accelerator is one
process (``gather``/``reduce`` are the identity), one gradient-accumulation step, train mode.

Spec mapping (TRL's docs, ``GRPOConfig.loss_type`` help): grpo → ``seq-mean-token-mean``, bnpo
and dapo → ``token-mean`` (dapo over the global count), dr_grpo → ``seq-mean-token-sum-norm``
with ``max_len = max_completion_length``, luspo → ``seq-mean-token-sum``; the clip losses are
``ppo_clip`` at the token level and ``gspo`` (sequence form) at the sequence level; cispo →
``cispo`` with TRL's absolute cap (``eps_high = epsilon_high - 1``, no lower bound); sapo →
``sapo``; ``delta`` → dual-clip c = delta; ``off_policy_mask_threshold`` → ``opsm_delta``;
``beta > 0`` → ``OBJECTIVE+kl`` with k3 to the reference policy. grpo, bnpo, dr_grpo, luspo
and sapo normalise by their own micro-batch and divide by the accumulation steps, which the
micro-batch property cannot tell them: they are not given ``num_items_in_batch``.

Minimal CPU install (measured; ``pip install 'pgverify[trl]'``): ``trl==1.16.0`` with its own
requirements (``transformers``, ``accelerate``, ``datasets``; none pulls CUDA).
"""

from __future__ import annotations

import re
import warnings
from collections import defaultdict
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any

from sims.trainers._core import Adapter, Case, Note

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "luspo", "cispo", "sapo", "vespo")
LEVELS = ("token", "sequence")
READS_GLOBAL_COUNT = ("dapo", "cispo", "vespo")
AGG = {"grpo": "seq-mean-token-mean", "bnpo": "token-mean", "dr_grpo": "seq-mean-token-sum-norm",
       "dapo": "token-mean", "luspo": "seq-mean-token-sum", "cispo": "token-mean", "sapo": "seq-mean-token-mean"}
DEFAULTS: dict[str, Any] = {"epsilon": 0.2, "epsilon_high": 0.28, "cispo_epsilon_high": 5.0,
                            "max_completion_length": 8, "sapo_temperature_pos": 1.0, "sapo_temperature_neg": 1.05,
                            "beta": 0.04, "delta": 3.0, "off_policy_mask_threshold": 0.05}
BIAS_KL_NOTE = Note("spec", "KL IS correction: with use_bias_correction_kl=True (TRL's default) the k3 term is "
                    "multiplied by the ratio π/π_old without a stop-gradient, so its gradient gains k3·ρ on top of "
                    "ρ·∇k3 — the value is importance-corrected as intended, the extra gradient term looks unintended.")


class _OneProcess:
    """The accelerator ``_compute_loss`` talks to, for one process: gather and reduce are the
    identity, one process, gradients synchronised."""

    num_processes = 1
    sync_gradients = True

    @staticmethod
    def gather(x):
        return x

    gather_for_metrics = gather

    @staticmethod
    def reduce(x, reduction="sum"):
        return x


def make_trainer(args):
    """A ``GRPOTrainer`` without a model: the attributes ``_compute_loss`` reads, set from ``args``
    (a ``GRPOConfig``) as ``GRPOTrainer.__init__`` sets them."""
    from trl.trainer.grpo_trainer import GRPOTrainer

    t = GRPOTrainer.__new__(GRPOTrainer)
    t.args = args
    t.loss_type = args.loss_type
    t.importance_sampling_level = args.importance_sampling_level
    t.off_policy_mask_threshold = args.off_policy_mask_threshold
    t.top_entropy_quantile = args.top_entropy_quantile
    t.max_completion_length = args.max_completion_length
    t.epsilon_low = args.epsilon
    t.epsilon_high = args.epsilon_high if args.epsilon_high is not None else args.epsilon
    t.beta = args.beta
    t.use_vllm = args.use_vllm
    t.vllm_importance_sampling_correction = args.vllm_importance_sampling_correction
    t.entropy_coef = args.entropy_coef
    t.use_adaptive_entropy = args.use_adaptive_entropy
    t._entropy_bonus_enabled = t.entropy_coef != 0.0 or t.use_adaptive_entropy
    t._last_world_entropy = float("inf")
    t._entropy_window_stats = None
    t.aux_loss_enabled = False  # no MoE model
    t._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    t.accelerator = _OneProcess()
    t.current_gradient_accumulation_steps = 1
    object.__setattr__(t, "model", SimpleNamespace(training=True))
    return t


def grpo_loss(fields: Mapping[str, Any], *, global_count: bool, reference: bool) -> Callable[[], Callable[..., Any]]:
    """A maker of TRL's GRPO loss for the ``GRPOConfig`` ``fields``."""

    def make():
        import torch
        from trl import GRPOConfig

        with warnings.catch_warnings():  # transformers' deprecation notices about fields we do not set
            warnings.simplefilter("ignore", FutureWarning)
            args = GRPOConfig(output_dir="pgverify-conform-unused", use_cpu=True, report_to=[], **fields)
        trainer = make_trainer(args)

        def call(per_token_logps, old_per_token_logps, advantages, completion_mask, num_items_in_batch=None,
                 ref_per_token_logps=None):
            b = per_token_logps.shape[0]
            empty = torch.zeros(b, 0, dtype=torch.long)
            inputs = {"prompt_ids": empty, "prompt_mask": empty,
                      "completion_ids": torch.zeros_like(completion_mask, dtype=torch.long),
                      "completion_mask": completion_mask, "advantages": advantages,
                      "old_per_token_logps": old_per_token_logps}
            if num_items_in_batch is not None:
                inputs["num_items_in_batch"] = torch.tensor(float(num_items_in_batch), dtype=per_token_logps.dtype)
            if ref_per_token_logps is not None:
                inputs["ref_per_token_logps"] = ref_per_token_logps
            trainer._get_per_token_logps_and_entropies = lambda *a, **k: (
                per_token_logps, torch.zeros_like(per_token_logps), None)
            return trainer._compute_loss(None, inputs)

        if global_count and reference:
            def trl_grpo(per_token_logps, old_per_token_logps, advantages, completion_mask, num_items_in_batch,
                         ref_per_token_logps):
                return call(per_token_logps, old_per_token_logps, advantages, completion_mask, num_items_in_batch,
                            ref_per_token_logps)
        elif global_count:
            def trl_grpo(per_token_logps, old_per_token_logps, advantages, completion_mask, num_items_in_batch):
                return call(per_token_logps, old_per_token_logps, advantages, completion_mask, num_items_in_batch)
        elif reference:
            def trl_grpo(per_token_logps, old_per_token_logps, advantages, completion_mask, ref_per_token_logps):
                return call(per_token_logps, old_per_token_logps, advantages, completion_mask,
                            ref_per_token_logps=ref_per_token_logps)
        else:
            def trl_grpo(per_token_logps, old_per_token_logps, advantages, completion_mask):
                return call(per_token_logps, old_per_token_logps, advantages, completion_mask)
        trl_grpo.__qualname__ = f"trl.GRPOTrainer._compute_loss[{fields['loss_type']}]"
        return trl_grpo

    return make


def _spec(loss_type: str, level: str, c: Mapping[str, Any]) -> tuple[str | None, dict[str, Any], str]:
    """(spec, params, claim); spec None: no registry objective (the claim says why)."""
    agg = {"agg": AGG[loss_type]} if loss_type in AGG else {}
    if loss_type == "dr_grpo":
        agg["max_len"] = c["max_completion_length"]
    eps = {"eps_low": c["epsilon"], "eps_high": c["epsilon_high"]}
    if loss_type in ("grpo", "bnpo", "dr_grpo", "dapo", "luspo"):
        if level == "token":
            return "ppo_clip", agg | eps, f"{loss_type}: PPO clip per token, aggregated as {AGG[loss_type]}"
        return "gspo", agg | eps, f"{loss_type} at the sequence level: GSPO's s_i (arXiv:2507.18071)"
    if loss_type == "cispo":
        if level == "token":
            return ("cispo", agg | {"eps_low": None, "eps_high": c["cispo_epsilon_high"] - 1.0},
                    "CISPO (MiniMax-M1, arXiv:2506.13585), TRL's absolute cap epsilon_high")
        return None, {}, "no registry objective clips a detached geometric-mean sequence ratio (CISPO × GSPO)"
    if loss_type == "sapo":
        if level == "token":
            return ("sapo", agg | {"tau_pos": c["sapo_temperature_pos"], "tau_neg": c["sapo_temperature_neg"]},
                    "SAPO soft gate (arXiv:2511.20347)")
        return None, {}, "no registry objective gates the sequence ratio softly (SAPO × GSPO)"
    return None, {}, "VESPO's Gamma weighting of the sequence ratio has no registry objective"


def _base_fields(loss_type: str, level: str, c: Mapping[str, Any]) -> dict[str, Any]:
    fields = {"loss_type": loss_type, "importance_sampling_level": level, "epsilon": c["epsilon"],
              "epsilon_high": c["cispo_epsilon_high"] if loss_type == "cispo" else c["epsilon_high"],
              "max_completion_length": c["max_completion_length"], "beta": 0.0,
              "sapo_temperature_pos": c["sapo_temperature_pos"], "sapo_temperature_neg": c["sapo_temperature_neg"]}
    return fields


FEED = {"adv_shape": "sequence", "mask_dtype": "int"}


def cases(config: Mapping[str, Any]) -> list[Case]:
    """Every case of the installed TRL (see the module docstring)."""
    from trl.trainer.grpo_config import GRPOConfig

    known = set(LOSS_TYPES)
    help_text = GRPOConfig.__dataclass_fields__["loss_type"].metadata.get("help", "")
    out: list[Case] = []
    for loss_type in LOSS_TYPES:
        for level in LEVELS:
            fields = _base_fields(loss_type, level, config)
            spec, params, claim = _spec(loss_type, level, config)
            option = f"importance_sampling_level={level}"
            if spec is None:
                out.append(Case(loss_type, option, claim, settings=fields,
                                not_applicable=f"not applicable: {claim}"))
                continue
            out.append(Case(loss_type, option, claim, spec, params,
                            grpo_loss(fields, global_count=loss_type in READS_GLOBAL_COUNT, reference=False),
                            feed=FEED, settings=fields))
    out += _option_cases(config)
    supported = help_text.split("Supported values are", 1)[-1].split(". ", 1)[0]
    for quoted in sorted(set(re.findall(r"'([a-z_]+)'", supported)) - known):
        out.append(Case(quoted, "", "named in GRPOConfig.loss_type's help", not_applicable=(
            f"new in this TRL version: the adapter does not know which objective {quoted!r} implements")))
    return out


def _option_cases(c: Mapping[str, Any]) -> list[Case]:
    out = []
    for loss_type, level in (("dapo", "token"), ("grpo", "token"), ("grpo", "sequence")):
        base = _base_fields(loss_type, level, c)
        spec, params, claim = _spec(loss_type, level, c)
        glob = loss_type in READS_GLOBAL_COUNT
        lvl = f"importance_sampling_level={level}, "
        out.append(Case(loss_type, lvl + f"delta={c['delta']:g}", claim + ", two-sided clipping delta = dual-clip",
                        spec, params | {"dual_clip_c": c["delta"]},
                        grpo_loss(base | {"delta": c["delta"]}, global_count=glob, reference=False),
                        feed=FEED, settings=base | {"delta": c["delta"]}))
        if level == "token":
            out.append(Case(loss_type, lvl + f"off_policy_mask_threshold={c['off_policy_mask_threshold']:g}",
                            claim + ", DeepSeek-V3.2 off-policy sequence masking", spec,
                            params | {"opsm_delta": c["off_policy_mask_threshold"]},
                            grpo_loss(base | {"off_policy_mask_threshold": c["off_policy_mask_threshold"]},
                                      global_count=glob, reference=False),
                            feed=FEED, settings=base | {"off_policy_mask_threshold": c["off_policy_mask_threshold"]}))
        for bias in (False, True):
            fields = base | {"beta": c["beta"], "use_bias_correction_kl": bias}
            kl = {"kl.coef": c["beta"], "kl.estimator": "k3", "kl.agg": params["agg"]}
            if "max_len" in params:
                kl["kl.max_len"] = params["max_len"]
            out.append(Case(loss_type, lvl + f"beta={c['beta']:g}, use_bias_correction_kl={bias}",
                            claim + " + β·k3 to the reference policy (GRPO paper eq. 4)", f"{spec}+kl",
                            params | kl, grpo_loss(fields, global_count=glob, reference=True), feed=FEED,
                            settings=fields, notes=(BIAS_KL_NOTE,) if bias else ()))
    out.append(Case("dapo", "top_entropy_quantile=0.8", "train on the top-entropy tokens only",
                    settings={"top_entropy_quantile": 0.8}, not_applicable=(
                        "not applicable: the entropy mask needs the model's per-token entropies, which the loss "
                        "computes from logits (there is no model here)")))
    out.append(Case("dapo", "vllm_importance_sampling_correction=True", "TIS / MIS with vLLM's log-probs",
                    settings={"use_vllm": True, "vllm_importance_sampling_correction": True}, not_applicable=(
                        "not applicable: the weights are computed in the generation step from vLLM's log-probs and "
                        "reach the loss as a ready inputs['importance_sampling_ratio'] (needs vLLM)")))
    return out


ADAPTER = Adapter(
    trainer="trl", package="trl", tested=("1.16.0",),
    install="pip install 'pgverify[trl]'  (trl==1.16.0 with its requirements; none needs a GPU)",
    defaults=DEFAULTS, cases=cases, import_check="trl.trainer.grpo_trainer")
