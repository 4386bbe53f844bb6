"""Figures a reviewer reads without the text (issue 28): labels and marks checked on the artists."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from entropic_tune import report
from entropic_tune.report.passk import plot_pass_at_k
from entropic_tune.report.plots import plot_control, plot_entropy
from entropic_tune.report.plots_final import plot_final_metrics

MAIN_JOB = Path(__file__).resolve().parents[2] / "results" / "compare_default"


@pytest.fixture
def exp(tmp_path: Path):
    for name in ("summary.csv", "history.csv", "experiment.yaml"):
        shutil.copy(MAIN_JOB / name, tmp_path / name)
    return report.load_experiment(tmp_path)


def _labels(ax) -> list[str]:
    return ax.get_legend_handles_labels()[1]


def test_entropy_target_lines_belong_to_their_method(exp):
    ax = plot_entropy(exp).axes[0]
    targets = [label for label in _labels(ax) if "target" in label and "±" not in label]
    target = exp.completed.loc[exp.completed.method == "entropic", "target_entropy"].iloc[0]
    assert targets == [f"entropic target {target:g}"]  # grpo and the bonus have none


def test_final_metrics_titles_name_their_metric_and_rmse_only_for_targeted(exp):
    fig = plot_final_metrics(exp)
    left, right = fig.axes[0], fig.axes[1]
    assert left.get_title().startswith("final/pass@1")
    assert right.get_title().startswith("summary/entropy_tracking_rmse") and "with a target" in right.get_title()
    dots = [c for c in right.collections if type(c).__name__ == "PathCollection" and len(c.get_offsets())]
    assert len(dots) == 1 and len(dots[0].get_offsets()) == 4  # only entropic's 4 seeds


def test_pass_at_k_base_curve_is_one_evaluation(exp):
    left = plot_pass_at_k(exp).axes[0]
    base = [label for label in _labels(left) if label.startswith("base model")]
    assert base == ["base model (one evaluation, the same in every trial)"]


def test_control_figure_names_and_marks_alpha_bounds(exp):
    fig = plot_control(exp)
    alpha = fig.axes[0]
    bounds = exp.completed.loc[exp.completed.method == "entropic", "config/controller.alpha_min"].iloc[0]
    title = alpha.get_title(loc="left")
    assert f"alpha_min {bounds:g}" in title and "alpha_max 1" in title


def test_the_setup_names_the_split_every_number_comes_from(exp):
    from entropic_tune.report.tables import experiment_setup

    setup = experiment_setup(exp)
    assert setup.loc["held-out split (scored)"].iloc[0] == "test (64 problems, task.eval_seed 1234)"
    exp.meta["base"]["task.split"] = "validation"
    assert experiment_setup(exp).loc["held-out split (scored)"].iloc[0].startswith("validation")
