"""The plan of an experiment's trials, kept in ``experiment.yaml``, and the checks that a run ran it.

``--resume`` never hands a folder to Ray's ``Tuner.restore`` (it unpickles ``ray/tuner.pkl`` and parts of
the state files: code from whoever wrote the folder). It rebuilds the run from the plan the sweep writes
itself, before Ray starts, under ``plan`` in ``experiment.yaml``:

- compare / ablate: ``{grid_key, cells: {label: trial keys}, seeds}``: every trial is a cell x seed
  (:func:`grid_configs` gives each planned trial's config);
- search: ``{base: trial keys}``: every trial is the base plus the searched ``params`` (bounds in
  ``experiment.yaml``), ``samples x repeat`` trials per run.

Ray's state files of *this* run (:func:`run_state`) say which trials ran and how far (read as plain
JSON, :func:`entropic_tune.tune.collect.read_state`); the end of every run checks that the trials Ray ran
are exactly the planned ones (:func:`check_plan`): each planned trial once, with its planned config and,
when it terminated, its planned steps. No Ray here: the checks work on plain records.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from ..errors import UserError
from .layout import ray_dir
from .spaces import TRIAL_INDEX, flat_trial_config

STATE_GLOB = "experiment_state*.json"
STATES_BEFORE = "ray_states_before"
"""experiment.yaml: Ray state files of earlier runs in the folder (a search adds runs); the others
belong to the run the file describes."""
SUPERSEDED = "superseded"
"""experiment.yaml: Ray trial ids of unfinished trials that a ``--resume`` replaced by a trial carrying
on from their newest intact checkpoint (the results list the replacement only)."""


class Record(Protocol):
    trial_id: str
    status: str
    config: dict[str, Any]
    history: list[dict[str, float]]


def grid_plan(
    grid_key: str, cells: dict[str, dict[str, Any]], seeds: Iterable[int]
) -> dict[str, Any]:
    return {
        "grid_key": grid_key,
        "cells": {label: dict(cell) for label, cell in cells.items()},
        "seeds": list(seeds),
    }


def search_plan(base: dict[str, Any]) -> dict[str, Any]:
    return {"base": dict(base)}


def planned_trials(meta: dict[str, Any]) -> int | None:
    """Trials the run described by ``meta`` plans (None when the file holds no plan)."""
    plan = meta.get("plan")
    if not isinstance(plan, dict):
        return None
    if "cells" in plan:
        return len(plan["cells"]) * len(plan["seeds"])
    return int(meta["samples"]) * int(meta.get("repeat", 1))


def grid_tables(plan: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The keys every cell shares (with their value) and, per cell label, the value of each other key."""
    cells, grid_key = plan["cells"], plan["grid_key"]
    keys = sorted({k for cell in cells.values() for k in cell} - {grid_key})
    first = next(iter(cells.values()))
    shared = {k: first[k] for k in keys if all(k in c and c[k] == first[k] for c in cells.values())}
    varying = [k for k in keys if k not in shared]
    return shared, {label: _explicit(cell, varying) for label, cell in cells.items()}


