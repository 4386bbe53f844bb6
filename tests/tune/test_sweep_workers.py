"""``--workers-per-trial``: trials of 2 data-parallel workers through Ray Train inside Ray Tune (issue 17).

One module-scoped sweep on the session's local Ray (2 CPUs: one 2-worker trial at a time, the trial
process itself reserving none): a 2-worker compare whose last worker crashes at step 3 and is retried
from the step-2 checkpoint, with its checkpoints kept; then ``--resume`` of the finished run. The
reference is the same trial config on one worker, stepped by a plain ``Trainer`` in this process.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from entropic_tune import metrics as M
from entropic_tune.commands import main as cli
from entropic_tune.commands import sweep as sweep_cli
from entropic_tune.config import load_config
from entropic_tune.engines.native.trainer import Trainer
from entropic_tune.tune.layout import HISTORY_FILE, WORKERS_DIR
from entropic_tune.tune.spaces import trial_config

pytestmark = [pytest.mark.usefixtures("ray_local"), pytest.mark.slow]

TRAINS = {"model.warmstart_steps": 400, "model.warmstart_lr": 0.01, "rollout.prompts_per_step": 6,
          "rollout.group_size": 6, "controller.target_entropy": 0.65, "train.sampling_seed": "prompt"}
STEPS = 4
FAIL_AT = 3


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def argv(out: Path, name: str, *extra: str, overrides: dict | None = None) -> list[str]:
    sets = [a for k, v in {**TRAINS, **(overrides or {})}.items() for a in ("--set", f"{k}={v}")]
    return ["compare", "--space", "smoke", "--methods", "entropic", "--steps", str(STEPS), "--out", str(out),
            "--name", name, "--quiet", "--checkpoint-every", "2", *sets, *extra]


def numeric(rows: list[dict[str, str]]) -> list[dict[str, float]]:
    keys = [k for k in M.STEP_KEYS if not k.startswith("perf/")]
    return [{k: float(r[k]) for k in keys} for r in rows]


def assert_close(a: list[dict[str, float]], b: list[dict[str, float]]) -> None:
    assert len(a) == len(b) == STEPS
    for step, (x, y) in enumerate(zip(a, b, strict=True), 1):
        differ = {k: (x[k], y[k]) for k in x if not math.isclose(x[k], y[k], rel_tol=1e-4, abs_tol=1e-5)}
        assert not differ, f"step {step}: {differ}"


def trial_dir(exp: Path) -> Path:
    (trial,) = [p for p in (exp / "ray").iterdir() if p.is_dir() and (p / "params.json").is_file()]
    return trial


@pytest.fixture(scope="module")
def sweeps(ray_local, tmp_path_factory):
    out = tmp_path_factory.mktemp("workers")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sweep_cli, "_write_report", lambda exp_dir, baseline="grpo": None)  # test_report.py
        codes = {
            "two": cli.main(argv(out, "two", "--workers-per-trial", "2", "--max-failures", "1",
                                 "--keep-checkpoints", "2", overrides={"debug.fail_at_step": FAIL_AT})),
        }
        codes["resume"] = cli.main(["compare", "--resume", "--name", "two", "--out", str(out), "--quiet"])
    return out, codes


@pytest.fixture(scope="module")
def one_worker(sweeps) -> list[dict[str, float]]:
    """The 2-worker trial's own config (its params.json) on one worker, without the crash."""
    out, _ = sweeps
    params = json.loads((trial_dir(out / "two") / "params.json").read_text())
    flat = {**trial_config(params), "train.num_workers": 1, "debug.fail_at_step": 0}
    trainer = Trainer(load_config(flat))
    keys = [k for k in M.STEP_KEYS if not k.startswith("perf/")]
    return [{k: row[k] for k in keys} for row in (trainer.step() for _ in range(STEPS))]


def test_two_workers_per_trial_complete_with_the_one_worker_history(sweeps, one_worker):
    """The 2-worker trial crashed at step 3 and was retried from its step-2 checkpoint; its history is
    still the uncrashed 1-worker run's."""
    out, codes = sweeps
    assert codes["two"] == 0
    (row,) = read_csv(out / "two" / "summary.csv")
    assert row["status"] == "TERMINATED" and row["steps"] == str(STEPS)
    assert_close(numeric(read_csv(out / "two" / "history.csv")), one_worker)
    assert any(r[M.GRAD_NORM] > 0 for r in one_worker)  # not vacuous: the weights moved
    assert row.get("final/pass@1", "") != ""  # rank 0 ran the large evaluations


def test_checkpoints_of_a_worker_trial_are_tunes_with_history(sweeps):
    out, _ = sweeps
    trial = trial_dir(out / "two")
    checkpoints = sorted(trial.glob("checkpoint_*"))
    assert checkpoints, "Tune holds the trial's checkpoints"
    for checkpoint in checkpoints:
        assert (checkpoint / "trainer.pt").is_file() and (checkpoint / HISTORY_FILE).is_file()
    # Ray Train's own copies are gone once Tune holds its copy: every trainer state in the experiment
    # folder is in one of Tune's checkpoints, and Ray Train's run folders went with the sweep
    states = sorted(p.parent for p in (out / "two").rglob("trainer.pt"))
    assert states == checkpoints
    assert not (out / "two" / WORKERS_DIR).exists()


def test_resume_of_a_finished_worker_sweep_keeps_its_results(sweeps):
    out, codes = sweeps
    assert codes["resume"] == 0
    (row,) = read_csv(out / "two" / "summary.csv")
    assert row["status"] == "TERMINATED" and len(read_csv(out / "two" / "history.csv")) == STEPS


def test_a_crashed_worker_is_retried_from_the_checkpoint(sweeps):
    out, _ = sweeps
    assert f"simulated crash at step {FAIL_AT}" in (trial_dir(out / "two") / "error.txt").read_text()
    assert [int(r["step"]) for r in read_csv(out / "two" / "history.csv")] == list(range(1, STEPS + 1))
    # the retried trial's history equals the uncrashed 1-worker run's: see the first test


def test_worker_flags_are_checked_before_ray(tmp_path, capsys):
    assert cli.main(argv(tmp_path, "bad", "--workers-per-trial", "0")) == 2
    assert "--workers-per-trial: must be >= 1" in capsys.readouterr().err
    assert cli.main(argv(tmp_path, "bad", "--set", "train.num_workers=2")) == 2
    assert "use --workers-per-trial 2" in capsys.readouterr().err
    assert cli.main(argv(tmp_path, "bad", "--workers-per-trial", "2", "--set", "train.num_workers=3")) == 2
    assert "set by --workers-per-trial" in capsys.readouterr().err
