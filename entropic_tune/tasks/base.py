"""The task contract: a source of prompts, a fixed held-out set and a verifiable reward.

GRPO needs nothing from a task beyond prompts and a scalar reward per response; the warm-start
additionally needs worked responses, some deliberately wrong, so that the policy starts RL at a base
accuracy strictly between 0 and 1 (otherwise every group has zero advantage). ``alphabet`` lets the
built-in character-level tokenizer be built from the task alone.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One prompt with its canonical answer and, when known, a correct worked response."""

    prompt: str
    """Text given to the model."""
    answer: str
    """Canonical answer the reward checks against."""
    solution: str | None = None
    """A correct worked response (no EOS) for the warm-start; None if unknown."""


class Task(ABC):
    """Base class of every task; subclasses are registered by name in ``tasks.TASKS``."""

    name: str = ""
    many_answers: bool = False
    """True when a problem has many correct responses (countdown): the large evaluation then also
    counts the distinct correct responses per problem (``<prefix>/distinct_correct``)."""

    @abstractmethod
    def sample_train(self, rng: random.Random, n: int) -> list[Problem]:
        """Draw ``n`` training problems; their order depends only on ``rng`` (no global state)."""

    @abstractmethod
    def held_out(self, split: str) -> list[Problem]:
        """The fixed held-out set of ``split`` ('test' or 'validation'; ``config.SPLITS``): same
        problems, same order, on every call and in every trial; the two splits share no prompt."""

    @abstractmethod
    def eval_problems(self) -> list[Problem]:
        """The held-out set of the configured split (``task.split``), see :meth:`held_out`."""

    @abstractmethod
    def reward(self, problem: Problem, response: str) -> float:
        """Verifiable reward of ``response`` (decoded, without EOS) in [0, 1]."""

    @abstractmethod
    def warmstart_example(self, rng: random.Random, corrupt: bool) -> tuple[str, str]:
        """A ``(prompt, response)`` pair; with ``corrupt`` the response is plausible but earns 0."""

    @abstractmethod
    def alphabet(self) -> str:
        """Every character that can appear in a prompt or response, sorted, without duplicates."""

    def longest_prompt(self) -> str:
        """The longest prompt the task can give (for the context-length check before a run);
        tasks whose training prompts are not all held-out prompts override this."""
        return max((p.prompt for p in self.eval_problems()), key=len, default="")


def sorted_chars(texts: Iterable[str]) -> str:
    """The sorted set of characters of ``texts`` as one string (an alphabet)."""
    chars: set[str] = set()
    for text in texts:
        chars.update(text)
    return "".join(sorted(chars))
