"""Named algorithms: published recipes as compositions of the registered parts.

An algorithm is advantage estimator + objective (whose config carries the aggregation) +
optional group filter + optional KL term. ``algorithm_loss`` runs the composition on a batch of
``G`` groups of ``K`` sequences. Parts a recipe leaves out (DAPO's overlong reward shaping,
GRPO's reference-model refresh, M1's length penalty) are reward-side or trainer-side and are
noted on the recipe.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from sims import advantages as A
from sims import objectives as O
from sims._checks import check_float_tensor, require, require_choice, require_finite_number
from sims.advantages import broadcast_to_tokens
from sims.aggregation import agg_fields
from sims.filters import DynamicSamplingConfig, select_groups
from sims.kl import KL_ESTIMATOR_NAMES, KLConfig, kl_in_reward, kl_penalty
from sims.registry import config_dict, get_advantage, get_group_filter, get_objective, require_callable_by

__all__ = ["KLTerm", "Algorithm", "ALGORITHMS", "get_algorithm", "algorithm_loss", "describe"]


@dataclass(frozen=True, kw_only=True)
class KLTerm:
    """A KL regulariser of an algorithm.

    Attributes:
        estimator: ``"k1"``, ``"k2"`` or ``"k3"``.
        coef: β >= 0.
        placement: ``"loss"`` (β·agg(k) added to the loss) or ``"reward"`` (β·Σ_t k subtracted
            from each sequence's reward, detached, before advantages).
    """

    estimator: str
    coef: float
    placement: str

    def __post_init__(self) -> None:
        require_choice("estimator", self.estimator, KL_ESTIMATOR_NAMES)
        require_finite_number("coef", self.coef)
        require(self.coef >= 0, "coef", self.coef, "coef >= 0 (finite)")
        require_choice("placement", self.placement, ("loss", "reward"))


@dataclass(frozen=True, kw_only=True)
class Algorithm:
    """A named composition of registered parts.

    Attributes:
        name: registry key.
        advantage: a key of ``ADVANTAGES``; ``advantage_config`` its config.
        objective: a key of ``OBJECTIVES``; ``objective_config`` its config (with ``agg``).
        group_filter: a key of ``GROUP_FILTERS`` or ``None``; ``group_filter_config`` its config.
        kl: a ``KLTerm`` or ``None``.
        reference: the paper the recipe follows; ``notes``: what is left out or chosen.
    """

    name: str
    advantage: str
    advantage_config: Any
    objective: str
    objective_config: Any
    group_filter: str | None = None
    group_filter_config: Any = None
    kl: KLTerm | None = None
    reference: str = ""
    notes: str = ""

    def __post_init__(self) -> None:
        for kind, name, cfg, getter in (
            ("advantage", self.advantage, self.advantage_config, get_advantage),
            ("objective", self.objective, self.objective_config, get_objective),
        ):
            spec = getter(name)
            require(isinstance(cfg, spec.config_cls), f"{kind}_config", cfg,
                    f"an instance of {spec.config_cls.__name__}")
        if self.group_filter is not None:
            spec = get_group_filter(self.group_filter)
            require(isinstance(self.group_filter_config, spec.config_cls), "group_filter_config",
                    self.group_filter_config, f"an instance of {spec.config_cls.__name__}")

    @property
    def agg(self) -> str:
        return self.objective_config.agg


_Z_SCORE = A.StdConfig(std="sample", eps=1e-6, eps_placement="std")  # verl's GRPO advantage
_DS = DynamicSamplingConfig()

ALGORITHMS: dict[str, Algorithm] = {
    "grpo": Algorithm(
        name="grpo", advantage="grpo", advantage_config=_Z_SCORE,
        objective="ppo_clip", objective_config=O.PpoClipConfig(eps_low=0.2, eps_high=0.2,
                                                             agg="seq-mean-token-mean"),
        kl=KLTerm(estimator="k3", coef=0.04, placement="loss"),
        reference="Shao et al. 2024, DeepSeekMath, arXiv:2402.03300, eq. 3 (beta = 0.04)",
        notes="std is the sample std with eps = 1e-6 added to it, as verl; the paper does not say"),
    "drgrpo": Algorithm(
        name="drgrpo", advantage="drgrpo", advantage_config=A.NoConfig(),
        objective="ppo_clip", objective_config=O.PpoClipConfig(eps_low=0.2, eps_high=0.2,
                                                             agg="seq-mean-token-sum-norm"),
        reference="Liu et al. 2025, Dr. GRPO, arXiv:2503.20783",
        notes="max_len (the generation budget) is passed to algorithm_loss; no KL"),
    "dapo": Algorithm(
        name="dapo", advantage="grpo", advantage_config=_Z_SCORE,
        objective="ppo_clip", objective_config=O.PpoClipConfig(eps_low=0.2, eps_high=0.28,
                                                             agg="prompt-token-mean"),
        group_filter="dynamic_sampling", group_filter_config=_DS,
        reference="Yu et al. 2025, DAPO, arXiv:2503.14476, eq. 8",
        notes="overlong filtering / soft punishment are reward shaping, left to the task; "
              "paper aggregation per group (verl uses batch token-mean)"),
    "gspo": Algorithm(
        name="gspo", advantage="grpo", advantage_config=_Z_SCORE,
        objective="gspo", objective_config=O.GspoConfig(eps_low=3e-4, eps_high=4e-4),
        reference="Zheng et al. 2025, GSPO, arXiv:2507.18071 (eps = 3e-4 / 4e-4)"),
    "cispo": Algorithm(
        name="cispo", advantage="grpo", advantage_config=_Z_SCORE,
        objective="cispo", objective_config=O.CispoConfig(eps_low=None, eps_high=4.0,
                                                         agg="prompt-token-mean"),
        group_filter="dynamic_sampling", group_filter_config=_DS,
        reference="MiniMax 2025, MiniMax-M1, arXiv:2506.13585, eqs. 3-5",
        notes="upper cap only; the paper gives no value, cap 5 (eps_high = 4) follows ScaleRL"),
    "rloo": Algorithm(
        name="rloo", advantage="rloo", advantage_config=A.NoConfig(),
        objective="reinforce", objective_config=O.ReinforceConfig(agg="seq-mean-token-sum"),
        reference="Ahmadian et al. 2024, arXiv:2402.14740",
        notes="the paper folds a task-specific KL into the reward; add one with KLTerm"),
    "sgs_cispo": Algorithm(
        name="sgs_cispo", advantage="rloo", advantage_config=A.NoConfig(),
        objective="sgs_cispo", objective_config=O.SgsCispoConfig(agg="token-mean"),
        group_filter="dynamic_sampling", group_filter_config=_DS,
        reference="the seed essay (shared/seed): token-level normalisation, dynamic sampling, "
                  "CISPO, SGS, leave-one-out baseline",
        notes="k, tau, p_mode and stop_grad_s are not given by the seed (see SgsCispoConfig)"),
}


def get_algorithm(name: str) -> Algorithm:
    """The registered algorithm ``name``; ``ValueError`` listing the allowed names otherwise."""
    require_choice("algorithm", name, ALGORITHMS)
    return ALGORITHMS[name]


def algorithm_loss(
    algorithm: Algorithm,
    logp: Tensor,
    old_logp: Tensor,
    rewards: Tensor,
    mask: Tensor,
    *,
    ref_logp: Tensor | None = None,
    max_len: int | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Run a composition on ``G`` groups of ``K`` sequences.

    Order: KL in the reward (if any) -> group filter -> advantages on the kept groups ->
    broadcast to tokens -> objective (``group_size`` = K, ``max_len`` if given) -> KL loss term
    (if any, same aggregation).

    Args:
        algorithm: an ``Algorithm`` (e.g. ``ALGORITHMS["dapo"]``).
        logp, old_logp, mask: ``[G·K, T]``; row g·K + k is sample k of prompt g.
        rewards: ``[G, K]`` per-sequence rewards.
        ref_logp: ``[G·K, T]`` reference log-probs, required when the algorithm has a KL term.
        max_len: the generation budget, required by ``seq-mean-token-sum-norm``.

    Returns:
        ``(loss, diagnostics)``: the objective's diagnostics plus ``groups_dropped`` and, with
        a KL loss term, ``kl_loss``.

    Raises:
        ValueError: bad shapes, a missing ``ref_logp`` or ``max_len``, or every group dropped
            by the filter (the trainer must sample more groups).
    """
    check_float_tensor("rewards", rewards)
    if rewards.dim() != 2 or rewards.numel() != logp.shape[0]:
        raise ValueError(
            f"rewards has shape {tuple(rewards.shape)}; allowed: [G, K] with G*K = {logp.shape[0]} "
            "(rows of logp)"
        )
    if algorithm.kl is not None:
        require(ref_logp is not None, "ref_logp", ref_logp,
                f"a [B, T] tensor: algorithm {algorithm.name!r} has a KL term")
    group_size = rewards.shape[1]
    diag: dict[str, Tensor] = {}
    if algorithm.kl is not None and algorithm.kl.placement == "reward":
        rewards = kl_in_reward(rewards, old_logp, ref_logp, mask,
                               estimator=algorithm.kl.estimator, beta=algorithm.kl.coef)
    n_dropped = 0
    if algorithm.group_filter is not None:
        result = get_group_filter(algorithm.group_filter).fn(rewards, config=algorithm.group_filter_config)
        n_dropped = result.n_dropped
        if result.n_kept == 0:
            raise ValueError(
                f"group_filter={algorithm.group_filter!r} dropped all {result.n_groups} groups; "
                "allowed: a batch with at least one group of unequal rewards (sample more groups)"
            )
        rewards = rewards[result.keep]
        logp, old_logp, mask, ref_logp = select_groups(result.keep, group_size, logp, old_logp, mask, ref_logp)
    adv = get_advantage(algorithm.advantage).fn(rewards, config=algorithm.advantage_config)  # (G', K)
    adv_tokens = broadcast_to_tokens(adv.to(logp.dtype), mask)  # (B', T)
    updates: dict[str, Any] = {"group_size": group_size}
    if max_len is not None:
        updates["max_len"] = max_len
    config = dataclasses.replace(algorithm.objective_config, **updates)
    spec = get_objective(algorithm.objective)
    require_callable_by(spec, "algorithm_loss", independent_batches=False)  # no rollout_logp here
    loss, obj_diag = spec.loss_fn(logp, old_logp, adv_tokens, mask, config=config)
    diag.update(obj_diag)
    if algorithm.kl is not None and algorithm.kl.placement == "loss":
        kl_config = KLConfig(estimator=algorithm.kl.estimator, **agg_fields(config))
        kl_loss, kl_diag = kl_penalty(logp, ref_logp, mask, config=kl_config)
        loss = loss + algorithm.kl.coef * kl_loss
        diag["kl_loss"] = kl_loss.detach()
        diag.update(kl_diag)
    diag["groups_dropped"] = torch.tensor(float(n_dropped), dtype=logp.dtype, device=logp.device)
    return loss, diag


def describe(algorithm: Algorithm) -> dict[str, Any]:
    """A JSON-ready description of an algorithm's parts."""
    return {
        "name": algorithm.name,
        "advantage": algorithm.advantage,
        "advantage_config": config_dict(algorithm.advantage_config),
        "objective": algorithm.objective,
        "objective_config": config_dict(algorithm.objective_config),
        "aggregation": algorithm.agg,
        "group_filter": algorithm.group_filter,
        "kl": None if algorithm.kl is None else config_dict(algorithm.kl),
        "reference": algorithm.reference,
        "notes": algorithm.notes,
    }
