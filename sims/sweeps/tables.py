"""The sweep's outputs: the tidy table, the summary and the figures.

``tidy_table(spec, cells, records)`` has one row per (cell, quantity), in grid order then the
cell's row order, with columns ``cell`` (the first 16 hex digits of the cell's key), ``estimator``
(a label from the swept estimator axes), ``objective``, ``objective_config`` and
``advantage_config`` (canonical JSON of the full configs), ``advantage``, ``agg``, the task axes,
``group_size``, ``replicas``, ``seed``, ``device``, one column ``NAME.FIELD`` per swept config
field, and ``quantity``, ``value``, ``low``, ``high``, ``method``. It depends only on the cells'
configs and rows, so the same spec gives the same table, bit for bit, on any backend.

``summary_markdown`` renders one Markdown table per quantity (every cell, ``value [low, high]``)
and, with several seeds, the mean over seeds with a 95% t-interval (the seeds' spread: policy
draw and sampling together). ``figures`` draws each quantity against each swept task axis.
"""

from __future__ import annotations

import io
import json
import math
from typing import Any

from sims.sweeps.cells import Cell, canonical_json
from sims.sweeps.spec import AXES, Spec

__all__ = ["TASK_AXES", "csv_text", "figures", "parquet_bytes", "summary_markdown", "tidy_table"]

TASK_AXES = ("policy", "horizon", "vocab", "logit_scale", "divergence", "divergence_value", "group_size",
             "replicas")
NUMERIC_AXES = ("horizon", "vocab", "logit_scale", "divergence_value", "group_size", "replicas")


def _swept_fields(spec: Spec) -> list[tuple[str, str, str]]:
    """(kind, name, field) of every config field with more than one value."""
    out = []
    for kind, tables in (("objective", spec.objectives), ("advantage", spec.advantages)):
        out += [(kind, name, f) for name, fields in tables for f, values in fields.items() if len(values) > 1]
    return out


def estimator_label(spec: Spec, config: dict[str, Any]) -> str:
    """The objective's name with its swept fields, then the advantage and agg when they are swept:
    ``cispo(eps_high=0.2) · grpo``."""
    def named(kind: str) -> str:
        name = config[kind]
        fields = [f for k, n, f in _swept_fields(spec) if k == kind and n == name]
        values = ", ".join(f"{f}={config[f'{kind}_config'][f]!r}" for f in fields)
        return f"{name}({values})" if values else name

    parts = [named("objective")]
    if len(spec.advantages) > 1 or any(k == "advantage" for k, _, _ in _swept_fields(spec)):
        parts.append(named("advantage"))
    if len(spec.agg) > 1:
        parts.append(config["objective_config"]["agg"])
    return " · ".join(parts)


def tidy_table(spec: Spec, cells: list[Cell], records: dict[str, dict[str, Any]]):
    """The tidy ``pandas.DataFrame`` of the finished cells (``records`` by key; see module doc)."""
    import pandas as pd

    fields = _swept_fields(spec)
    rows = []
    for cell in cells:
        record = records.get(cell.key)
        if record is None:
            continue
        c = cell.config
        base = {"cell": cell.key[:16], "estimator": estimator_label(spec, c), "objective": c["objective"],
                "objective_config": canonical_json(c["objective_config"]), "advantage": c["advantage"],
                "advantage_config": canonical_json(c["advantage_config"]), "agg": c["objective_config"]["agg"]}
        base.update({axis: c[axis] for axis in TASK_AXES})
        base.update({"seed": c["seed"], "device": c["device"]})
        for kind, name, f in fields:
            base[f"{name}.{f}"] = c[f"{kind}_config"][f] if c[kind] == name else None
        rows += [{**base, **row} for row in record["rows"]]
    columns = (["cell", "estimator", "objective", "objective_config", "advantage", "advantage_config", "agg",
                *TASK_AXES, "seed", "device"] + [f"{n}.{f}" for _, n, f in fields]
               + ["quantity", "value", "low", "high", "method"])
    table = pd.DataFrame(rows, columns=columns)
    for _, name, f in fields:  # a field that is None in some cells and a number in others stays numeric
        col = f"{name}.{f}"
        if table[col].map(lambda x: x is None or isinstance(x, (int, float)) and not isinstance(x, bool)).all():
            table[col] = table[col].astype("float64")
        else:
            table[col] = table[col].map(lambda x: None if x is None else str(x)).astype("object")
    return table


