"""Task selection 2 (docs/TASK_SELECTION_2.md): each candidate's committed runs against the criteria.

    python analysis/task_selection_2.py [results/task_selection_2]

Reads ``<folder>/<candidate>/summary.csv`` (one GRPO trial per seed; ``base/*`` is the same base
model's evaluation in each) and prints, per candidate, the measured figures and pass/fail of the
criteria fixed before the runs: 1 base greedy <= 0.70; 2 base pass@1 in [0.05, 0.40]; 3 base
pass@64 >= 0.80; 4 and 5 the 95% paired t interval over the seeds of GRPO minus base on greedy
accuracy and on pass@1 has lower bound > 0. Criteria 6 (evaluation size) and 7 (cost) are read
from experiment.yaml and history.csv (mean seconds per rollout step).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd
import yaml

from entropic_tune.report.paired import paired_t


def judge(folder: Path) -> dict[str, object]:
    summary = pd.read_csv(folder / "summary.csv")
    summary = summary[summary["status"] == "TERMINATED"].sort_values("seed")
    history = pd.read_csv(folder / "history.csv")
    meta = yaml.safe_load((folder / "experiment.yaml").read_text())
    base = summary.iloc[0]
    assert all(summary[c].nunique() == 1 for c in summary if c.startswith("base/")), "one base model"
    greedy = paired_t((summary["final/accuracy"] - summary["base/accuracy"]).tolist())
    pass1 = paired_t((summary["final/pass@1"] - summary["base/pass@1"]).tolist())
    pass64 = paired_t((summary["final/pass@64"] - summary["base/pass@64"]).tolist())
    row: dict[str, object] = {
        "candidate": folder.name,
        "seeds": len(summary),
        "eval problems": meta["base"]["task.eval_size"],
        "base greedy": base["base/accuracy"],
        "base pass@1": base["base/pass@1"],
        "base pass@64": base["base/pass@64"],
        "GRPO greedy": " ".join(f"{x:.3f}" for x in summary["final/accuracy"]),
        "GRPO pass@1": " ".join(f"{x:.3f}" for x in summary["final/pass@1"]),
        "GRPO pass@64": " ".join(f"{x:.3f}" for x in summary["final/pass@64"]),
        "d greedy [95% CI]": f"{greedy['mean']:+.3f} [{greedy['ci_low']:+.3f}, {greedy['ci_high']:+.3f}]",
        "d pass@1 [95% CI]": f"{pass1['mean']:+.3f} [{pass1['ci_low']:+.3f}, {pass1['ci_high']:+.3f}]",
        "d pass@64 [95% CI]": f"{pass64['mean']:+.3f} [{pass64['ci_low']:+.3f}, {pass64['ci_high']:+.3f}]",
        "s/step": history["perf/step_s"].mean(),
    }
    if "base/distinct_correct" in summary:
        row["distinct correct base -> GRPO"] = (
            f"{base['base/distinct_correct']:.2f} -> "
            + " ".join(f"{x:.2f}" for x in summary["final/distinct_correct"])
        )
    row["1 greedy<=0.70"] = base["base/accuracy"] <= 0.70
    row["2 pass@1 in [.05,.40]"] = 0.05 <= base["base/pass@1"] <= 0.40
    row["3 pass@64>=0.80"] = base["base/pass@64"] >= 0.80
    row["4 greedy up"] = bool(math.isfinite(greedy["ci_low"]) and greedy["ci_low"] > 0)
    row["5 pass@1 up"] = bool(math.isfinite(pass1["ci_low"]) and pass1["ci_low"] > 0)
    row["6 eval>=128"] = int(meta["base"]["task.eval_size"]) >= 128
    return row


def main(argv: list[str]) -> None:
    root = Path(argv[0] if argv else "results/task_selection_2")
    rows = [judge(f) for f in sorted(p.parent for p in root.glob("*/summary.csv"))]
    table = pd.DataFrame(rows).set_index("candidate").T
    pd.set_option("display.width", 200, "display.max_colwidth", 60)
    print(table.to_string())


if __name__ == "__main__":
    main(sys.argv[1:])
