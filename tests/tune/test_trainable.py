"""The trial loop behind the Ray trainable, driven without Ray: reports, checkpoints, exact restore."""

from __future__ import annotations

import math

import pytest
from trial_recorder import Recorder, deterministic  # tests/ is on sys.path (conftest.py)

from entropic_tune import metrics as M
from entropic_tune.engines.native.trainer import NonFiniteError
from entropic_tune.tune.trainable import run_trial


@pytest.fixture()
def trial_config(fast_config) -> dict:
    # Off-policy, with an eval after the restore point, and bookkeeping keys as Ray passes them.
    return {**fast_config, "method": "entropic", "train.total_steps": 4, "rollout.eval_every": 3,
            "optim.mini_batches_per_rollout": 2, "factor": "tau", "variant": "0.95"}


def test_reports_one_finite_dict_per_step_and_checkpoints_every_n_and_last(trial_config):
    report = Recorder()
    history = run_trial(trial_config, report, checkpoint_every=3)
    assert [int(m[M.STEP]) for m in report.metrics] == [1, 2, 3, 4]
    assert sorted(report.checkpoints) == [3, 4]
    for metrics in report.metrics:
        assert set(M.STEP_KEYS) <= set(metrics)
        assert {M.TRACKING_RMSE, M.FINAL_ACCURACY} <= set(metrics)
        assert all(math.isfinite(v) for v in metrics.values())
    assert history == [{k: m[k] for k in M.STEP_KEYS} for m in report.metrics]
    assert M.ENTROPY_DROP not in report.metrics[0] and M.ENTROPY_DROP in report.metrics[-1]


def test_a_restored_trial_reports_the_same_next_steps(trial_config):
    straight = Recorder()
    run_trial(trial_config, straight, checkpoint_every=2)
    restored = Recorder()
    run_trial(trial_config, restored, checkpoint=straight.checkpoints[2], checkpoint_every=2)
    assert [int(m[M.STEP]) for m in restored.metrics] == [3, 4]
    for ref, got in zip(straight.metrics[2:], restored.metrics, strict=True):
        assert deterministic(got) == deterministic(ref)


def test_non_finite_stops_the_trial_without_reporting_nan(trial_config):
    report = Recorder()
    with pytest.raises(NonFiniteError, match=r"non-finite loss .* at step 2 .*method=entropic seed=0"):
        run_trial({**trial_config, "debug.nan_at_step": 2}, report)
    assert [int(m[M.STEP]) for m in report.metrics] == [1]
    assert all(math.isfinite(v) for v in report.metrics[0].values())
