"""The registries: one explicit dict per kind, the single source of truth.

Every test battery, report and CLI listing iterates over these dicts; adding an objective is one
row in ``OBJECTIVES``. Look-ups by name go through ``get_*`` so that a misspelt name is a
``ValueError`` listing the allowed names.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from sims import advantages as adv_mod
from sims import objectives as obj
from sims._checks import require, require_choice
from sims.aggregation import AGGREGATIONS, AggregationSpec
from sims.filters import DynamicSamplingConfig, dynamic_sampling
from theory import cispo as th_cispo
from theory import dppo as th_dppo
from theory import gspo as th_gspo
from theory import ppo_clip as th_ppo
from theory import reinforce as th_reinforce
from theory import rollout as th_rollout
from theory import sapo as th_sapo
from theory._core import TheoryEntry

__all__ = [
    "ObjectiveSpec", "AdvantageSpec", "KLEstimatorSpec", "GroupFilterSpec",
    "OBJECTIVES", "ADVANTAGES", "AGGREGATIONS", "KL_ESTIMATORS", "GROUP_FILTERS",
    "get_objective", "objective_inputs", "require_callable_by", "get_advantage", "get_aggregation", "get_group_filter", "config_dict",
]


@dataclass(frozen=True)
class ObjectiveSpec:
    """A registered objective.

    Attributes:
        name: registry key.
        loss_fn: ``fn(logp, old_logp, adv, mask, *, config) -> (loss, diagnostics)``.
        config_cls: its frozen config dataclass; ``config_cls()`` is the documented default.
        advantage_level: ``"token"`` if A may vary within a sequence, ``"sequence"`` if the
            objective uses the per-sequence mean advantage Ā_i.
        summary: one line.
        reference: paper (arXiv id).
        theory: its symbolic derivation (``theory``), which the battery checks the code against;
            ``None`` only for a batch-coupled objective (``batch_coupled`` says why).
        inputs: extra ``[B, T]`` constant tensors the objective REQUIRES, passed as keyword-only
            arguments of the same name: ``("rollout_logp",)`` for the rollout-correction
            objectives (``loss_fn(logp, old_logp, adv, mask, *, config, rollout_logp)``). A
            generic caller that cannot supply them must skip the objective explicitly.
        batch_coupled: ``None`` when each sequence's per-token losses depend on that sequence
            only (the objective has a per-sequence sympy twin); otherwise the reason the loss of
            a token depends on the rest of the (micro-)batch (KL-Cov / Clip-Cov select tokens by
            a batch covariance). Batch-coupled objectives have no theory entry, and the engines
            (which evaluate many independent batches as one) refuse them.
        exempt_properties: ``(property name, reason)`` pairs: the ``pgverify check`` properties
            (``sims.check.properties``) that the objective violates *by design*, so a conforming
            trainer loss fails them too (e.g. DRO's zero-advantage weight is not 0).
    """

    name: str
    loss_fn: Callable[..., Any]
    config_cls: type
    advantage_level: str
    summary: str
    reference: str
    theory: TheoryEntry | None
    inputs: tuple[str, ...] = ()
    batch_coupled: str | None = None
    exempt_properties: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class AdvantageSpec:
    """A registered advantage estimator ``fn(rewards [G, K], *, config) -> adv [G, K]``."""

    name: str
    fn: Callable[..., Any]
    config_cls: type
    summary: str
    reference: str


@dataclass(frozen=True)
class KLEstimatorSpec:
    """A registered KL estimator (``sims.kl.kl_values(..., estimator=name)``)."""

    name: str
    value: str
    grad_factor: str
    summary: str
    reference: str


@dataclass(frozen=True)
class GroupFilterSpec:
    """A registered group filter ``fn(rewards [G, K], *, config) -> GroupFilterResult``."""

    name: str
    fn: Callable[..., Any]
    config_cls: type
    summary: str
    reference: str


OBJECTIVES: dict[str, ObjectiveSpec] = {
    "reinforce": ObjectiveSpec(
        "reinforce", obj.reinforce, obj.ReinforceConfig, "token",
        "-A*logp, optional detached TIS/MIS weight (token or sequence level)",
        "Williams 1992; TIS: Yao et al. 2025; MIS: Liu, Li et al. 2025", th_reinforce.REINFORCE),
    "seq_is": ObjectiveSpec(
        "seq_is", obj.seq_is, obj.SeqIsConfig, "sequence",
        "off-policy REINFORCE with the sequence ratio exp(sum(logp - old_logp)), optional truncation",
        "Precup, Sutton, Singh 2000; seed claim C02", th_reinforce.SEQ_IS),
    "ppo_clip": ObjectiveSpec(
        "ppo_clip", obj.ppo_clip, obj.PpoClipConfig, "token",
        "token clipped surrogate, asymmetric eps (DAPO clip-higher), optional dual-clip",
        "Schulman et al. 2017, arXiv:1707.06347; Yu et al. 2025, arXiv:2503.14476",
        th_ppo.PPO_CLIP),
    "gspo": ObjectiveSpec(
        "gspo", obj.gspo, obj.GspoConfig, "sequence",
        "clipped surrogate on the geometric-mean sequence ratio s_i (sequence form)",
        "Zheng et al. 2025, arXiv:2507.18071", th_gspo.GSPO),
    "gspo_token": ObjectiveSpec(
        "gspo_token", obj.gspo_token, obj.GspoConfig, "token",
        "GSPO-token: value s_i, gradient s_i through each token; equals gspo for per-sequence A",
        "Zheng et al. 2025, arXiv:2507.18071", th_gspo.GSPO_TOKEN),
    "gmpo": ObjectiveSpec(
        "gmpo", obj.gmpo, obj.GmpoConfig, "sequence",
        "geometric mean of sign-aware log-space clipped token ratios",
        "Zhao et al. 2025, arXiv:2507.20673", th_gspo.GMPO),
    "cispo": ObjectiveSpec(
        "cispo", obj.cispo, obj.CispoConfig, "token",
        "sg(clip(ratio))*A*logp: the IS weight is clipped, the gradient never dropped",
        "MiniMax 2025, arXiv:2506.13585", th_cispo.CISPO),
    "sapo": ObjectiveSpec(
        "sapo", obj.sapo, obj.SapoConfig, "token",
        "soft sigmoid gate (4/tau)*sigmoid(tau*(ratio-1)) instead of a hard clip",
        "Qwen team 2025, SAPO, arXiv:2511.20347", th_sapo.SAPO),
    "sgs_cispo": ObjectiveSpec(
        "sgs_cispo", obj.sgs_cispo, obj.SgsCispoConfig, "token",
        "CISPO times the seed's Smooth Gradient Scaling S = 1 - sigmoid(k(P - tau)) for A > 0",
        "the seed essay (shared/seed), claims C12-C15", th_cispo.SGS_CISPO),
    "dro": ObjectiveSpec(
        "dro", obj.dro, obj.DroConfig, "token",
        "-(A*logp - beta/2*(logp - old_logp)^2): REINFORCE plus a k2-to-old proximal penalty",
        "Kimi Team 2025, arXiv:2501.12599, sec. 2.3.2; verl dro", th_reinforce.DRO,
        exempt_properties=(
            ("zero advantage, zero weight",
             "w = A - beta*(logp - old_logp): the proximal penalty has weight at A = 0 by design"),
            ("advantage scale equivariance", "the penalty's weight -beta*(logp - old_logp) does not scale with A"),
        )),
    "dppo_tv": ObjectiveSpec(
        "dppo_tv", obj.dppo_tv, obj.DppoConfig, "token",
        "-A*sg(min(ratio, C))*logp, masked where p - p_old leaves [-delta_low, delta_high] against A",
        "arXiv:2602.04879 (DPPO Binary-TV); verl dppo_tv", th_dppo.DPPO_TV),
    "dppo_kl": ObjectiveSpec(
        "dppo_kl", obj.dppo_kl, obj.DppoConfig, "token",
        "-A*sg(min(ratio, C))*logp, masked where the binary KL(p_old||p) exceeds delta along A",
        "arXiv:2602.04879 (DPPO Binary-KL); verl dppo_kl", th_dppo.DPPO_KL),
    "kl_cov": ObjectiveSpec(
        "kl_cov", obj.kl_cov, obj.KlCovConfig, "token",
        "-A*ratio, plus kappa*|logp - old_logp| on the top-k tokens of the batch covariance C",
        "Cui et al. 2025, arXiv:2505.22617, sec. 4; verl kl_cov", None,
        batch_coupled="tokens are selected by the covariance of A and logp with their means over the batch",
        exempt_properties=(
            ("group locality", "the covariance uses the batch means of A and logp"),
            ("zero advantage, zero weight",
             "a selected token's penalty weight -kappa*sign(logp - old_logp) does not depend on A"),
            ("advantage scale equivariance", "the penalty's weight does not scale with A"),
            ("batch-permutation invariance",
             "ties in C go to the earlier token (with two valid tokens C is always tied), so row order matters"),
        )),
    "clip_cov": ObjectiveSpec(
        "clip_cov", obj.clip_cov, obj.ClipCovConfig, "token",
        "PPO clip with up to k tokens of covariance lb < C < ub detached (random draw as verl, or all)",
        "Cui et al. 2025, arXiv:2505.22617, sec. 4; verl clip_cov", None,
        batch_coupled="tokens are selected by the covariance of A and logp with their means over the batch",
        exempt_properties=(
            ("group locality", "the covariance uses the batch means of A and logp"),
            ("advantage scale equivariance", "the candidate window lb < C < ub is not scale-invariant"),
            ("on-policy reduction to REINFORCE", "a selected token has weight 0 at ratio 1"),
            ("batch-permutation invariance",
             "with selection='random' the draw (torch.randperm) follows the row order of the candidates"),
        )),
    "ppo_clip_rollout_is": ObjectiveSpec(
        "ppo_clip_rollout_is", obj.ppo_clip_rollout_is, obj.PpoClipRolloutIsConfig, "token",
        "PPO clip times the detached rollout weight of pi_old/pi_rollout (TIS / MIS / IcePop band)",
        "Schulman et al. 2017, arXiv:1707.06347; verl rollout_corr_helper (decoupled rollout_is)",
        th_rollout.PPO_CLIP_ROLLOUT_IS, inputs=("rollout_logp",)),
}

ADVANTAGES: dict[str, AdvantageSpec] = {
    "raw": AdvantageSpec("raw", adv_mod.raw_advantages, adv_mod.NoConfig,
                         "A = r (no baseline)", "Williams 1992"),
    "group_mean": AdvantageSpec("group_mean", adv_mod.group_mean_advantages, adv_mod.NoConfig,
                                "A = r - mean_g(r) (group-mean baseline)",
                                "Liu et al. 2025, arXiv:2503.20783"),
    "drgrpo": AdvantageSpec("drgrpo", adv_mod.group_mean_advantages, adv_mod.NoConfig,
                            "Dr.GRPO mean-only: A = r - mean_g(r) (same function as group_mean)",
                            "Liu et al. 2025, arXiv:2503.20783"),
    "grpo": AdvantageSpec("grpo", adv_mod.grpo_advantages, adv_mod.StdConfig,
                          "GRPO z-score: A = (r - mean_g)/(std_g + eps)",
                          "Shao et al. 2024, arXiv:2402.03300"),
    "rloo": AdvantageSpec("rloo", adv_mod.rloo_advantages, adv_mod.NoConfig,
                          "leave-one-out: A = r - mean_{j != i} r_j = K/(K-1) (r - mean_g)",
                          "Ahmadian et al. 2024, arXiv:2402.14740"),
    "batch_std": AdvantageSpec("batch_std", adv_mod.batch_std_advantages, adv_mod.StdConfig,
                               "group mean, batch std (LitePPO): A = (r - mean_g)/(std_batch + eps)",
                               "Liu et al. 2025, arXiv:2508.08221"),
    "nsr": AdvantageSpec("nsr", adv_mod.nsr_advantages, adv_mod.ThresholdConfig,
                         "negative samples only: A = -1 if r <= threshold else 0",
                         "Zhu et al. 2025, arXiv:2506.01347"),
    "psr": AdvantageSpec("psr", adv_mod.psr_advantages, adv_mod.ThresholdConfig,
                         "positive samples only: A = +1 if r > threshold else 0",
                         "Zhu et al. 2025, arXiv:2506.01347"),
}

KL_ESTIMATORS: dict[str, KLEstimatorSpec] = {
    "k1": KLEstimatorSpec("k1", "x", "1", "unbiased value; zero-mean gradient", "Schulman 2020"),
    "k2": KLEstimatorSpec("k2", "x^2/2", "x", "biased value; gradient = grad KL(pi||ref) on-policy",
                          "Schulman 2020"),
    "k3": KLEstimatorSpec("k3", "exp(-x) - 1 + x", "1 - exp(-x)",
                          "unbiased value, low variance; gradient = grad KL(ref||pi)",
                          "Schulman 2020; Shao et al. 2024, arXiv:2402.03300, eq. 4"),
}

GROUP_FILTERS: dict[str, GroupFilterSpec] = {
    "dynamic_sampling": GroupFilterSpec(
        "dynamic_sampling", dynamic_sampling, DynamicSamplingConfig,
        "drop groups whose rewards are all equal; reports how many were dropped",
        "Yu et al. 2025, arXiv:2503.14476"),
}


def objective_inputs(spec: ObjectiveSpec, **available) -> dict[str, Any]:
    """The keyword tensors ``spec.loss_fn`` requires (``spec.inputs``), taken from ``available``;
    ``ValueError`` naming the first missing one."""
    for name in spec.inputs:
        require(available.get(name) is not None, name, None,
                f"a [B, T] tensor: objective {spec.name!r} requires inputs {spec.inputs}")
    return {name: available[name] for name in spec.inputs}


def require_callable_by(spec: ObjectiveSpec, caller: str, *, independent_batches: bool) -> None:
    """Refuse, with a ``ValueError``, an objective a generic ``caller`` cannot evaluate: one that
    needs extra inputs (``spec.inputs``: the caller has only logp, old_logp, adv, mask) or, when
    the caller concatenates ``independent_batches`` into one call, a batch-coupled one (its
    selection would span all of them)."""
    require(not spec.inputs, "objective", spec.name,
            f"an objective without extra inputs: {caller} cannot supply {', '.join(spec.inputs)}")
    if independent_batches:
        require(spec.batch_coupled is None, "objective", spec.name,
                f"a per-sequence objective: {caller} evaluates many independent batches in one call, "
                f"and {spec.name} is batch-coupled ({spec.batch_coupled})")


def get_objective(name: str) -> ObjectiveSpec:
    """The registered objective ``name``; ``ValueError`` listing the allowed names otherwise."""
    require_choice("objective", name, OBJECTIVES)
    return OBJECTIVES[name]


def get_advantage(name: str) -> AdvantageSpec:
    """The registered advantage estimator ``name``."""
    require_choice("advantage", name, ADVANTAGES)
    return ADVANTAGES[name]


def get_aggregation(name: str) -> AggregationSpec:
    """The registered aggregation ``name``."""
    require_choice("agg", name, AGGREGATIONS)
    return AGGREGATIONS[name]


def get_group_filter(name: str) -> GroupFilterSpec:
    """The registered group filter ``name``."""
    require_choice("group_filter", name, GROUP_FILTERS)
    return GROUP_FILTERS[name]


def config_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as a plain dict (for tables, JSON and provenance)."""
    return dataclasses.asdict(config)


# Objectives registered by installed packages (entry point group ``pgverify.objectives``,
# ``sims.plugins``): added to OBJECTIVES; those that fail to load or break the contract are listed
# here by name with the reason, and never stop the others.
from sims.plugins import install as _install_plugins  # noqa: E402  (needs ObjectiveSpec and OBJECTIVES above)

PLUGIN_ERRORS = _install_plugins(OBJECTIVES)
