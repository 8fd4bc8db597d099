"""Loading the loss under test and binding its settings (``pgverify check TARGET --param k=v``).

A target is ``path/to/file.py:function`` or ``package.module:function``. The callable must take
``(logp, old_logp, adv, mask)`` positionally and return a loss or ``(loss, diagnostics)``; its own
settings are keyword parameters, set with ``--param name=value``. Every problem with what was asked
(missing file, import error, not callable, wrong signature, unknown parameter) is a
``UsageError``, which the CLI turns into exit code 2.
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
from typing import Any, Callable, Iterable, Mapping

__all__ = ["UsageError", "load_target", "bind_params", "parse_assignments", "parse_value", "callable_name"]

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


def parse_assignments(option: str, items: Iterable[str] | None) -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}``; a malformed or repeated item is a UsageError."""
    out: dict[str, Any] = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise UsageError(f"{option} {item!r} is not name=value; allowed: NAME=VALUE with NAME an identifier")
        if name in out:
            raise UsageError(f"{option} {name!r} is given twice; allowed: each name once")
        out[name] = parse_value(value)
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


def bind_params(fn: Callable[..., Any], params: Mapping[str, Any] | None = None) -> Callable[..., Any]:
    """``fn`` with its keyword settings ``params`` bound, after checking the signature.

    ``fn`` must accept ``(logp, old_logp, adv, mask)`` positionally; each name in ``params`` must
    be one of its keyword parameters (or it takes ``**kwargs``). A value given as an int for a
    float default is converted to float.
    """
    params = dict(params or {})
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return functools.partial(fn, **params) if params else fn  # builtins: nothing to check
    try:
        sig.bind(*POSITIONAL, **params)
    except TypeError as exc:
        allowed = [p.name for p in list(sig.parameters.values())[len(POSITIONAL):]
                   if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        unknown = [k for k in params if k not in sig.parameters]
        if unknown and not any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
            raise UsageError(f"--param {unknown[0]!r} is not a parameter of {callable_name(fn)}{sig}; allowed: "
                             + (", ".join(allowed) or "none")) from exc
        raise UsageError(f"{callable_name(fn)}{sig} has the wrong signature ({exc}); allowed: "
                         "fn(logp, old_logp, adv, mask, **settings)") from exc
    for key, value in list(params.items()):
        default = sig.parameters[key].default if key in sig.parameters else inspect.Parameter.empty
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            params[key] = float(value)
    return functools.partial(fn, **params) if params else fn


def callable_name(fn: Callable[..., Any]) -> str:
    """How ``fn`` is shown in messages: its qualified name, else its name, else its repr."""
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
