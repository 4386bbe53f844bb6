"""Real datasets from local files: GSM8K and MATH layouts in parquet or JSONL, read through Hugging
Face ``datasets`` (the ``data`` extra), offline.

Layouts (``task.layout``; ``auto`` picks one from the file's columns):

- ``gsm8k``: ``question``, and ``answer`` holding the worked solution that ends in ``#### <answer>``
  (GSM8K's own files): prompt = question, answer = the text after the last ``####``, worked solution
  = the whole ``answer`` text.
- ``math``: ``problem`` and ``solution`` with the final answer in its last ``\\boxed{...}`` (nested
  braces balanced), and an optional ``answer`` column that, when present, is the answer
  (MATH-500's layout): prompt = problem, worked solution = solution.
- ``prompt``: the project's JSONL keys ``prompt``, ``answer`` and optional ``solution``.

``task.prompt_column``, ``task.answer_column`` and ``task.solution_column`` rename a layout's columns
(``task.answer_column`` is the ``####`` column for gsm8k, the optional answer column for math).

A file is read with ``datasets.load_dataset("parquet" | "json", data_files=...)`` (the format from the
suffix: ``.parquet``, ``.jsonl``/``.json``, optionally ``.gz``) with ``HF_DATASETS_OFFLINE=1`` while
it loads, so nothing is downloaded at run time, into a temporary cache that is removed afterwards
(nothing is left in ``~/.cache/huggingface``). Every error is one line naming the file, and the
column or the 0-based row.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import UserError
from .base import Problem
from .verifiers import GSM8K, extract_boxed

LAYOUTS = ("auto", "gsm8k", "math", "prompt")
COLUMNS = {  # layout -> (prompt, answer, solution) columns; None: the layout has no such column
    "gsm8k": ("question", "answer", None),
    "math": ("problem", "answer", "solution"),
    "prompt": ("prompt", "answer", "solution"),
}
REQUIRED = {"gsm8k": ("prompt", "answer"), "math": ("prompt", "solution"), "prompt": ("prompt", "answer")}
FORMATS = {".parquet": "parquet", ".jsonl": "json", ".json": "json"}
MISSING = "reading parquet or JSONL datasets needs the 'datasets' package: pip install 'entropic-tune[data]'"


def file_format(path: Path, key: str) -> str:
    """``parquet`` or ``json`` from the file name (a ``.gz`` suffix is read through)."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    fmt = FORMATS.get(suffixes[-1] if suffixes else "")
    if fmt is None:
        raise UserError(f"{path}: {key} must end in .parquet, .jsonl or .json (optionally .gz)")
    return fmt


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    """HF_DATASETS_OFFLINE=1 (environment and ``datasets.config``) while a file loads."""
    import datasets

    old_env, old_flag = os.environ.get("HF_DATASETS_OFFLINE"), datasets.config.HF_DATASETS_OFFLINE
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    datasets.config.HF_DATASETS_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_DATASETS_OFFLINE = old_flag
        if old_env is None:
            os.environ.pop("HF_DATASETS_OFFLINE", None)
        else:
            os.environ["HF_DATASETS_OFFLINE"] = old_env


def read_rows(path: str | Path, key: str) -> tuple[list[str], list[dict[str, Any]]]:
    """The column names and rows of a parquet or JSONL file, through ``datasets``."""
    path = Path(path).expanduser()
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise UserError(f"{path}: {key} {what}; expected a parquet or JSONL file")
    fmt = file_format(path, key)
    if importlib.util.find_spec("datasets") is None:
        raise UserError(MISSING)
    import datasets

    datasets.disable_progress_bars()  # one bar per file is noise in a sweep's log
    with _offline(), tempfile.TemporaryDirectory(prefix="entropic-data-") as cache:
        try:
            table = datasets.load_dataset(fmt, data_files=str(path), split="train", cache_dir=cache)
        except Exception as exc:  # noqa: BLE001 - pyarrow/datasets raise many kinds; one line for all
            text = str(exc).strip() or type(exc).__name__
            cause = exc.__cause__ or exc.__context__
            if cause is not None and str(cause).strip():
                text = str(cause).strip()
            first = text.splitlines()[0][:200]
            raise UserError(f"{path}: {key} cannot be read as {fmt} ({first})") from None
        columns, rows = list(table.column_names), table.to_list()
    if not rows:
        raise UserError(f"{path}: {key} has no rows")
    return columns, rows


def detect_layout(columns: list[str], path: Path, key: str) -> str:
    """The layout whose required columns the file has: gsm8k, math or prompt."""
    have = set(columns)
    for layout in ("gsm8k", "math", "prompt"):
        names = COLUMNS[layout]
        if all(names[("prompt", "answer", "solution").index(r)] in have for r in REQUIRED[layout]):
            return layout
    raise UserError(
        f"{path}: {key} columns {', '.join(columns)} match no layout; expected question/answer "
        "(gsm8k), problem/solution (math) or prompt/answer; set task.layout and task.*_column"
    )


def _text(value: Any) -> str | None:
    """A cell as text: strings stripped, integers and integral floats without a decimal point."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return repr(value)
    return None


def load_layout(
    path: str | Path,
    key: str,
    layout: str = "auto",
    columns: tuple[str | None, str | None, str | None] = (None, None, None),
) -> list[Problem]:
    """Problems from a GSM8K-, MATH- or prompt-layout file; ``columns`` overrides the layout's
    (prompt, answer, solution) column names."""
    path = Path(path).expanduser()
    names, rows = read_rows(path, key)
    if layout == "auto":
        layout = detect_layout(names, path, key)
    wanted = tuple(o or d for o, d in zip(columns, COLUMNS[layout], strict=True))
    roles = ("prompt", "answer", "solution")
    for role in REQUIRED[layout]:
        column = wanted[roles.index(role)]
        if column not in names:
            raise UserError(
                f"{path}: {key} has no column '{column}' ({layout} layout's {role}; "
                f"task.{role}_column renames it); columns: {', '.join(names)}"
            )
    p_col, a_col, s_col = (c if c in names else None for c in wanted)
    problems = []
    for i, row in enumerate(rows):
        where = f"{path}: row {i}"
        prompt = _text(row[p_col])
        if not prompt:
            raise UserError(f"{where}: column '{p_col}' must be a non-empty string, got {row[p_col]!r}")
        answer = _text(row[a_col]) if a_col else None
        solution = _text(row[s_col]) if s_col else None
        if layout == "gsm8k":
            if not answer or GSM8K not in answer:
                raise UserError(f"{where}: column '{a_col}' has no '{GSM8K} <answer>' (gsm8k layout): "
                                f"{str(row[a_col])[:80]!r}")
            solution, answer = answer, answer.rpartition(GSM8K)[2].strip()
        elif layout == "math" and not answer:
            answer = extract_boxed(solution or "")
            answer = answer.strip() if answer is not None else None
            if not answer:
                raise UserError(f"{where}: column '{s_col}' has no \\boxed{{...}} answer and there is no "
                                f"answer column (math layout; task.answer_column names one)")
        if not answer:
            raise UserError(f"{where}: column '{a_col}' must be a non-empty string or a number, "
                            f"got {row.get(a_col)!r}")
        problems.append(Problem(prompt=prompt, answer=answer, solution=solution or None))
    return problems
