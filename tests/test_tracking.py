"""Experiment tracking (``--log``): the flags' checks, what a tracker gets, and ``train`` logging to a
local MLflow store end to end (the sweeps' MLflow run is in test_sweep.py)."""

from __future__ import annotations

import csv
import math

import pytest

from entropic_tune import metrics as M
from entropic_tune.commands.main import main
from entropic_tune.errors import UserError
from entropic_tune.tracking import check_tracking, mlflow_name, mlflow_store, tracked_metrics


def test_a_folder_is_a_local_file_uri_and_a_server_uri_is_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert check_tracking("mlflow", "store") == (tmp_path / "store").as_uri()
    assert check_tracking("mlflow", "sqlite:////x/m.db") == "sqlite:////x/m.db"
    assert check_tracking("mlflow", None) is None  # the default store, in the experiment folder
    assert mlflow_store(tmp_path / "exp") == f"sqlite:///{tmp_path / 'exp' / 'mlflow.db'}"
    assert check_tracking("none", None) is None and check_tracking("tensorboard", None) is None


@pytest.mark.parametrize(("log", "uri", "fragment"), [
    ("none", "x", "--mlflow-uri x: only with --log mlflow"),
    ("mlflow", "gopher://h/x", "unknown scheme 'gopher'"),
    ("mlflow", " ", "--mlflow-uri: empty"),
    ("wandb", None, "--log: 'wandb' is not one of none, tensorboard, mlflow")])
def test_flags_that_cannot_work_are_one_line_errors(log, uri, fragment):
    with pytest.raises(UserError, match=None) as info:
        check_tracking(log, uri)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_a_missing_package_is_named_with_its_install_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("mlflow", "tensorboardX")
                        else real(name, *a))
    with pytest.raises(UserError, match="pip install mlflow-skinny"):
        check_tracking("mlflow", None)
    with pytest.raises(UserError, match="pip install tensorboardX"):
        check_tracking("tensorboard", None)


def test_trackers_get_the_documented_metrics_with_names_mlflow_accepts():
    result = {M.ENTROPY: 0.5, M.STEP: 3, "summary/entropy_drop": 0.1, "final/pass@4": 0.75, "base/accuracy": 0.5,
              M.ALPHA: math.nan, "time_this_iter_s": 1.2, "config/controller.kp": 2.0, "done": False,
              "trial_id": "abc", "hostname": "h"}
    assert tracked_metrics(result) == {M.ENTROPY: 0.5, "summary/entropy_drop": 0.1, "final/pass_at_4": 0.75,
                                       "base/accuracy": 0.5}
    assert mlflow_name("base/pass@16") == "base/pass_at_16"


@pytest.mark.slow
def test_the_tensorboard_logger_is_rays_tbx_callback(tmp_path):
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback

    from entropic_tune.tune.callbacks import MLflowTrials, logger_callbacks

    kinds = [type(c) for c in logger_callbacks("tensorboard", None, tmp_path)]
    assert kinds == [CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback]
    (mlflow,) = logger_callbacks("mlflow", None, tmp_path / "exp")[2:]
    assert isinstance(mlflow, MLflowTrials) and mlflow.experiment_name == "exp"
    assert mlflow.tracking_uri == f"sqlite:///{tmp_path / 'exp' / 'mlflow.db'}"
    assert [type(c) for c in logger_callbacks("none", None, tmp_path)] == [CSVLoggerCallback, JsonLoggerCallback]


@pytest.mark.slow
def test_train_logs_its_config_steps_and_summary_to_mlflow(tmp_path, fast_config, capsys):
    from mlflow.tracking import MlflowClient

    sets = [a for k, v in fast_config.items() for a in ("--set", f"{k}={v}")]
    code = main(["train", "--method", "entropic", "--quiet", "--out", str(tmp_path), "--name", "one",
                 "--log", "mlflow", *sets])
    assert code == 0, capsys.readouterr().err
    run_dir = tmp_path / "one"
    with open(run_dir / "history.csv", newline="") as handle:
        history = list(csv.DictReader(handle))
    with open(run_dir / "summary.csv", newline="") as handle:
        (summary,) = list(csv.DictReader(handle))
    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("one").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["status"] == "TERMINATED"
    assert run.data.params["method"] == "entropic" and run.data.params["model.hidden_size"] == "32"
    logged = client.get_metric_history(run.info.run_id, M.ENTROPY)
    assert [(m.step, m.value) for m in logged] == [(int(float(h["step"])), float(h[M.ENTROPY])) for h in history]
    for key in ("summary/entropy_tracking_rmse", "final/pass@1", "base/accuracy"):
        assert run.data.metrics[mlflow_name(key)] == pytest.approx(float(summary[key]))


def test_train_tensorboard_writes_an_event_file_with_the_tracked_scalars(tmp_path):
    from entropic_tune.tracking import train_tracker

    run = train_tracker("tensorboard", None, tmp_path, {}, {})
    run.log({M.ENTROPY: 0.5, "final/pass@1": 0.25, "time_this_iter_s": 1.0}, 1)
    run.end("TERMINATED")
    (events,) = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
    data = events.read_bytes()
    assert b"actor/entropy" in data and b"final/pass_at_1" in data and b"time_this_iter_s" not in data
    assert train_tracker("none", None, tmp_path, {}, {}) is None
