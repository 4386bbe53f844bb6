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
    ("neptune", None, "--log: 'neptune' is not one of none, tensorboard, mlflow, wandb")])
def test_flags_that_cannot_work_are_one_line_errors(log, uri, fragment):
    with pytest.raises(UserError, match=None) as info:
        check_tracking(log, uri)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_a_missing_package_is_named_with_its_install_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None
                        if name in ("mlflow", "tensorboardX", "wandb") else real(name, *a))
    with pytest.raises(UserError, match="pip install mlflow-skinny"):
        check_tracking("mlflow", None)
    with pytest.raises(UserError, match="pip install tensorboardX"):
        check_tracking("tensorboard", None)
    with pytest.raises(UserError, match=r"needs the 'wandb' package: pip install 'entropic-tune\[wandb\]'"):
        check_tracking("wandb", None)


def test_wandb_online_without_a_key_is_refused_before_anything_runs(monkeypatch):
    import entropic_tune.tracking as tracking

    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setattr(tracking, "_wandb_logged_in", lambda: False)
    with pytest.raises(UserError, match="--log wandb: no W&B API key; set WANDB_API_KEY.*WANDB_MODE=offline"):
        check_tracking("wandb", None)
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert check_tracking("wandb", None) is None
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert check_tracking("wandb", None) is None


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


def logged_train_run(tmp_path, fast_config, capsys, name: str, log: str):
    """``entropic-tune train --log LOG`` of EntroPIC on the fast config; its folder, history rows and
    summary row."""
    sets = [a for k, v in fast_config.items() for a in ("--set", f"{k}={v}")]
    code = main(["train", "--method", "entropic", "--quiet", "--out", str(tmp_path), "--name", name,
                 "--log", log, *sets])
    assert code == 0, capsys.readouterr().err
    run_dir = tmp_path / name
    with open(run_dir / "history.csv", newline="") as handle:
        history = list(csv.DictReader(handle))
    with open(run_dir / "summary.csv", newline="") as handle:
        (summary,) = list(csv.DictReader(handle))
    return run_dir, history, summary


@pytest.mark.slow
def test_train_logs_its_config_steps_and_summary_to_mlflow(tmp_path, fast_config, capsys):
    from mlflow.tracking import MlflowClient

    run_dir, history, summary = logged_train_run(tmp_path, fast_config, capsys, "one", "mlflow")
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


def wandb_history(path):
    """``[(step, {metric: value})]`` of an offline W&B run, read from its ``.wandb`` file (``path``, or
    the one run under ``path/wandb/``): W&B 0.31 ships no Python reader for it, so the file's framing (LevelDB's log
    format after a 7-byte ``:W&B`` header: 32 KiB blocks of chunks with a 4-byte checksum, a 2-byte
    length and a 1-byte type, full=1, first=2, middle=3, last=4) is undone here and each record is
    decoded with W&B's own protobuf class."""
    import json

    from wandb.proto import wandb_internal_pb2 as pb

    if path.is_dir():
        (path,) = (path / "wandb").glob("offline-run-*/run-*.wandb")
    data, block, pos = path.read_bytes(), 32768, 7
    assert data[:4] == b":W&B"
    rows, pending = [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind not in (1, 4):
            continue
        record = pb.Record()
        record.ParseFromString(pending)
        if record.WhichOneof("record_type") == "history":
            items = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                     for item in record.history.item}
            rows.append((int(items.pop("_step")), {k: v for k, v in items.items() if not k.startswith("_")}))
    return rows


def test_train_logs_its_steps_and_summary_to_wandb_offline(tmp_path, fast_config, capsys, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    run_dir, history, summary = logged_train_run(tmp_path, fast_config, capsys, "wb", "wandb")
    rows = wandb_history(run_dir)
    steps = [(step, metrics[M.ENTROPY]) for step, metrics in rows if M.ENTROPY in metrics]
    assert steps == [(int(float(h["step"])), pytest.approx(float(h[M.ENTROPY]))) for h in history]
    last = rows[-1][1]  # the summary and the large evaluations, at the last step
    for key in ("summary/entropy_tracking_rmse", "final/pass@1", "base/accuracy"):
        assert last[mlflow_name(key)] == pytest.approx(float(summary[key]))
    log = next((run_dir / "wandb").glob("offline-run-*/run-*.wandb")).read_bytes()
    assert b"model.hidden_size" in log and b"entropic" in log
