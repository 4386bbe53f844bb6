"""Reused trial workers (issue 15): a trial that runs after another in the same process (a Ray actor
reused by ``reuse_actors``, with its cached model and compiled graphs) has exactly the history it has
alone, without Ray and through Ray Tune."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from entropic_tune.commands import main as cli
from entropic_tune.commands import sweep as sweep_cli
from entropic_tune.tune.trainable import run_trial


def comparable(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("perf/") and k != "trial_id"} for r in rows]


def _configs(fast_config: dict) -> tuple[dict, dict]:
    first = {**fast_config, "method": "entropic", "train.seed": 3, "optim.lr": 1e-3, "train.total_steps": 3,
             "controller.target_entropy": 0.3}
    second = {**fast_config, "method": "adaptive_entropy", "train.seed": 1, "train.total_steps": 3,
              "optim.mini_batches_per_rollout": 2}
    return first, second


@pytest.mark.slow
def test_a_trial_after_another_in_one_process_has_its_history_alone(fast_config, warmstart_cache):
    first, second = _configs(fast_config)
    script = textwrap.dedent(f"""
        import json
        from entropic_tune.tune.trainable import run_trial
        print(json.dumps(run_trial({second!r}, lambda m, c: None)))
    """)
    alone = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    run_trial(first, lambda m, c: None)
    after = run_trial(second, lambda m, c: None)
    assert comparable(after) == comparable(json.loads(alone.stdout.strip().splitlines()[-1]))


@pytest.mark.slow
def test_compiled_trials_sharing_a_process_do_not_see_each_other(fast_config):
    """With model.compile=on the process keeps one compiled decoder (its static caches, fused-weight
    buffers and rope tables) and one compiled update forward across trials: B, then A, then B again."""
    first, second = ({**c, "model.compile": "on"} for c in _configs(fast_config))
    before = run_trial(second, lambda m, c: None)
    run_trial(first, lambda m, c: None)
    assert comparable(run_trial(second, lambda m, c: None)) == comparable(before)


def _history(exp: Path, method: str) -> list[dict]:
    with open(exp / "history.csv", newline="") as handle:
        return [r for r in csv.DictReader(handle) if r["method"] == method]


@pytest.mark.slow
def test_ray_reuses_the_worker_and_the_second_trial_matches_its_run_alone(ray_local, tmp_path, monkeypatch):
    monkeypatch.setattr(sweep_cli, "_write_report", lambda exp_dir, baseline="grpo": None)  # tested in test_report.py
    base = ["compare", "--space", "smoke", "--out", str(tmp_path), "--quiet", "--max-concurrent", "1",
            "--set", "rollout.eval_every=2"]
    assert cli.main([*base, "--name", "both", "--methods", "grpo,entropic"]) == 0
    trials = []  # (first result's time, method, pid) per trial
    for trial in (tmp_path / "both" / "ray").iterdir():
        if (trial / "result.json").is_file():
            results = [json.loads(line) for line in (trial / "result.json").read_text().splitlines() if line]
            trials.append((results[0]["timestamp"], results[0]["config"]["method"], {r["pid"] for r in results}))
    assert len(trials) == 2
    (_, _, first_pids), (_, second, second_pids) = sorted(trials)
    assert len(first_pids | second_pids) == 1  # one actor ran both trials
    assert cli.main([*base, "--name", "alone", "--methods", second]) == 0
    after, alone = _history(tmp_path / "both", second), _history(tmp_path / "alone", second)
    assert len(alone) == 3 and comparable(after) == comparable(alone)


@pytest.mark.slow
def test_trials_of_a_platform_started_ray_run_at_the_drivers_priority():
    """Ray starts workers at niceness 15 (a trial then gets a fraction of the CPU a plain run gets on a
    busy machine); the local Ray the platform starts runs them at the driver's niceness."""
    script = textwrap.dedent("""
        import os
        import ray
        from entropic_tune.tune.sweep import ray_session
        with ray_session(None):
            print(os.nice(0), ray.get(ray.remote(lambda: os.nice(0)).remote()))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env={k: v for k, v in os.environ.items() if k != "RAY_worker_niceness"})
    driver, worker = map(int, out.stdout.split()[-2:])
    assert worker == driver
