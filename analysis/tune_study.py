"""RESULTS.md section 1c's table: the two-seed tuning studies, read with the rule fixed before the runs.

    python analysis/tune_study.py RUNS            # RUNS holds tune2_<method>/ folders (summary.csv, experiment.yaml)

Per study: the suggestions (trials with the same searched values) and the mean of the objective
(``summary/late_accuracy``) over their seeds; the best and the second best; their paired difference
over the seeds (mean and 95% t-interval); and the rule of RESULTS 1c: the pick is "within noise" of
the second best when the best's margin is within the noise of one suggestion, the pooled seed-to-seed
standard deviation of the study divided by sqrt(number of seeds). Reads only the results files.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd
import yaml

from entropic_tune.report.paired import paired_t

OBJECTIVE = "summary/late_accuracy"


def suggestions(folder: Path) -> tuple[pd.DataFrame, list[str]]:
    """One row per (suggestion, seed): the searched values, the seed and the objective."""
    meta = yaml.safe_load((folder / "experiment.yaml").read_text())
    keys = list(meta["params"])
    frame = pd.read_csv(folder / "summary.csv")
    frame = frame[frame["status"] == "TERMINATED"]
    cols = [f"config/{k}" for k in keys]
    frame = frame[[*cols, "seed", OBJECTIVE]].rename(columns=dict(zip(cols, keys, strict=True)))
    return frame, keys


def study_row(folder: Path) -> dict[str, object]:
    frame, keys = suggestions(folder)
    groups = frame.groupby(keys, dropna=False)
    means = groups[OBJECTIVE].mean().sort_values(ascending=False)
    seeds = int(groups.size().max())
    within = groups[OBJECTIVE].var(ddof=1).dropna()
    pooled_sd = math.sqrt(within.mean()) if len(within) else float("nan")
    noise = pooled_sd / math.sqrt(seeds)
    (best, best_mean), (second, second_mean) = list(means.items())[:2]
    best, second = (b if isinstance(b, tuple) else (b,) for b in (best, second))
    pick = frame[(frame[keys] == pd.Series(best, index=keys)).all(axis=1)].set_index("seed")[OBJECTIVE]
    runner = frame[(frame[keys] == pd.Series(second, index=keys)).all(axis=1)].set_index("seed")[OBJECTIVE]
    t = paired_t((pick - runner).dropna().tolist())
    margin = best_mean - second_mean
    setting = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in zip(keys, best, strict=True))
    return {
        "method": folder.name.removeprefix("tune2_"),
        "trials": f"{len(frame)} ({len(means)} x {seeds})",
        "best setting": setting,
        "best": f"{best_mean:.3f}",
        "2nd best": f"{second_mean:.3f}",
        "best - 2nd, paired over seeds": f"{t['mean']:+.3f} [{t['ci_low']:+.3f}, {t['ci_high']:+.3f}]",
        "noise of one suggestion": f"{noise:.3f}",
        "margin vs noise": "margin > noise" if margin > noise else "within noise",
        "median of suggestions": f"{means.median():.3f}",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, help="folder with the tune2_<method>/ studies")
    args = parser.parse_args(argv)
    folders = sorted(p for p in args.runs.glob("tune2_*") if (p / "summary.csv").is_file())
    if not folders:
        print(f"{args.runs}: no finished tune2_<method>/ study (summary.csv)", file=sys.stderr)
        return 2
    rows = [study_row(f) for f in folders]
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + "---|" * len(rows[0]))
    for row in rows:
        print("| " + " | ".join(str(v) for v in row.values()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