def parquet_bytes(table) -> bytes:
    """The table as Parquet (pyarrow), in memory: written to disk atomically by the caller."""
    buffer = io.BytesIO()
    table.to_parquet(buffer, engine="pyarrow", index=False)
    return buffer.getvalue()


def csv_text(table) -> str:
    """The table as CSV (floats in their shortest round-trip form)."""
    return table.to_csv(index=False, lineterminator="\n")


def _varying(spec: Spec) -> list[str]:
    """Table columns that vary between cells and identify them (besides estimator and seed)."""
    return [axis for axis in TASK_AXES if len(getattr(spec, axis)) > 1]


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def summary_markdown(spec: Spec, table, *, n_cells: int, failed: list[str], provenance: dict[str, Any]) -> str:
    """The summary (module doc): what ran, then one table per quantity."""
    from sims.experiments._common import format_estimate, mean_interval

    varying = _varying(spec)
    header = (f"{n_cells} cells ({n_cells - len(failed)} finished, {len(failed)} failed); swept: "
              f"{', '.join(spec.swept) or 'nothing (one cell per seed)'}; seeds: {list(spec.seeds)}; backend "
              f"{provenance['backend']} with {provenance['workers']} workers; device {provenance['device']}; "
              f"pgverify {provenance['versions']['pgverify']}, commit {provenance['commit']}.")
    note = ("Entries are `value [low, high]`: exact numbers alone, Monte Carlo ones with their 95% interval "
            "(20 batch means). The full table is table.csv / table.parquet; the spec is in sweep.json.")
    lines = ["# pgverify sweep", "", header, "", note, ""]
    if failed:
        lines += [f"Failed cells (not in the tables; rerun to retry them): {', '.join(failed)}.", ""]
    for quantity in table["quantity"].unique():
        sub = table[table["quantity"] == quantity]
        lines += [f"## {quantity}", ""]
        header = ["estimator", *varying, "seed", quantity]
        rows = [[r.estimator, *(str(getattr(r, a)) for a in varying), str(r.seed),
                 format_estimate(r.value, r.low, r.high)] for r in sub.itertuples()]
        lines += [_md_table(header, rows), ""]
        if len(spec.seeds) > 1:
            groups = sub.groupby(["estimator", *varying], sort=False)["value"]
            rows = []
            for key, values in groups:
                key = key if isinstance(key, tuple) else (key,)
                finite = values[values.map(math.isfinite)]
                est = mean_interval(finite.to_numpy()) if len(finite) >= 2 else None
                rows.append([*(str(k) for k in key), str(len(values)),
                             "-" if est is None else format_estimate(est.value, est.low, est.high)])
            lines += [f"Mean over seeds, 95% t-interval over the {len(spec.seeds)} seeds:", "",
                      _md_table(["estimator", *varying, "seeds", f"mean {quantity}"], rows), ""]
    return "\n".join(lines).rstrip() + "\n"


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text.lower()).strip("_")


AXIS_LABELS = {"horizon": "sequence length T", "vocab": "vocabulary size V", "logit_scale": "logit scale",
               "divergence_value": "per-token divergence of π_θ from π_old", "group_size": "group size K",
               "replicas": "Monte Carlo replicas"}


