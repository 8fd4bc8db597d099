"""The conformance matrix: every case of a trainer checked against the spec it claims.

An adapter (``sims.trainers.verl`` and the others) is an ``Adapter``: the trainer's
distribution name, the versions it was written against, the ``--config`` knobs with their
defaults, and ``cases(config)``, which imports the installed trainer and returns one ``Case``
per loss × option: how to build the trainer's loss as a callable (``make``), how to feed it
(``check`` keyword arguments), the registry spec and parameters its documentation or paper
names, and one sentence per check that is known to differ (what differs, and whether it looks
intended). ``run_case`` runs ``sims.check.api.check`` (contract, spec and property sections; no
profile) and turns the report into a row; ``run_matrix`` runs every case.

JSON schema (``SCHEMA = 1``; stable: keys are only ever added, a change of meaning bumps it)::

    {"schema": 1,
     "trainer": "verl", "package": "verl", "version": "0.9.1",      # the installed version
     "tested_versions": ["0.9.1"], "pgverify": "0.1.0",
     "settings": {"examples": 10, "seed": 0, "group_size": 4,
                  "config": {knob: value, ...},                     # the --config knobs in force
                  "losses": null | [names]},                        # --loss filter
     "counts": {"conforms": n, "differs": n, "not applicable": n, "error": n},
     "rows": [{"loss": "vanilla", "option": "agg=token-mean",
               "settings": {trainer config field: value, ...},      # what the case sets
               "claim": "PPO clip (Schulman et al. 2017) with verl's dual-clip ...",
               "spec": "ppo_clip" | null, "spec_params": {...},
               "spec_text": "ppo_clip(agg='token-mean', ...)" | null,
               "verdict": "conforms" | "differs" | "not applicable" | "error",
               "summary": "one sentence",
               "failed": [{"check": name, "reason": first line, "detail": the card's evidence
                           with the shrunk counterexample, "input": {tensors} | null}],
               "checks": {"run": n, "passed": n}}]}

Verdicts: **conforms** — every contract, spec and property check passed; **differs** — at least
one failed (``failed`` lists them; ``summary`` is the adapter's sentence for each, or says that
the adapter does not explain it); **not applicable** — the registry has no spec for the case, or
the case cannot be fed (``summary`` says why); **error** — the case could not be built (the
trainer refused its config) or pgverify failed internally. Rows carry no timings, so the JSON
of two runs with the same versions and settings is identical and can be diffed between
releases.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "SCHEMA",
    "VERDICTS",
    "Adapter",
    "Case",
    "ConformError",
    "Note",
    "installed_version",
    "parse_config",
    "run_case",
    "run_matrix",
    "to_markdown",
]

SCHEMA = 1
CONFORMS, DIFFERS, NOT_APPLICABLE, ERROR = "conforms", "differs", "not applicable", "error"
VERDICTS = (CONFORMS, DIFFERS, NOT_APPLICABLE, ERROR)
KINDS = ("contract", "spec", "property")
DETAIL_LINES = 40  # the evidence kept per failed check (the card's text, which shows the shrunk input)


class ConformError(ValueError):
    """The trainer cannot be checked as asked (missing or untested package, bad --loss/--config):
    the CLI prints the message and exits with code 2."""


@dataclass(frozen=True)
class Case:
    """One loss × option of a trainer.

    Attributes:
        loss: the trainer's name of the loss (verl ``loss_mode``, TRL ``loss_type``, ...).
        option: the options of this case, ``k=v, ...`` ("" for the defaults).
        claim: what the trainer's documentation or paper says it implements.
        spec: the registry spec (``sims.check.specs.make_spec`` name) or None (not applicable).
        spec_params: its parameters.
        make: builds the loss callable (imports the trainer); None when not applicable.
        feed: keyword arguments of ``sims.check.api.check`` (``adv_shape``, ``mask_dtype``,
            ``args``, ``params``).
        settings: the trainer config fields this case sets (recorded in the row).
        not_applicable: why the case is not checked (None: it is).
        notes: ``Note`` s: for a failed check, one sentence on what differs and whether it looks
            intended (the first note whose check and pattern match the failure).
    """

    loss: str
    option: str
    claim: str
    spec: str | None = None
    spec_params: Mapping[str, Any] = field(default_factory=dict)
    make: Callable[[], Callable[..., Any]] | None = None
    feed: Mapping[str, Any] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)
    not_applicable: str | None = None
    notes: tuple[Note, ...] = ()

    def __post_init__(self) -> None:
        if (self.not_applicable is None) == (self.make is None or self.spec is None):
            raise ValueError(f"case {self.loss} [{self.option}]: give make and spec, or not_applicable; not both")

    def note_for(self, check: str, detail: str) -> str | None:
        """The adapter's sentence for a failed check with evidence ``detail`` (None: none applies)."""
        for note in self.notes:
            if check.startswith(note.check) and (note.when is None or re.search(note.when, detail)):
                return note.sentence
        return None


