"""What a sweep tells the user while it runs: Ray's progress table (with trial counts and an estimated
time to go) and the loggers (``--log tensorboard | mlflow``), as Ray Tune callbacks.

- Ray's CSV and JSON loggers always run: ``ExperimentAnalysis`` (and so ``summary.csv``) reads them.
- ``--log tensorboard``: Ray's ``TBXLoggerCallback`` (tensorboardX) writes event files into each trial
  folder under ``ray/``: ``tensorboard --logdir OUT/NAME/ray``.
- ``--log mlflow``: one MLflow run per trial in the experiment ``NAME``, on the local SQLite store
  ``OUT/NAME/mlflow.db`` (:mod:`entropic_tune.tracking`) or ``--mlflow-uri``. A run
  holds the trial's config as params (dotted keys, as in ``experiment.yaml``), the per-step metrics of
  METHOD.md section 5 at ``step`` (names as documented, ``@`` written ``_at_``: MLflow refuses ``@``),
  and its summary: the last step's ``summary/*`` and the large evaluations ``base/*``, ``final/*``.
  Tags ``method``, ``seed``, ``trial_id`` and, at the end, ``status``.
- ``--log wandb``: Ray's ``WandbLoggerCallback``: one W&B run per trial (its own logging actor) in
  the project and group ``NAME``, the trial's full config (as for MLflow) as the run's config, every
  numeric result at its training iteration; W&B's files under ``OUT/NAME/wandb/``
  (``WANDB_MODE=offline`` needs no account; :mod:`entropic_tune.tracking`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune import Callback, CLIReporter
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from .. import metrics as M
from ..tracking import ensure_experiment, log_params, mlflow_store, run_params, tracked_metrics
from .progress import count_trials, eta_seconds, progress_line, steps_done

PROGRESS_METRICS = (M.ENTROPY, M.ALPHA, M.REWARD_MEAN, M.EVAL_ACCURACY)


class ProgressTable(CLIReporter):
    """Ray's table with one more line under ``== Status ==``: trials done/running/left and the time to
    go (:mod:`entropic_tune.tune.progress`), over the ``planned`` trials of ``total_steps`` steps each."""

    def __init__(self, planned: int, total_steps: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._planned, self._total_steps = max(int(planned), 0), max(int(total_steps), 1)
        self._start: tuple[float, int] | None = None  # (time, steps done) at this driver's first table

    def report(self, trials: list[Any], done: bool, *sys_info: str) -> None:
        self._print(self._progress_str(trials, done, self.progress(trials, done), *sys_info))

    def progress(self, trials: list[Any], done: bool = False) -> str:
        statuses = [str(t.status) for t in trials]
        steps = [int((t.last_result or {}).get(M.STEP) or 0) for t in trials]
        seen = steps_done(statuses, steps, self._total_steps)
        now = _now()
        if self._start is None:
            self._start = (now, seen)
        counts = count_trials(statuses, max(self._planned, len(trials)))
        left = max(counts.total * self._total_steps - seen, 0)
        return progress_line(counts, eta_seconds(seen - self._start[1], now - self._start[0], left), done)


def _now() -> float:
    return time.time()


def progress_reporter(meta: dict[str, Any], planned: int, total_steps: int) -> ProgressTable:
    """Ray's progress table, limited to the metrics that matter and the trial's distinguishing keys."""
    params = {"compare": ["method"], "ablate": ["factor", "variant"]}.get(meta["kind"], list(meta.get("params", {})))
    return ProgressTable(planned, total_steps,
                         metric_columns={k: k.split("/")[-1] for k in (M.STEP, *PROGRESS_METRICS)},
                         parameter_columns={**{k: k.split(".")[-1] for k in params}, "train.seed": "seed"},
                         max_report_frequency=30)


def logger_callbacks(log: str, mlflow_uri: str | None, exp_dir: Path) -> list[Callback]:
    """Ray's CSV and JSON loggers (results read them) plus the one ``--log`` asks for."""
    callbacks: list[Callback] = [CSVLoggerCallback(), JsonLoggerCallback()]
    if log == "tensorboard":
        from ray.tune.logger import TBXLoggerCallback

        callbacks.append(TBXLoggerCallback())
    elif log == "mlflow":
        callbacks.append(MLflowTrials(mlflow_uri or mlflow_store(exp_dir), Path(exp_dir).name,
                                      None if mlflow_uri else Path(exp_dir)))
    elif log == "wandb":
        callbacks.append(wandb_trials(Path(exp_dir)))
    return callbacks


