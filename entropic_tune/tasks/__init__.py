"""Tasks: prompts, a fixed held-out set and verifiable rewards, chosen by name from ``TASKS``.

``arithmetic`` (the embedded default) generates column-addition problems with worked solutions;
``paths`` is the same problems with a warm-start that mostly answers at once (a short, unreliable
path) and sometimes works the columns (a long, reliable one), so exploration matters; ``jsonl`` reads
the project's JSONL file and rewards with a verifier (``exact``, ``numeric``, ``boxed``, ``gsm8k``,
``math`` or ``auto``); ``dataset`` reads GSM8K- or MATH-layout parquet/JSONL files through Hugging
Face ``datasets`` with the same verifiers; ``reasoning_gym`` generates and scores problems with the reasoning-gym
package (the ``tasks`` extra). Every task has a test and a validation split (``Task.held_out``). See ``docs/ARCHITECTURE.md``, "Task contract".
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING

from ..errors import unknown
from .arithmetic import ArithmeticTask
from .base import Problem, Task
from .dataset import DatasetTask
from .jsonl import SAMPLE_PATH, JsonlTask
from .paths import PathsTask
from .reasoning_gym import ReasoningGymTask
from .verifiers import VERIFIERS, verify

if TYPE_CHECKING:
    from ..config import TaskConfig

TASKS: MappingProxyType[str, type[Task]] = MappingProxyType(
    {
        ArithmeticTask.name: ArithmeticTask,
        DatasetTask.name: DatasetTask,
        JsonlTask.name: JsonlTask,
        PathsTask.name: PathsTask,
        ReasoningGymTask.name: ReasoningGymTask,
    }
)


def build_task(cfg: TaskConfig) -> Task:
    """Instantiate the task named ``cfg.name``; unknown names and bad data raise UserError."""
    if cfg.name not in TASKS:
        raise unknown("task", cfg.name, TASKS)
    return TASKS[cfg.name](cfg)


__all__ = [
    "SAMPLE_PATH",
    "TASKS",
    "VERIFIERS",
    "ArithmeticTask",
    "DatasetTask",
    "JsonlTask",
    "PathsTask",
    "Problem",
    "ReasoningGymTask",
    "Task",
    "build_task",
    "verify",
]