@dataclass(frozen=True)
class Note:
    """An adapter's explanation of a known difference.

    Attributes:
        check: the failed check's name, or a prefix of it (``"spec: zero-weight regions"``).
        sentence: what differs and whether it looks intended (one sentence).
        when: a regular expression that must occur in the failure's evidence (None: any failure
            of that check), so a sentence is given only for the difference it describes.
    """

    check: str
    sentence: str
    when: str | None = None


@dataclass(frozen=True)
class Adapter:
    """A trainer: its package, the versions the adapter was written against, the ``--config``
    knobs with their defaults, and ``cases(config) -> list[Case]`` (imports the trainer)."""

    trainer: str
    package: str
    tested: tuple[str, ...]
    install: str
    defaults: Mapping[str, Any]
    cases: Callable[[Mapping[str, Any]], list[Case]]
    import_check: str  # the module whose import proves the loss code is importable


def installed_version(adapter: Adapter, *, allow_untested: bool = False) -> str:
    """The installed version of the trainer; ``ConformError`` (with the pip command) when it is not
    installed, or when it is not a tested version and ``allow_untested`` is False."""
    try:
        version = importlib.metadata.version(adapter.package)
    except importlib.metadata.PackageNotFoundError:
        raise ConformError(f"{adapter.trainer} is not installed; install its loss code with: {adapter.install}") \
            from None
    if version not in adapter.tested and not allow_untested:
        raise ConformError(f"{adapter.package} {version} is installed, but the {adapter.trainer} adapter was written "
                           f"against {', '.join(adapter.tested)}; allowed: --allow-untested to check it anyway (new "
                           f"or renamed options are not enumerated), or {adapter.install}")
    return version


