"""analysis/tune_study.py (RESULTS.md 1c): the pick and the pre-registered rule on hand-computed studies."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from analysis_scripts import load_script  # tests/ is on sys.path (conftest.py)


@pytest.fixture(scope="module")
def tune_study():
    return load_script("tune_study")


def study(folder: Path, values: dict[float, tuple[float, float]], spec: dict | None = None) -> Path:
    """A study of suggestions ``lr -> (objective at seed 0, at seed 1)``, plus one errored trial."""
    folder.mkdir(parents=True)
    (folder / "experiment.yaml").write_text(yaml.safe_dump({"params": {"optim.lr": spec or {"type": "float"}}}))
    lines = ["trial_id,seed,status,config/optim.lr,summary/late_accuracy"]
    for i, (lr, pair) in enumerate(values.items()):
        lines += [f"t{i}s{seed},{seed},TERMINATED,{lr},{v}" for seed, v in enumerate(pair)]
    lines.append("bad,0,ERROR,0.5,0.99")  # not TERMINATED: never the pick
    (folder / "summary.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_a_margin_within_one_suggestions_noise_is_not_resolved(tune_study, tmp_path):
    row = tune_study.study_row(study(tmp_path / "tune2_grpo", {1e-4: (0.80, 0.70), 2e-4: (0.72, 0.74),
                                                             3e-4: (0.5, 0.5)}))
    # seed-to-seed variances 0.005, 0.0002, 0 -> pooled sd sqrt(0.0052 / 3), over sqrt(2) seeds
    noise = math.sqrt(0.0052 / 3) / math.sqrt(2)
    assert row["method"] == "grpo" and row["best setting"] == "optim.lr 0.0001"
    assert row["best"] == "0.750" and row["2nd best"] == "0.730" and row["noise of one suggestion"] == f"{noise:.3f}"
    assert row["best - 2nd, paired over seeds"].startswith("+0.020 [")  # (0.08 - 0.04) / 2
    assert row["margin vs noise"] == "within noise" and row["trials"] == "6 (3 x 2)"


def test_a_margin_above_the_noise_is_resolved(tune_study, tmp_path):
    row = tune_study.study_row(study(tmp_path / "tune2_nsr", {1e-4: (0.80, 0.81), 2e-4: (0.70, 0.71)}))
    assert row["best setting"] == "optim.lr 0.0001" and row["margin vs noise"] == "margin > noise"


def test_a_pick_in_the_outer_5_percent_of_its_log_range_is_reported_at_that_edge(tune_study, tmp_path, capsys):
    spec = {"type": "float", "low": 1e-5, "high": 1e-3, "log": True}  # 2 decades: 5% is a factor 10**0.1
    low = study(tmp_path / "cd3_tune_grpo", {1.2e-5: (0.8, 0.8), 1e-4: (0.7, 0.7)}, spec)
    assert tune_study.study_row(low, "cd3_tune_")["pick at a range's edge"] == "optim.lr at its low end"
    inside = study(tmp_path / "cd3_tune_nsr", {1.3e-5: (0.8, 0.8), 9.5e-4: (0.7, 0.7)}, spec)  # 10**0.114 > 10**0.1
    row = tune_study.study_row(inside, "cd3_tune_")
    assert row["method"] == "nsr" and row["pick at a range's edge"] == "no"
    assert tune_study.at_edge(9.5e-4, spec) == "high" and tune_study.at_edge(0.5, {"type": "float", "low": 0, "high": 1}) is None
    assert tune_study.main([str(tmp_path), "--prefix", "cd3_tune_"]) == 0
    assert "| grpo |" in capsys.readouterr().out


def test_the_command_refuses_a_folder_without_studies(tune_study, tmp_path, capsys):
    assert tune_study.main([str(tmp_path)]) == 2
    assert "no finished tune2_<method>/ study" in capsys.readouterr().err
