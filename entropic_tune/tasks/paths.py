"""Column addition with two solution paths: answer at once, or work the columns (``paths``).

The prompt is the ``arithmetic`` task's (``"47+85="``) and so is the reward: only the answer after
the last ``>`` is verified. A response may take either of two valid paths:

- **direct**: the answer at once, ``">132"`` (4 characters);
- **worked**: the column steps of ``arithmetic``, ``"7+5=12,4+8+1=13,>132"`` (10 per column).

The warm-start shows the direct path in a share ``task.direct_share`` of its examples (default 0.8)
and the worked path in the others, with the same share ``model.warmstart_corrupt_prob`` of one
wrong step in either (a corrupted direct answer is the answer of a corrupted worked solution: one
digit off, or a dropped carry). A tiny model cannot add multi-digit numbers in one go, so the direct
path it prefers is right mostly on small operands, while the worked path it rarely takes is right
far more often: the base model's greedy decoding follows the unreliable path, and what RL can gain
depends on sampling (exploring) the rare one. Operands have ``task.min_digits..task.max_digits``
digits each (drawn per operand, so a batch mixes easy and hard problems); 4-digit operands need
``rollout.max_new_tokens >= 41`` for the worked path.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from .arithmetic import MARKER, ArithmeticTask, corrupted_solution, worked_solution

if TYPE_CHECKING:
    from ..config import TaskConfig


def direct_answer(worked: str) -> str:
    """The direct-path response with the answer of a worked response: ``">132"``."""
    return MARKER + worked.rpartition(MARKER)[2]


class PathsTask(ArithmeticTask):
    """``arithmetic`` whose warm-start mixes a direct and a worked solution path."""

    name = "paths"

    def __init__(self, cfg: TaskConfig) -> None:
        super().__init__(cfg)
        self.direct_share = cfg.direct_share

    def warmstart_example(self, rng: random.Random, corrupt: bool) -> tuple[str, str]:
        a, b = self._train_pair(rng)
        worked = corrupted_solution(a, b, rng) if corrupt else worked_solution(a, b)
        response = direct_answer(worked) if rng.random() < self.direct_share else worked
        return f"{a}+{b}=", response
