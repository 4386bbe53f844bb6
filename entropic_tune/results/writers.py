"""Writing the results contract (``history.csv``, ``summary.csv``) atomically, with the csv module.

Column layout is documented in ``docs/ARCHITECTURE.md`` ("Results contract") and the README. Every
write goes to a temporary file in the same folder and is renamed into place, so a crash never leaves
a half-written file and readers never see one.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .. import metrics as M
from .files import atomic_write_text

ID_COLUMNS = ("trial_id", "method", "seed")
SUMMARY_FIXED = ("trial_id", "method", "seed", "status", "error", "steps", "target_entropy", "temperature")


def _cell(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    return value


def write_csv(path: str | Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """Atomically write rows (missing cells empty, NaN written as empty) with the given column order."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k, "")) for k in columns})
    atomic_write_text(path, buffer.getvalue())


def history_columns() -> list[str]:
    return [*ID_COLUMNS, M.STEP, *[k for k in M.STEP_KEYS if k != M.STEP]]


def history_rows(trial_id: str, method: str, seed: int, history: Iterable[dict[str, float]]) -> list[dict]:
    """Long-format rows of one trial: id columns + the step dict."""
    return [{"trial_id": trial_id, "method": method, "seed": seed, **row} for row in history]


def summary_row(trial_id: str, flat_config: dict[str, Any], history: Sequence[dict[str, float]],
                status: str, error: str = "", evaluations: dict[str, float] | None = None) -> dict[str, Any]:
    """One summary.csv row: ids, status, last metrics, the ``summary/*`` statistics of a trial and its
    large evaluations (``base/*``, ``final/*``; see ``evaluation``)."""
    target = float(flat_config["controller.target_entropy"])
    row: dict[str, Any] = {
        "trial_id": trial_id,
        "method": flat_config["method"],
        "seed": flat_config["train.seed"],
        "status": status,
        "error": error,
        "steps": len(history),
        "target_entropy": target,
        "temperature": flat_config["rollout.temperature"],
    }
    if history:
        row.update({k: v for k, v in history[-1].items() if k != M.STEP})
        row.update(M.summarize(history, target, int(flat_config.get("rollout.eval_every") or 0)))
    row.update(evaluations or {})
    return row


def summary_columns(rows: Sequence[dict[str, Any]], varying: Sequence[str] = ()) -> list[str]:
    """Fixed columns, then ablation labels and ``config/<key>`` columns, metrics, summary stats."""
    extra = [c for c in ("factor", "variant") if any(c in r for r in rows)]
    config_cols = [f"config/{k}" for k in varying]
    metric_cols = [k for k in M.STEP_KEYS if k != M.STEP]
    return [*SUMMARY_FIXED, *extra, *config_cols, *metric_cols, *M.SUMMARY_KEYS, *evaluation_columns(rows)]


def evaluation_columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The ``base/*`` then ``final/*`` columns present in ``rows``: accuracy, then pass@k by k."""
    present = {k for r in rows for k in r if k.startswith((f"{M.BASE}/", f"{M.FINAL}/"))}

    def order(key: str) -> tuple[int, int, str]:
        prefix, _, name = key.partition("/")
        k = int(name.removeprefix("pass@")) if name.startswith("pass@") and name[5:].isdigit() else 0
        return (0 if prefix == M.BASE else 1, k, name)

    return sorted(present, key=order)


def varying_keys(flat_configs: Sequence[dict[str, Any]]) -> list[str]:
    """Dotted config keys whose value differs between trials (sorted)."""
    if not flat_configs:
        return []
    keys = sorted(set().union(*flat_configs))
    return [k for k in keys if len({json.dumps(c.get(k), default=str) for c in flat_configs}) > 1]
