"""The README's "What the trainers actually implement" table, generated from the committed
conformance matrices (``reports/conform/TRAINER.json``); ``tests/test_readme.py`` checks that the
README's table is exactly ``summary_table(load_committed())``.

Regenerate after ``pgverify conform TRAINER --out reports/conform`` with::

    python -m sims.trainers.readme          # prints the table to paste into README.md
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sims.trainers import TRAINERS

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "reports" / "conform"


def load_committed(folder: Path = COMMITTED) -> list[dict[str, Any]]:
    """The committed matrices, in ``TRAINERS`` order (those present)."""
    return [json.loads((folder / f"{t}.json").read_text()) for t in TRAINERS if (folder / f"{t}.json").is_file()]


def _tag(sentence: str) -> str:
    """A note's tag: the words before its first colon (``clamp``, ``aggregation`` ...);
    ``unexplained`` for a failure the adapter has no sentence for."""
    if "not explained by the adapter" in sentence:
        return "unexplained"
    head, sep, _ = sentence.partition(":")
    return head.strip() if sep and len(head) < 40 else "other"


def _differences(rows: Sequence[Mapping[str, Any]]) -> str:
    """What differs across the rows of one loss: each note tag with the number of options."""
    counts: dict[str, int] = {}
    for r in rows:
        if r["verdict"] != "differs":
            continue
        summary = r["summary"].split("): ", 1)[-1]
        tags = {_tag(s) for s in re.split(r"(?<=\.) (?=[a-z][a-zA-Z /.-]*:)", summary)}
        for tag in sorted(tags):
            counts[tag] = counts.get(tag, 0) + 1
    return "; ".join(f"{t} ({n})" for t, n in counts.items()) or "—"


def summary_rows(docs: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """One row per trainer × loss: options checked, conform / differ / not applicable, the specs
    it was checked against and what differs (note tags with the number of options)."""
    out = []
    for doc in docs:
        losses = list(dict.fromkeys(r["loss"] for r in doc["rows"]))
        for loss in losses:
            rows = [r for r in doc["rows"] if r["loss"] == loss]
            specs = ", ".join(dict.fromkeys(r["spec"] for r in rows if r["spec"])) or "—"
            n = {v: sum(r["verdict"] == v for r in rows) for v in ("conforms", "differs", "not applicable", "error")}
            out.append([f"{doc['trainer']} {doc['version']}", f"`{loss}`", str(len(rows)), str(n["conforms"]),
                        str(n["differs"]), str(n["not applicable"] + n["error"]), specs, _differences(rows)])
    return out


HEADER = ["trainer", "loss", "options", "conform", "differ", "n/a", "checked against", "what differs (options)"]


def summary_table(docs: Sequence[Mapping[str, Any]]) -> str:
    """The Markdown table of ``summary_rows``."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in summary_rows(docs)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(summary_table(load_committed()), end="")
