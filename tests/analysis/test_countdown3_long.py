"""analysis/countdown3_long.py (RESULTS.md 8, H3): late gains paired per seed, on hand-computed folders."""

from __future__ import annotations

from pathlib import Path

import pytest
from analysis_scripts import load_script  # tests/ is on sys.path (conftest.py)


@pytest.fixture(scope="module")
def long_study():
    return load_script("countdown3_long")


def folder(path: Path, values: dict[tuple[str, int], float]) -> Path:
    path.mkdir(parents=True)
    lines = ["trial_id,method,seed,status,final/pass@1"]
    lines += [f"{m}{s},{m},{s},TERMINATED,{v}" for (m, s), v in values.items()]
    lines.append("x,entropic,9,ERROR,0.99")  # not finished: never paired
    (path / "summary.csv").write_text("\n".join(lines) + "\n")
    return path


def test_gains_are_paired_per_seed_and_against_grpo(long_study, tmp_path, capsys):
    short = folder(tmp_path / "compare", {("grpo", 0): 0.20, ("grpo", 1): 0.30, ("grpo", 5): 0.5,
                                          ("entropic", 0): 0.10, ("entropic", 1): 0.20})
    late = folder(tmp_path / "long", {("grpo", 0): 0.25, ("grpo", 1): 0.31,
                                      ("entropic", 0): 0.20, ("entropic", 1): 0.26})
    frame = long_study.gains(short, late)
    assert len(frame) == 4  # seed 5 ran only 150 steps
    assert frame.loc[("entropic", 1), "gain"] == pytest.approx(0.06)
    rows = {r["method"]: r for r in long_study.rows(frame)}
    # grpo gains 0.05, 0.01 (mean 0.03); entropic 0.10, 0.06 (mean 0.08); differences 0.05, 0.05
    assert rows["grpo"]["gain 150 -> 450 [95% t]"].startswith("+0.030 [")
    assert rows["entropic"]["gain - grpo's gain, paired [95% t]"] == "+0.050 [+0.050, +0.050]"
    assert rows["grpo"]["gain - grpo's gain, paired [95% t]"] == ""
    assert long_study.main([str(short), str(late)]) == 0
    assert "| entropic | 0, 1 |" in capsys.readouterr().out


def test_a_folder_without_a_summary_is_refused(long_study, tmp_path, capsys):
    assert long_study.main([str(tmp_path), str(tmp_path)]) == 2
    assert "no summary.csv" in capsys.readouterr().err
