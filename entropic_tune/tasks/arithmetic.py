"""The embedded default task: column addition with a worked solution, rewarded on the answer only.

Prompt ``"47+85="``; response ``"7+5=12,4+8+1=13,>132"``. The response walks the columns from the
least significant digit. Every column step is fixed width: ``x+y=tt`` for the first column and
``x+y+c=tt`` after it, where ``c`` is the carry in (0 or 1, always written) and ``tt`` the column
total as two digits (its tens digit is the carry out). Steps are separated by ``,``; the final
answer follows the marker ``>`` with one digit per column plus the final carry (``3+4`` ends
``>07``). A response is therefore ``10 * n`` characters long for ``n`` columns (10, 20 or 30 by
default), and leading zeros after the marker are accepted.

As in RLVR only the answer after the last ``>`` is verified. The warm-start's corrupted solutions
make exactly one wrong column step (an off-by-one total or a dropped carry) and carry it on
consistently, so a correct and a wrong solution differ in a few characters: the model's choice at a
handful of tokens decides the reward, as in LLM reasoning.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import UserError
from .base import Problem, Task

if TYPE_CHECKING:
    from ..config import TaskConfig

MARKER = ">"
DIGITS = "0123456789"
ALPHABET = "".join(sorted(set(DIGITS + "+=," + MARKER)))


@dataclass(frozen=True)
class Column:
    """One column step: digits ``x`` and ``y``, carry in ``carry``, written total ``total``."""

    x: int
    y: int
    carry: int
    total: int


@dataclass(frozen=True)
class Fault:
    """One wrong step: ``"off"`` adds ``delta`` to a column total; ``"drop"`` zeroes its carry."""

    column: int
    kind: str
    delta: int = 0


def solve_columns(a: int, b: int, fault: Fault | None = None) -> list[Column]:
    """Column steps of ``a + b``, least significant first, with ``fault`` applied and propagated."""
    n = max(len(str(a)), len(str(b)))
    steps: list[Column] = []
    carry = 0
    for i in range(n):
        x, y = a // 10**i % 10, b // 10**i % 10
        here = fault if fault is not None and fault.column == i else None
        carry_in = 0 if here is not None and here.kind == "drop" else carry
        total = x + y + carry_in + (here.delta if here is not None and here.kind == "off" else 0)
        assert 0 <= total <= 19, "a fault must keep the column total within two digits"
        steps.append(Column(x, y, carry_in, total))
        carry = total // 10
    return steps


def render(steps: list[Column]) -> str:
    """Write column steps in the response format, answer included (see the module docstring)."""
    parts = [
        f"{s.x}+{s.y}={s.total:02d}" if i == 0 else f"{s.x}+{s.y}+{s.carry}={s.total:02d}"
        for i, s in enumerate(steps)
    ]
    answer = str(steps[-1].total // 10) + "".join(str(s.total % 10) for s in reversed(steps))
    return ",".join(parts) + "," + MARKER + answer


def worked_solution(a: int, b: int) -> str:
    """The correct worked response for ``a + b``."""
    return render(solve_columns(a, b))


def corrupted_solution(a: int, b: int, rng: random.Random) -> str:
    """A worked response for ``a + b`` with one wrong step whose error reaches the final answer."""
    steps = solve_columns(a, b)
    carried = [i for i, s in enumerate(steps) if s.carry == 1]
    if carried and rng.random() < 0.5:
        fault = Fault(rng.choice(carried), "drop")
    else:
        column = rng.randrange(len(steps))
        units = steps[column].total % 10
        # Keep the carry out unchanged so that the slip changes one digit of the answer only.
        delta = 1 if units == 0 else -1 if units == 9 else rng.choice((-1, 1))
        fault = Fault(column, "off", delta)
    return render(solve_columns(a, b, fault))


def final_answer(response: str) -> str | None:
    """The digits after the last marker without leading zeros, or None when absent or not digits."""
    if MARKER not in response:
        return None
    text = response.rpartition(MARKER)[2].strip()
    if not text or any(ch not in DIGITS for ch in text):
        return None
    return text.lstrip("0") or "0"


class ArithmeticTask(Task):
    """Column addition of two operands with ``min_digits..max_digits`` digits each."""

    name = "arithmetic"

    def __init__(self, cfg: TaskConfig) -> None:
        self.min_digits, self.max_digits = cfg.min_digits, cfg.max_digits
        low = 0 if self.min_digits == 1 else 10 ** (self.min_digits - 1)
        n_pairs = (10**self.max_digits - low) ** 2
        if cfg.eval_size > n_pairs // 2:  # test + validation <= every pair
            raise UserError(
                f"task.eval_size: {cfg.eval_size} test + {cfg.eval_size} validation problems need "
                f"more than the {n_pairs} problems with task.min_digits={self.min_digits}, "
                f"task.max_digits={self.max_digits}; "
                f"use task.eval_size <= {n_pairs // 2} or raise task.max_digits"
            )
        # The test split is the first eval_size distinct pairs of Random(eval_seed), as before splits
        # existed; the validation split the next eval_size distinct pairs of the same stream, so
        # the two never share a problem. Only test pairs are kept out of the training stream: the
        # stream (and with it the committed warm-starts and every default result) is unchanged,
        # and a validation problem is as likely to be trained on as any other problem.
        rng = random.Random(cfg.eval_seed)
        pairs: dict[tuple[int, int], None] = {}  # insertion-ordered set
        while len(pairs) < cfg.eval_size:
            pairs[self._pair(rng)] = None
        self._held_out = frozenset(pairs)
        validation: dict[tuple[int, int], None] = {}
        while len(validation) < cfg.eval_size:
            pair = self._pair(rng)
            if pair not in self._held_out:
                validation[pair] = None
        self._splits = {
            "test": [self._problem(a, b) for a, b in pairs],
            "validation": [self._problem(a, b) for a, b in validation],
        }
        self.split = cfg.split

    def _operand(self, rng: random.Random) -> int:
        digits = rng.randint(self.min_digits, self.max_digits)
        return rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10**digits - 1)

    def _pair(self, rng: random.Random) -> tuple[int, int]:
        return self._operand(rng), self._operand(rng)

    def _train_pair(self, rng: random.Random) -> tuple[int, int]:
        pair = self._pair(rng)
        while pair in self._held_out:  # resample: eval problems never enter the training stream
            pair = self._pair(rng)
        return pair

    @staticmethod
    def _problem(a: int, b: int) -> Problem:
        return Problem(prompt=f"{a}+{b}=", answer=str(a + b), solution=worked_solution(a, b))

    def sample_train(self, rng: random.Random, n: int) -> list[Problem]:
        return [self._problem(*self._train_pair(rng)) for _ in range(n)]

    def held_out(self, split: str) -> list[Problem]:
        return list(self._splits[split])

    def eval_problems(self) -> list[Problem]:
        return self.held_out(self.split)

    def reward(self, problem: Problem, response: str) -> float:
        return 1.0 if final_answer(response) == (problem.answer.lstrip("0") or "0") else 0.0

    def warmstart_example(self, rng: random.Random, corrupt: bool) -> tuple[str, str]:
        a, b = self._train_pair(rng)
        response = corrupted_solution(a, b, rng) if corrupt else worked_solution(a, b)
        return f"{a}+{b}=", response

    def alphabet(self) -> str:
        return ALPHABET

    def longest_prompt(self) -> str:
        widest = 10**self.max_digits - 1
        return self._problem(widest, widest).prompt
