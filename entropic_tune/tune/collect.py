"""Reading a sweep back from Ray's experiment state and writing the results contract (and keeping
the Optuna study free of stale RUNNING trials).

After (or instead of, for an interrupted driver) a Tuner run, the trials are read back from every
``experiment_state*.json`` of the experiment's Ray folder (``ray/``, :mod:`entropic_tune.tune.layout`) and written as ``summary.csv`` / ``history.csv``
(see ``docs/ARCHITECTURE.md``), with ``experiment.yaml`` updated. Every file is written atomically.
Ray is imported only inside :func:`load_trials`, so the metadata helpers (``read_meta``,
``check_new``) stay cheap for the CLI's checks before Ray starts.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .. import metrics as M
from ..errors import UserError
from ..results.writers import (
    atomic_write_text,
    history_columns,
    history_rows,
    summary_columns,
    summary_row,
    varying_keys,
    write_csv,
)
from .layout import delete_checkpoints as delete_trial_checkpoints
from .layout import ray_dir, saved_history
from .plan import STATE_GLOB, STATES_BEFORE, check_plan
from .spaces import SAME_AS, flat_trial_config, trial_config

META_FILE = "experiment.yaml"


@dataclass
class TrialRecord:
    """One trial as read back from Ray's experiment state."""

    trial_id: str
    status: str
    config: dict[str, Any]
    history: list[dict[str, float]]
    error: str = ""
    state: str = ""  # the first of Ray's state files that lists the trial (which run it belongs to)
    evaluations: dict[str, float] | None = None
    """``base/*`` and ``final/*`` values of the trial's last report (the large evaluations)."""
    folder: Path | None = None
    """The trial's folder under ``ray/`` (checkpoints, Ray's logs)."""


def load_trials(exp_dir: Path) -> list[TrialRecord]:
    """Every trial of the experiment folder, over all of Ray's state files (a continued search writes
    a new one; a restore updates the trials): the latest state of each trial wins. Trials are listed
    by run, then by trial id (the grid order for compare/ablate)."""
    from ray.tune import ExperimentAnalysis

    # A trial that never reported has no progress file: expected here, not worth a warning.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    records: dict[str, TrialRecord] = {}
    order: dict[str, tuple[int, str]] = {}
    first: dict[str, str] = {}
    for run, state in enumerate(sorted(ray_dir(exp_dir).glob(STATE_GLOB))):
        analysis = ExperimentAnalysis(str(state))
        frames = analysis.trial_dataframes
        for trial in analysis.trials:
            folder = _folder(trial, state)
            order.setdefault(trial.trial_id, (run, trial.trial_id))
            records[trial.trial_id] = TrialRecord(trial.trial_id, str(trial.status), dict(trial.config or {}),
                                                  _history(frames.get(trial.trial_id), saved_history(folder)),
                                                  _error(trial), first.setdefault(trial.trial_id, state.name),
                                                  _evaluations(trial.last_result), folder)
    return sorted(records.values(), key=lambda r: order[r.trial_id])


def _folder(trial: Any, state: Path) -> Path | None:
    """The trial's folder beside its state file (where Ray wrote it, even if the folder was moved)."""
    path = getattr(trial, "path", None) or getattr(trial, "local_path", None)
    return state.parent / Path(path).name if path else None


def _history(frame: Any, saved: list[dict[str, Any]] | None = None) -> list[dict[str, float]]:
    """Per-step rows: Ray's reports (``progress.csv``; after a restore a step can appear twice: the last
    report of a step wins), with the steps up to the trial's newest checkpoint taken from the rows it
    saved there (``saved``, :func:`~entropic_tune.tune.layout.saved_history`): the trial continued from
    that checkpoint, and Ray's copy of its reports can lag behind it after a killed driver."""
    rows: dict[int, dict[str, float]] = {}
    if frame is not None and not frame.empty and M.STEP in frame:
        frame = frame.dropna(subset=[M.STEP]).drop_duplicates(M.STEP, keep="last")
        keys = [k for k in M.STEP_KEYS if k in frame]
        for values in frame[keys].itertuples(index=False):
            row = {k: float(v) for k, v in zip(keys, values, strict=True)}
            rows[int(row[M.STEP])] = row
    for row in saved or ():
        if isinstance(row.get(M.STEP), (int, float)):
            rows[int(row[M.STEP])] = {k: float(row[k]) for k in M.STEP_KEYS if isinstance(row.get(k), (int, float))}
    return [{**rows[step], M.STEP: step} for step in sorted(rows)]


def _evaluations(last: dict[str, Any] | None) -> dict[str, float]:
    """The large evaluations in a trial's last result (only the last report of a trial has them)."""
    prefixes = (f"{M.BASE}/", f"{M.FINAL}/")
    return {k: float(v) for k, v in (last or {}).items()
            if isinstance(k, str) and k.startswith(prefixes) and isinstance(v, (int, float))}


def _error(trial: Any) -> str:
    from ray.tune import TuneError

    if trial.status != "ERROR":
        return ""
    exc = trial.get_pickled_error() or trial.get_error()
    cause = getattr(exc, "cause", None) or exc
    if cause is None:
        return "unknown error (see the trial's error.txt)"
    if isinstance(cause, TuneError) or type(cause).__name__ == "RayTaskError":
        lines = [line for line in str(cause).splitlines() if line.strip()]
        return lines[-1].strip() if lines else type(cause).__name__
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0] if text else ''}".strip()