def wandb_trials(exp_dir: Path) -> Callback:
    """Ray's ``WandbLoggerCallback`` for the experiment ``exp_dir`` (imported only for ``--log wandb``),
    each trial's run configured with the trial's full flat config, not only the keys its space sets."""
    from ray.air.integrations.wandb import WandbLoggerCallback

    class WandbTrials(WandbLoggerCallback):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._init_kwargs = dict(self.kwargs)  # wandb.init keywords shared by every trial

        def log_trial_start(self, trial: Any) -> None:
            # Ray applies ``self.kwargs`` over its own init arguments, so the full config goes there
            config = {**run_params(trial.config or {}), "trial_id": trial.trial_id}
            self.kwargs = {**self._init_kwargs, "config": config}
            super().log_trial_start(trial)

    exp_dir.mkdir(parents=True, exist_ok=True)
    # The logging actors get their environment from the Ray node, not from this driver: pass the mode
    # on (WANDB_MODE=offline set for this command reaches them, also on a running cluster).
    mode = {"mode": os.environ["WANDB_MODE"]} if os.environ.get("WANDB_MODE") else {}
    return WandbTrials(project=exp_dir.name, group=exp_dir.name, dir=str(exp_dir.resolve()), **mode)


class MLflowTrials(MLflowLoggerCallback):
    """Ray's ``MLflowLoggerCallback`` (one run per trial, config as params), logging each step as one
    batch of :func:`tracked_metrics` at the trial's own ``step``, with method/seed/trial id/status tags."""

    def __init__(self, tracking_uri: str, experiment_name: str, exp_dir: Path | None) -> None:
        super().__init__(tracking_uri=tracking_uri, experiment_name=experiment_name)
        self._exp_dir = exp_dir  # None: a --mlflow-uri store, which places its own artifacts

    def setup(self, *args: Any, **kwargs: Any) -> None:
        from mlflow.tracking import MlflowClient

        self._client = MlflowClient(tracking_uri=self.tracking_uri)
        ensure_experiment(self._client, self.experiment_name, self._exp_dir)  # before Ray looks it up
        super().setup(*args, **kwargs)

    def log_trial_start(self, trial: Any) -> None:
        """A run named as the trial's folder, with every config value the trial runs with as a param
        (the full flat config: Ray's ``trial.config`` holds only the keys the space sets)."""
        if trial in self._trial_runs:  # a trial restarted in this driver (--max-failures): same run
            return
        config = trial.config or {}
        tags = {**(self.tags or {}), "trial_id": trial.trial_id, "method": str(config.get("method", "")),
                "seed": str(config.get("train.seed", ""))}
        name = Path(trial.path).name if getattr(trial, "path", None) else str(trial)
        run = self.mlflow_util.start_run(tags=tags, run_name=name)
        self._trial_runs[trial] = run.info.run_id
        log_params(self._client, run.info.run_id, run_params(config))

    def log_trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        step, stamp = int(result.get(M.STEP) or iteration), int(time.time() * 1000)
        metrics = [Metric(k, v, stamp, step) for k, v in tracked_metrics(result).items()]
        self._client.log_batch(self._trial_runs[trial], metrics=metrics)

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        self._client.set_tag(self._trial_runs[trial], "status", "ERROR" if failed else "TERMINATED")
        super().log_trial_end(trial, failed)
