"""The README's "What the trainers actually implement" table is exactly what the generator
makes from the committed matrices (reports/conform/*.json): regenerated, never hand-edited."""

from __future__ import annotations

from sims.trainers import TRAINERS
from sims.trainers.readme import (
    COMMITTED,
    ROOT,
    load_committed,
    summary_rows,
    summary_table,
)


def test_every_trainer_has_a_committed_matrix():
    docs = load_committed()
    assert [d["trainer"] for d in docs] == list(TRAINERS)
    for d in docs:
        assert (COMMITTED / f"{d['trainer']}.md").is_file()
        assert sum(d["counts"].values()) == len(d["rows"])


def test_readme_table_equals_the_generated_one():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### What the trainers actually implement", 1)[1]
    table = section[section.index("| trainer |"):].split("\n\n", 1)[0] + "\n"
    assert table == summary_table(load_committed())


def test_summary_rows_count_every_row():
    docs = load_committed()
    assert sum(int(r[2]) for r in summary_rows(docs)) == sum(len(d["rows"]) for d in docs)
