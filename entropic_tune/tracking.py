"""Experiment tracking (``--log tensorboard | mlflow | wandb``): the checks of the flags, before any
compute, and what a tracker gets from a step's report. No Ray, mlflow or wandb import at module level.

Weights & Biases (``--log wandb``, the optional ``wandb`` extra): a sweep logs through Ray Tune's
``WandbLoggerCallback`` (one W&B run per trial, project = the experiment's name, group = the same),
``train`` through the wandb client (:class:`TrainWandb`, project ``$WANDB_PROJECT`` or
``entropic-tune``, run = the run folder's name); both write W&B's local files under ``OUT/NAME/wandb/``.
Online logging needs an API key (``WANDB_API_KEY`` or ``wandb login``), checked before anything runs;
``WANDB_MODE=offline`` logs locally without one (``wandb sync OUT/NAME/wandb/offline-run-*`` uploads
later).

A sweep logs through Ray Tune's callbacks (:mod:`entropic_tune.tune.callbacks`); ``train`` (no Ray)
logs to MLflow with the same names through :class:`TrainRun`. MLflow's default store is local, in the
experiment folder: the runs in ``OUT/NAME/mlflow.db`` (SQLite), artifacts (none are logged) under
``OUT/NAME/mlruns/``; ``mlflow ui --backend-store-uri sqlite:///OUT/NAME/mlflow.db`` shows them. (MLflow
3.x refuses its plain file store ``mlruns/`` unless ``MLFLOW_ALLOW_FILE_STORE=true``: it is in
maintenance mode; ``--mlflow-uri file:/...`` with that variable set still uses one.) The first run on a
new database spends ~10 s creating its tables.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .errors import UserError

LOGGERS = ("none", "tensorboard", "mlflow", "wandb")
WANDB_MISSING = "--log wandb needs the 'wandb' package: pip install 'entropic-tune[wandb]'"
WANDB_PROJECT = "entropic-tune"
MLFLOW_DB, MLFLOW_ARTIFACTS = "mlflow.db", "mlruns"
URI_SCHEMES = ("file", "http", "https", "sqlite", "postgresql", "mysql", "mssql", "databricks")


def check_tracking(log: str, uri: str | None) -> str | None:
    """Refuse flags that cannot work (one line, before anything runs); returns the tracking URI to
    use (``None``: the default store in the experiment folder), a path made an absolute ``file:`` URI."""
    if log not in LOGGERS:
        raise UserError(f"--log: '{log}' is not one of {', '.join(LOGGERS)}")
    if uri is not None and log != "mlflow":
        raise UserError(f"--mlflow-uri {uri}: only with --log mlflow")
    if log == "tensorboard" and importlib.util.find_spec("tensorboardX") is None:
        raise UserError("--log tensorboard needs the 'tensorboardX' package (pip install tensorboardX)")
    if log == "wandb":
        check_wandb()
    if log != "mlflow":
        return None
    if importlib.util.find_spec("mlflow") is None:
        raise UserError("--log mlflow needs the 'mlflow' package (pip install mlflow-skinny)")
    return None if uri is None else _tracking_uri(uri)


def check_wandb() -> None:
    """Refuse ``--log wandb`` without the package, or online without credentials (wandb would stop
    and ask for a key at the first trial)."""
    import os

    if importlib.util.find_spec("wandb") is None:
        raise UserError(WANDB_MISSING)
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun"):
        return
    if not (os.environ.get("WANDB_API_KEY") or _wandb_logged_in()):
        raise UserError("--log wandb: no W&B API key; set WANDB_API_KEY, run 'wandb login', or log "
                        "locally with WANDB_MODE=offline")


def _wandb_logged_in() -> bool:
    """True when ``wandb login`` stored a key (``~/.netrc`` or wandb's settings)."""
    import wandb

    try:
        return bool(wandb.api.api_key)
    except Exception:  # noqa: BLE001 - any failure to read a key means: no key
        return False


def _tracking_uri(uri: str) -> str:
    parsed = urlparse(uri)
    if not uri.strip():
        raise UserError("--mlflow-uri: empty; give a tracking URI or a folder")
    if not parsed.scheme or len(parsed.scheme) == 1:  # a path (or a Windows drive letter)
        return Path(uri).expanduser().resolve().as_uri()
    if parsed.scheme not in URI_SCHEMES:
        raise UserError(f"--mlflow-uri {uri}: unknown scheme '{parsed.scheme}'; allowed: "
                        f"{', '.join(URI_SCHEMES)}, or a folder for a local file store")
    if parsed.scheme in ("http", "https"):
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            socket.create_connection((parsed.hostname or "localhost", port), timeout=3).close()
        except OSError as exc:
            raise UserError(f"--mlflow-uri {uri}: no MLflow server reachable ({exc.strerror or exc}); start "
                            "one with 'mlflow server' or omit --mlflow-uri for a local store") from None
    return uri


def mlflow_store(exp_dir: Path) -> str:
    """The default tracking URI: a local SQLite store inside the experiment folder."""
    return f"sqlite:///{Path(exp_dir).resolve() / MLFLOW_DB}"


def ensure_experiment(client: Any, name: str, exp_dir: Path | None) -> str:
    """The id of MLflow experiment ``name``, created if new (artifacts under ``exp_dir/mlruns`` for the
    default store; a server given by ``--mlflow-uri`` chooses its own artifact location)."""
    # MLflow's INFO lines ("Creating initial MLflow database tables...") are not the user's business.
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = (Path(exp_dir).resolve() / MLFLOW_ARTIFACTS).as_uri() if exp_dir is not None else None
    return client.create_experiment(name, artifact_location=location)


def mlflow_name(key: str) -> str:
    """A metric name MLflow accepts (letters, digits, ``_-./ :``): ``final/pass@4`` -> ``final/pass_at_4``."""
    return key.replace("@", "_at_")


def tracked_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The metrics of a report that a tracker gets: the documented per-step metrics, the running
    ``summary/*`` and the large evaluations, finite numbers only (not Ray's bookkeeping)."""
    from . import (
        metrics as M,  # imports torch: only where metrics are logged, not at the input checks
    )

    documented = set(M.STEP_KEYS) - {M.STEP}
    prefixes = ("summary/", f"{M.BASE}/", f"{M.FINAL}/")
    return {mlflow_name(k): float(v) for k, v in result.items()
            if isinstance(k, str) and (k in documented or k.startswith(prefixes))
            and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def run_params(config: dict[str, Any]) -> dict[str, Any]:
    """Every config value a trial runs with (dotted keys, defaults filled in), and its ablation labels."""
    from .tune.spaces import flat_trial_config

    flat = flat_trial_config(config)
    return {**flat, **{k: config[k] for k in ("factor", "variant") if k in config}}


def log_params(client: Any, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(k, str(v)) for k, v in params.items()]
    for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run_id, params=items[i:i + 100])


class TrainTensorBoard:
    """TensorBoard event files for ``entropic-tune train`` in ``RUN/tensorboard`` (tensorboardX), the
    same scalars as an MLflow run: ``tensorboard --logdir RUN/tensorboard``."""

    def __init__(self, run_dir: Path) -> None:
        from tensorboardX import SummaryWriter

        self._writer = SummaryWriter(logdir=str(Path(run_dir) / "tensorboard"))

    def log(self, metrics: dict[str, Any], step: int) -> None:
        for key, value in tracked_metrics(metrics).items():
            self._writer.add_scalar(key, value, step)

    def end(self, status: str) -> None:
        self._writer.add_text("status", status)
        self._writer.close()


class TrainWandb:
    """One W&B run for ``entropic-tune train`` (the wandb client): the flat config and tags as its
    config, each step's :func:`tracked_metrics` at its step, the summary at the end; files under
    ``RUN/wandb/``."""

    def __init__(self, run_dir: Path, params: dict[str, Any], tags: dict[str, str]) -> None:
        import os

        import wandb

        run_dir = Path(run_dir)
        self._run = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or WANDB_PROJECT, name=run_dir.name,
            dir=str(run_dir), config={**params, **tags}, tags=[f"method:{tags.get('method', '')}"],
            reinit="create_new", settings=wandb.Settings(console="off", silent=True),
        )

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self._run.log(tracked_metrics(metrics), step=step)

    def end(self, status: str) -> None:
        self._run.summary["status"] = status
        self._run.finish(exit_code=0 if status == "TERMINATED" else 1)


def train_tracker(log: str, uri: str | None, run_dir: Path, params: dict[str, Any],
                  tags: dict[str, str]) -> TrainRun | TrainTensorBoard | TrainWandb | None:
    """The tracker ``--log`` asks ``train`` for (flags checked by :func:`check_tracking`), or None."""
    if log == "mlflow":
        return TrainRun(uri, run_dir, params, tags)
    if log == "tensorboard":
        return TrainTensorBoard(run_dir)
    if log == "wandb":
        return TrainWandb(run_dir, params, tags)
    return None


class TrainRun:
    """One MLflow run for ``entropic-tune train``: the flat config as params, each step's metrics as
    one batch at its step, the summary and the large evaluations at the end (names as a sweep's)."""

    def __init__(self, uri: str | None, run_dir: Path, params: dict[str, Any], tags: dict[str, str]) -> None:
        from mlflow.tracking import MlflowClient

        self._client = MlflowClient(tracking_uri=uri or mlflow_store(run_dir))
        exp_id = ensure_experiment(self._client, Path(run_dir).name, None if uri else run_dir)
        run_name = Path(run_dir).name
        self._run = self._client.create_run(exp_id, run_name=run_name, tags=tags).info.run_id
        log_params(self._client, self._run, params)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        batch = [Metric(k, v, stamp, step) for k, v in tracked_metrics(metrics).items()]
        for i in range(0, len(batch), 1000):
            self._client.log_batch(self._run, metrics=batch[i:i + 1000])

    def end(self, status: str) -> None:
        self._client.set_tag(self._run, "status", status)
        self._client.set_terminated(self._run, "FINISHED" if status == "TERMINATED" else "FAILED")
