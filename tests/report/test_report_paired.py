"""Paired statistics against a baseline (Holm, power by noncentral t) and the pass@k report parts."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from entropic_tune import report
from entropic_tune.commands import main as cli
from entropic_tune.report import paired

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture
def passk(tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURES / "passk", tmp_path / "passk"))


# --- hand-computed cases ----------------------------------------------------------------------------


def test_holm_adjusts_in_input_order_and_skips_nan():
    # sorted 0.01, 0.03, 0.04 -> 3 * 0.01, max(0.03, 2 * 0.03), max(0.06, 1 * 0.04)
    assert paired.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    out = paired.holm([0.2, math.nan, 0.6])
    assert out[0] == pytest.approx(0.4) and math.isnan(out[1]) and out[2] == pytest.approx(0.6)
    assert paired.holm([0.9, 0.8]) == [1.0, 1.0]  # capped at 1


def test_paired_t_against_the_closed_form_for_two_degrees_of_freedom():
    got = paired.paired_t([0.1, 0.2, 0.15])
    t = 0.15 / (0.05 / math.sqrt(3))
    half = 4.302653 * 0.05 / math.sqrt(3)  # t_{0.975, 2} from the printed table
    assert (got["n"], got["mean"], got["sd"]) == (3, pytest.approx(0.15), pytest.approx(0.05))
    assert (got["ci_low"], got["ci_high"]) == (
        pytest.approx(0.15 - half, abs=1e-6),
        pytest.approx(0.15 + half, abs=1e-6),
    )
    assert got["p"] == pytest.approx(1 - t / math.sqrt(t * t + 2), abs=1e-9)  # df = 2: P(|T| > t)
    assert paired.paired_t([0.1, 0.1])["p"] == 0.0 and paired.paired_t([0.0, 0.0])["p"] == 1.0
    single = paired.paired_t([0.3])
    assert single["n"] == 1 and math.isnan(single["p"]) and math.isnan(single["ci_low"])


@pytest.mark.parametrize(("effect", "seeds"), [(0.5, 34), (0.8, 15), (1.0, 10)])
def test_seeds_needed_matches_published_paired_t_sample_sizes(effect, seeds):
    # Two-sided paired t test, alpha 0.05, power 0.8 (Cohen 1988; G*Power gives the same n).
    assert paired.seeds_needed(effect) == seeds
    assert paired.t_power(effect, seeds) >= 0.8 > paired.t_power(effect, seeds - 1)
    assert paired.seeds_needed(-effect) == seeds  # the sign does not matter
    assert paired.seeds_needed(effect, alpha=0.05 / 3) > seeds  # a corrected level needs more


def test_seeds_needed_for_no_effect_or_no_spread():
    assert math.isinf(paired.seeds_needed(0.0))
    assert math.isinf(paired.seeds_needed(1e-4))  # beyond MAX_SEEDS
    assert paired.seeds_needed(math.inf) == 2
    assert paired.t_power(0.5, 5000) == pytest.approx(1.0)  # finite far in the tail


# --- synthetic experiments: the power figure holds ----------------------------------------------------


def _rejection_rate(mean: float, sd: float, n: int, reps: int, alpha: float = 0.05) -> float:
    rng = np.random.default_rng(11)
    return float(
        np.mean(
            [paired.paired_t(rng.normal(mean, sd, n).tolist())["p"] < alpha for _ in range(reps)]
        )
    )


def test_a_known_effect_is_resolved_at_about_the_predicted_number_of_seeds():
    mean, sd = 0.03, 0.03  # standardised effect 1.0
    n = int(paired.seeds_needed(mean / sd))
    assert n == 10
    rate = _rejection_rate(mean, sd, n, 2000)
    assert 0.76 < rate < 0.86  # 0.80 predicted; Monte Carlo sd ~0.009
    assert _rejection_rate(mean, sd, n // 2, 2000) < 0.6  # half the seeds: mostly not resolved


def test_a_null_effect_is_not_resolved():
    assert _rejection_rate(0.0, 0.03, 10, 2000) < 0.07  # about alpha = 0.05


def _synthetic_summary(
    effects: dict[str, float], seeds: int, sd: float, seed: int = 0
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    shared = rng.normal(0.5, 0.1, seeds)  # what a seed does to every method: cancels when paired
    rows = [
        {
            "trial_id": f"{m}{s}",
            "method": m,
            "seed": s,
            "status": "TERMINATED",
            "final/pass@1": shared[s] + effect + rng.normal(0, sd),
        }
        for m, effect in effects.items()
        for s in range(seeds)
    ]
    return pd.DataFrame(rows)


def test_paired_differences_resolve_a_real_effect_and_not_a_null_one_with_holm():
    # One fixed draw (the rejection rates above are the statistical check; a null is resolved in 5%
    # of draws by design, e.g. with seed 0 here).
    summary = _synthetic_summary(
        {"grpo": 0.0, "entropic": 0.05, "entropy_bonus": 0.0}, 12, 0.01, seed=2
    )
    table = paired.paired_differences(summary, "grpo", ["final/pass@1"]).set_index("method")
    assert table.loc["entropic", "resolved"] and not table.loc["entropy_bonus", "resolved"]
    assert table.loc["entropic", "n"] == 12
    assert table.loc["entropic", "corrected_low"] < table.loc["entropic", "ci_low"]  # wider
    # Holm over the two methods, computed by hand from the paired t tests
    raw = {
        m: scipy_stats.ttest_rel(
            summary[summary.method == m]["final/pass@1"].to_numpy(),
            summary[summary.method == "grpo"]["final/pass@1"].to_numpy(),
        ).pvalue
        for m in ("entropic", "entropy_bonus")
    }
    low, high = sorted(raw, key=raw.get)
    assert table.loc[low, "p_holm"] == pytest.approx(min(1, 2 * raw[low]))
    assert table.loc[high, "p_holm"] == pytest.approx(max(min(1, 2 * raw[low]), raw[high]))
    words = " ".join(paired.paired_sentences(table.reset_index()))
    assert (
        "entropic - grpo on final/pass@1 (primary): +0.05" in words
        and re.search(r"resolved \(corrected CI \[\+0\.0\d\d, \+0\.0\d\d\]\), entropic is higher", words)
    )
    assert re.search(
        r"entropy_bonus - grpo .*not resolved, these seeds cannot tell which is higher; "
        r"(about \d+ seeds would resolve|no number of seeds up to)",
        words,
    )


def test_one_primary_metric_and_one_family_for_every_secondary_comparison():
    """Holm across the methods on the primary metric only; every other (method, metric) pair is one
    secondary family, and "resolved" there means corrected over all of it (issue 28)."""
    summary = _synthetic_summary({"grpo": 0.0, "entropic": 0.05, "entropy_bonus": 0.0}, 6, 0.02, seed=1)
    rng = np.random.default_rng(5)
    summary["final/pass@64"] = summary["final/pass@1"] + rng.normal(0, 0.02, len(summary))
    summary["final/accuracy"] = summary["final/pass@1"] + rng.normal(0, 0.02, len(summary))
    metrics = ["final/pass@1", "final/pass@64", "final/accuracy"]
    table = paired.paired_differences(summary, "grpo", metrics, primary="final/pass@64")
    primary = table[table.role == "primary"]
    assert set(primary.metric) == {"final/pass@64"} and set(primary.family_size) == {2}
    secondary = table[table.role == "secondary"]
    assert len(secondary) == 4 and set(secondary.family_size) == {4}
    assert secondary.p_holm.tolist() == pytest.approx(paired.holm(secondary.p.tolist()))
    level = 0.05 / 4  # the secondary corrected interval is Bonferroni's over all four
    row = secondary.iloc[0]
    half = scipy_stats.t.ppf(1 - level / 2, row.n - 1) * row.sd_diff / math.sqrt(row.n)
    assert row.corrected_high - row.corrected_low == pytest.approx(2 * half)
    for sentence in paired.paired_sentences(table):
        if ": resolved" in sentence:
            assert re.search(r"resolved \(corrected CI \[[-+]\d\.\d{3}, [-+]\d\.\d{3}\]\)", sentence)
    assert any("final/accuracy (greedy) (secondary)" in s for s in paired.paired_sentences(table))


def test_the_report_uses_the_primary_metric_recorded_in_experiment_yaml(passk):
    meta = passk / "experiment.yaml"
    meta.write_text(meta.read_text() + "primary: final/pass@64\n")
    text = report.write_report([passk]).read_text()
    section = _section(text, "### Paired differences against grpo")
    assert "| entropic | final/pass@64 | primary | 2 |" in section
    assert "| entropic | final/pass@1 | secondary | 8 |" in section
    assert "Primary metric (declared by the experiment's space, else final pass@1): final/pass@64" in section


def test_pairs_use_common_completed_seeds_only():
    summary = _synthetic_summary({"grpo": 0.0, "entropic": 0.05}, 5, 0.01)
    summary = summary.drop(summary[(summary.method == "grpo") & (summary.seed == 4)].index)
    summary.loc[(summary.method == "entropic") & (summary.seed == 0), "status"] = "ERROR"
    table = paired.paired_differences(summary, "grpo", ["final/pass@1"])
    assert table["n"].tolist() == [3]  # seeds 1-3: seed 4 lacks grpo, seed 0 errored
    assert paired.paired_differences(summary, "clip_cov", ["final/pass@1"]).empty


# --- the report from the pass@k fixture -----------------------------------------------------------------


def _section(text: str, title: str) -> str:
    return text.split(title, 1)[1].split("\n#", 1)[0]


@pytest.mark.slow
def test_report_has_pass_at_k_and_paired_tables_equal_to_a_recomputation(passk):
    text = report.write_report([passk]).read_text()
    summary = pd.read_csv(passk / "summary.csv")
    section = _section(text, "### Paired differences against grpo")
    for method in ("entropic", "entropy_bonus"):
        for metric in ("final/pass@1", "final/pass@8", "final/pass@64", "final/accuracy"):
            mine = summary[summary.method == method].sort_values("seed")[metric].to_numpy()
            base = summary[summary.method == "grpo"].sort_values("seed")[metric].to_numpy()
            diff = mine - base
            half = scipy_stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / math.sqrt(len(diff))
            label = metric + (" (greedy)" if metric == "final/accuracy" else "")
            row = next(line for line in section.splitlines() if f"| {method} | {label} |" in line)
            assert (
                f"{diff.mean():+.3f}" in row
                and f"[{diff.mean() - half:+.3f}, {diff.mean() + half:+.3f}]" in row
            )
    assert re.search(
        r"entropic - grpo on final/pass@64 \(secondary\): \+0\.214 .*Holm p = \S+ over 8 secondary "
        r"comparisons\): resolved \(corrected CI \[\+0\.105, \+0\.322\]\), entropic is higher than grpo",
        text,
    )
    table = _section(text, "### pass@k of the large final evaluation")
    assert (
        "| base |" in table and "pass@64" in table and "0.805" in table
    )  # the base curve's pass@64
    assert (
        "](figures/pass_at_k.png)" in text
        and (passk / "figures" / "pass_at_k.png").stat().st_size > 5000
    )


def test_findings_say_where_a_curve_crosses_the_base(passk):
    exp = report.load_experiment(passk)
    summary = exp.completed
    ks = [1, 2, 4, 8, 16, 32, 64]
    grpo = summary[summary.method == "grpo"]
    diffs = [(grpo[f"final/pass@{k}"] - grpo[f"base/pass@{k}"]).mean() for k in ks]
    assert diffs[0] > 0 > diffs[-1]  # the fixture narrows
    cross = next(i for i, d in enumerate(diffs) if d < 0)
    text = " ".join(report.crossing_sentences(summary))
    assert (
        f"grpo against the base model over 4 seeds: pass@1 {diffs[0]:+.3f}" in text
        and f"falls below the base's between k = {ks[cross - 1]} and k = {ks[cross]}" in text
    )
    assert "Yue et al. (2025)" in text


@pytest.mark.slow
def test_report_cli_baseline_option(passk, capsys):
    assert cli.main(["report", str(passk), "--baseline", "entropic"]) == 0
    assert "### Paired differences against entropic" in (passk / "report.md").read_text()
    assert cli.main(["report", str(passk), "--baseline", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and "--baseline: 'nope'" in err[0]
        and "entropic, entropy_bonus, grpo" in err[0]
    )


def test_compare_refuses_a_baseline_it_does_not_run(capsys):
    assert (
        cli.main(["compare", "--space", "smoke", "--baseline", "entropy_bonus", "--dry-run"]) == 2
    )
    assert "--baseline: 'entropy_bonus' is not one of the methods run" in capsys.readouterr().err


@pytest.mark.slow
def test_a_report_without_the_baseline_says_so(tmp_path):
    folder = Path(shutil.copytree(FIXTURES / "passk", tmp_path / "nogrpo"))
    summary = pd.read_csv(folder / "summary.csv")
    summary[summary.method != "grpo"].to_csv(folder / "summary.csv", index=False)
    history = pd.read_csv(folder / "history.csv")  # both files, or the integrity check refuses them
    history[history.method != "grpo"].to_csv(folder / "history.csv", index=False)
    text = report.write_report([folder]).read_text()
    assert "No paired differences: the baseline method 'grpo' has no completed trial" in text


@pytest.mark.slow
def test_the_baseline_recorded_by_compare_is_the_report_default(passk):
    import yaml

    meta = yaml.safe_load((passk / "experiment.yaml").read_text())
    (passk / "experiment.yaml").write_text(yaml.safe_dump({**meta, "baseline": "entropy_bonus"}))
    assert "### Paired differences against entropy_bonus" in report.write_report([passk]).read_text()
    text = report.write_report([passk], baseline="grpo").read_text()  # an explicit one wins
    assert "### Paired differences against grpo" in text


@pytest.mark.parametrize(
    ("n", "effect", "alpha"),
    [(2, 6.0, 0.05), (3, 3.0, 0.025), (4, 1.5, 0.05), (5, 1.0, 0.05 / 3), (6, 0.8, 0.05),
     (2, 1.0, 0.05), (3, -2.0, 0.05)],
)
def test_t_power_matches_simulation_at_small_df(n, effect, alpha):
    """Exact power in both tails at df 1-5 (issue 28: scipy's nct returned NaN in one tail, and the
    old fallback gave 0.000 at 2 seeds and effect 6, where the power is ~0.49): 20k simulated paired
    t tests of differences ~ N(effect, 1)."""
    rng = np.random.default_rng(0)
    d = rng.normal(effect, 1.0, size=(20_000, n))
    t = d.mean(axis=1) / (d.std(axis=1, ddof=1) / np.sqrt(n))
    critical = scipy_stats.t.ppf(1 - alpha / 2, n - 1)
    simulated = float(np.mean(np.abs(t) > critical))
    assert paired.t_power(effect, n, alpha) == pytest.approx(simulated, abs=0.01)


def test_t_power_is_the_level_at_no_effect_and_grows_with_seeds():
    for n in (2, 3, 5, 30):
        assert paired.t_power(0.0, n, 0.05) == pytest.approx(0.05, abs=1e-6)
    powers = [paired.t_power(0.7, n) for n in range(2, 40)]
    assert all(b > a for a, b in zip(powers[:-1], powers[1:], strict=True))


def test_no_narrowing_is_claimed_for_a_difference_of_zero(passk):
    """A curve that dips below the base's and meets it again at the largest k (pass@64 1.000 =
    1.000, +0.000) is not "pass@large-k down" (issue 28)."""
    summary = report.load_experiment(passk).completed.copy()
    for k in (32, 64):  # make every grpo trial end exactly at the base's pass@32, pass@64
        rows = summary.method == "grpo"
        summary.loc[rows, f"final/pass@{k}"] = summary.loc[rows, f"base/pass@{k}"] - (0.02 if k == 32 else 0)
    text = " ".join(s for s in report.crossing_sentences(summary) if s.startswith("grpo"))
    assert "pass@64 +0.000" in text and "meets it again at k = 64" in text
    assert "pass@large-k down" not in text and "pass@large-k not down" in text


def test_tracking_error_only_for_methods_with_a_target(passk):
    """GRPO and the entropy bonus have no entropy target: no tracking RMSE for them (issue 28)."""
    from entropic_tune.commands import sweep as tune_cli
    from entropic_tune.report.names import TARGETED
    from entropic_tune.report.tables import summary_table

    assert tuple(tune_cli.TARGETED) == TARGETED
    summary = report.load_experiment(passk).completed
    assert summary["summary/entropy_tracking_rmse"].notna().all()  # recorded for every trial
    table = summary_table(summary).set_index("method")
    column = next(c for c in table.columns if c.startswith("entropy tracking RMSE"))
    assert "methods with a target" in column
    assert table.loc["grpo", column] == "n/a" and table.loc["entropy_bonus", column] == "n/a"
    assert table.loc["entropic", column] != "n/a"
    rows = summary.astype(str).to_dict("records")
    lines = tune_cli.summary_table(rows, "compare").splitlines()
    grpo = next(line for line in lines if line.startswith("grpo "))
    entropic = next(line for line in lines if line.startswith("entropic "))
    assert grpo.rstrip().endswith(" -") and not entropic.rstrip().endswith(" -")


def test_distinct_correct_responses_are_a_secondary_metric_where_the_task_measures_them():
    """issue 28 H2: final/distinct_correct enters the secondary family when the folder has it."""
    from entropic_tune.report.paired import decision_metrics

    frame = pd.DataFrame({"final/pass@1": [0.2], "final/pass@64": [0.6], "final/accuracy": [0.2],
                          "summary/late_accuracy": [0.2], "final/distinct_correct": [1.0]})
    assert decision_metrics(frame) == ["final/pass@1", "final/pass@64", "final/accuracy",
                                       "final/distinct_correct", "summary/late_accuracy"]
    frame["final/distinct_correct"] = float("nan")  # an older folder or a task without the count
    assert "final/distinct_correct" not in decision_metrics(frame)
