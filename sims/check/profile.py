r"""Bias and variance profile: the loss as a gradient estimator, next to the registry's objectives.

Setup (``ProfileConfig``): π_old is a ``TabularPolicy`` with V tokens, the last one EOS (so lengths
vary from 1 to T), logits ~ N(0, 1) from ``seed``; the reward is R(o) = 1[token 0 occurs]; the
advantage is A(o) = R(o) - J_old (the exact mean reward: a centred, unbiased baseline). The
estimator is the loss applied to a batch of **one** sequence o ~ π_old,
ĝ(o) = Σ_t w_t(o) ∇_θ log π_θ(o_t | o_<t), with w = -∂loss/∂logp from autograd.

Every sequence is enumerated (V^T of them), so the numbers are exact, not Monte Carlo:

* E_old[ĝ] = Σ_o π_old(o) ĝ(o) and E‖ĝ‖² = Σ_o π_old(o) ‖ĝ(o)‖² (``replica_score_moments`` with
  weights w·√π_old: one replica per sequence);
* on-policy (π_θ = π_old) and off-policy (π_θ = ``perturb(π_old, kl=κ)``, mean per-token KL κ):
  relative bias ‖E ĝ − ∇J(π_θ)‖ / ‖∇J‖, cosine(E ĝ, ∇J), and relative variance
  tr Cov(ĝ) / ‖∇J‖².

The relative bias counts a wrong scale as bias (a 1/|o| normaliser has bias even on-policy); the
cosine is scale-free. A loss that needs more than one sequence per batch (e.g. ``group_size`` > 1
in its own aggregation) cannot be profiled this way: its rows say so.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch

from policies.perturb import perturb
from policies.tabular import TabularPolicy
from policies.tasks import TokenCount
from sims.cache import default_cache_dir
from sims.outputs import write_json_atomic
from sims.check.inputs import DTYPE, Batch, VariantError, evaluate
from sims.check.result import CheckResult
from sims.check.specs import Spec, make_spec
from sims.engines.exact import exact_objective
from sims.registry import OBJECTIVES

__all__ = ["ProfileConfig", "ProfileCache", "estimator_profile", "bias_variance_profile", "registry_rows",
           "default_cache_dir", "COLUMNS"]

COLUMNS = ("estimator", "T", "bias_on", "cos_on", "var_on", "bias_off", "cos_off", "var_off")


@dataclass(frozen=True)
class ProfileConfig:
    """Config of the bias and variance profile.

    Attributes:
        horizons: the T values (V^T sequences are enumerated for each).
        vocab: V, including the EOS token (id V - 1).
        kl: mean per-token KL(π_old‖π_θ) of the off-policy setting.
        seed: seed of the logits and of the perturbation direction.
    """

    horizons: tuple[int, ...] = (2, 4, 6)
    vocab: int = 3
    kl: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.horizons or not all(isinstance(t, int) and 1 <= t <= 8 for t in self.horizons):
            raise ValueError(f"horizons={self.horizons!r} is invalid; allowed: a non-empty tuple of ints in 1..8")
        if not (isinstance(self.vocab, int) and 2 <= self.vocab <= 4):
            raise ValueError(f"vocab={self.vocab!r} is invalid; allowed: an int in 2..4 (the last token is EOS)")
        if not (isinstance(self.kl, float) and 0 < self.kl < 1):
            raise ValueError(f"kl={self.kl!r} is invalid; allowed: a float in (0, 1)")


@dataclass(frozen=True)
class _Setting:
    old: TabularPolicy
    new: TabularPolicy
    tokens: torch.Tensor
    mask: torch.Tensor
    prob: torch.Tensor
    adv: torch.Tensor
    grad_j: torch.Tensor


@functools.lru_cache(maxsize=8)
def _settings(cfg: ProfileConfig) -> dict[tuple[int, str], _Setting]:
    out = {}
    reward = TokenCount(token=0, threshold=1)
    for t in cfg.horizons:
        gen = torch.Generator().manual_seed(cfg.seed * 1_000 + t)
        old = TabularPolicy.random(t, cfg.vocab, generator=gen, eos=cfg.vocab - 1)
        tokens, mask, prob = old.enumerate()
        j_old, _ = exact_objective(old, reward)
        adv = (reward(tokens, mask) - j_old)[:, None] * mask
        for label, new in (("on", old), ("off", perturb(old, kl=cfg.kl, generator=gen))):
            _, grad_j = exact_objective(new, reward)
            out[(t, label)] = _Setting(old, new, tokens, mask.to(DTYPE), prob, adv, grad_j.reshape(-1))
    return out


def _moments(fn: Callable[..., Any], s: _Setting) -> tuple[torch.Tensor, float]:
    """(E_old ĝ, E_old ‖ĝ‖²) of the batch-of-one estimator, by enumeration."""
    with torch.no_grad():
        logp, old_logp = s.new.log_prob(s.tokens), s.old.log_prob(s.tokens)
    w = torch.zeros_like(logp)
    for i in range(logp.shape[0]):
        _, w[i] = evaluate(fn, Batch(logp[i:i + 1], old_logp[i:i + 1], s.adv[i:i + 1], s.mask[i:i + 1], 1))
    mean = s.new.score_sum(s.prob[:, None] * w, s.tokens).reshape(-1)
    _, second = s.new.replica_score_moments(w * s.prob.sqrt()[:, None], s.tokens, None, logp.shape[0])
    return mean, float(second.sum())


def estimator_profile(fn: Callable[..., Any], label: str, cfg: ProfileConfig) -> list[dict[str, Any]]:
    """The profile rows (one per T) of one estimator; NaN with a ``note`` if it cannot run."""
    rows = []
    for t in cfg.horizons:
        row: dict[str, Any] = {"estimator": label, "T": t}
        try:
            for setting in ("on", "off"):
                s = _settings(cfg)[(t, setting)]
                mean, second = _moments(fn, s)
                norm = float(s.grad_j.norm())
                row[f"bias_{setting}"] = float((mean - s.grad_j).norm()) / norm
                row[f"cos_{setting}"] = float(mean @ s.grad_j) / (float(mean.norm()) * norm) if float(mean.norm()) else 0.0
                row[f"var_{setting}"] = (second - float(mean @ mean)) / norm ** 2
        except VariantError as exc:
            row.update({c: math.nan for c in COLUMNS[2:]}, note=f"not available on a batch of one: {exc}")
        rows.append(row)
    return rows


KEEP = 8  # cached tables kept (one per code version and config)


class ProfileCache:
    """On-disk cache of the registry's rows of the profile table (they do not depend on the loss
    under test, and take most of a spec-free run).

    A file per key under ``directory`` (default ``$PGVERIFY_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/pgverify``, else ``~/.cache/pgverify``; never the working directory). The key
    hashes the profile config, the torch version and the source of every module the rows depend
    on (``sims``, ``policies``, ``theory``), so a code change is a cache miss, never a stale table.
    Writes are atomic (a temporary file, then a rename); an unreadable or unwritable cache is
    skipped, never an error.
    """

    def __init__(self, directory: str | os.PathLike | None = None, enabled: bool = True) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self.enabled = enabled

    def key(self, cfg: ProfileConfig) -> str:
        digest = hashlib.sha256(repr(cfg).encode())
        digest.update(torch.__version__.encode())
        for path in _source_files():
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
        return digest.hexdigest()[:32]

    def get(self, cfg: ProfileConfig) -> tuple[dict[str, Any], ...] | None:
        if not self.enabled:
            return None
        try:
            text = (self.directory / f"profile-{self.key(cfg)}.json").read_text()
            return tuple(json.loads(text, parse_constant=_constant))
        except (OSError, ValueError):
            return None

    def put(self, cfg: ProfileConfig, rows: tuple[dict[str, Any], ...]) -> None:
        if not self.enabled:
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.directory / f"profile-{self.key(cfg)}.json", list(rows))
            old = sorted(self.directory.glob("profile-*.json"), key=lambda f: f.stat().st_mtime)[:-KEEP]
            for stale in old:  # earlier code versions' tables: keep the newest KEEP
                stale.unlink(missing_ok=True)
        except OSError:
            return


def _constant(name: str) -> float:
    return float(name)  # NaN / Infinity as written by json.dump


@functools.lru_cache(maxsize=1)
def _source_files() -> tuple[Path, ...]:
    root = Path(__file__).resolve().parents[2]
    return tuple(sorted(p for d in ("sims", "policies", "theory") for p in (root / d).rglob("*.py")))


@functools.lru_cache(maxsize=8)
def _compute_registry_rows(cfg: ProfileConfig) -> tuple[dict[str, Any], ...]:
    rows = []
    for name in OBJECTIVES:
        spec = make_spec(name)
        rows += estimator_profile(spec.loss, f"{name} (default)", cfg)
    return tuple(rows)


def registry_rows(cfg: ProfileConfig, cache: ProfileCache | None = None) -> tuple[dict[str, Any], ...]:
    """Every registry objective's profile rows (at its default config), from ``cache`` when there."""
    cache = ProfileCache() if cache is None else cache
    rows = cache.get(cfg)
    if rows is None:
        rows = _compute_registry_rows(cfg)
        cache.put(cfg, rows)
    return rows


