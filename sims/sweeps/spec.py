"""The sweep spec: a TOML file naming the grid, parsed and validated before any work.

Top-level keys are the grid's axes; each takes one value or a non-empty list of values (a list is
swept). ``[objectives.NAME]`` tables name registry objectives with their config fields and
``[advantages.NAME]`` tables the advantage estimators with theirs (a field given as a list is
swept too); ``[dynamics]`` sets the training run of the ``dynamics`` quantity. The README's
"Sweeps" section documents every key; ``EXAMPLE`` (``pgverify sweep --example``) is a commented
spec.

Every problem is a ``SpecError`` naming the key, the value and what is allowed: an unknown key,
a value of the wrong type or out of range, a registry name that does not exist or that the
engines cannot evaluate, a combination the engines refuse (the exact quantities need V^T <=
``MAX_EXACT``), a grid of zero cells or more than ``MAX_CELLS``. ``parse_spec`` only reads and
checks; ``sims.sweeps.cells.expand`` turns the spec into cells (and checks each cell's configs).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import types
import typing
from dataclasses import dataclass
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "AXES",
    "DIVERGENCES",
    "MAX_CELLS",
    "MAX_EXACT",
    "POLICIES",
    "QUANTITIES",
    "DynamicsSpec",
    "Spec",
    "SpecError",
    "parse_spec",
]

QUANTITIES = ("bias", "variance", "zero_weight_frac", "ess", "dynamics")
EXACT_QUANTITIES = ("bias", "dynamics")  # need every sequence enumerated
POLICIES = ("tabular", "markov", "gru")
DIVERGENCES = ("kl", "chi2")
MAX_EXACT = 1 << 20  # V^T at most this for the exact quantities (and the relative variance)
MAX_CELLS = 100_000
MAX_SEED = 2 ** 31
AGG_FIELDS = ("agg", "max_len", "group_size")  # set by the sweep's agg axis, T and K
DEFAULT_AGG = "default"  # each objective's own registered default aggregation


class SpecError(ValueError):
    """A spec that cannot run; the message names the key, the value and what is allowed."""


def _fail(key: str, value: Any, allowed: str) -> SpecError:
    return SpecError(f"{key} = {value!r} is invalid; allowed: {allowed}")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _int_in(low: int, high: int):
    def check(x: Any) -> Any:
        return x if _is_int(x) and low <= x <= high else None
    return check, f"an integer in [{low}, {high}]"


def _positive_float(high: float = math.inf):
    def check(x: Any) -> Any:
        return float(x) if _is_number(x) and 0 < x <= high else None
    return check, "a finite number > 0" + ("" if high == math.inf else f" and <= {high:g}")


def _choice(choices: tuple[str, ...]):
    def check(x: Any) -> Any:
        return x if isinstance(x, str) and x in choices else None
    return check, "one of " + ", ".join(repr(c) for c in choices)


def _replicas(x: Any) -> Any:
    return x if _is_int(x) and 40 <= x <= 10_000_000 and x % 20 == 0 else None


def _aggs() -> tuple[str, ...]:
    from sims.aggregation import AGGREGATIONS

    return (DEFAULT_AGG, *AGGREGATIONS)


# axis key -> (default or None when required, (check -> value or None, what is allowed))
AXES: dict[str, tuple[Any, Any]] = {
    "seeds": ([0], _int_in(0, MAX_SEED - 1)),
    "replicas": (None, (_replicas, "an integer multiple of 20 in [40, 10000000] (20 batch means, >= 2 each)")),
    "policy": (["tabular"], _choice(POLICIES)),
    "horizon": (None, _int_in(1, 4096)),
    "vocab": (None, _int_in(2, 4096)),
    "logit_scale": ([1.0], _positive_float(100.0)),
    "divergence": (["kl"], _choice(DIVERGENCES)),
    "divergence_value": (None, _positive_float(100.0)),
    "agg": ([DEFAULT_AGG], None),  # checked against the registry's aggregations
    "group_size": (None, _int_in(1, 1024)),
}
TABLES = ("objectives", "advantages", "dynamics")
TOP_KEYS = ("quantities", *AXES, *TABLES)


@dataclass(frozen=True)
class DynamicsSpec:
    """The training run of the ``dynamics`` quantity: ``steps`` sampling steps of K sequences from
    the current policy, each followed by ``updates`` Adam steps (learning rate ``lr``) on the
    cell's loss over that batch."""

    steps: int = 20
    updates: int = 1
    lr: float = 0.1


