r"""Cells: the grid of a spec, and one cell computed as a pure function of its config.

A cell is one point of the grid: an objective with its config (aggregation included), an
advantage estimator with its config, a task (policy family, T, V, logit scale, divergence and its
size), a group size K, a replica count and a seed. Its config is a JSON-ready dict in canonical
form; ``cell_key`` is the SHA-256 of that form (plus ``FORMAT``), the name it is stored under.

**The task.** π_old = ``policy.random(T, V, scale=logit_scale)`` and π_θ = ``perturb(π_old,
divergence=divergence_value)`` (``policies.perturb``: mean per-token KL(π_old‖π_θ) or χ²(π_θ‖π_old)),
no EOS; the reward is binary, R(o) = 1[#{t : o_t = 0} >= max(1, ⌊T/V⌋)] (pass rate near 1/2 for
every T, as in the bias_variance experiment). One prompt per replica (G = 1), K samples per group.

**Random streams.** Every generator is seeded by ``stream_seed``: a hash of the part of the
config that the stream serves, never the order cells run in. The policy pair's streams hash the
task fields and the seed (``TASK_FIELDS``); the Monte Carlo sampling stream adds K and the replica
count; the dynamics stream adds K and the dynamics settings. So cells that differ only in their
estimator (objective, its config, advantage, aggregation) share their policy pair and their
sampled sequences (common random numbers): their differences are not sampling noise between
draws. A cell computes with one thread (torch and numba), so its numbers are the same bits in
any process, with any number of workers, on any backend.

**Quantities** (``run_cell``; rows of quantity, value, low, high, method):

* ``bias``: ``relative bias`` ‖E ĝ − ∇J‖/‖∇J‖ and ``cosine`` cos(E ĝ, ∇J), exact by enumeration
  (``exact_group_estimator_mean`` against ``exact_objective``'s ∇J at π_θ);
* ``variance``: ``variance trace`` tr Cov(ĝ) of one batch estimator, and ``relative variance``
  tr Cov(ĝ)/‖∇J‖² when V^T <= ``MAX_EXACT`` (Monte Carlo, ``mc_gradient``, 95% t-interval over 20
  batch means);
* ``zero_weight_frac``: the fraction of valid tokens whose gradient weight is exactly 0 (MC);
* ``ess``: the Kish effective sample size fraction of the sequence ratios π_θ/π_old in a batch (MC);
* ``dynamics``: from π_old, ``steps`` steps of K samples each followed by ``updates`` Adam steps on
  the cell's loss (``sims.algorithms.algorithm_loss``); ``dynamics J start``, ``dynamics J end`` and
  ``dynamics KL to start`` (mean per-token KL(π_end‖π_old)), exact by enumeration.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import math
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sims.sweeps.spec import DEFAULT_AGG, MAX_EXACT, Spec, SpecError

__all__ = [
    "FORMAT",
    "TASK_FIELDS",
    "Cell",
    "canonical_json",
    "cell_key",
    "expand",
    "reward_threshold",
    "run_cell",
    "run_cell_safely",
    "stream_seed",
]

FORMAT = 1  # bump when a cell's computation changes its numbers: stored cells of another format are not reused
TASK_FIELDS = ("policy", "horizon", "vocab", "logit_scale", "divergence", "divergence_value", "seed")
SAMPLING_FIELDS = (*TASK_FIELDS, "group_size", "replicas")
DYNAMICS_FIELDS = (*TASK_FIELDS, "group_size", "dynamics")
MC_QUANTITIES = ("variance", "zero_weight_frac", "ess")


@dataclass(frozen=True)
class Cell:
    """One grid point: its position in the grid (the table's order), canonical config and key."""

    index: int
    config: dict[str, Any]
    key: str


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no spaces; floats as their shortest round-trip repr."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def cell_key(config: dict[str, Any]) -> str:
    """SHA-256 (hex) of the canonical config with ``FORMAT``: the cell's content hash."""
    return hashlib.sha256(canonical_json({"format": FORMAT, "cell": config}).encode()).hexdigest()


def stream_seed(config: dict[str, Any], fields: tuple[str, ...], stream: str) -> int:
    """A 63-bit seed: SHA-256 of the named ``fields`` of ``config`` and the stream's name.

    >>> c = {"seed": 0, "horizon": 2, "objective": "cispo"}
    >>> stream_seed(c, ("seed", "horizon"), "old policy") == stream_seed(dict(c, objective="gspo"),
    ...                                                              ("seed", "horizon"), "old policy")
    True
    >>> stream_seed(c, ("seed",), "a") != stream_seed(c, ("seed",), "b")
    True
    """
    part = {name: config[name] for name in fields}
    digest = hashlib.sha256(canonical_json({"stream": stream, "of": part}).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def reward_threshold(horizon: int, vocab: int) -> int:
    """The binary reward's threshold max(1, ⌊T/V⌋) (module doc)."""
    return max(1, horizon // vocab)


def _grid(fields: dict[str, tuple[Any, ...]]) -> Iterator[dict[str, Any]]:
    names = list(fields)
    for values in itertools.product(*(fields[n] for n in names)):
        yield dict(zip(names, values))


def _objective_config(name: str, fields: dict[str, Any], agg: str, horizon: int, group_size: int) -> dict:
    from sims.registry import OBJECTIVES, config_dict

    spec = OBJECTIVES[name]
    resolved = spec.config_cls().agg if agg == DEFAULT_AGG else agg
    extra = {"agg": resolved, "max_len": horizon if resolved == "seq-mean-token-sum-norm" else None,
             "group_size": group_size if resolved == "prompt-token-mean" else None}
    try:
        return config_dict(spec.config_cls(**fields, **extra))
    except (ValueError, TypeError) as exc:
        raise SpecError(f"objectives.{name} with {fields or 'its defaults'} and agg = {resolved!r}: {exc}") from None


def _advantage_config(name: str, fields: dict[str, Any], group_size: int) -> dict:
    import torch

    from sims.registry import ADVANTAGES, config_dict

    spec = ADVANTAGES[name]
    try:
        config = spec.config_cls(**fields)
        # a dry run on two groups of K rewards: estimators that need K >= 2 say so here, before any work
        rewards = torch.zeros(2, group_size, dtype=torch.float64)
        rewards[1, 0] = 1.0
        spec.fn(rewards, config=config)
    except (ValueError, TypeError) as exc:
        raise SpecError(f"advantages.{name} with {fields or 'its defaults'} and group_size = {group_size}: "
                        f"{exc}") from None
    return config_dict(config)


def expand(spec: Spec, device: str = "cpu") -> list[Cell]:
    """Every cell of the grid, in a fixed order (objectives, their fields, advantages, their fields,
    agg, policy, horizon, vocab, logit_scale, divergence, divergence_value, group_size, replicas,
    seeds; each in the spec's order). ``SpecError`` for a config the registry refuses."""
    from sims.sweeps.spec import MAX_CELLS

    cells: list[Cell] = []
    seen: dict[str, int] = {}
    dynamics = None if spec.dynamics is None else dataclasses.asdict(spec.dynamics)
    for objective, obj_fields in spec.objectives:
        for obj_values in _grid(obj_fields):
            for advantage, adv_fields in spec.advantages:
                for adv_values in _grid(adv_fields):
                    for agg, policy, t, v, scale, div, size, k, reps, seed in itertools.product(
                            spec.agg, spec.policy, spec.horizon, spec.vocab, spec.logit_scale, spec.divergence,
                            spec.divergence_value, spec.group_size, spec.replicas, spec.seeds):
                        config = {
                            "objective": objective, "objective_config": _objective_config(objective, obj_values, agg, t, k),
                            "advantage": advantage, "advantage_config": _advantage_config(advantage, adv_values, k),
                            "policy": policy, "horizon": t, "vocab": v, "logit_scale": scale, "divergence": div,
                            "divergence_value": size, "group_size": k, "replicas": reps, "seed": seed,
                            "quantities": list(spec.quantities), "dynamics": dynamics, "device": device,
                        }
                        key = cell_key(config)
                        if key in seen:
                            raise SpecError(
                                f"cells {seen[key]} and {len(cells)} are the same ({objective} with "
                                f"{config['objective_config']}); allowed: values that give different cells (agg = "
                                f"'default' is each objective's own aggregation, here {config['objective_config']['agg']!r})")
                        seen[key] = len(cells)
                        cells.append(Cell(len(cells), config, key))
                        if len(cells) > MAX_CELLS:
                            raise SpecError(f"the grid has more than {MAX_CELLS} cells; allowed: at most {MAX_CELLS} "
                                            "(split the sweep)")
    return cells


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch and numba on one thread while the block runs (restored afterwards): a cell's
    reductions then run in one fixed order, the same in every process."""
    import numba
    import torch

    torch_threads, numba_threads = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(torch_threads)
        numba.set_num_threads(numba_threads)


def _generator(config: dict[str, Any], fields: tuple[str, ...], stream: str):
    import torch

    return torch.Generator().manual_seed(stream_seed(config, fields, stream))


def policy_pair(config: dict[str, Any]):
    """(π_old, π_θ) of a cell's task (module doc), float64 on the cell's device."""
    import torch

    from policies.markov import MarkovPolicy
    from policies.neural import GRUPolicy
    from policies.perturb import perturb
    from policies.tabular import TabularPolicy

    family = {"tabular": TabularPolicy, "markov": MarkovPolicy, "gru": GRUPolicy}[config["policy"]]
    old = family.random(config["horizon"], config["vocab"], generator=_generator(config, TASK_FIELDS, "old policy"),
                        scale=config["logit_scale"], dtype=torch.float64, device=config["device"])
    new = perturb(old, generator=_generator(config, TASK_FIELDS, "new policy"),
                  **{config["divergence"]: config["divergence_value"]})
    return old, new


def _configs(config: dict[str, Any]):
    from sims.registry import ADVANTAGES, OBJECTIVES

    return (OBJECTIVES[config["objective"]].config_cls(**config["objective_config"]),
            ADVANTAGES[config["advantage"]].config_cls(**config["advantage_config"]))


def mc_config(config: dict[str, Any]):
    """The cell's ``MCConfig``: ``sims.experiments._common.mc_config`` (one prompt per replica, 20
    batch means, 95% intervals, chunks of at most 2,000 replicas) with the sampling stream's seed.
    Built here because importing ``sims.experiments`` loads every experiment (seconds per worker)."""
    from sims.engines.montecarlo import MCConfig

    n = config["replicas"]
    return MCConfig(n_replicas=n, n_groups=1, group_size=config["group_size"], n_batches=20,
                    chunk=min(2_000, n // 20), level=0.95, seed=stream_seed(config, SAMPLING_FIELDS, "sampling"))


def _row(quantity: str, value: float, low: float, high: float, method: str) -> dict[str, Any]:
    return {"quantity": quantity, "value": float(value), "low": float(low), "high": float(high), "method": method}


def _exact(quantity: str, value: float) -> dict[str, Any]:
    return _row(quantity, value, value, value, "exact")


class Adam:
    """Adam (Kingma & Ba 2015, arXiv:1412.6980) on one tensor, in place, with torch.optim.Adam's
    defaults (β = (0.9, 0.999), ε = 1e-8) and its order of operations: m ← β₁m + (1-β₁)g,
    v ← β₂v + (1-β₂)g², p ← p - (lr/(1-β₁ᵗ))·m/(√v/√(1-β₂ᵗ) + ε). Written out because importing
    torch.optim costs seconds per worker process (it imports torch._dynamo); tests check it
    against torch.optim.Adam."""

    def __init__(self, param, *, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        import torch

        self.param, self.lr, self.betas, self.eps, self.t = param, lr, betas, eps, 0
        self.m = torch.zeros_like(param, memory_format=torch.preserve_format)
        self.v = torch.zeros_like(param, memory_format=torch.preserve_format)

    def step(self, grad) -> None:
        import torch

        b1, b2 = self.betas
        self.t += 1
        with torch.no_grad():
            self.m.lerp_(grad, 1 - b1)
            self.v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
            denom = (self.v.sqrt() / math.sqrt(1 - b2 ** self.t)).add_(self.eps)
            self.param.addcdiv_(self.m, denom, value=-self.lr / (1 - b1 ** self.t))


def _dynamics_rows(config: dict[str, Any], old, reward, obj_cfg, adv_cfg) -> list[dict[str, Any]]:
    import torch

    from sims.algorithms import Algorithm, algorithm_loss
    from sims.engines.exact import exact_objective

    settings = config["dynamics"]
    k, t = config["group_size"], config["horizon"]
    algorithm = Algorithm(name="sweep cell", advantage=config["advantage"], advantage_config=adv_cfg,
                          objective=config["objective"], objective_config=obj_cfg)
    logits = old.logits.clone().requires_grad_(True)
    adam = Adam(logits, lr=settings["lr"])
    gen = _generator(config, DYNAMICS_FIELDS, "dynamics")
    for _ in range(settings["steps"]):
        current = old.with_logits(logits.detach())
        tokens, mask = current.sample(k, generator=gen)
        rewards = reward(tokens, mask).to(torch.float64).reshape(1, k)
        with torch.no_grad():
            old_logp = current.log_prob(tokens)
        for _ in range(settings["updates"]):
            loss, _ = algorithm_loss(algorithm, old.with_logits(logits).log_prob(tokens), old_logp, rewards, mask,
                                     max_len=t)
            (grad,) = torch.autograd.grad(loss, logits)
            adam.step(grad)
    end = old.with_logits(logits.detach())
    tokens, _, prob = end.enumerate()
    with torch.no_grad():
        kl = float((prob * (end.log_prob(tokens) - old.log_prob(tokens)).sum(-1)).sum()) / t
    return [_exact("dynamics J start", float(exact_objective(old, reward)[0])),
            _exact("dynamics J end", float(exact_objective(end, reward)[0])),
            _exact("dynamics KL to start", kl)]


def run_cell(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows (quantity, value, low, high, method) of one cell: a pure function of ``config``
    (module doc). Exact rows have low = high = value."""
    from policies.tasks import TokenCount
    from sims.engines.exact import exact_group_estimator_mean, exact_objective
    from sims.engines.montecarlo import mc_gradient

    with one_thread():
        quantities = config["quantities"]
        t, v, k = config["horizon"], config["vocab"], config["group_size"]
        reward = TokenCount(0, threshold=reward_threshold(t, v))
        obj_cfg, adv_cfg = _configs(config)
        old, new = policy_pair(config)
        rows: list[dict[str, Any]] = []
        truth = None
        if v ** t <= MAX_EXACT:
            truth = exact_objective(new, reward)[1]
        if "bias" in quantities:
            mean = exact_group_estimator_mean(new, old, reward, config["objective"], obj_cfg, config["advantage"],
                                              adv_cfg, group_size=k)
            scale = float(truth.norm())
            rows.append(_exact("relative bias", float((mean - truth).norm()) / scale))
            rows.append(_exact("cosine", float((mean * truth).sum() / (mean.norm() * truth.norm()))))
        if any(q in quantities for q in MC_QUANTITIES):
            mc = mc_gradient(new, old, reward, config["objective"], obj_cfg, config["advantage"], adv_cfg,
                             mc_config(config), truth=truth)
            if "variance" in quantities:
                var = mc.var_trace
                rows.append(_row("variance trace", var.estimate, var.low, var.high, "monte carlo"))
                if truth is not None:
                    sq = float(truth.norm()) ** 2
                    rows.append(_row("relative variance", var.estimate / sq, var.low / sq, var.high / sq,
                                     "monte carlo"))
            if "zero_weight_frac" in quantities:
                z = mc.zero_weight_frac
                rows.append(_row("zero-weight fraction", z.estimate, z.low, z.high, "monte carlo"))
            if "ess" in quantities:
                e = mc.ess_frac
                rows.append(_row("ESS fraction", e.estimate, e.low, e.high, "monte carlo"))
        if "dynamics" in quantities:
            rows += _dynamics_rows(config, old, reward, obj_cfg, adv_cfg)
    return rows


def run_cell_safely(config: dict[str, Any]) -> dict[str, Any]:
    """``run_cell`` that never raises an ``Exception``: ``{"ok": True, "rows", "seconds", "version"}``
    or ``{"ok": False, "error", "traceback", "version"}`` (what the executors run; ``version`` is the
    worker's pgverify version, which the driver checks against its own)."""
    from sims.sweeps.provenance import package_version

    start = time.perf_counter()
    try:
        rows = run_cell(config)
    except Exception as exc:  # noqa: BLE001 (reported with the cell's config; the sweep goes on)
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(),
                "version": package_version()}
    return {"ok": True, "rows": rows, "seconds": time.perf_counter() - start, "version": package_version()}