def write_meta(exp_dir: Path, meta: dict[str, Any]) -> None:
    exp_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(exp_dir / META_FILE, yaml.safe_dump(meta, sort_keys=False))


def read_meta(exp_dir: Path) -> dict[str, Any]:
    """``experiment.yaml`` as a dict; a missing or unreadable file is a one-line user error."""
    path = exp_dir / META_FILE
    if not path.is_file():
        raise UserError(f"--resume: '{exp_dir}' holds no experiment (no {META_FILE}); check --out and --name")
    try:
        meta = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UserError(f"{path}: not a readable experiment file ({type(exc).__name__})") from None
    if not isinstance(meta, dict) or meta.get("kind") not in ("compare", "search", "ablate", "train"):
        raise UserError(f"{path}: not an entropic-tune experiment file (no valid 'kind')")
    return meta


def started(exp_dir: Path) -> bool:
    """True once Ray saved the experiment's state or results were written (something to keep)."""
    return any(ray_dir(exp_dir).glob(STATE_GLOB)) or (exp_dir / "summary.csv").exists()


def check_new(exp_dir: Path, kind: str) -> bool:
    """True when ``exp_dir`` holds a search to add trials to; an error for any other existing experiment.

    A folder whose driver died before Ray saved anything (only ``experiment.yaml``) cannot be resumed;
    it is started again instead of being refused.
    """
    if not (exp_dir / META_FILE).is_file():
        return False
    meta = read_meta(exp_dir)
    if kind == "search" and meta.get("kind") == "search":
        return True
    if not started(exp_dir) and meta.get("kind") == kind:
        return False
    raise UserError(f"--name: '{exp_dir}' already holds a {meta.get('kind')} experiment; continue it with "
                    f"'entropic-tune {meta.get('kind')} --resume' or choose another --name")


def existing_trials(study_name: str, storage_path: Path) -> int:
    """Trials already in the Optuna study; RUNNING ones left by an earlier driver are marked FAIL (no
    Ray trial of a finished or abandoned run will ever tell them, and they would bias the sampler)."""
    import optuna

    if not storage_path.is_file():
        return 0
    storage = optuna.storages.RDBStorage(f"sqlite:///{storage_path}")
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return 0
    fail_orphans(study)
    return len(study.trials)


def fail_orphans(study: Any, keep: frozenset[int] | set[int] = frozenset()) -> list[int]:
    """Tell FAIL every RUNNING trial of an Optuna study whose number is not in ``keep``; returns them."""
    from optuna.trial import TrialState

    stale = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
             if t.number not in keep]
    for number in stale:
        study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
    return stale


def collect_and_write(exp_dir: Path, meta: dict[str, Any], finished: bool = True,
                      delete_checkpoints: bool = False) -> list[dict[str, Any]]:
    """Write summary.csv and history.csv (the results contract) and experiment.yaml; return the rows.
    With ``delete_checkpoints``, then delete the checkpoints of the trials that finished (TERMINATED)."""
    records = load_trials(exp_dir)
    flats = {r.trial_id: _flat(r.config) for r in records}
    # method and seed have their own columns
    varying = [k for k in varying_keys(list(flats.values())) if k not in ("method", "train.seed")]
    summary, history = [], []
    for r in records:
        flat = flats[r.trial_id]
        # Ray puts the trials of an interrupted run back to PENDING; the contract calls them RUNNING.
        status = "RUNNING" if r.status not in ("TERMINATED", "ERROR") and r.history else r.status
        row = summary_row(r.trial_id, flat, r.history, status, r.error, r.evaluations)
        row.update({k: r.config[k] for k in ("factor", "variant") if k in r.config})
        row.update({f"config/{k}": flat.get(k) for k in varying})
        summary.append(row)
        # an ablation cell run once for several identical (factor, level) labels: a row under each
        for label in filter(None, str(r.config.get(SAME_AS) or "").split(";")):
            factor, variant = label.split("=", 1)
            summary.append({**row, "factor": factor, "variant": variant})
        history.extend(history_rows(r.trial_id, flat["method"], flat["train.seed"], r.history))
    if meta.get("factors"):  # ablation rows in the space's factor and level order
        order = {(f, str(v)): i for i, (f, v) in enumerate(
            (f, v) for f, levels in meta["factors"].items() for v in levels)}
        summary.sort(key=lambda row: order.get((row.get("factor"), str(row.get("variant"))), len(order)))
    write_csv(exp_dir / "summary.csv", summary, summary_columns(summary, varying))
    write_csv(exp_dir / "history.csv", history, history_columns())
    meta["finished"] = finished and all(r["status"] in ("TERMINATED", "ERROR") for r in summary)
    before = set(meta.get(STATES_BEFORE) or ())
    # This run's trials against its plan; "ok" or the first difference (then no success is reported).
    meta["plan_check"] = check_plan(meta, [r for r in records if r.state not in before], finished) or "ok"
    meta["updated"] = time.strftime("%Y-%m-%d %H:%M:%S")
    write_meta(exp_dir, meta)
    if delete_checkpoints:  # after the results are written: nothing is lost if this is interrupted
        delete_trial_checkpoints(r.folder for r in records if r.status == "TERMINATED" and r.folder)
    return summary


def _flat(config: dict[str, Any]) -> dict[str, Any]:
    try:
        return flat_trial_config(config)
    except ValueError:  # a config that no longer loads (the schema changed): keep what was asked
        return {"method": "", "train.seed": "", "controller.target_entropy": float("nan"),
                "rollout.temperature": float("nan"), **trial_config(config)}