DYNAMICS_KEYS = {"steps": _int_in(1, 100_000), "updates": _int_in(1, 100), "lr": _positive_float(100.0)}


@dataclass(frozen=True)
class Spec:
    """A validated spec: every axis as a tuple of values (in the spec's order), the objectives and
    advantages as ``(name, {field: values})`` pairs, ``dynamics`` when the quantity is asked for,
    and the spec's text."""

    quantities: tuple[str, ...]
    seeds: tuple[int, ...]
    replicas: tuple[int, ...]
    policy: tuple[str, ...]
    horizon: tuple[int, ...]
    vocab: tuple[int, ...]
    logit_scale: tuple[float, ...]
    divergence: tuple[str, ...]
    divergence_value: tuple[float, ...]
    agg: tuple[str, ...]
    group_size: tuple[int, ...]
    objectives: tuple[tuple[str, dict[str, tuple[Any, ...]]], ...]
    advantages: tuple[tuple[str, dict[str, tuple[Any, ...]]], ...]
    dynamics: DynamicsSpec | None
    text: str = ""

    @property
    def swept(self) -> tuple[str, ...]:
        """The axes with more than one value (objective and advantage fields as ``NAME.FIELD``)."""
        out = [key for key in AXES if len(getattr(self, key)) > 1]
        if len(self.objectives) > 1:
            out.append("objective")
        if len(self.advantages) > 1:
            out.append("advantage")
        for kind, tables in (("objectives", self.objectives), ("advantages", self.advantages)):
            out += [f"{kind}.{name}.{f}" for name, fields in tables for f, values in fields.items() if len(values) > 1]
        return tuple(out)


def _values(key: str, raw: Any) -> list[Any]:
    """A scalar as a one-value list; a list as it is (empty: zero cells)."""
    if isinstance(raw, list):
        if not raw:
            raise SpecError(f"{key} = [] gives zero cells; allowed: a value or a non-empty list of values")
        if len(set(map(repr, raw))) != len(raw):
            raise _fail(key, raw, "a list without repeated values")
        return raw
    if isinstance(raw, dict):
        raise _fail(key, raw, "a value or a list of values, not a table")
    return [raw]


