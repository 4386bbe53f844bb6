"""Reading experiment folders (ARCHITECTURE.md, "Results contract") into tidy pandas frames.

Files only: ``summary.csv`` (one row per trial), ``history.csv`` (one row per trial and step),
``experiment.yaml`` (a sweep) or ``config.yaml`` (a single run), and for a search ``optuna.db``.
Several folders are concatenated with an ``experiment`` column holding each folder's name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ..errors import UserError
from ..results.check import check_experiment_folder
from .names import TERMINATED

# Only these spellings mean "missing": a variant literally named "None" stays a string.
_NA = ["", "nan", "NaN", "NA", "null", "NULL"]
_TEXT_COLUMNS = ("trial_id", "method", "status", "error", "factor", "variant", "experiment")


@dataclass
class Experiment:
    """One experiment folder (or several, concatenated) as tidy frames.

    ``summary`` and ``history`` both start with an ``experiment`` column (the folder name).
    ``meta`` is the first folder's ``experiment.yaml`` (``base`` flattened to dotted keys);
    ``metas`` maps each experiment name to its own.
    """

    summary: pd.DataFrame
    history: pd.DataFrame
    meta: dict[str, Any]
    paths: tuple[Path, ...]
    metas: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.paths[0]

    @property
    def name(self) -> str:
        return ", ".join(self.metas) if self.metas else self.path.name

    @property
    def kind(self) -> str:
        return str(self.meta.get("kind", "train"))

    @property
    def completed(self) -> pd.DataFrame:
        """Summary rows of trials with status TERMINATED: the only ones statistics use."""
        return completed(self.summary)

    @property
    def errored(self) -> pd.DataFrame:
        """Summary rows of every other trial (ERROR, or RUNNING when interrupted)."""
        return errored_trials(self.summary)

    @property
    def completed_history(self) -> pd.DataFrame:
        """History rows of TERMINATED trials only (once per trial, also for an ablation run that is
        listed under several factors)."""
        keys = self.completed[["experiment", "trial_id"]].drop_duplicates()
        return self.history.merge(keys, on=["experiment", "trial_id"], how="inner")


def completed(summary: pd.DataFrame) -> pd.DataFrame:
    """Rows whose ``status`` is TERMINATED (all rows when the frame has no ``status`` column)."""
    if "status" not in summary:
        return summary
    return summary[summary["status"] == TERMINATED]


def errored_trials(summary: pd.DataFrame) -> pd.DataFrame:
    """Trials that did not terminate normally, with the columns worth listing."""
    if "status" not in summary:
        return summary.iloc[0:0]
    rows = summary[summary["status"] != TERMINATED]
    keep = ["experiment", "trial_id", "method", "seed", "status", "steps", "error"]
    return rows[[c for c in keep if c in rows]]


def flatten_config(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts and ``a/b`` keys -> dotted keys (``{"optim": {"lr": 1}}`` -> ``optim.lr``)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{str(key).replace('/', '.')}"
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping at the top level")
    return data


def read_meta(folder: Path) -> dict[str, Any]:
    """``experiment.yaml`` with ``base`` flattened; for a single run, ``config.yaml`` as the base."""
    if (folder / "experiment.yaml").is_file():
        meta = _read_yaml(folder / "experiment.yaml")
        meta["base"] = flatten_config(meta.get("base") or {})
        return meta
    if (folder / "config.yaml").is_file():
        return {
            "kind": "train",
            "name": folder.name,
            "base": flatten_config(_read_yaml(folder / "config.yaml")),
        }
    return {"kind": "train", "name": folder.name, "base": {}}


def _read_csv(path: Path, required: Iterable[str]) -> pd.DataFrame:
    frame = pd.read_csv(
        path, keep_default_na=False, na_values=_NA, dtype={c: str for c in _TEXT_COLUMNS}
    )
    missing = [c for c in required if c not in frame]
    if missing:
        raise UserError(
            f"{path}: missing column(s) {', '.join(missing)} (see the results contract)"
        )
    return frame


def load_experiment(folder: str | Path, name: str | None = None) -> Experiment:
    """Load one experiment folder; raises ``UserError`` (a ``ValueError``) naming the folder when a
    file is missing or the run is unfinished, and naming the file when it is damaged or the run did
    not match its plan (``results.check``)."""
    folder = Path(folder)
    check_experiment_folder(folder)  # a damaged pair of files is refused before it is read into a frame
    meta = read_meta(folder)
    if meta.get("plan_check", "ok") != "ok":
        raise UserError(f"{folder / 'experiment.yaml'}: the trials that ran are not the planned ones "
                        f"({meta['plan_check']}); statistics over them would be wrong")
    name = name or folder.resolve().name
    summary = _read_csv(folder / "summary.csv", ("trial_id", "method"))
    history = _read_csv(folder / "history.csv", ("trial_id", "step"))
    if "status" not in summary:
        summary["status"] = TERMINATED
    summary["status"] = summary["status"].fillna("").str.strip().str.upper()
    if "error" in summary:
        summary["error"] = summary["error"].fillna("")
    if "method" not in history:
        history = history.merge(summary[["trial_id", "method"]], on="trial_id", how="left")
    summary.insert(0, "experiment", name)
    history.insert(0, "experiment", name)
    history = history.sort_values(["trial_id", "step"], kind="stable").reset_index(drop=True)
    return Experiment(summary, history, meta, (folder,), {name: meta})


def _unique_names(folders: list[Path]) -> list[str]:
    names = [f.resolve().name for f in folders]
    for i, name in enumerate(names):
        if names.count(name) > 1:
            names[i] = f"{folders[i].resolve().parent.name}/{name}"
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            names[i] = f"{name}#{seen[name]}"
    return names


def load_experiments(folders: str | Path | Iterable[str | Path]) -> Experiment:
    """Load one or several folders into one ``Experiment`` (rows tagged by the ``experiment`` column)."""
    if isinstance(folders, (str, Path)):
        folders = [folders]
    folders = [Path(f) for f in folders]
    if not folders:
        raise UserError("no experiment folder given")
    parts = [load_experiment(f, n) for f, n in zip(folders, _unique_names(folders), strict=True)]
    if len(parts) == 1:
        return parts[0]
    return Experiment(
        summary=pd.concat([p.summary for p in parts], ignore_index=True),
        history=pd.concat([p.history for p in parts], ignore_index=True),
        meta=parts[0].meta,
        paths=tuple(folders),
        metas={name: meta for p in parts for name, meta in p.metas.items()},
    )
