"""Reading a sweep back from Ray's experiment state and writing the results contract (and keeping
the Optuna study free of stale RUNNING trials).

After (or instead of, for an interrupted driver) a Tuner run, the trials are read back from every
``experiment_state*.json`` of the experiment's Ray folder (``ray/``, :mod:`entropic_tune.tune.layout`)
and written as ``summary.csv`` / ``history.csv`` (see ``docs/ARCHITECTURE.md``), with
``experiment.yaml`` updated. Every file is written atomically. Nothing is unpickled and Ray is not
imported: Ray's state files are read as plain JSON (their pickled fields are skipped), so reading a
folder from someone else runs none of its code, and the CLI's checks before Ray starts stay cheap.
"""

from __future__ import annotations

import csv
import json
import math
import re
import time
from collections.abc import Iterable
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
from .plan import STATE_GLOB, STATES_BEFORE, SUPERSEDED, check_plan
from .spaces import RESUME_FROM, SAME_AS, flat_trial_config, trial_config

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
    last: dict[str, Any] | None = None
    """The trial's last reported result (the objective of a search: ``resume`` tells Optuna)."""


def load_trials(exp_dir: Path, skip: Iterable[str] = ()) -> list[TrialRecord]:
    """Every trial of the experiment folder, over all of Ray's state files (a continued search or a
    resumed run writes a new one): the latest state of each trial wins. Trials are listed by run, then
    by trial id (the grid order for compare/ablate). ``skip``: trial ids a ``--resume`` replaced
    (``experiment.yaml``'s ``superseded``); a replacement carries on from their checkpoint.

    Nothing here unpickles: the state files are read as plain JSON (:func:`read_state`), the per-step
    rows from the trial's ``progress.csv`` and the rows it saved with its checkpoints (``history.json``),
    the error from ``error.txt``. A results folder may come from anyone (issue 27)."""
    skip = set(skip)
    records: dict[str, TrialRecord] = {}
    order: dict[str, tuple[int, str]] = {}
    first: dict[str, str] = {}
    for run, state in enumerate(sorted(ray_dir(exp_dir).glob(STATE_GLOB))):
        for trial in read_state(state):
            tid = trial["trial_id"]
            if tid in skip:
                continue
            folder = state.parent / trial["folder"] if trial["folder"] else None
            saved = saved_history(folder) or []
            origin = trial["config"].get(RESUME_FROM)
            if isinstance(origin, str) and not saved:  # no checkpoint of its own yet: the one it resumed from
                saved = saved_history(Path(exp_dir) / origin) or []
            order.setdefault(tid, (run, tid))
            records[tid] = TrialRecord(tid, trial["status"], trial["config"],
                                       _history(_progress(folder), saved), _error(folder, trial),
                                       first.setdefault(tid, state.name), _evaluations(trial["last_result"]),
                                       folder, trial["last_result"])
    return sorted(records.values(), key=lambda r: order[r.trial_id])


def _plain(obj: dict[str, Any]) -> Any:
    """JSON object hook: Ray's embedded cloudpickle values are dropped, never loaded."""
    return None if obj.get("_type") == "CLOUDPICKLE_FALLBACK" else obj


def read_state(path: Path) -> list[dict[str, Any]]:
    """The trials of one of Ray's ``experiment_state*.json`` files, as plain JSON: id, status, config,
    folder name (relative to the file), last result and error file name. Ray's own reader
    (``Trial.from_json_state``, ``ExperimentAnalysis``) unpickles hex-encoded fields of every trial;
    here they are left as the strings they are."""
    state = json.loads(Path(path).read_text(), object_hook=_plain)
    trials = []
    for entry in state.get("trial_data") or ():
        trial_json, meta_json = (list(entry) + [None, None])[:2]
        trial = json.loads(trial_json, object_hook=_plain) if isinstance(trial_json, str) else {}
        meta = json.loads(meta_json, object_hook=_plain) if isinstance(meta_json, str) else {}
        if not isinstance(trial, dict) or not isinstance(trial.get("trial_id"), str):
            continue
        folder = trial.get("relative_logdir") or trial.get("custom_dirname")
        meta = meta if isinstance(meta, dict) else {}
        trials.append({"trial_id": trial["trial_id"], "status": str(trial.get("status") or "PENDING"),
                       "config": trial.get("config") if isinstance(trial.get("config"), dict) else {},
                       "folder": Path(folder).name if isinstance(folder, str) and folder else None,
                       "last_result": meta.get("last_result") if isinstance(meta.get("last_result"), dict) else {},
                       "error_file": meta.get("error_filename")})
    return trials