def bias_variance_profile(fn: Callable[..., Any], *, spec: Spec | None = None,
                          cfg: ProfileConfig = ProfileConfig(), cache: ProfileCache | None = None) -> CheckResult:
    """Profile entry: the table of the variant, the spec (if any) and every registry objective
    (the registry's rows from ``cache``: computed once per code version)."""
    rows = estimator_profile(fn, "variant", cfg)
    if spec is not None and not spec.is_penalty:
        one = dataclasses.replace(spec.config, group_size=1) if spec.config.agg == "prompt-token-mean" else spec.config
        rows += estimator_profile(dataclasses.replace(spec, config=one).loss, f"spec: {spec.name}", cfg)
    rows += [dict(r) for r in registry_rows(cfg, cache)]
    table = pd.DataFrame(rows)
    shown = table[list(COLUMNS)].to_markdown(index=False, floatfmt=".3g")
    notes = sorted({r["note"] for r in rows if "note" in r})
    detail = (f"exact, by enumeration: TabularPolicy V={cfg.vocab} (EOS = {cfg.vocab - 1}), R = 1[token 0 occurs], "
              f"A = R - J_old, one sequence per batch; off-policy at per-token KL {cfg.kl:g}. bias = "
              "||E g - grad J|| / ||grad J||, cos = cosine(E g, grad J), var = tr Cov(g) / ||grad J||^2\n"
              + shown + ("\n" + "\n".join(notes) if notes else ""))
    return CheckResult("bias and variance profile", "profile", None, detail,
                       {"config": dataclasses.asdict(cfg), "rows": table.to_dict("records")})