def _explicit(cell: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    """The cell's value of each key; keys the cell leaves alone get their value in the loaded config."""
    resolved = flat_trial_config(cell)
    return {k: cell[k] if k in cell else resolved[k] for k in keys}


def grid_configs(meta: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    """Every planned trial config of a grid ``meta``, by (cell label, seed), as Ray resolves them."""
    plan = meta["plan"]
    shared, table = grid_tables(plan)
    return {(label, int(seed)): {**shared, **table[label], plan["grid_key"]: label, "train.seed": seed}
            for label in plan["cells"] for seed in plan["seeds"]}


def planned_steps(meta: dict[str, Any]) -> int:
    plan = meta["plan"]
    trial = {**next(iter(plan["cells"].values())), "train.seed": plan["seeds"][0]} if "cells" in plan else plan["base"]
    return int(flat_trial_config(trial)["train.total_steps"])


def run_state(exp_dir: Path, meta: dict[str, Any]) -> tuple[str, Path | None]:
    """Ray's saved state of this run: ``("ok", newest)``, ``("missing", None)`` or
    ``("unreadable", file)`` (a state file that is not Ray's JSON)."""
    before = set(meta.get(STATES_BEFORE) or ())
    mine = sorted(p for p in ray_dir(exp_dir).glob(STATE_GLOB) if p.name not in before)
    if not mine:
        return "missing", None
    for path in mine:
        try:
            state = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            return "unreadable", path
        if not isinstance(state, dict) or not {"trial_data", "runner_data"} <= set(state):
            return "unreadable", path
    return "ok", mine[-1]


def states_now(exp_dir: Path) -> list[str]:
    return sorted(p.name for p in ray_dir(exp_dir).glob(STATE_GLOB))


def check_plan(meta: dict[str, Any], records: list[Record], finished: bool) -> str | None:
    """The first way in which this run's trials differ from the plan, or None when they match."""
    plan = meta.get("plan")
    if not isinstance(plan, dict):
        return None  # an experiment.yaml of an older version: nothing to check against
    partial_ok = (meta.get("options") or {}).get("scheduler") == "asha"  # ASHA stops trials early
    for r in records:
        problem = _steps(r, partial_ok)
        if problem:
            return problem
    if "cells" in plan:
        return _check_grid(plan, records, finished)
    return _check_search(meta, plan, records, finished)


def _steps(r: Record, partial_ok: bool) -> str | None:
    total = int(flat_trial_config(r.config)["train.total_steps"]) if _loads(r.config) else None
    if total is None:
        return f"trial {r.trial_id} has a config that does not load"
    done = len(r.history)
    if done > total or (r.status == "TERMINATED" and done < total and not partial_ok):
        return f"trial {r.trial_id} is {r.status} after {done} of its {total} planned steps"
    return None


def _loads(config: dict[str, Any]) -> bool:
    try:
        flat_trial_config(config)
    except UserError:
        return False
    return True


def _check_grid(plan: dict[str, Any], records: list[Record], finished: bool) -> str | None:
    key = plan["grid_key"]
    planned = {
        (label, int(seed)): {**cell, "train.seed": seed}
        for label, cell in plan["cells"].items()
        for seed in plan["seeds"]
    }
    seen: dict[tuple[str, int], str] = {}
    for r in records:
        cell = (str(r.config.get(key)), _int(r.config.get("train.seed")))
        name = f"{cell[0]} seed {cell[1]}"
        if cell not in planned:
            return f"trial {r.trial_id} ({name}) is not in the plan"
        if cell in seen:
            return f"trials {seen[cell]} and {r.trial_id} both ran {name} (planned once)"
        seen[cell] = r.trial_id
        diff = _difference(r.config, planned[cell])
        if diff:
            return f"trial {r.trial_id} ({name}) ran {diff}"
    missing = [f"{label} seed {seed}" for label, seed in planned if (label, seed) not in seen]
    if finished and missing:
        return f"planned trial(s) {', '.join(missing)} did not run"
    return None


def _check_search(
    meta: dict[str, Any], plan: dict[str, Any], records: list[Record], finished: bool
) -> str | None:
    params = meta.get("params") or {}
    expected = planned_trials(meta)
    if len(records) > expected or (finished and len(records) != expected):
        return f"{len(records)} trials ran; the plan has {expected} (samples x repeat)"
    # PBT perturbs values past the bounds
    pbt = (meta.get("options") or {}).get("scheduler") == "pbt"
    for r in records:
        if any(k not in r.config for k in params):
            return f"trial {r.trial_id} lacks a searched parameter ({', '.join(params)})"
        planned = {
            **plan["base"],
            **{k: r.config[k] for k in params},
            TRIAL_INDEX: r.config.get(TRIAL_INDEX),
        }
        diff = _difference(r.config, planned)
        if diff:
            return f"trial {r.trial_id} ran {diff}"
        for k, spec in params.items() if not pbt else ():
            if not _within(r.config[k], spec):
                return (
                    f"trial {r.trial_id} ran {k}={r.config[k]!r}, outside the searched range {spec}"
                )
    return None


def _difference(config: dict[str, Any], planned: dict[str, Any]) -> str | None:
    """``key=value instead of the planned value`` for the first key the two configs run differently."""
    ran, want = flat_trial_config(config), flat_trial_config(planned)
    for k in sorted(set(ran) | set(want)):
        if ran.get(k) != want.get(k):
            return f"{k}={ran.get(k)!r} instead of the planned {want.get(k)!r}"
    return None


def _within(value: Any, spec: dict[str, Any]) -> bool:
    if spec.get("type") == "categorical":
        return value in spec.get("choices", [])
    return spec["low"] <= value <= spec["high"]


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1