def _progress(folder: Path | None) -> list[dict[str, float]]:
    """Ray's per-report rows of a trial (``progress.csv``), numeric cells only."""
    if folder is None or not (folder / "progress.csv").is_file():
        return []
    rows = []
    with open(folder / "progress.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            numeric = {}
            for key, value in row.items():
                try:
                    numeric[key] = float(value)
                except (TypeError, ValueError):
                    continue
            rows.append(numeric)
    return rows


def _history(reported: list[dict[str, float]], saved: list[dict[str, Any]] | None = None) -> list[dict[str, float]]:
    """Per-step rows: Ray's reports (``progress.csv``; after a retry a step can appear twice: the last
    report of a step wins), with the steps up to the trial's newest checkpoint taken from the rows it
    saved there (``saved``, :func:`~entropic_tune.tune.layout.saved_history`): the trial continued from
    that checkpoint, and Ray's copy of its reports can lag behind it after a killed driver."""
    rows: dict[int, dict[str, float]] = {}
    for report in reported:
        if isinstance(report.get(M.STEP), float) and math.isfinite(report[M.STEP]):
            rows[int(report[M.STEP])] = {k: report[k] for k in M.STEP_KEYS if k in report}
    for row in saved or ():
        if isinstance(row.get(M.STEP), (int, float)):
            rows[int(row[M.STEP])] = {k: float(row[k]) for k in M.STEP_KEYS if isinstance(row.get(k), (int, float))}
    return [{**rows[step], M.STEP: step} for step in sorted(rows)]


def _evaluations(last: dict[str, Any] | None) -> dict[str, float]:
    """The large evaluations in a trial's last result (only the last report of a trial has them)."""
    prefixes = (f"{M.BASE}/", f"{M.FINAL}/")
    return {k: float(v) for k, v in (last or {}).items()
            if isinstance(k, str) and k.startswith(prefixes) and isinstance(v, (int, float))}


def _error(folder: Path | None, trial: dict[str, Any]) -> str:
    """The last line of the trial's ``error.txt`` that names the exception (Ray's text of it; its
    ``error.pkl`` is never read)."""
    if trial["status"] != "ERROR":
        return ""
    name = trial.get("error_file") if isinstance(trial.get("error_file"), str) else "error.txt"
    try:
        text = (folder / Path(name).name).read_text(errors="replace") if folder else ""
    except OSError:
        text = ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):  # the traceback's last "module.Name: message" line: the exception itself
        match = re.match(r"^([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*): (.+)$", line)
        if match and not line.startswith("File "):
            return f"{match.group(1).rsplit('.', 1)[-1]}: {match.group(2).strip()}"
    return lines[-1] if lines else "unknown error (see the trial's error.txt)"


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
    records = load_trials(exp_dir, skip=meta.get(SUPERSEDED) or ())
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
        if meta["finished"]:  # the trials a --resume replaced: their replacements hold the rows
            delete_trial_checkpoints(folder for tid in meta.get(SUPERSEDED) or ()
                                     for folder in ray_dir(exp_dir).glob(f"*-{tid}") if folder.is_dir())
    return summary


def _flat(config: dict[str, Any]) -> dict[str, Any]:
    try:
        return flat_trial_config(config)
    except ValueError:  # a config that no longer loads (the schema changed): keep what was asked
        return {"method": "", "train.seed": "", "controller.target_entropy": float("nan"),
                "rollout.temperature": float("nan"), **trial_config(config)}
