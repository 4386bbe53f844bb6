"""Tests for entropic_tune.report: statistics, ranking, figures, report.md/html, import graph."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.collections import PathCollection

from entropic_tune import report
from entropic_tune.report import names

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
T975 = {
    1: 12.7062,
    2: 4.3027,
    3: 3.1824,
    4: 2.7764,
    5: 2.5706,
    9: 2.2622,
    30: 2.0423,
}  # printed tables


@pytest.fixture
def fx(tmp_path: Path) -> Path:
    """A private copy of the fixture folders (the report writes into them)."""
    return Path(
        shutil.copytree(FIXTURES, tmp_path / "fx", ignore=shutil.ignore_patterns("*.py", "*.md"))
    )


def _summary(rows: list[tuple]) -> pd.DataFrame:
    cols = [
        "trial_id",
        "method",
        "seed",
        "status",
        names.FINAL_ACCURACY,
        names.TRACKING_RMSE,
        names.SETTLE_STEP,
    ]
    return pd.DataFrame(rows, columns=cols)


# --- statistics ----------------------------------------------------------------------------------


@pytest.mark.parametrize("df", sorted(T975))
def test_t_quantile_matches_printed_table(df: int) -> None:
    assert report.t_quantile(0.975, df) == pytest.approx(T975[df], abs=1e-4)
    assert report.t_quantile(0.025, df) == pytest.approx(-T975[df], abs=1e-4)


def test_t_quantile_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        report.t_quantile(0.975, 0)
    with pytest.raises(ValueError):
        report.t_quantile(1.0, 3)


def test_describe_equals_hand_computation() -> None:
    got = report.describe([1.0, 2.0, 3.0, 4.0, float("nan")])
    std = math.sqrt((1.5**2 + 0.5**2 + 0.5**2 + 1.5**2) / 3)  # ddof=1
    half = T975[3] * std / 2
    assert got["n"] == 4
    assert got["mean"] == pytest.approx(2.5)
    assert got["std"] == pytest.approx(std)
    assert got["ci_low"] == pytest.approx(2.5 - half, abs=1e-3)
    assert got["ci_high"] == pytest.approx(2.5 + half, abs=1e-3)
    single = report.describe([0.7])
    assert single["mean"] == 0.7 and math.isnan(single["std"]) and math.isnan(single["ci_low"])


def test_method_stats_counts_only_terminated_trials() -> None:
    summary = _summary(
        [
            ("a", "grpo", 0, "TERMINATED", 0.5, 0.4, 10.0),
            ("b", "grpo", 1, "TERMINATED", 0.7, 0.2, float("nan")),
            ("c", "grpo", 2, "ERROR", 0.0, 9.0, 1.0),
        ]
    )
    stats = report.method_stats(summary).set_index("metric")
    acc = stats.loc[names.FINAL_ACCURACY]
    assert (acc["n"], acc["n_trials"]) == (2, 2)
    assert acc["mean"] == pytest.approx(0.6)
    assert acc["std"] == pytest.approx(math.sqrt(0.02))
    # the t interval 0.6 +- 1.27 is clipped to the accuracies possible, [0, 1] (issue 16)
    assert (acc["ci_low"], acc["ci_high"]) == (0.0, 1.0)
    rmse = stats.loc[names.TRACKING_RMSE]  # not a share: the interval as computed
    assert rmse["ci_high"] - rmse["mean"] == pytest.approx(
        T975[1] * math.sqrt(0.02) / math.sqrt(2), abs=1e-3
    )
    settle = stats.loc[names.SETTLE_STEP]  # one run never settled (NaN): n counts settled runs
    assert (settle["n"], settle["n_trials"], settle["mean"]) == (1, 2, 10.0)
    assert list(report.errored_trials(summary)["trial_id"]) == ["c"]


def test_rank_methods_by_accuracy_then_tracking_rmse() -> None:
    summary = _summary(
        [
            ("1", "grpo", 0, "TERMINATED", 0.6, 0.3, 1.0),
            ("2", "entropic", 0, "TERMINATED", 0.6, 0.1, 1.0),
            ("3", "clip_cov", 0, "TERMINATED", 0.7, 0.9, 1.0),
            ("4", "kl_cov", 0, "ERROR", 0.99, 0.0, 1.0),
        ]
    )
    ranked = report.rank_methods(summary)
    assert list(ranked["method"]) == ["clip_cov", "entropic", "grpo"]
    assert list(ranked["rank"]) == [1, 2, 3]


def test_every_method_has_its_own_colour() -> None:
    from entropic_tune.methods import METHODS

    assert set(report.METHOD_COLOURS) == set(METHODS)
    assert len(set(report.METHOD_COLOURS.values())) == len(METHODS)


# --- loading -------------------------------------------------------------------------------------


def test_load_experiment_reads_the_contract(fx: Path) -> None:
    exp = report.load_experiment(fx / "compare")
    assert exp.kind == "compare"
    assert exp.meta["base"]["optim.mini_batches_per_rollout"] == 4
    assert set(exp.summary["experiment"]) == {"compare"}
    assert len(exp.completed) == 6 and list(exp.errored["status"]) == ["ERROR"]
    assert exp.completed_history["trial_id"].nunique() == 6
    assert "off-policy" in report.regime(exp.meta)


def test_load_experiments_concatenates_with_experiment_column(fx: Path) -> None:
    exp = report.load_experiments([fx / "compare", fx / "search"])
    assert set(exp.summary["experiment"]) == {"compare", "search"}
    assert len(exp.summary) == 7 + 7
    assert set(exp.history["experiment"]) == {"compare", "search"}
    assert "experiment" in report.summary_table(exp.summary).columns


@pytest.mark.parametrize("present", [[], ["summary.csv"], ["history.csv"]])
def test_missing_files_raise_value_error_naming_the_folder(
    tmp_path: Path, present: list[str]
) -> None:
    folder = tmp_path / "not_an_experiment"
    folder.mkdir()
    for name in present:
        (folder / name).write_text("trial_id,method,step\n")
    with pytest.raises(ValueError, match="not_an_experiment"):
        report.load_experiment(folder)
    with pytest.raises(ValueError, match="not_an_experiment"):
        report.write_report([folder])


def test_unknown_format_is_rejected(fx: Path) -> None:
    with pytest.raises(ValueError, match="allowed: html, md"):
        report.write_report([fx / "compare"], fmt="pdf")


# --- figures -------------------------------------------------------------------------------------

PLOTS = [
    (report.plot_entropy, "compare"),
    (report.plot_control, "compare"),
    (report.plot_reward_accuracy, "compare"),
    (report.plot_final_metrics, "compare"),
    (report.plot_ablation, "ablate"),
    (report.plot_optimization_history, "search"),
    (report.plot_param_importances, "search"),
    (report.plot_kp_ki_map, "search"),
    (report.plot_pareto_front, "search_mo"),
    (report.plot_kp_ki_map, "search_mo"),
    (report.plot_param_importances, "search_mo"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("plot", "folder"), PLOTS, ids=[f"{p.__name__}-{f}" for p, f in PLOTS])
def test_plot_writes_a_png(fx: Path, tmp_path: Path, plot, folder: str) -> None:
    path = tmp_path / "out" / f"{plot.__name__}.png"
    fig = plot(report.load_experiment(fx / folder), path)
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5_000
    assert fig.axes and (fig.axes[0].get_title() or fig.get_suptitle())  # titled


def test_ablation_rows_share_each_columns_y_scale(fx: Path) -> None:
    fig = report.plot_ablation(report.load_experiment(fx / "ablate"))
    axes = [ax for ax in fig.axes if ax.get_title(loc="left").startswith("factor:")]
    assert len(axes) == 4  # two factors x (accuracy, RMSE)
    accuracy, rmse = axes[0::2], axes[1::2]
    for column in (accuracy, rmse):
        assert len({ax.get_ylim() for ax in column}) == 1
    # and each column's range covers every value drawn in it
    for column in (accuracy, rmse):
        lo, hi = column[0].get_ylim()
        for ax in column:
            for points in ax.collections:
                if not isinstance(points, PathCollection):  # the seeds' dots, not the error bars
                    continue
                ys = points.get_offsets()[:, 1]
                assert ((ys >= lo) & (ys <= hi)).all()


def test_ablation_factor_figure_has_one_colour_per_level(fx: Path) -> None:
    exp = report.load_experiment(fx / "ablate")
    fig = report.plot_ablation_factor(exp, "tau")
    entropy_ax, alpha_ax = fig.axes[0], fig.axes[1]
    labels = [line.get_label() for line in entropy_ax.get_lines() if line.get_label().startswith("tau=")]
    levels = list(dict.fromkeys(exp.summary.loc[exp.summary["factor"] == "tau", "variant"]))
    assert labels == [f"tau={v} (n=2)" for v in levels] and sorted(levels) == ["0", "0.95"]
    colours = {line.get_color() for line in entropy_ax.get_lines() if line.get_label().startswith("tau=")}
    assert len(colours) == 2
    assert len([line for line in alpha_ax.get_lines() if line.get_label().startswith("tau=")]) == 2
    with pytest.raises(ValueError, match="no ablation factor 'temperature'.*anti_windup, tau"):
        report.plot_ablation_factor(exp, "temperature")


def test_plots_refuse_what_does_not_apply(fx: Path) -> None:
    with pytest.raises(ValueError, match="factor"):
        report.plot_ablation(report.load_experiment(fx / "compare"))
    with pytest.raises(ValueError, match="one objective"):
        report.plot_pareto_front(report.load_experiment(fx / "search"))
    with pytest.raises(ValueError, match="Optuna storage"):
        report.plot_kp_ki_map(report.load_experiment(fx / "compare"))


def test_method_colour_is_the_same_in_every_figure(fx: Path) -> None:
    exp = report.load_experiment(fx / "compare")
    for fig in (report.plot_entropy(exp), report.plot_reward_accuracy(exp)):
        for line in fig.axes[0].get_lines():
            method = line.get_label().split(" ")[0]
            if method in names.METHOD_COLOURS:
                assert line.get_color() == names.METHOD_COLOURS[method]
    fig = report.plot_final_metrics(exp)
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    colours = [c.get_facecolor() for c in fig.axes[0].collections if len(c.get_offsets())]
    assert ticks == ["entropic", "grpo", "entropy_bonus"] and len(colours) >= 3


# --- report --------------------------------------------------------------------------------------

CELL = re.compile(r"^(-?[\d.]+) ± ([\d.]+) \[(-?[\d.]+), (-?[\d.]+)\]$")


def _md_table(text: str, heading: str) -> pd.DataFrame:
    lines = text.split(f"## {heading}\n", 1)[1].strip().splitlines()
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return pd.DataFrame(rows[2:], columns=rows[0])


@pytest.mark.slow
def test_report_table_matches_summary_csv(fx: Path) -> None:
    path = report.write_report([fx / "compare"])
    assert path == fx / "compare" / "report.md"
    text = path.read_text()
    table = _md_table(text, "Results per method").set_index("method")
    csv = pd.read_csv(fx / "compare" / "summary.csv")
    csv = csv[csv["status"] == "TERMINATED"]
    for column, metric in (
        ("final accuracy", names.FINAL_ACCURACY),
        ("entropy tracking RMSE (rel.; methods with a target)", names.TRACKING_RMSE),
        ("entropy drop", names.ENTROPY_DROP),
    ):
        for method, values in csv.groupby("method")[metric]:
            if metric == names.TRACKING_RMSE and method not in names.TARGETED:
                assert table.loc[method, column] == "n/a"  # no target, no tracking error
                continue
            mean, std, lo, hi = map(float, CELL.match(table.loc[method, column]).groups())
            half = T975[len(values) - 1] * values.std(ddof=1) / math.sqrt(len(values))
            assert mean == pytest.approx(values.mean(), abs=6e-4)
            assert std == pytest.approx(values.std(ddof=1), abs=6e-4)
            assert (lo, hi) == pytest.approx((values.mean() - half, values.mean() + half), abs=2e-3)
    assert list(table.index) == ["entropic", "grpo", "entropy_bonus"]  # ranked by accuracy
    assert "trainable_comp2_00006" in text and "synthetic failure" in text  # errored trial listed
    assert "NOT from this experiment" in text and "58.7" in text and "40.6" in text
    for png in ("entropy", "control", "reward_accuracy", "final_metrics"):
        assert (fx / "compare" / "figures" / f"{png}.png").stat().st_size > 5_000
        assert f"](figures/{png}.png)" in text


def test_report_findings_are_computed(fx: Path) -> None:
    exp = report.load_experiment(fx / "compare")
    hist = exp.completed_history.sort_values("step").groupby(["method", "trial_id"])[names.ENTROPY]
    ends = hist.agg(["first", "last"]).groupby("method").mean()
    lost = 1 - ends.loc["grpo", "last"] / ends.loc["grpo", "first"]
    text = " ".join(report.findings(exp))
    assert f"grpo lost {lost:.0%} of its entropy" in text
    assert "Best method by final accuracy: entropic" in text and "runner-up grpo" in text
    assert "entropic held entropy within" in text


@pytest.mark.slow
def test_html_report_embeds_images(fx: Path) -> None:
    path = report.write_report([fx / "compare"], fmt="html")
    assert path.name == "report.html" and (fx / "compare" / "report.md").is_file()
    page = path.read_text()
    figures = list((fx / "compare" / "figures").glob("*.png"))
    assert page.count('src="data:image/png;base64,iVBOR') == len(figures) == 4
    assert 'src="figures/' not in page and "<table>" in page


@pytest.mark.slow
def test_search_and_ablation_reports(fx: Path) -> None:
    before = (fx / "search" / "optuna.db").read_bytes()
    text = report.write_report([fx / "search"]).read_text()
    assert (fx / "search" / "optuna.db").read_bytes() == before  # the study is only read
    for png in ("search_history", "search_importances", "kp_ki_map"):
        assert f"figures/{png}.png" in text
    assert "best completed trials" in text
    assert "figures/pareto_front.png" in report.write_report([fx / "search_mo"]).read_text()
    ablation = report.write_report([fx / "ablate"]).read_text()
    assert "Results per ablation variant" in ablation and "figures/ablation.png" in ablation
    assert "Factor anti_windup" in ablation
    # one table and one figure per factor, the figure right under its table
    for factor in ("anti_windup", "tau"):
        section = ablation.split(f"### Factor: {factor}")[1].split("###")[0]
        assert "| variant" in section and f"](figures/ablation_{factor}.png)" in section
        assert (fx / "ablate" / "figures" / f"ablation_{factor}.png").stat().st_size > 5_000
    assert "figures/entropy.png" not in ablation  # all levels pooled in one plot: replaced per factor


@pytest.mark.slow
def test_several_folders_go_to_out(fx: Path, tmp_path: Path) -> None:
    out = tmp_path / "combined"
    path = report.write_report([fx / "compare", fx / "search"], out=out)
    assert path == out / "report.md" and (out / "figures" / "entropy.png").is_file()
    assert not (fx / "compare" / "report.md").exists()
    table = _md_table(path.read_text(), "Results per method")
    assert set(table["experiment"]) == {"compare", "search"}


def test_best_trials_reads_the_study(fx: Path) -> None:
    best = report.best_trials(report.load_experiment(fx / "search"))
    assert best[names.FINAL_ACCURACY].is_monotonic_decreasing
    assert (
        set(best["state"]) == {"COMPLETE"} and best["trial_id"].str.startswith("trainable_").all()
    )


def test_fixture_stays_small() -> None:
    assert sum(p.stat().st_size for p in FIXTURES.rglob("*") if p.is_file()) < 300_000


# --- import graph --------------------------------------------------------------------------------


@pytest.mark.slow
def test_report_import_does_not_load_torch_ray_or_trainer() -> None:
    code = (
        "import sys, entropic_tune.report; "
        "print([m for m in ('torch', 'ray', 'entropic_tune.engines.native.trainer') if m in sys.modules])"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_a_run_entering_the_band_in_its_last_steps_is_not_called_settled(fx: Path) -> None:
    exp = report.load_experiment(fx / "compare")
    rows = exp.summary["method"] == "entropic"
    assert "entropic held entropy within" in " ".join(report.findings(exp))
    exp.summary.loc[rows, "summary/settle_step"] = pd.to_numeric(exp.summary.loc[rows, "steps"])  # last step
    text = " ".join(report.findings(exp))
    assert "entropic held entropy within" not in text
    assert "entropic never stayed within 10% of its target" in text and "only entered the band" in text


def test_summary_table_does_not_count_a_last_step_entry_as_settled(fx: Path) -> None:
    summary = report.load_experiment(fx / "compare").summary.copy()
    rows = summary["method"] == "entropic"
    summary.loc[rows, "summary/settle_step"] = pd.to_numeric(summary.loc[rows, "steps"]) - 1
    cell = report.summary_table(summary).set_index("method").loc["entropic", "settle step"]
    done = int((rows & (summary["status"] == "TERMINATED")).sum())
    assert cell.startswith("n/a") and f"(0/{done} settled)" in cell


def _run(entropies: list[float]) -> pd.DataFrame:
    return pd.DataFrame({names.STEP: range(1, len(entropies) + 1), names.ENTROPY: entropies})


def test_smoothed_settle_step_sees_a_mean_held_on_target_through_noise_larger_than_the_band() -> None:
    from entropic_tune.metrics import settle_step
    from entropic_tune.report.stats import smoothed_settle_step

    target = 0.06
    # 20 steps far above the target, then +/-15% noise around it: the raw entropy never stays inside
    # the 10% band, its 10-step mean does from the first window wholly after step 20 (steps 21-30).
    noisy = [3 * target] * 20 + [target * (1.15 if i % 2 else 0.85) for i in range(40)]
    assert math.isnan(settle_step(noisy, target))
    assert smoothed_settle_step(_run(noisy), target, window=10) == 30.0
    # a steady 15% offset is outside the band however long the window
    offset = [3 * target] * 20 + [1.15 * target] * 40
    assert math.isnan(smoothed_settle_step(_run(offset), target, window=10))
    # the history's row order does not matter
    assert smoothed_settle_step(_run(noisy).iloc[::-1], target, window=10) == 30.0


def test_smoothed_settle_step_with_window_1_is_the_raw_settle_step() -> None:
    import random

    from entropic_tune.metrics import settle_step
    from entropic_tune.report.stats import smoothed_settle_step

    rng = random.Random(3)
    for _ in range(50):
        values = [0.06 * (1 + rng.uniform(-0.2, 0.2)) for _ in range(rng.randint(1, 40))]
        raw, smooth = settle_step(values, 0.06), smoothed_settle_step(_run(values), 0.06, window=1)
        assert (math.isnan(raw) and math.isnan(smooth)) or raw == smooth
    with pytest.raises(ValueError, match="window"):
        smoothed_settle_step(_run([0.06]), 0.06, window=0)


def test_findings_report_the_trailing_mean_settle_step(fx: Path) -> None:
    exp = report.load_experiment(fx / "compare")
    text = " ".join(report.findings(exp))
    assert re.search(
        r"entropic .*10-step trailing mean (settled within 10% in (\d+ of \d+ runs?|both runs|all \d+ "
        r"runs|its one run)|did not)",
        text,
    )


def test_the_setup_names_a_reasoning_gym_dataset_and_its_config():
    """read_meta flattens task.dataset_config into task.dataset_config.<key>: the setup row prints them."""
    from entropic_tune.report.loading import flatten_config
    from entropic_tune.report.tables import setup_rows

    base = flatten_config({"task.name": "reasoning_gym", "task.dataset": "countdown",
                           "task.dataset_config": {"min_numbers": 3, "max_target": 100}})
    summary = pd.DataFrame({"status": ["TERMINATED"], "method": ["grpo"], "seed": [0]})
    row = setup_rows({"kind": "compare", "base": base}, summary)["task"]
    assert row == "reasoning_gym (countdown, min_numbers 3, max_target 100)"
