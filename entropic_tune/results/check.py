"""Integrity of an experiment folder's results (``summary.csv`` against ``history.csv``).

The writers (:mod:`entropic_tune.results.writers`) replace each file atomically and end every row with a
newline, so a file that is cut mid-row, a header without the rows ``summary.csv`` promises, or a
trial listed twice can only come from a damaged file (a disk problem, a copy cut short, an edit) or
from two drivers writing one folder. Such a folder is refused in one line naming the file and what
is wrong; statistics over it would be silently wrong.

A damaged file is told apart from an unfinished run: an interrupted run has a consistent pair of
files whose unfinished trials have status ``RUNNING`` (fine: the report lists them as excluded), or
no ``summary.csv`` yet (a driver that is running or was killed: see :func:`describe_unfinished`).

Plain ``csv`` only (no pandas, torch or Ray): the report layer and the sweep CLI both use it.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

SUMMARY, HISTORY = "summary.csv", "history.csv"
_NUMERIC = {"steps", "step", "target_entropy", "temperature"}


class DamagedResults(UserError):
    """A results file that cannot be what the writers wrote; the message names the file."""


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[dict[str, str]]
    lines: list[int]  # the file line of each row (1 = header)


def read_table(path: Path, required: tuple[str, ...]) -> Table:
    """Rows of a results CSV; every row must have one cell per column and the file must end with a
    newline (the writers always end one), else :class:`DamagedResults`."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DamagedResults(f"{path}: damaged: not UTF-8 text") from None
    if not text:
        raise DamagedResults(f"{path}: damaged: the file is empty (not even a header)")
    if not text.endswith("\n"):
        raise DamagedResults(f"{path}: damaged: cut mid-row (the last line has no newline)")
    reader = csv.reader(text.splitlines(keepends=True))
    try:
        header = next(reader)
        cells = [(reader.line_num, row) for row in reader]
    except csv.Error as exc:
        raise DamagedResults(f"{path}: damaged: {exc}") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise DamagedResults(
            f"{path}: damaged: missing column(s) {', '.join(missing)} (see the results contract)"
        )
    rows, lines = [], []
    for line, row in cells:
        if len(row) != len(header):
            raise DamagedResults(
                f"{path}: damaged: line {line} has {len(row)} of {len(header)} cells (a partial row)"
            )
        rows.append(dict(zip(header, row, strict=True)))
        lines.append(line)
    return Table(header, rows, lines)


def _int(value: str, path: Path, line: int, column: str) -> int:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or not number.is_integer() or number < 0:
        raise DamagedResults(
            f"{path}: damaged: line {line}: {column} {value!r} is not a step count"
        )
    return int(number)


def _numbers(table: Table, path: Path) -> None:
    """Metric cells are numbers or empty (a non-finite value is written empty)."""
    for line, row in zip(table.lines, table.rows, strict=True):
        for column, value in row.items():
            numeric = column in _NUMERIC or ("/" in column and not column.startswith("config/"))
            if not numeric or value == "":
                continue
            try:
                float(value)
            except ValueError:
                raise DamagedResults(
                    f"{path}: damaged: line {line}: {column} {value!r} is not a number"
                ) from None


def check_results(folder: Path) -> None:
    """Refuse (:class:`DamagedResults`) a folder whose summary.csv and history.csv disagree: every
    trial of summary.csv once (an ablation run shared by factors once per label), with exactly
    ``steps`` history rows numbered 1..steps; no history row of a trial summary.csv lacks."""
    folder = Path(folder)
    spath, hpath = folder / SUMMARY, folder / HISTORY
    summary = read_table(spath, ("trial_id", "method", "status", "steps"))
    history = read_table(hpath, ("trial_id", "step"))
    _numbers(summary, spath)
    _numbers(history, hpath)
    steps: dict[str, int] = {}
    labels: set[tuple[str, str, str]] = set()
    for line, row in zip(summary.lines, summary.rows, strict=True):
        trial = row["trial_id"]
        if not trial:
            raise DamagedResults(f"{spath}: damaged: line {line} has no trial_id")
        label = (trial, row.get("factor", ""), row.get("variant", ""))
        if label in labels:
            raise DamagedResults(
                f"{spath}: trial {trial} is listed twice (two drivers on one folder, or an "
                "edited file); its statistics would count it twice"
            )
        labels.add(label)
        count = _int(row["steps"], spath, line, "steps")
        if steps.setdefault(trial, count) != count:
            raise DamagedResults(f"{spath}: damaged: trial {trial} has rows with different steps")
    seen: dict[str, list[int]] = {}
    for line, row in zip(history.lines, history.rows, strict=True):
        if row["trial_id"] not in steps:
            raise DamagedResults(
                f"{hpath}: damaged: line {line}: trial {row['trial_id']!r} is not in {SUMMARY}"
            )
        seen.setdefault(row["trial_id"], []).append(_int(row["step"], hpath, line, "step"))
    for trial, count in steps.items():
        got = seen.get(trial, [])
        if got != list(range(1, count + 1)):
            raise DamagedResults(
                f"{hpath}: damaged: trial {trial} has {_describe(got)} but {SUMMARY} says "
                f"{count} step(s)"
            )


