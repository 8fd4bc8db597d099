"""Loading the loss under test and binding its settings (``pgverify check TARGET --param k=v``).

A target is ``path/to/file.py:function`` or ``package.module:function``. The callable takes
``(logp, old_logp, adv, mask)`` positionally, or under a trainer's own names by keyword
(``sims.check.feed``), and returns a loss or ``(loss, diagnostics)``; its own settings are keyword
parameters, set with ``--param name=value``; a config object's fields with ``--param
config.field=value`` (built by ``--factory config=module:function`` or as a namespace). Every
problem with what was asked (missing file, import error, not callable, wrong signature, unknown
parameter, a value of the wrong type) is a ``UsageError``, which the CLI turns into exit code 2.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
import types
from typing import Any, Callable, Iterable, Mapping

__all__ = ["UsageError", "load_target", "bind_params", "parse_assignments", "parse_value", "callable_name",
           "parse_factories"]

POSITIONAL = ("logp", "old_logp", "adv", "mask")


class UsageError(ValueError):
    """What was asked cannot be run (the CLI exits with code 2 and prints the message)."""


def parse_value(text: str) -> Any:
    """A command-line value as Python: numbers, ``true``/``false``, ``none``, else the string.

    >>> [parse_value(v) for v in ("0.2", "3", "true", "None", "token-mean")]
    [0.2, 3, True, None, 'token-mean']
    """
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return text.strip()


def parse_assignments(option: str, items: Iterable[str] | None, *, dotted: bool = False) -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}``; a malformed or repeated item is a UsageError.

    With ``dotted``, ``NAME.FIELD=VALUE`` sets a field of a nested mapping, to any depth:
    ``["cfg.clip.low=0.2", "cfg.beta=1"]`` -> ``{"cfg": {"clip": {"low": 0.2}, "beta": 1}}``.
    """
    out: dict[str, Any] = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        name = name.strip()
        parts = name.split(".") if dotted else [name]
        if not sep or not all(part.isidentifier() for part in parts):
            allowed = "NAME=VALUE or NAME.FIELD=VALUE with identifiers" if dotted else \
                "NAME=VALUE with NAME an identifier"
            raise UsageError(f"{option} {item!r} is not name=value; allowed: {allowed}")
        node = out
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UsageError(f"{option} {item!r}: {'.'.join(parts[:depth + 1])} is already set to a value; "
                                 "allowed: a value or fields, not both")
            node = child
        if parts[-1] in node:
            raise UsageError(f"{option} {name!r} is given twice (or as a value and as fields); allowed: each name once")
        node[parts[-1]] = parse_value(value)
    return out


def load_target(target: str) -> Callable[..., Any]:
    """The callable named by ``target`` (``path/to/file.py:function`` or ``package.module:function``)."""
    module_part, sep, attr = target.rpartition(":")
    if not sep or not module_part or not attr:
        raise UsageError(f"TARGET {target!r} is not MODULE:FUNCTION; allowed: path/to/file.py:function "
                         "or package.module:function")
    if module_part.endswith(".py") or os.sep in module_part or "/" in module_part:
        module = _load_file(module_part)
    else:
        module = _import(module_part)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"TARGET {target!r}: {module_part} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UsageError(f"TARGET {target!r} is a {type(obj).__name__}, not callable; allowed: a function "
                         "fn(logp, old_logp, adv, mask)")
    return obj


def _load_file(path: str):
    if not os.path.isfile(path):
        raise UsageError(f"TARGET file {path!r} does not exist")
    name = "pgverify_target_" + hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"TARGET file {path!r} cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's module failed to import: a usage error, with the cause
        del sys.modules[name]
        raise UsageError(f"TARGET file {path!r} failed to import: {type(exc).__name__}: {exc}") from exc
    return module


def _import(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        raise UsageError(f"TARGET module {name!r} cannot be imported: {exc}") from exc
    except Exception as exc:
        raise UsageError(f"TARGET module {name!r} failed to import: {type(exc).__name__}: {exc}") from exc


def bind_params(fn: Callable[..., Any], params: Mapping[str, Any] | None = None,
                factories: Mapping[str, Callable[..., Any]] | None = None) -> Callable[..., Any]:
    """``fn`` with its keyword settings ``params`` bound, after checking the signature.

    Each name in ``params`` must be one of ``fn``'s parameters (or it takes ``**kwargs``). A value
    given as an int for a float default is converted to float. A nested mapping (from dotted
    ``--param cfg.field=value``) is passed as ``factories[name](**mapping)`` when a factory is given
    for that name (``--factory cfg=module:make_config``), else as a ``types.SimpleNamespace``
    (recursively), so ``config.field`` works; a factory's own error is a ``UsageError``.
    """
    params = dict(params or {})
    factories = dict(factories or {})
    for name in factories:
        if name not in params:
            params[name] = {}
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        sig = None  # builtins: nothing to check
    if sig is not None:
        takes_kwargs = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
        allowed = [p.name for p in list(sig.parameters.values())[len(POSITIONAL):]  # after the four tensors
                   if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        unknown = [k for k in params if k not in sig.parameters]
        if unknown and not takes_kwargs:
            raise UsageError(f"--param {unknown[0]!r} is not a parameter of {callable_name(fn)}{sig}; allowed: "
                             + (", ".join(allowed) or "none"))
        for key, value in list(params.items()):
            default = sig.parameters[key].default if key in sig.parameters else inspect.Parameter.empty
            if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
                params[key] = float(value)
            elif (default is not inspect.Parameter.empty and default is not None and not isinstance(value, dict)
                  and not _same_kind(default, value)):
                raise UsageError(f"--param {key}={value!r} is a {type(value).__name__}; allowed: a "
                                 f"{type(default).__name__} like the default {default!r}")
    for key, value in list(params.items()):
        if isinstance(value, dict):
            params[key] = _build(key, value, factories.get(key))
    return functools.partial(fn, **params) if params else fn


def _same_kind(default: Any, value: Any) -> bool:
    """Whether ``value`` may replace ``default`` (numbers for numbers, bools for bools, ...)."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float))
    return isinstance(value, type(default)) or isinstance(default, type(value))


def _build(name: str, mapping: dict[str, Any], factory: Callable[..., Any] | None) -> Any:
    if factory is None:
        return _namespace(mapping)
    try:
        return factory(**mapping)
    except Exception as exc:  # the factory rejected the fields: a usage problem, with its message
        raise UsageError(f"--factory {name}: {callable_name(factory)}(**{mapping!r}) raised "
                         f"{type(exc).__name__}: {exc}") from exc


def _namespace(mapping: dict[str, Any]) -> types.SimpleNamespace:
    return types.SimpleNamespace(**{k: _namespace(v) if isinstance(v, dict) else v for k, v in mapping.items()})


def parse_factories(items: Iterable[str] | None) -> dict[str, Callable[..., Any]]:
    """``["cfg=pkg.mod:make"]`` -> ``{"cfg": make}`` (each loaded like a TARGET)."""
    out: dict[str, Callable[..., Any]] = {}
    for item in items or ():
        name, sep, where = item.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier() or ":" not in where:
            raise UsageError(f"--factory {item!r} is not NAME=MODULE:FUNCTION; allowed: e.g. "
                             "config=my_configs.py:make_actor_config")
        if name in out:
            raise UsageError(f"--factory {name!r} is given twice; allowed: each name once")
        out[name] = load_target(where.strip())
    return out


def callable_name(fn: Callable[..., Any]) -> str:
    """How ``fn`` is shown in messages: its qualified name, else its name, else its repr."""
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
