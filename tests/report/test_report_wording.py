"""The report's numbers and counts (``report.wording``), and the sentences that use them (issue 16):
configured values as set, measured values to the digits that tell them apart, counts that agree
with their noun, intervals of shares clipped to [0, 1]."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from entropic_tune.report import findings, load_experiment
from entropic_tune.report.passk import pass_at_k_curves
from entropic_tune.report.stats import describe, method_stats
from entropic_tune.report.tables import regime, setup_rows
from entropic_tune.report.wording import count, distinct, every, exact, pronoun

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.mark.parametrize("value,text", [(0.06, "0.06"), (0.06007, "0.06007"), (5.094e-05, "5.094e-05"),
                                        (11.19, "11.19"), (1.0, "1"), (0.1 + 0.2, "0.3"),
                                        (0.123456789, "0.123457"), (-2.0, "-2")])
def test_exact_keeps_a_configured_value_as_it_was_set(value, text):
    assert exact(value) == text


def test_distinct_adds_digits_only_until_different_values_read_differently():
    assert distinct([0.06, 0.06007]) == ["0.06", "0.0601"]  # 3 digits already tell them apart
    assert distinct([0.0600, 0.06004]) == ["0.06", "0.06004"]
    assert distinct([0.1234, 0.1234]) == ["0.123", "0.123"]  # equal values need no more digits
    assert distinct([1.00001, 1.00002, 2.0]) == ["1.00001", "1.00002", "2"]


def test_counts_agree_with_their_noun():
    assert [count(n, "run") for n in (0, 1, 2)] == ["0 runs", "1 run", "2 runs"]
    assert count(1, "mini-batch", "mini-batches") == "1 mini-batch"
    assert count(4, "mini-batch", "mini-batches") == "4 mini-batches"
    assert [every(n, "run") for n in (1, 2, 5)] == ["its one run", "both runs", "all 5 runs"]
    assert (pronoun(1), pronoun(3)) == ("its", "their")


def test_the_setup_shows_targets_as_set_and_the_regime_with_counts():
    summary = pd.DataFrame({"trial_id": ["a", "b"], "method": ["grpo", "entropic"], "status": "TERMINATED",
                            "target_entropy": [0.06, 0.06007]})
    rows = setup_rows({"base": {"optim.mini_batches_per_rollout": 4}}, summary)
    assert rows["target entropy (nats/token)"] == "varies: 0.06, 0.06007"
    assert regime({"base": {"optim.mini_batches_per_rollout": 4}}) == \
        "off-policy (4 mini-batches x 1 epoch = 4 optimizer steps per rollout)"


def test_a_run_that_only_entered_the_band_late_is_one_run_in_its_last_steps(tmp_path):
    folder = Path(shutil.copytree(FIXTURES / "ablate", tmp_path / "ablate"))
    text = " ".join(findings(load_experiment(folder)))
    assert "(1 run only entered the band in its last steps)" in text
    assert "(s)" not in text and "all 2 runs" not in text and "in both runs" in text


def test_intervals_of_shares_are_clipped_to_0_1():
    # three accuracies near 1: the t interval reaches past 1, where no accuracy can be
    raw = describe([0.9, 1.0, 1.0])
    assert raw["ci_high"] > 1.0
    clipped = describe([0.9, 1.0, 1.0], bounds=(0.0, 1.0))
    assert clipped["ci_high"] == 1.0 and clipped["ci_low"] == raw["ci_low"] and clipped["mean"] == raw["mean"]
    summary = pd.DataFrame({"trial_id": list("abc"), "method": "grpo", "status": "TERMINATED",
                            "summary/final_accuracy": [0.9, 1.0, 1.0], "summary/entropy_drop": [0.9, 1.0, 1.0],
                            "final/pass@1": [0.9, 1.0, 1.0], "base/pass@1": [0.9, 1.0, 1.0]})
    stats = method_stats(summary, ("summary/final_accuracy", "summary/entropy_drop")).set_index("metric")
    assert stats.loc["summary/final_accuracy", "ci_high"] == 1.0
    assert stats.loc["summary/entropy_drop", "ci_high"] > 1.0  # not a share: not clipped
    assert (pass_at_k_curves(summary.assign(experiment="x"))["ci_high"] <= 1.0).all()


def test_the_target_legend_names_the_targets_as_set():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from entropic_tune.report.plots import draw_target

    labels = []
    for targets in ([0.06], [0.06, 0.06007, 0.06], [0.04, 0.05, 0.06, 0.07, 0.08]):
        fig, ax = plt.subplots()
        frame = pd.DataFrame({"target_entropy": targets + [0.06], "method": ["entropic"] * len(targets) + ["grpo"]})
        draw_target(ax, frame)  # grpo has no target: no line of its own
        labels.append([x for x in ax.get_legend_handles_labels()[1] if "±" not in x])
        plt.close(fig)
    assert labels == [["entropic target 0.06"], ["entropic target 0.06", "entropic target 0.06007"],
                      ["5 targets of entropic, 0.04 to 0.08"]]