def check_experiment_folder(folder: Path) -> None:
    """Refuse a folder ``report`` cannot read: no results yet (an unfinished run, or no experiment at
    all) or a damaged pair of files (:func:`check_results`); plain csv, so ``report`` answers before
    pandas is imported."""
    folder = Path(folder)
    missing = [name for name in (SUMMARY, HISTORY) if not (folder / name).is_file()]
    if missing:
        raise UserError(describe_unfinished(folder) or
                        f"{folder}: not an experiment folder (no {' or '.join(missing)})")
    check_results(folder)


def _describe(steps: list[int]) -> str:
    if not steps:
        return "no rows"
    if len(set(steps)) != len(steps):
        return f"{len(steps)} rows with repeated steps"
    return f"{len(steps)} row(s) (steps {steps[0]}..{steps[-1]})"


def describe_unfinished(folder: Path) -> str | None:
    """Why a folder has no results yet, when it is an experiment that has not written them (a
    driver running now, or one that was killed); None when it is no experiment at all."""
    from ..folder_lock import holder, is_locked

    folder = Path(folder)
    if not (folder / "experiment.yaml").is_file() or (folder / SUMMARY).is_file():
        return None
    if is_locked(folder):
        return f"{folder}: unfinished: a driver is running on it now ({holder(folder)}); wait for it to finish"
    kind = _kind(folder / "experiment.yaml")
    if kind == "train":  # a single run has no --resume: its history.csv is what it did
        return f"{folder}: unfinished: the run stopped before writing {SUMMARY}; run it again under another --name"
    return (
        f"{folder}: unfinished: the driver stopped before writing {SUMMARY}; continue it with "
        f"'entropic-tune {kind} --resume --name {folder.name} --out {folder.parent}'"
    )


def _kind(path: Path) -> str:
    import yaml

    try:
        meta = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        meta = None
    return str(meta.get("kind")) if isinstance(meta, dict) and meta.get("kind") else "compare"


def study_problem(path: Path) -> str | None:
    """Why ``path`` (a search's ``optuna.db``) cannot be used, in one line, or None when it can (or
    is absent). Opened read-only with sqlite3 (read-write only to roll back a killed driver's hot
    journal), so a damaged file is never written and no SQLAlchemy traceback reaches the user."""
    import sqlite3

    path = Path(path)
    if not path.is_file():
        return None
    advice = (
        "restore it from a backup, or move it away to start a new study under this --name "
        "('entropic-tune report' still works from summary.csv and history.csv)"
    )
    # A driver killed mid-transaction leaves a hot journal; SQLite rolls it back on the next open, which
    # a read-only connection cannot do ("attempt to write a readonly database"): let it recover.
    hot = any(path.with_name(path.name + suffix).is_file() for suffix in ("-journal", "-wal"))
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode={'rw' if hot else 'ro'}", uri=True)
        try:
            check = con.execute("PRAGMA quick_check").fetchone()[0]
            tables = {
                row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
        finally:
            con.close()
    except sqlite3.Error as exc:
        return f"{path}: not a readable Optuna storage ({exc}); {advice}"
    if check != "ok":
        return f"{path}: damaged SQLite database ({check}); {advice}"
    if "studies" not in tables:
        return f"{path}: not an Optuna storage (no 'studies' table); {advice}"
    return None
