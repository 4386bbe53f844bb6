"""End-to-end sweeps through real Ray Tune (one local Ray for the session, see conftest ``ray_local``).

Each test runs the CLI in-process on the smoke spaces (seconds per trial); the resume test kills a
sweep driver running in a subprocess attached to the same Ray, then resumes it here.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from entropic_tune import metrics as M
from entropic_tune.commands import main as cli
from entropic_tune.results.writers import history_columns
from entropic_tune.tune.layout import folder_size

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_local")]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main([*argv, "--quiet"])
    out, err = capsys.readouterr()
    return code, out, err


def test_smoke_compare_writes_the_results_contract(tmp_path, capsys):
    code, out, err = run_cli(capsys, "compare", "--space", "smoke", "--out", str(tmp_path), "--name", "smoke")
    assert code == 0, err
    exp = tmp_path / "smoke"
    summary = read_csv(exp / "summary.csv")
    assert sorted(r["method"] for r in summary) == ["entropic", "grpo"]
    assert all(r["status"] == "TERMINATED" and r["error"] == "" and r["steps"] == "3" for r in summary)
    fixed = ["trial_id", "method", "seed", "status", "error", "steps", "target_entropy", "temperature"]
    columns = list(summary[0])
    assert columns[:8] == fixed
    assert {"config/loss.name", "config/controller.name", *M.SUMMARY_KEYS, M.EVAL_ACCURACY} <= set(columns)
    evaluations = [*M.final_keys(4, M.BASE), *M.final_keys(4, M.FINAL)]
    assert columns[-len(evaluations):] == evaluations  # the large evaluations reach summary.csv
    assert all(r[k] != "" for r in summary for k in evaluations)
    # the base model and the base evaluation's random stream are shared by every trial
    assert len({tuple(r[k] for k in M.final_keys(4, M.BASE)) for r in summary}) == 1
    history = read_csv(exp / "history.csv")
    assert list(history[0]) == history_columns()
    pairs = [(r["trial_id"], r["step"]) for r in history]
    assert len(pairs) == len(set(pairs)) == 2 * 3
    assert {s for _, s in pairs} == {"1", "2", "3"}
    meta = yaml.safe_load((exp / "experiment.yaml").read_text())
    assert meta["kind"] == "compare" and meta["space"] == "smoke" and meta["methods"] == ["grpo", "entropic"]
    assert meta["seeds"] == [0] and meta["base"]["train.total_steps"] == 3
    assert "grpo" in out and str(exp / "summary.csv") in out
    # the user's files at the top, Ray's under ray/, no checkpoint of a finished trial left
    assert sorted(p.name for p in exp.iterdir()) == ["experiment.yaml", "figures", "history.csv", "ray",
                                                     "report.md", "summary.csv"]
    ray_files = {p.name for p in (exp / "ray").iterdir()}
    assert {"tuner.pkl"} <= ray_files and any(n.startswith("experiment_state") for n in ray_files)
    assert any(n.startswith("basic-variant-state") for n in ray_files)
    trials = [p for p in (exp / "ray").iterdir() if (p / "params.json").is_file()]
    assert len(trials) == 2 and not list((exp / "ray").glob("*/checkpoint_*"))
    (size,) = [line for line in out.splitlines() if line.startswith("folder size: ")]
    assert "(ray/: " in size and "checkpoints of finished trials deleted" in size
    assert folder_size(exp / "ray") < 1_000_000  # 2 trials x 3 steps, checkpoints every step but deleted


def test_search_study_reopens_and_a_second_run_adds_trials(tmp_path, capsys):
    args = ("search", "--space", "smoke_search", "--out", str(tmp_path), "--name", "study", "--seed", "3")
    code, out, err = run_cli(capsys, *args, "--samples", "3")
    assert code == 0, err
    exp = tmp_path / "study"
    meta = yaml.safe_load((exp / "experiment.yaml").read_text())
    assert meta["study_name"] == "study" and meta["storage"] == "optuna.db"
    assert meta["metrics"] == [M.TRACKING_RMSE] and meta["modes"] == ["min"]
    storage = optuna.storages.RDBStorage(f"sqlite:///{exp / 'optuna.db'}")
    study = optuna.load_study(study_name="study", storage=storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    ray_ids = {r["trial_id"] for r in read_csv(exp / "summary.csv")}
    assert {t.user_attrs["trial_id"] for t in study.trials} == ray_ids
    assert "best trial:" in out

    code, _, err = run_cli(capsys, *args, "--samples", "1")
    assert code == 0, err
    study = optuna.load_study(study_name="study", storage=storage)
    assert len(study.trials) == 4 and all(t.state.name == "COMPLETE" for t in study.trials)
    summary = read_csv(exp / "summary.csv")
    assert len(summary) == 4 and {r["trial_id"] for r in summary} > ray_ids
    params = [(t.params["controller.kp"], t.params["controller.ki"]) for t in study.trials]
    assert len(set(params)) == 4  # the continued run does not replay the first run's points


def test_wandb_offline_holds_each_trial_with_its_steps(tmp_path, capsys, monkeypatch):
    """--log wandb through Ray's WandbLoggerCallback, offline: one W&B run per trial (its id the trial
    id) under OUT/NAME/wandb, holding every step's metrics as in history.csv and the full config."""
    pytest.importorskip("wandb")
    from test_tracking import wandb_history  # tests/ is on sys.path (conftest.py)

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    code, out, err = run_cli(capsys, "compare", "--space", "smoke", "--steps", "2", "--out", str(tmp_path),
                             "--name", "wb", "--log", "wandb")
    assert code == 0, err
    exp = tmp_path / "wb"
    summary, history = read_csv(exp / "summary.csv"), read_csv(exp / "history.csv")
    assert len(summary) == 2
    for row in summary:
        (log,) = (exp / "wandb").glob(f"offline-run-*-{row['trial_id']}/run-{row['trial_id']}.wandb")
        logged = [(step, metrics[M.ENTROPY]) for step, metrics in wandb_history(log) if M.ENTROPY in metrics]
        steps = [h for h in history if h["trial_id"] == row["trial_id"]]
        assert logged == [(int(h["step"]), pytest.approx(float(h[M.ENTROPY]))) for h in steps]
        data = log.read_bytes()
        assert b"model.hidden_size" in data and b"optim.lr" in data  # the full config, defaults too


