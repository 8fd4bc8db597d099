"""The README glossary names every config field and every diagnostics key, so the two cannot
drift apart; the README's quick start has exactly two commands."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import torch
from scipy import stats

from sims.advantages import StdConfig, ThresholdConfig
from sims.algorithms import ALGORITHMS, KLTerm, algorithm_loss
from sims.filters import DynamicSamplingConfig
from sims.kl import KLConfig
from sims.registry import OBJECTIVES
from tests.batches import make_batch

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
GLOSSARY = README[README.index("## Glossary"):]
CODE_NAMES = set(re.findall(r"`([^`]+)`", GLOSSARY))


def _covered(name: str) -> bool:
    return name in CODE_NAMES or any(name in re.split(r"[`,\s]+", c) for c in CODE_NAMES)


def test_glossary_has_every_config_field():
    classes = [s.config_cls for s in OBJECTIVES.values()] + [
        StdConfig, ThresholdConfig, DynamicSamplingConfig, KLConfig, KLTerm]
    missing = {f.name for c in classes for f in dataclasses.fields(c) if not _covered(f.name)}
    assert not missing, f"README glossary lacks config fields {sorted(missing)}"


def test_glossary_has_every_diagnostics_key():
    b = make_batch(0, 2, 2, 4, per_token_adv=False)
    keys = set()
    for spec in OBJECTIVES.values():
        extra = {k: b.old_logp for k in spec.inputs}  # rollout_logp: any valid log-probs will do
        keys |= set(spec.loss_fn(b.logp, b.old_logp, b.adv, b.mask, config=spec.config_cls(), **extra)[1])
    rewards = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    for algo in ALGORITHMS.values():
        keys |= set(algorithm_loss(algo, b.logp, b.old_logp, rewards, b.mask, ref_logp=b.logp, max_len=4)[1])
    missing = {k for k in keys if not _covered(k)}
    assert not missing, f"README glossary lacks diagnostics keys {sorted(missing)}"


def test_quick_start_has_two_commands():
    block = README.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line for line in block.strip().splitlines() if line.strip()]
    assert len(commands) == 2
    assert "pgverify report" in commands[0] and commands[1].split("#")[0].strip() == "python -m pytest -n auto"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "\npython -m pytest -n auto\n" in ci  # CI runs the README's test command


def test_readme_verdict_table_matches_the_committed_report():
    """The README quotes the committed report's verdicts; they must not drift apart."""
    import json

    ledger = json.loads((ROOT / "reports" / "claims.json").read_text())
    section = README.split("## The report and the claims ledger", 1)[1].split("\n## ", 1)[0]
    for claim in ledger:
        assert f"| {claim['id']} | {claim['verdict']} |" in section, claim["id"]


def test_engines_example_runs_and_its_mc_bias_matches_the_exact_bias():
    block = README.split("## Policies, tasks and engines")[1].split("```python")[1].split("```")[0]
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)  # noqa: S102 - the README's own example
    exact_bias = float((scope["exact"] - scope["truth"]).norm())
    # |estimate - exact| <= Z·SE with SE from the printed 95% interval (t with n_batches - 1 = 19
    # degrees of freedom) and Z = 4: false-failure rate P(|t_19| > 4) = 7.6e-4. Power: the
    # estimate must also reject a zero bias (CISPO's clip and GRPO's std make it biased).
    bias = scope["res"].bias_norm
    se = (bias.high - bias.low) / 2 / stats.t.ppf(0.975, 19)
    assert abs(bias.estimate - exact_bias) <= 4 * se
    assert abs(bias.estimate - 0.0) > 4 * se


def test_readme_detection_table_matches_the_planted_zoo():
    """The README's detection table lists every planted bug with the check that flags it
    (``tests/sims/check/test_zoo.py`` runs them)."""
    from tests.sims.check.planted import PLANTED

    section = README.split("## Checking your own loss", 1)[1].split("\n## ", 1)[0]
    table = section.split("| planted bug |", 1)[1].split("\n\n", 1)[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.strip().splitlines()[2:]]
    expected = []
    for v in PLANTED:
        params = ", ".join(f"{k}={x}" for k, x in v.spec_params.items())
        spec = "—" if v.spec is None else (f"{v.spec}({params})" if params else v.spec)
        expected.append([f"`{v.name}`", v.source, spec, v.flagged_by.format(v.spec)])
    assert rows == expected


def test_readme_check_section_names_every_property_and_profile_entry():
    from sims.check import run_checks
    from tests.sims.check.correct import cispo

    section = README.split("## Checking your own loss", 1)[1].split("\n## ", 1)[0]
    report = run_checks(cispo, examples=3)
    for r in report.results:
        if r.kind in ("property", "profile"):
            label = {"on-policy sign symmetry": "on-policy scale and aggregation",
                     "bias and variance profile": "bias and variance"}.get(r.name, r.name)
            assert f"| {label} |" in section, r.name


def _variant_section() -> str:
    return README.split("## Your own variant:", 1)[1].split("\n## ", 1)[0]


def _variant_commands() -> list[list[str]]:
    import shlex

    block = _variant_section().split("```bash", 1)[1].split("```", 1)[0]
    lines = " ".join(line.split("#")[0].rstrip().removesuffix("\\") for line in block.splitlines())
    return [shlex.split(c) for c in lines.split("pgverify ") if c.strip()]


def test_variant_section_commands_work_and_its_quoted_output_is_current(capsys):
    """The README's derive output is what derive prints; its check passes (fewer examples); its
    compare command is valid (parsed and resolved: the run itself is tests/sims/test_comparison.py)."""
    from sims.cli import build_parser, main
    from sims.comparison import resolve

    derive, check, compare = _variant_commands()
    assert derive[0] == "derive" and check[0] == "check" and compare[0] == "compare"
    assert main(derive) == 0
    printed = capsys.readouterr().out
    quoted = _variant_section().split("For TOPR:\n\n```\n", 1)[1].split("```", 1)[0]
    for line in quoted.splitlines():
        assert line.split("   (and")[0].split("          (and")[0].strip().removesuffix("...)") in printed, line
    assert main([*check, "--examples", "5"]) == 0
    capsys.readouterr()
    args = build_parser().parse_args(compare)
    plan = resolve(args.objectives, theory=args.theory, advantage=args.advantage, agg=args.agg, params=args.param,
                   theory_params=args.theory_param)
    assert [c.name for c in plan.objectives] == ["examples/topr.py:topr_loss", "cispo", "ppo_clip"]
