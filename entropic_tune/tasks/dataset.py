"""A real dataset from local files (``dataset``): GSM8K or MATH layout, parquet or JSONL.

The same task as ``jsonl`` (held-out split, warm-start examples, rewards by ``task.verifier``) with
the problems read by :func:`entropic_tune.tasks.layouts.load_layout` through Hugging Face
``datasets``. The reference answer comes from the solution itself (the text after ``####``, the last
``\\boxed{}``) unless the file has an answer column, so solutions are not re-verified at load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Problem
from .jsonl import JsonlTask
from .layouts import load_layout

if TYPE_CHECKING:
    from ..config import TaskConfig


class DatasetTask(JsonlTask):
    """Problems from a GSM8K-, MATH- or prompt-layout parquet/JSONL file."""

    name = "dataset"

    def load(self, cfg: TaskConfig, path: str, key: str) -> list[Problem]:
        columns = (cfg.prompt_column, cfg.answer_column, cfg.solution_column)
        return load_layout(path, key, cfg.layout, columns)