def test_mlflow_holds_each_trial_with_its_config_steps_and_summary_and_keep_checkpoints_keeps_them(
        tmp_path, capsys):
    """--log mlflow to the default local store: one run per trial, read back with the MLflow client,
    holding the trial's full config, every step's metrics (as in history.csv) and its summary (as in
    summary.csv); --keep-checkpoints keeps the last checkpoint of each finished trial."""
    from mlflow.tracking import MlflowClient

    from entropic_tune.tracking import mlflow_name

    code, out, err = run_cli(capsys, "compare", "--space", "smoke", "--steps", "2", "--out", str(tmp_path),
                             "--name", "tracked", "--log", "mlflow", "--keep-checkpoints")
    assert code == 0, err
    exp = tmp_path / "tracked"
    summary, history = read_csv(exp / "summary.csv"), read_csv(exp / "history.csv")
    client = MlflowClient(tracking_uri=f"sqlite:///{exp / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tracked")
    runs = {r.data.tags["trial_id"]: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {r["trial_id"] for r in summary}
    for row in summary:
        run = runs[row["trial_id"]]
        assert run.info.status == "FINISHED" and run.data.tags["status"] == "TERMINATED"
        assert run.data.tags["method"] == row["method"] and run.info.run_name.startswith(row["method"])
        params = run.data.params
        assert params["method"] == row["method"] and params["train.total_steps"] == "2"
        assert params["model.hidden_size"] == "32" and "optim.lr" in params  # defaults too: the full config
        steps = [h for h in history if h["trial_id"] == row["trial_id"]]
        for key in (M.ENTROPY, M.ALPHA, M.EVAL_ACCURACY):
            logged = client.get_metric_history(run.info.run_id, key)
            assert [(m.step, m.value) for m in logged] == [(int(h["step"]), float(h[key])) for h in steps]
        summary_keys = [k for k in row if k.startswith(("summary/", "base/", "final/")) and row[k] != ""]
        assert {"summary/entropy_tracking_rmse", "final/pass@1", "base/accuracy"} <= set(summary_keys)
        for key in summary_keys:
            assert run.data.metrics[mlflow_name(key)] == pytest.approx(float(row[key])), key
    kept = [p for p in (exp / "ray").iterdir() if (p / "params.json").is_file()]
    assert len(kept) == 2 and all(len(list(p.glob("checkpoint_*"))) == 1 for p in kept)
    (size,) = [line for line in out.splitlines() if line.startswith("folder size: ")]
    assert "deleted" not in size


def test_a_failing_trial_is_error_with_its_first_line(tmp_path, capsys):
    code, _, err = run_cli(capsys, "compare", "--space", "smoke", "--methods", "grpo", "--out", str(tmp_path),
                           "--name", "fail", "--set", "debug.fail_at_step=2")
    assert code == 1
    (row,) = read_csv(tmp_path / "fail" / "summary.csv")
    assert row["status"] == "ERROR" and row["steps"] == "1"
    assert row["error"] == "SimulatedFailure: debug.fail_at_step: simulated crash at step 2"
    assert "1 of 1 trial(s) failed" in err


@pytest.mark.parametrize(("argv", "message"), [
    (("--gpus-per-trial", "1"), "--gpus-per-trial 1.0: the Ray cluster has 0 GPU(s)"),
    (("--resume", "--name", "nothing"), "holds no experiment"),
])
def test_impossible_runs_fail_at_once_with_one_line(tmp_path, capsys, argv, message):
    code, _, err = run_cli(capsys, "compare", "--space", "smoke", "--out", str(tmp_path), *argv)
    assert code == 2
    assert err.startswith("entropic-tune: error: ") and err.count("\n") == 1 and message in err


def _first_report(exp: Path, proc: subprocess.Popen, timeout: float = 150) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
        progress = [p for p in exp.glob("ray/*/progress.csv") if len(p.read_text().splitlines()) >= 3]
        if progress and list(exp.glob("ray/experiment_state*.json")):
            return
        time.sleep(0.2)
    raise AssertionError("the sweep reported nothing in time")


def test_an_interrupted_sweep_resumes_with_every_trial_once(tmp_path, capsys, ray_local):
    steps = 25
    cmd = [sys.executable, "-m", "entropic_tune.commands.main", "compare", "--space", "smoke", "--steps", str(steps),
           "--checkpoint-every", "2", "--address", ray_local.get_runtime_context().gcs_address,
           "--out", str(tmp_path), "--name", "cut", "--quiet"]
    env = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _first_report(tmp_path / "cut", proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (tmp_path / "cut" / "summary.csv").exists()  # the driver died mid-sweep
    code, _, err = run_cli(capsys, "compare", "--resume", "--name", "cut", "--out", str(tmp_path))
    assert code == 0, err
    summary = read_csv(tmp_path / "cut" / "summary.csv")
    assert len(summary) == len({r["trial_id"] for r in summary}) == 2
    assert all(r["status"] == "TERMINATED" and r["steps"] == str(steps) for r in summary)
    history = read_csv(tmp_path / "cut" / "history.csv")
    for row in summary:
        assert [int(h["step"]) for h in history if h["trial_id"] == row["trial_id"]] == list(range(1, steps + 1))


def test_every_bundled_space_builds_a_plan(tmp_path):
    from entropic_tune.tune import spaces, sweep
    from entropic_tune.tune.spaces import SearchOptions

    for name in spaces.available():
        space = spaces.load_space(name)
        opts = sweep.SweepOptions(out=str(tmp_path), name=name)
        if space.kind == "search":
            sopts = SearchOptions(space.samples, space.sampler, space.objective, space.repeat)
            plan = sweep.plan_search(space, opts, sopts, tmp_path / name)
            assert plan.num_samples == space.samples * space.repeat and plan.search_alg is not None
        else:
            plan = sweep.plan_grid(space)
            assert set(plan.param_space) >= {"train.seed", "method" if space.kind == "compare" else "__cell__"}
        yaml.safe_load(yaml.safe_dump(plan.meta))  # experiment.yaml must be plain YAML


def test_every_search_objective_is_a_metric_a_trial_reports(tmp_path):
    from entropic_tune import metrics as M
    from entropic_tune.tune import spaces, sweep
    from entropic_tune.tune.spaces import SearchOptions

    assert set(sweep.OBJECTIVES) == set(spaces.OBJECTIVES)
    for metrics, modes in sweep.OBJECTIVES.values():
        assert set(metrics) <= set(M.STEP_KEYS) | set(M.SUMMARY_KEYS) and set(modes) <= {"min", "max"}
    space = spaces.load_space("tune_grpo")
    plan = sweep.plan_search(space, sweep.SweepOptions(out=str(tmp_path), name="late"),
                             SearchOptions(12, "tpe", "late_accuracy", 2), tmp_path / "late")
    assert (plan.metric, plan.mode) == (M.LATE_ACCURACY, "max") and plan.num_samples == 24


def test_trial_folders_name_the_seed_a_trial_runs_with():
    from types import SimpleNamespace

    from entropic_tune.tune import sweep

    name = lambda config: sweep.trial_dirname(SimpleNamespace(config=config, trial_id="abc_00001"))  # noqa: E731
    assert name({"method": "grpo", "train.seed": 3}) == "grpo-s3-abc_00001"
    assert name({"method": "grpo", "train.seed": 0, "__trial_index__": 1}) == "grpo-s1-abc_00001"  # --repeat 2
    assert name({"__cell__": "tau=0.5", "train.seed": 2}) == "tau-0.5-s2-abc_00001"


ABLATE_SMOKE = """kind: ablate
method: entropic
base: {model.hidden_size: 32, model.num_layers: 1, model.num_heads: 2, model.warmstart_steps: 30,
       rollout.prompts_per_step: 4, rollout.group_size: 4, rollout.max_new_tokens: 32,
       rollout.eval_samples: 1, rollout.eval_every: 0, rollout.final_samples: 4, task.eval_size: 8,
       train.total_steps: 2}
factors:
  tau: {"0.5": {loss.tau: 0.5}, "0.95": {loss.tau: 0.95}}
  anti_windup: {"on": {controller.anti_windup: true}, "off": {controller.anti_windup: false}}
"""


def test_ablation_runs_a_level_equal_to_the_base_once_and_reports_it_under_each_factor(tmp_path, capsys):
    space = tmp_path / "abl.yaml"
    space.write_text(ABLATE_SMOKE)
    code, out, _ = run_cli(capsys, "ablate", "--space", str(space), "--dry-run")
    assert code == 0 and "3 trials" in out and "tau=0.95 (= anti_windup=on)" in out
    code, _, err = run_cli(capsys, "ablate", "--space", str(space), "--out", str(tmp_path), "--name", "abl")
    assert code == 0, err
    summary = read_csv(tmp_path / "abl" / "summary.csv")
    # 3 Ray trials, 4 rows in the space's factor/level order; the shared run appears under both factors
    assert [(r["factor"], r["variant"]) for r in summary] == [
        ("tau", "0.5"), ("tau", "0.95"), ("anti_windup", "on"), ("anti_windup", "off")]
    assert len({r["trial_id"] for r in summary}) == 3
    assert summary[1]["trial_id"] == summary[2]["trial_id"]
    assert summary[1]["eval/accuracy"] == summary[2]["eval/accuracy"]
    assert all(r["status"] == "TERMINATED" for r in summary)
    assert len(read_csv(tmp_path / "abl" / "history.csv")) == 3 * 2
    assert "anti_windup" in (tmp_path / "abl" / "report.md").read_text()
    # trial folders are named by factor and level, not by Ray's unresolved placeholders
    folders = sorted(d.name.rsplit("-s0-", 1)[0] for d in (tmp_path / "abl" / "ray").iterdir() if "-s0-" in d.name)
    assert folders == ["anti_windup-off", "tau-0.5", "tau-0.95"]