def figures(spec: Spec, table) -> list[tuple[str, Any, str]]:
    """(file name, matplotlib figure, caption) per quantity: one panel per swept numeric task axis,
    each estimator a series (colour, line style and marker of its own); the line joins the means
    over the other axes and seeds at each value, the dots are the cells. Without a swept numeric
    axis, one panel with each cell's value and interval per estimator. At most ``N_SERIES``
    estimators per figure: more are split over several figures."""
    import numpy as np

    from sims.experiments._plotting import (
        N_SERIES,
        PALETTE,
        legend_outside,
        line_kw,
        new_figure,
        style,
    )

    axes_swept = [a for a in NUMERIC_AXES if len(getattr(spec, a)) > 1]
    estimators = list(dict.fromkeys(table["estimator"]))
    chunks = [estimators[i:i + N_SERIES] for i in range(0, len(estimators), N_SERIES)] or [[]]
    out = []
    for quantity in table["quantity"].unique():
        sub = table[table["quantity"] == quantity]
        for part, names in enumerate(chunks):
            stem = _slug(quantity) + (f"_{part + 1}" if len(chunks) > 1 else "")
            with style():
                n = max(1, len(axes_swept))
                fig, grid = new_figure(1, n, width=min(6.5, 2.2 + 2.6 * n), height=2.9)
                for j, axis in enumerate(axes_swept or [None]):
                    ax = grid[0][j]
                    for i, name in enumerate(names):
                        s = sub[sub["estimator"] == name]
                        if axis is None:
                            y = s["value"].to_numpy(float)
                            err = np.vstack([y - s["low"].to_numpy(float), s["high"].to_numpy(float) - y])
                            ax.errorbar(np.full(len(y), i) + np.linspace(-0.15, 0.15, len(y)) * (len(y) > 1), y,
                                        yerr=err, ls="none", **{k: v for k, v in line_kw(i).items() if k != "linestyle"},
                                        label=name)
                            continue
                        means = s.groupby(axis, sort=True)["value"].mean()
                        ax.plot(means.index.to_numpy(float), means.to_numpy(float), **line_kw(i), label=name)
                        ax.plot(s[axis].to_numpy(float), s["value"].to_numpy(float), ls="none", marker=".",
                                color=PALETTE[i], alpha=0.35, label="_cells")
                    if axis is None:
                        ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
                        ax.set_xlabel("estimator (its cells side by side)")
                    else:
                        ax.set_xlabel(AXIS_LABELS[axis])
                        values = np.array(getattr(spec, axis), dtype=float)
                        if values.min() > 0 and values.max() / values.min() >= 10:
                            ax.set_xscale("log")
                        elif axis in ("horizon", "vocab", "group_size", "replicas"):
                            ax.set_xticks(sorted(values))
                    y = sub["value"].to_numpy(float)
                    y = y[np.isfinite(y)]
                    if len(y) and y.min() > 0 and y.max() / y.min() >= 100:
                        ax.set_yscale("log")
                    ax.set_ylabel(quantity)
                if axes_swept:
                    legend_outside(fig, [grid[0][0]], ncol=min(3, max(1, len(names))))
                fig.suptitle(quantity)
            what = ("against " + ", ".join(AXIS_LABELS[a] for a in axes_swept)) if axes_swept else "per estimator"
            caption = (f"{quantity} {what}; lines join the means over the other axes and seeds, dots are single cells; "
                       "estimators with equal values (common random numbers make them exactly equal) overlap"
                       if axes_swept else f"{quantity} per estimator: each cell's value with its 95% interval "
                       "(exact numbers have none)")
            out.append((f"{stem}.png", fig, caption))
    return out


def spec_summary(spec: Spec) -> dict[str, Any]:
    """The spec as JSON-ready data (for sweep.json)."""
    return {"quantities": list(spec.quantities), **{axis: list(getattr(spec, axis)) for axis in AXES},
            "objectives": {n: {f: list(v) for f, v in fields.items()} for n, fields in spec.objectives},
            "advantages": {n: {f: list(v) for f, v in fields.items()} for n, fields in spec.advantages},
            "dynamics": None if spec.dynamics is None else json.loads(json.dumps(spec.dynamics.__dict__))}