def parse_config(adapter: Adapter, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The adapter's defaults updated by ``--config`` overrides; ``ConformError`` for an unknown
    knob or a value of the wrong kind."""
    config = dict(adapter.defaults)
    for key, value in overrides.items():
        if key not in config:
            raise ConformError(f"--config {key!r} is not a knob of the {adapter.trainer} adapter; allowed: "
                               f"{', '.join(f'{k} (default {v!r})' for k, v in adapter.defaults.items())}")
        default = config[key]
        ok = (value is None or default is None or isinstance(value, type(default))
              or (isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool)))
        if not ok or isinstance(value, bool) != isinstance(default, bool) and default is not None:
            raise ConformError(f"--config {key}={value!r} is invalid; allowed: a {type(default).__name__} like the "
                               f"default {default!r}")
        config[key] = float(value) if isinstance(default, float) and isinstance(value, int) else value
    return config


def _short(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in params.items())


def spec_label(spec: str, params: Mapping[str, Any]) -> str:
    """``name(k=v, ...)`` with the given parameters (what a row conforms to)."""
    return f"{spec}({_short(params)})" if params else spec


def run_case(case: Case, *, examples: int, seed: int = 0, group_size: int = 4) -> dict[str, Any]:
    """Check one case and return its row (the JSON schema of the module docstring)."""
    row: dict[str, Any] = {"loss": case.loss, "option": case.option, "settings": dict(case.settings),
                           "claim": case.claim, "spec": case.spec, "spec_params": dict(case.spec_params),
                           "spec_text": None, "verdict": None, "summary": None, "failed": [],
                           "checks": {"run": 0, "passed": 0}}
    if case.not_applicable is not None:
        return row | {"verdict": NOT_APPLICABLE, "summary": case.not_applicable}
    from sims.check.api import check
    from sims.check.runner import CheckInternalError
    from sims.check.target import UsageError
    from sims.report import jsonable

    try:
        fn = case.make()
        report = check(fn, case.spec, spec_params=dict(case.spec_params), kinds=KINDS, examples=examples, seed=seed,
                       group_size=group_size, **case.feed)
    except (UsageError, ValueError, TypeError, AssertionError, NotImplementedError) as exc:
        return row | {"verdict": ERROR, "summary": f"the case could not be built: {type(exc).__name__}: {exc}"}
    except CheckInternalError as exc:
        return row | {"verdict": ERROR, "summary": f"internal error of pgverify during {exc.step!r}"}
    row["spec_text"] = report.spec
    row["checks"] = {"run": len(report.checks), "passed": len(report.checks) - len(report.failed)}
    if report.passed:
        return row | {"verdict": CONFORMS,
                      "summary": f"conforms to {spec_label(case.spec, case.spec_params)}"}
    failed = []
    for r in report.failed:
        lines = portable(r.detail).splitlines()
        reason = next((ln.strip() for ln in lines if ln.strip() and not ln.startswith("smallest failing input")
                       and not ln.startswith("B=")), "")
        if "max |w - w_spec|" in r.detail:
            reason = next(ln.strip() for ln in lines if "max |w - w_spec|" in ln)
        failed.append({"check": r.name, "reason": reason,
                       "detail": "\n".join(lines[:DETAIL_LINES]), "input": jsonable(r.data.get("input"))})
    return row | {"verdict": DIFFERS, "failed": failed, "summary": summarise(case, failed)}


def portable(text: str) -> str:
    """Evidence without this machine's install prefix: ``/x/lib/python3.11/site-packages/verl/...``
    becomes ``verl/...``, so the JSON of two machines with the same versions is the same.

    >>> portable("at /usr/lib/python3/site-packages/verl/a.py:7 in f")
    'at verl/a.py:7 in f'
    """
    return re.sub(r"[^\s(]*site-packages/", "", text)


def summarise(case: Case, failed: Sequence[Mapping[str, Any]]) -> str:
    """A differing row's summary: the spec, then the adapter's sentence for each failed check (a
    pure function of the case's notes and the failures' evidence)."""
    sentences: list[str] = []
    for f in failed:
        note = case.note_for(f["check"], f["detail"])
        sentence = note if note is not None else f"{f['check']}: not explained by the adapter (read the counterexample)"
        if sentence not in sentences:
            sentences.append(sentence)
    return f"differs from {spec_label(case.spec, case.spec_params)}: " + " ".join(sentences)


def select(cases: Sequence[Case], losses: Sequence[str] | None) -> list[Case]:
    """The cases of the named losses (all when ``losses`` is None); ``ConformError`` for a name
    the trainer does not have."""
    if not losses:
        return list(cases)
    names = list(dict.fromkeys(c.loss for c in cases))
    unknown = [n for n in losses if n not in names]
    if unknown:
        raise ConformError(f"--loss {unknown[0]!r} is not a loss of this trainer; allowed: {', '.join(names)}")
    return [c for c in cases if c.loss in losses]


_WORKER: dict[str, Any] = {}


def quiet_worker_signals() -> None:
    """In a forked worker: the default SIGTERM action (the parent's handler raises ``Terminated``,
    which printed a traceback whenever the pool ended its workers) and SIGINT ignored (the parent
    handles Ctrl-C and ends the pool)."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _worker_init(adapter: Adapter, config: Mapping[str, Any], losses: Sequence[str] | None, kw: dict) -> None:
    quiet_worker_signals()
    _WORKER.update(cases=select(adapter.cases(config), losses), kw=kw)


def _worker_run(index: int) -> tuple[int, dict[str, Any], float]:
    start = time.perf_counter()
    row = run_case(_WORKER["cases"][index], **_WORKER["kw"])
    return index, row, time.perf_counter() - start


def run_matrix(adapter: Adapter, *, version: str, config: Mapping[str, Any], losses: Sequence[str] | None = None,
               examples: int, seed: int = 0, group_size: int = 4, jobs: int = 1,
               progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every case of ``adapter`` (restricted to ``losses``) checked; the matrix document.

    ``jobs`` > 1 checks cases in that many forked worker processes (each builds the cases itself);
    every case is checked from its own seed, so the rows do not depend on ``jobs``."""
    from sims.cli import _version

    cases = select(adapter.cases(config), losses)
    kw = {"examples": examples, "seed": seed, "group_size": group_size}
    rows: list[dict[str, Any] | None] = [None] * len(cases)

    def done(i: int, row: dict[str, Any], seconds: float) -> None:
        rows[i] = row
        if progress is not None:
            finished = sum(r is not None for r in rows)
            progress(f"[{finished}/{len(cases)}] {cases[i].loss} [{cases[i].option or 'defaults'}]: "
                     f"{row['verdict']} ({seconds:.1f} s)")

    if jobs > 1:
        import multiprocessing

        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(jobs, initializer=_worker_init, initargs=(adapter, config, losses, kw)) as pool:
            for i, row, seconds in pool.imap_unordered(_worker_run, range(len(cases))):
                done(i, row, seconds)
            pool.close()  # let the workers exit on their own rather than be terminated
            pool.join()
    else:
        for i, case in enumerate(cases):
            start = time.perf_counter()
            done(i, run_case(case, **kw), time.perf_counter() - start)
    counts = {v: sum(r["verdict"] == v for r in rows) for v in VERDICTS}
    return {"schema": SCHEMA, "trainer": adapter.trainer, "package": adapter.package, "version": version,
            "tested_versions": list(adapter.tested), "pgverify": _version(),
            "settings": {"examples": examples, "seed": seed, "group_size": group_size, "config": dict(config),
                         "losses": list(losses) if losses else None},
            "counts": counts, "rows": rows}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(doc: Mapping[str, Any]) -> str:
    """The matrix as Markdown: a header, the table (loss × option → verdict, spec, what differs),
    then the evidence of every differing row (the failed checks with their counterexamples)."""
    s = doc["settings"]
    c = doc["counts"]
    lines = [f"# What {doc['trainer']} {doc['version']} implements: conformance matrix", "",
             f"Generated by `pgverify conform {doc['trainer']} --examples {s['examples']} --seed {s['seed']}` "
             f"(pgverify {doc['pgverify']}, schema {doc['schema']}; adapter tested against "
             f"{', '.join(doc['tested_versions'])}). Config knobs: {_short(s['config']) or 'none'}."
             + (f" Losses: {', '.join(s['losses'])}." if s["losses"] else ""), "",
             (f"**{c['conforms']} conform, {c['differs']} differ, {c['not applicable']} not applicable, "
              f"{c['error']} errors.**"), "",
             "| loss | option | verdict | spec | failed checks | what differs / why |",
             "|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        spec = spec_label(r["spec"], r["spec_params"]) if r["spec"] else "—"
        failed = "; ".join(f["check"] for f in r["failed"]) or "—"
        lines.append(f"| `{r['loss']}` | {_cell(r['option']) or '(defaults)'} | **{r['verdict']}** | "
                     f"{_cell(spec)} | {_cell(failed)} | {_cell(r['summary'] or '')} |")
    differing = [r for r in doc["rows"] if r["verdict"] == DIFFERS]
    if differing:
        lines += ["", "## Counterexamples", ""]
        for r in differing:
            lines += [f"### `{r['loss']}` {r['option'] or '(defaults)'}", "", f"Claim: {r['claim']}", ""]
            for f in r["failed"]:
                lines += [f"- **{f['check']}**", "", "```", f["detail"], "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def replace_settings(case: Case, **changes: Any) -> Case:
    """``dataclasses.replace`` for a case (tests monkeypatch through it)."""
    return dataclasses.replace(case, **changes)
