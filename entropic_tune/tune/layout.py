"""Where a sweep's files live in its experiment folder, what they weigh, and removing spent checkpoints.

The experiment folder ``OUT/NAME`` holds what a user reads at its top (``summary.csv``,
``history.csv``, ``report.md``/``report.html``, ``figures/``, ``experiment.yaml``, ``optuna.db``,
``driver.lock`` while a driver runs, ``mlruns/`` with ``--log mlflow``) and Ray Tune's own files one
level down, in ``ray/``: Ray's experiment ``ray`` under the storage path ``OUT/NAME`` (``RunConfig(
storage_path=OUT/NAME, name="ray")``), so ``tuner.pkl``, ``experiment_state-*.json``,
``basic-variant-state-*.json``, ``search_gen_state-*.json`` and the trial folders stay out of sight.
A sweep with ``--workers-per-trial`` also has, while it runs, Ray Train's run folders in ``workers/``
(transient: every trial attempt deletes its own, and the sweep the folder when the Tuner returns).

Folders written before this layout (Ray's files at the top) are refused by :func:`ray_dir` in one
line. No Ray here.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..engines.records import (
    HISTORY_FILE,  # in every checkpoint folder (and a trial's, once deleted)
)
from ..errors import UserError

RAY_DIR = "ray"
"""Ray Tune's experiment name inside the experiment folder (its storage path)."""
CHECKPOINT_GLOB = "checkpoint_*"
WORKERS_DIR = "workers"
"""Ray Train's run folders of a sweep with workers per trial, ``OUT/NAME/workers/<trial>-<id>/``."""


def ray_dir(exp_dir: Path) -> Path:
    """Ray Tune's experiment folder of ``exp_dir``: ``exp_dir/ray``.

    A folder of the layout before ``ray/`` (Ray's ``tuner.pkl`` or states at its top) is refused in
    one line rather than read: no committed folder has it, and resuming it as a new layout would run
    its trials again from the start."""
    exp_dir = Path(exp_dir)
    nested = exp_dir / RAY_DIR
    if not nested.is_dir() and ((exp_dir / "tuner.pkl").is_file() or any(exp_dir.glob("experiment_state*.json"))):
        raise UserError(f"{exp_dir}: Ray's files are at the top of the folder (the layout before {RAY_DIR}/, "
                        "2026-11); this version reads them only under OUT/NAME/ray/: use entropic-tune at "
                        "commit 7b94997 or earlier for this folder")
    return nested


def drop_worker_runs(exp_dir: Path) -> None:
    """Remove ``exp_dir/workers`` (Ray Train's run folders are never reused: each trial attempt starts
    a new one, and Tune holds the checkpoints)."""
    shutil.rmtree(Path(exp_dir) / WORKERS_DIR, ignore_errors=True)


def saved_history(trial_dir: Path | None) -> list[dict[str, Any]] | None:
    """The per-step rows the trial itself saved with its newest checkpoint (``history.json``), or None.

    Ray writes ``progress.csv`` on the driver and copies it to the experiment folder only when it saves
    its experiment state, while checkpoints go to the folder directly. A driver killed during such a
    copy can leave a ``progress.csv`` some steps older than the checkpoint Ray restores from, and those
    steps are never reported again; the checkpoint's own rows fill them in (:mod:`entropic_tune.tune.collect`).
    A trial folder whose checkpoints were deleted keeps the newest rows as ``trial_dir/history.json``."""
    if trial_dir is None:
        return None
    trial_dir = Path(trial_dir)
    candidates = [trial_dir / HISTORY_FILE] + [
        c / HISTORY_FILE for c in sorted(trial_dir.glob(CHECKPOINT_GLOB), reverse=True) if c.is_dir()]
    for path in candidates:
        try:
            rows = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            continue  # none there (an older checkpoint) or cut short: the next one, or Ray's rows alone
        if isinstance(rows, list) and all(isinstance(r, dict) for r in rows):
            return rows
    return None


def delete_checkpoints(trial_dirs: Iterable[Path]) -> int:
    """Remove the ``checkpoint_*`` folders of the given trial folders; returns the bytes freed.

    Only for trials that finished (TERMINATED): nothing resumes them, and their results are in Ray's
    ``progress.csv``/``result.json``, in ``summary.csv``/``history.csv`` and in the newest
    checkpoint's ``history.json``, kept in the trial folder. An errored or unfinished trial keeps its
    checkpoints (``--resume`` continues it from the last one)."""
    freed = 0
    for trial in trial_dirs:
        rows = saved_history(trial)
        if rows is not None and not (Path(trial) / HISTORY_FILE).is_file():
            (Path(trial) / HISTORY_FILE).write_text(json.dumps(rows))
        for checkpoint in Path(trial).glob(CHECKPOINT_GLOB):
            if checkpoint.is_dir():
                freed += folder_size(checkpoint)
                shutil.rmtree(checkpoint, ignore_errors=True)
    return freed


def folder_size(path: Path) -> int:
    """Bytes of the regular files under ``path`` (links not followed)."""
    total = 0
    for item in Path(path).rglob("*"):
        try:
            if item.is_file() and not item.is_symlink():
                total += item.stat().st_size
        except OSError:  # a file removed while we walk (a running driver's temporary file)
            continue
    return total


def format_size(size: float) -> str:
    """``12 B``, ``3.4 kB``, ``25 MB``, ``1.2 GB`` (powers of 1000, as ``du --si``)."""
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            break
        size /= 1000
    return f"{size:.0f} {unit}" if unit == "B" or size >= 100 else f"{size:.1f} {unit}"


def size_line(exp_dir: Path, deleted: bool = False) -> str:
    """One line for the end of a run: the folder's size, Ray's part of it, whether the checkpoints of
    finished trials were deleted."""
    exp_dir = Path(exp_dir)
    line = f"folder size: {format_size(folder_size(exp_dir))}"
    line += f" ({RAY_DIR}/: {format_size(folder_size(ray_dir(exp_dir)))})"
    if deleted:
        line += "; checkpoints of finished trials deleted (--keep-checkpoints keeps them)"
    return line
