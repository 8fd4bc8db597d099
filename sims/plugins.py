"""Objective plugins: packages that register objectives through the ``pgverify.objectives`` entry
point group.

A package declares, in its ``pyproject.toml``::

    [project.entry-points."pgverify.objectives"]
    topr = "my_package.pgverify_plugin:TOPR"

where ``TOPR`` is a ``sims.registry.ObjectiveSpec`` (torch function, frozen config class, theory
entry, reference), a list of them, or a function returning either. ``install(OBJECTIVES)`` (run
by ``sims.registry`` at import) loads every entry point, checks each objective against the
contract (``contract_problems``) and adds those that keep it; a plugin that fails to import or
breaks the contract is recorded as a ``PluginError`` (entry point name, where it points, reason)
and never stops the others or ``pgverify list``. ``check_objective`` (``sims.check.battery``)
runs the registry's theory ↔ torch battery on any of them.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import traceback
from dataclasses import dataclass
from typing import Any

__all__ = ["GROUP", "PluginError", "PLUGIN_NAMES", "install", "refresh", "contract_problems"]

GROUP = "pgverify.objectives"
PLUGIN_NAMES: dict[str, str] = {}  # objective name -> entry point "name = value" it came from
ADVANTAGE_LEVELS = ("token", "sequence")


@dataclass(frozen=True)
class PluginError:
    """A plugin that could not be used: ``entry_point`` (its name), ``value`` (module:attr) and why."""

    entry_point: str
    value: str
    reason: str


def contract_problems(spec: Any, taken: set[str]) -> list[str]:
    """What is wrong with a plugin's objective (empty: it keeps the contract): an ``ObjectiveSpec``
    with a new name, a callable ``loss_fn``, a frozen dataclass config whose defaults construct and
    carry ``agg``, an advantage level of ``token``/``sequence``, a ``TheoryEntry`` (or a
    ``batch_coupled`` reason instead) and a reference."""
    from sims.registry import ObjectiveSpec
    from theory._core import TheoryEntry

    if not isinstance(spec, ObjectiveSpec):
        return [f"is a {type(spec).__name__}, not a sims.registry.ObjectiveSpec"]
    out = []
    if not (isinstance(spec.name, str) and spec.name.replace("_", "a").replace("-", "a").isalnum()):
        out.append(f"name {spec.name!r} is not a plain name (letters, digits, _ and -)")
    elif spec.name in taken:
        out.append(f"name {spec.name!r} is already registered")
    if not callable(spec.loss_fn):
        out.append("loss_fn is not callable")
    cls = spec.config_cls
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen):
        out.append(f"config_cls {cls!r} is not a frozen dataclass")
    else:
        try:
            cfg = cls()
            if not hasattr(cfg, "agg"):
                out.append(f"config_cls {cls.__name__} has no agg field (subclass sims.aggregation.AggConfig)")
        except Exception as exc:  # noqa: BLE001 (the plugin's own failure is the reason we report)
            out.append(f"config_cls {cls.__name__}() raised {type(exc).__name__}: {exc}")
    if spec.advantage_level not in ADVANTAGE_LEVELS:
        out.append(f"advantage_level {spec.advantage_level!r} is not one of {', '.join(ADVANTAGE_LEVELS)}")
    if spec.theory is None and not spec.batch_coupled:
        out.append("theory is None: a per-sequence objective needs its theory entry (theory.api.make_entry)")
    if spec.theory is not None and not isinstance(spec.theory, TheoryEntry):
        out.append(f"theory is a {type(spec.theory).__name__}, not a theory TheoryEntry")
    if not (isinstance(spec.reference, str) and spec.reference.strip()):
        out.append("reference is empty (the paper, with equation)")
    return out


def _entry_points():
    return importlib.metadata.entry_points(group=GROUP)


def _load(ep) -> list[Any]:
    obj = ep.load()
    if callable(obj) and not hasattr(obj, "loss_fn"):
        obj = obj()
    return list(obj) if isinstance(obj, (list, tuple)) else [obj]


def install(objectives: dict[str, Any]) -> list[PluginError]:
    """Load every ``pgverify.objectives`` entry point into ``objectives``; returns the errors."""
    errors: list[PluginError] = []
    try:
        eps = list(_entry_points())
    except Exception as exc:  # noqa: BLE001 (broken metadata must not break the registry)
        return [PluginError("*", GROUP, f"entry points cannot be read: {type(exc).__name__}: {exc}")]
    for ep in sorted(eps, key=lambda e: e.name):
        where = getattr(ep, "value", "?")
        try:
            specs = _load(ep)
        except Exception as exc:  # noqa: BLE001 (a plugin that fails to import is reported, not raised)
            last = traceback.format_exception_only(type(exc), exc)[-1].strip()
            errors.append(PluginError(ep.name, where, f"failed to import: {last}"))
            continue
        for spec in specs:
            problems = contract_problems(spec, set(objectives))
            if problems:
                label = getattr(spec, "name", ep.name)
                errors.append(PluginError(ep.name, where, f"objective {label!r} violates the contract: "
                                                          + "; ".join(problems)))
                continue
            objectives[spec.name] = spec
            PLUGIN_NAMES[spec.name] = f"{ep.name} = {where}"
    return errors


def refresh() -> list[PluginError]:
    """Remove the plugins installed so far from ``sims.registry.OBJECTIVES`` and load them again
    (after packages were installed, or in a test that registers entry points); updates and
    returns ``sims.registry.PLUGIN_ERRORS``."""
    from sims import registry

    for name in list(PLUGIN_NAMES):
        registry.OBJECTIVES.pop(name, None)
        PLUGIN_NAMES.pop(name)
    errors = install(registry.OBJECTIVES)
    registry.PLUGIN_ERRORS[:] = errors
    return errors
