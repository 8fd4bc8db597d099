r"""Verifiable sequence tasks with prompts for the language-model policies (``policies.transformer``).

Each task holds ``P`` prompts as token strings ``prompt_tokens [P, Lp]`` (ids in the content
range), a response horizon ``T``, an exact reward ``reward(tokens, mask, prompts) -> [N]`` in
{0, 1} and its known answer set: ``n_correct(g)`` correct responses for prompt ``g`` (exact
counts), ``demonstration`` (a uniform draw from the answer set, for the supervised warm-up) and
``uniform_correct_entropy`` (the entropy per token of the policy that is uniform over a prompt's
correct answers, log N_g / E[|o|], averaged over prompts: what a non-collapsed solution reaches).

* ``ReverseTask`` — one correct answer per prompt: the prompt reversed, then EOS.
* ``SumModTask`` — many equally correct answers: any T tokens whose sum mod m is the prompt's
  target (V^T/m of them); no EOS.
* ``ContainsTask`` — reward correlated with length: 1 when the prompt's target token occurs in the
  valid response (before EOS); longer responses have more chances.

A response is the valid prefix up to and including the first EOS (``policies.table.eos_mask``);
tokens after it are padding and never change the reward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from policies.table import check_count

__all__ = ["ContainsTask", "ReverseTask", "SumModTask"]


def _distinct_strings(n: int, length: int, n_content: int, generator: torch.Generator) -> Tensor:
    """``[n, length]`` distinct strings over ``[0, n_content)``, drawn uniformly without repetition."""
    if n_content ** length < n:
        raise ValueError(f"only {n_content}^{length} distinct prompts exist; allowed: n_prompts <= that")
    seen, rows = set(), []
    while len(rows) < n:
        row = tuple(torch.randint(0, n_content, (length,), generator=generator).tolist())
        if row not in seen:
            seen.add(row)
            rows.append(row)
    return torch.tensor(rows, dtype=torch.int64)


def _check_prompts(prompts: Tensor, n: int, n_prompts: int) -> None:
    if not isinstance(prompts, Tensor) or prompts.shape != (n,) or prompts.is_floating_point():
        raise ValueError(f"prompts must be an int tensor of shape ({n},), got {getattr(prompts, 'shape', prompts)!r}")
    if n and not bool(((prompts >= 0) & (prompts < n_prompts)).all()):
        raise ValueError(f"prompts has ids outside [0, {n_prompts}); allowed: prompt ids in [0, P)")


@dataclass(frozen=True)
class ReverseTask:
    """Reverse the prompt: the single correct response is ``prompt[::-1] + [EOS]`` (T = Lp + 1).

    Attributes:
        vocab: V (EOS = V − 1; prompts use the content tokens 0..V−2); prompt_len: Lp;
        n_prompts: P distinct random prompts drawn with ``seed``.
    """

    vocab: int = 16
    prompt_len: int = 4
    n_prompts: int = 8
    seed: int = 0
    name: str = "reverse"
    prompt_tokens: Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for k in ("vocab", "prompt_len", "n_prompts"):
            check_count(k, getattr(self, k))
        if self.vocab < 3:
            raise ValueError(f"vocab={self.vocab} is invalid; allowed: V >= 3 (two content tokens and EOS)")
        g = torch.Generator().manual_seed(self.seed)
        object.__setattr__(self, "prompt_tokens", _distinct_strings(self.n_prompts, self.prompt_len, self.vocab - 1, g))

    @property
    def eos(self) -> int:
        return self.vocab - 1

    @property
    def horizon(self) -> int:
        return self.prompt_len + 1

    def answers(self) -> Tensor:
        """``[P, T]`` the correct response of every prompt."""
        eos = torch.full((self.n_prompts, 1), self.eos, dtype=torch.int64)
        return torch.cat([self.prompt_tokens.flip(-1), eos], -1)

    def reward(self, tokens: Tensor, mask: Tensor, prompts: Tensor) -> Tensor:
        """1 when ``tokens`` equals the reversed prompt followed by EOS (mask is implied)."""
        _check_prompts(prompts, tokens.shape[0], self.n_prompts)
        return (tokens == self.answers().to(tokens.device)[prompts]).all(-1).to(torch.float64)

    def n_correct(self, prompt: int) -> int:
        return 1

    def demonstration(self, prompt: int, generator: torch.Generator) -> Tensor:
        return self.answers()[prompt]

    def uniform_correct_entropy(self) -> float:
        """0: one correct answer per prompt."""
        return 0.0


@dataclass(frozen=True)
class SumModTask:
    """Any ``T`` tokens whose sum is ≡ the prompt's target (mod m) are correct; no EOS.

    Prompt g is ``[c_g, x_g]`` with target c_g = g mod m and a random context token x_g (so prompts
    with the same target differ). m must divide V, so each prompt has exactly V^T / m correct
    answers and a uniform one is T − 1 uniform tokens plus a uniform completing token.
    """

    vocab: int = 16
    modulus: int = 4
    horizon: int = 4
    n_prompts: int = 8
    seed: int = 0
    name: str = "sum mod m"
    prompt_tokens: Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for k in ("vocab", "modulus", "horizon", "n_prompts"):
            check_count(k, getattr(self, k))
        if self.modulus < 2 or self.vocab % self.modulus:
            raise ValueError(f"modulus={self.modulus} is invalid for vocab={self.vocab}; allowed: m >= 2 dividing V")
        g = torch.Generator().manual_seed(self.seed)
        targets = torch.arange(self.n_prompts) % self.modulus
        context = torch.randint(0, self.vocab, (self.n_prompts,), generator=g)
        object.__setattr__(self, "prompt_tokens", torch.stack([targets, context], -1))

    eos = None
    prompt_len = 2

    def reward(self, tokens: Tensor, mask: Tensor, prompts: Tensor) -> Tensor:
        _check_prompts(prompts, tokens.shape[0], self.n_prompts)
        target = self.prompt_tokens[:, 0].to(tokens.device)[prompts]
        return ((tokens.sum(-1) % self.modulus) == target).to(torch.float64)

    def n_correct(self, prompt: int) -> int:
        return self.vocab ** self.horizon // self.modulus

    def demonstration(self, prompt: int, generator: torch.Generator) -> Tensor:
        head = torch.randint(0, self.vocab, (self.horizon - 1,), generator=generator)
        need = (int(self.prompt_tokens[prompt, 0]) - int(head.sum())) % self.modulus
        last = need + self.modulus * int(torch.randint(0, self.vocab // self.modulus, (1,), generator=generator))
        return torch.cat([head, torch.tensor([last])])

    def uniform_correct_entropy(self) -> float:
        """log(V^T / m) / T nats per token."""
        return math.log(self.n_correct(0)) / self.horizon


@dataclass(frozen=True)
class ContainsTask:
    """1 when the prompt's target token occurs in the valid response (before EOS = V − 1).

    Prompt g is ``[c_g, x_g]``: a target content token and a random context token. A response of
    L content tokens followed by EOS (L ≤ T − 1), or T content tokens, is correct iff it contains
    c_g; with n = V − 1 content tokens, n^L − (n − 1)^L strings of length L do.
    """

    vocab: int = 16
    horizon: int = 4
    n_prompts: int = 8
    seed: int = 0
    name: str = "contains token"
    prompt_tokens: Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for k in ("vocab", "horizon", "n_prompts"):
            check_count(k, getattr(self, k))
        if self.vocab < 3:
            raise ValueError(f"vocab={self.vocab} is invalid; allowed: V >= 3")
        g = torch.Generator().manual_seed(self.seed)
        n = self.vocab - 1
        targets = torch.arange(self.n_prompts) % n
        context = torch.randint(0, n, (self.n_prompts,), generator=g)
        object.__setattr__(self, "prompt_tokens", torch.stack([targets, context], -1))

    prompt_len = 2

    @property
    def eos(self) -> int:
        return self.vocab - 1

    def reward(self, tokens: Tensor, mask: Tensor, prompts: Tensor) -> Tensor:
        _check_prompts(prompts, tokens.shape[0], self.n_prompts)
        target = self.prompt_tokens[:, 0].to(tokens.device)[prompts]
        return ((tokens == target[:, None]) & (mask > 0)).any(-1).to(torch.float64)

    def _answer_classes(self) -> list[tuple[int, int]]:
        """(content length L, number of correct responses with L content tokens): L ≤ T − 1 is
        followed by EOS (valid length L + 1), L = T has no EOS (valid length T)."""
        n = self.vocab - 1
        return [(length, n ** length - (n - 1) ** length) for length in range(1, self.horizon + 1)]

    def _valid_length(self, content: int) -> int:
        return content + 1 if content < self.horizon else content

    def n_correct(self, prompt: int) -> int:
        return sum(c for _, c in self._answer_classes())

    def demonstration(self, prompt: int, generator: torch.Generator) -> Tensor:
        """A uniform correct response: a content length with probability ∝ its count, then a uniform
        string of that length containing the target (by rejection), then EOS padding."""
        classes = self._answer_classes()
        weights = torch.tensor([float(c) for _, c in classes], dtype=torch.float64)
        content, _ = classes[int(torch.multinomial(weights, 1, generator=generator))]
        c = int(self.prompt_tokens[prompt, 0])
        while True:
            body = torch.randint(0, self.vocab - 1, (content,), generator=generator)
            if bool((body == c).any()):
                break
        return torch.cat([body, torch.full((self.horizon - content,), self.eos, dtype=torch.int64)])

    def uniform_correct_entropy(self) -> float:
        """log N / E[|o|] under the uniform distribution over the N correct responses."""
        classes = self._answer_classes()
        total = sum(c for _, c in classes)
        mean_len = sum(self._valid_length(length) * c for length, c in classes) / total
        return math.log(total) / mean_len
