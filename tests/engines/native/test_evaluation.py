"""The large final evaluation: pass@k curves, seeding, and that it never changes training."""

from __future__ import annotations

import csv
import math

import pytest

from entropic_tune import metrics as M
from entropic_tune.commands.train import run_single
from entropic_tune.config import load_config
from entropic_tune.engines.native.evaluation import final_evaluation, pass_at_k_curve
from entropic_tune.engines.native.trainer import Trainer
from entropic_tune.tune.trainable import run_trial


def test_pass_at_k_curve_is_the_mean_over_problems():
    # n = 4: a problem never solved, one always solved, one solved twice.
    curve = pass_at_k_curve([0, 4, 2], 4)
    assert list(curve) == [1, 2, 4]
    assert curve[1] == pytest.approx((0 + 1 + 0.5) / 3)
    assert curve[2] == pytest.approx((0 + 1 + (1 - 1 / 6)) / 3)  # C(2,2)/C(4,2) = 1/6
    assert curve[4] == pytest.approx(2 / 3)


def test_final_evaluation_keys_range_and_monotone_curve(fast_config):
    config = load_config({**fast_config, "rollout.final_samples": 6})
    trainer = Trainer(config)
    result = final_evaluation(trainer.policy, trainer.task, config, 0, M.BASE)
    assert list(result.metrics) == M.final_keys(6, M.BASE)
    assert result.problems == 8 and result.samples == 6
    assert "8 held-out problems x 6 samples = 48 responses" in result.describe()
    values = [result.metrics[f"base/pass@{k}"] for k in M.pass_at_k_ks(6)]
    assert all(0.0 <= v <= 1.0 and math.isfinite(v) for v in values)
    assert values == sorted(values)  # pass@k never falls with k
    # Seeded by the eval seed and the step only: the same call gives the same numbers.
    again = final_evaluation(trainer.policy, trainer.task, config, 0, M.BASE)
    assert again.metrics == result.metrics
    assert (
        final_evaluation(
            trainer.policy,
            trainer.task,
            load_config({**fast_config, "rollout.final_samples": 0}),
            0,
        )
        is None
    )


def test_the_large_evaluations_leave_the_training_history_unchanged(fast_config):
    def history(final_samples: int) -> list[dict[str, float]]:
        config = {**fast_config, "method": "entropic", "rollout.final_samples": final_samples}
        return [
            {k: v for k, v in row.items() if not k.startswith("perf/")}
            for row in run_trial(config, lambda metrics, checkpoint: None)
        ]

    assert history(4) == history(0)


def test_the_last_report_carries_base_and_final_evaluations(fast_config):
    reports: list[dict[str, float]] = []
    run_trial(
        {**fast_config, "method": "grpo"}, lambda metrics, checkpoint: reports.append(metrics)
    )
    keys = set(M.final_keys(4, M.BASE)) | set(M.final_keys(4, M.FINAL))
    assert keys <= set(reports[-1])
    assert not any(
        k.startswith(("base/", "final/")) for r in reports[:-1] for k in r
    )  # summary values only


def test_train_writes_final_and_base_columns_to_summary_csv(tmp_path, fast_config, capsys):
    config = load_config({**fast_config, "method": "grpo"})
    assert run_single(config, tmp_path / "run") == 0
    err = capsys.readouterr().err
    assert "base evaluation: 8 held-out problems x 4 samples" in err and "final evaluation:" in err
    with open(tmp_path / "run" / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns = list(rows[0])
    assert columns[-8:] == [*M.final_keys(4, M.BASE), *M.final_keys(4, M.FINAL)]  # last, in k order
    for key in (*M.final_keys(4, M.BASE), *M.final_keys(4, M.FINAL), M.LATE_ACCURACY):
        assert 0.0 <= float(rows[0][key]) <= 1.0
    with open(tmp_path / "run" / "history.csv", newline="") as handle:
        assert not any(c.startswith(("base/", "final/")) for c in next(csv.reader(handle)))
