"""The LM tasks' rewards and answer sets on literal examples, and their counts by enumeration."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from policies.lm_tasks import ContainsTask, ReverseTask, SumModTask
from policies.table import eos_mask


def _reward(task, rows, prompt):
    tokens = torch.tensor(rows)
    return task.reward(tokens, eos_mask(tokens, task.eos, torch.float64), torch.full((len(rows),), prompt)).tolist()


def test_reverse_has_one_answer_the_reversed_prompt_then_eos():
    task = ReverseTask(vocab=6, prompt_len=3, n_prompts=2, seed=0)
    p = task.prompt_tokens[0].tolist()
    right = p[::-1] + [5]
    assert _reward(task, [right, p + [5], right[:-1] + [0], [5] + right[1:]], 0) == [1.0, float(p[::-1] == p), 0.0, 0.0]
    assert task.horizon == 4 and task.n_correct(0) == 1 and task.uniform_correct_entropy() == 0
    assert task.demonstration(1, torch.Generator()).tolist() == task.prompt_tokens[1].flip(0).tolist() + [5]
    assert len({tuple(r) for r in task.prompt_tokens.tolist()}) == 2 and int(task.prompt_tokens.max()) < 5


def test_sum_mod_counts_and_rewards():
    task = SumModTask(vocab=4, modulus=2, horizon=3, n_prompts=2, seed=0)
    assert task.prompt_tokens[:, 0].tolist() == [0, 1]
    assert _reward(task, [[1, 1, 0], [1, 0, 0], [3, 3, 3]], 0) == [1.0, 0.0, 0.0]
    assert _reward(task, [[1, 0, 0], [3, 3, 3]], 1) == [1.0, 1.0]
    every = torch.tensor(list(itertools.product(range(4), repeat=3)))
    ok = task.reward(every, torch.ones(every.shape), torch.ones(len(every), dtype=torch.int64))
    assert int(ok.sum()) == task.n_correct(1) == 32
    assert task.uniform_correct_entropy() == pytest.approx(math.log(32) / 3)
    g = torch.Generator().manual_seed(0)
    demos = torch.stack([task.demonstration(1, g) for _ in range(50)])
    assert task.reward(demos, torch.ones(demos.shape), torch.ones(50, dtype=torch.int64)).min() == 1
    with pytest.raises(ValueError, match="modulus"):
        SumModTask(vocab=5, modulus=2)


def test_contains_counts_only_tokens_before_eos_and_matches_enumeration():
    task = ContainsTask(vocab=4, horizon=3, n_prompts=2, seed=0)  # EOS = 3, content 0..2
    c = int(task.prompt_tokens[0, 0])
    other = (c + 1) % 3
    assert _reward(task, [[c, 3, 3], [other, 3, c], [other, other, c], [3, c, c]], 0) == [1.0, 0.0, 1.0, 0.0]
    # enumerate the distinct valid responses (prefixes up to EOS) and count the correct ones
    every = torch.tensor(list(itertools.product(range(4), repeat=3)))
    mask = eos_mask(every, 3, torch.float64)
    ok = task.reward(every, mask, torch.zeros(len(every), dtype=torch.int64)) > 0
    responses = {tuple(t for t, m in zip(row, mrow) if m) for row, mrow, k in zip(every.tolist(), mask.tolist(), ok) if k}
    assert len(responses) == task.n_correct(0) == (3 - 2) + (9 - 4) + (27 - 8)
    mean_len = sum(len(r) for r in responses) / len(responses)
    assert task.uniform_correct_entropy() == pytest.approx(math.log(len(responses)) / mean_len)
    g = torch.Generator().manual_seed(1)
    demos = torch.stack([task.demonstration(0, g) for _ in range(40)])
    assert task.reward(demos, eos_mask(demos, 3, torch.float64), torch.zeros(40, dtype=torch.int64)).min() == 1
