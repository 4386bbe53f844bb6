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
        "entropic - grpo on final/pass@1: +0.05" in words
        and "resolved, entropic is higher" in words
    )
    assert re.search(
        r"entropy_bonus - grpo .*not resolved, these seeds cannot tell which is higher; "
        r"(about \d+ seeds would resolve|no number of seeds up to)",
        words,
    )


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
            row = next(line for line in section.splitlines() if f"| {method} | {metric} |" in line)
            assert (
                f"{diff.mean():+.3f}" in row
                and f"[{diff.mean() - half:+.3f}, {diff.mean() + half:+.3f}]" in row
            )
    assert (
        "entropic - grpo on final/pass@64" in text
        and "resolved, entropic is higher than grpo" in text
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


def test_a_report_without_the_baseline_says_so(tmp_path):
    folder = Path(shutil.copytree(FIXTURES / "passk", tmp_path / "nogrpo"))
    summary = pd.read_csv(folder / "summary.csv")
    summary[summary.method != "grpo"].to_csv(folder / "summary.csv", index=False)
    history = pd.read_csv(folder / "history.csv")  # both files, or the integrity check refuses them
    history[history.method != "grpo"].to_csv(folder / "history.csv", index=False)
    text = report.write_report([folder]).read_text()
    assert "No paired differences: the baseline method 'grpo' has no completed trial" in text


def test_the_baseline_recorded_by_compare_is_the_report_default(passk):
    import yaml

    meta = yaml.safe_load((passk / "experiment.yaml").read_text())
    (passk / "experiment.yaml").write_text(yaml.safe_dump({**meta, "baseline": "entropy_bonus"}))
    assert "### Paired differences against entropy_bonus" in report.write_report([passk]).read_text()
    text = report.write_report([passk], baseline="grpo").read_text()  # an explicit one wins
    assert "### Paired differences against grpo" in text