def _axis(key: str, raw: Any) -> tuple[Any, ...]:
    default, rule = AXES[key]
    values = _values(key, default if raw is None else raw)
    if rule is None:  # agg
        rule = _choice(_aggs())
    check, allowed = rule
    out = []
    for v in values:
        checked = check(v)
        if checked is None:
            raise _fail(key, v, allowed)
        out.append(checked)
    return tuple(out)


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """A TOML value as the config field's type: ints for a float field become floats (so 1 and 1.0
    are the same cell), the string "none" is None for an optional field."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if isinstance(value, str) and value.lower() == "none" and type(None) in options:
        return None
    if isinstance(value, bool):
        if bool in options:
            return value
    elif isinstance(value, int) and int in options:
        return value
    elif _is_number(value) and float in options:
        return float(value)
    elif isinstance(value, str) and str in options:
        return value
    names = " or ".join("none" if o is type(None) else getattr(o, "__name__", str(o)) for o in options)
    raise _fail(key, value, f"a {names} (a list of them is swept)")


def _config_table(kind: str, registry: dict[str, Any], raw: Any, callable_check) -> tuple:
    if raw is None:
        raise SpecError(f"no [{kind}.NAME] table: zero cells; allowed: one table per {kind[:-1]}, NAME one of "
                        + ", ".join(registry))
    if not isinstance(raw, dict):
        raise _fail(kind, raw, f"tables [{kind}.NAME], NAME one of " + ", ".join(registry))
    if not raw:
        raise SpecError(f"[{kind}] has no [{kind}.NAME] table: zero cells; allowed: NAME one of " + ", ".join(registry))
    out = []
    for name, fields in raw.items():
        if name not in registry:
            raise _fail(f"{kind}.{name}", "(table)", f"NAME one of {', '.join(registry)}")
        callable_check(name)
        if not isinstance(fields, dict):
            raise _fail(f"{kind}.{name}", fields, "a table of config fields")
        config_cls = registry[name].config_cls
        hints = typing.get_type_hints(config_cls)
        names = [f.name for f in dataclasses.fields(config_cls) if f.name not in AGG_FIELDS]
        parsed = {}
        for field, raw_value in fields.items():
            key = f"{kind}.{name}.{field}"
            if field in AGG_FIELDS and kind == "objectives":
                raise _fail(key, raw_value, "no agg, max_len or group_size here: the top-level agg axis sets the "
                                            "aggregation, max_len is T and group_size is K")
            if field not in names:
                raise SpecError(f"{key}: unknown field of {config_cls.__name__}; allowed: "
                                + (", ".join(names) or "none (it has no config fields)"))
            parsed[field] = tuple(_coerce(key, v, hints[field]) for v in _values(key, raw_value))
        out.append((name, parsed))
    return tuple(out)


def _objective_callable(name: str) -> None:
    from sims.registry import OBJECTIVES

    spec = OBJECTIVES[name]
    if spec.inputs:
        raise _fail(f"objectives.{name}", "(table)", f"an objective without extra inputs: the engines cannot "
                                                     f"supply {', '.join(spec.inputs)}")
    if spec.batch_coupled is not None:
        raise _fail(f"objectives.{name}", "(table)",
                    f"a per-sequence objective: the engines evaluate many independent batches in one call and "
                    f"{name} is batch-coupled ({spec.batch_coupled})")


def _advantage_callable(name: str) -> None:
    from sims.engines.montecarlo import GROUP_LOCAL_ADVANTAGES

    if name not in GROUP_LOCAL_ADVANTAGES:
        raise _fail(f"advantages.{name}", "(table)", "a per-group estimator, one of " + ", ".join(GROUP_LOCAL_ADVANTAGES))


def _dynamics(raw: Any, wanted: bool) -> DynamicsSpec | None:
    if raw is not None and not isinstance(raw, dict):
        raise _fail("dynamics", raw, "a [dynamics] table with steps, updates, lr")
    if raw is not None and not wanted:
        raise SpecError("[dynamics] is given but quantities has no 'dynamics'; allowed: add 'dynamics' to "
                        "quantities, or remove the table")
    if not wanted:
        return None
    values = {}
    for key, value in (raw or {}).items():
        if key not in DYNAMICS_KEYS:
            raise SpecError(f"dynamics.{key}: unknown key; allowed: " + ", ".join(DYNAMICS_KEYS))
        check, allowed = DYNAMICS_KEYS[key]
        if check(value) is None:
            raise _fail(f"dynamics.{key}", value, allowed)
        values[key] = check(value)
    return DynamicsSpec(**values)


def parse_spec(text: str) -> Spec:
    """The validated ``Spec`` of a TOML text; ``SpecError`` on the first problem (see module doc)."""
    from sims.registry import ADVANTAGES, OBJECTIVES

    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"not valid TOML: {exc}") from None
    for key in raw:
        if key not in TOP_KEYS:
            raise SpecError(f"{key}: unknown key; allowed: " + ", ".join(TOP_KEYS))
    if "quantities" not in raw:
        raise SpecError("quantities is missing; allowed: a list of " + ", ".join(QUANTITIES))
    quantities = _values("quantities", raw["quantities"])
    for q in quantities:
        if q not in QUANTITIES:
            raise _fail("quantities", q, "a list of " + ", ".join(repr(x) for x in QUANTITIES))
    for key, (default, _) in AXES.items():
        if default is None and key not in raw:
            raise SpecError(f"{key} is missing; allowed: {AXES[key][1][1]} (or a list of them)")
    axes = {key: _axis(key, raw.get(key)) for key in AXES}
    spec = Spec(
        quantities=tuple(quantities), **axes,
        objectives=_config_table("objectives", OBJECTIVES, raw.get("objectives"), _objective_callable),
        advantages=_config_table("advantages", ADVANTAGES, raw.get("advantages"), _advantage_callable),
        dynamics=_dynamics(raw.get("dynamics"), "dynamics" in quantities), text=text,
    )
    exact = [q for q in spec.quantities if q in EXACT_QUANTITIES]
    if exact:
        for t in spec.horizon:
            for v in spec.vocab:
                if v ** t > MAX_EXACT:
                    raise _fail("horizon", t, f"with vocab = {v} and quantities {exact} (exact, by enumeration), "
                                              f"V^T <= {MAX_EXACT}: T <= {int(math.log(MAX_EXACT) / math.log(v))}")
    if "dynamics" in spec.quantities and "gru" in spec.policy:
        raise _fail("policy", "gru", "'tabular' or 'markov' with the dynamics quantity (a table policy's logits are "
                                     "trained)")
    return spec
