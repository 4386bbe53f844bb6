"""The two-seed tuning studies' table (RESULTS.md sections 1c and 8), read with the rule fixed before the runs.

    python analysis/tune_study.py RUNS                      # RUNS holds tune2_<method>/ folders (section 1c)
    python analysis/tune_study.py RUNS --prefix cd3_tune_   # the countdown3 studies (section 8)

Per study: the suggestions (trials with the same searched values) and the mean of the objective
(``summary/late_accuracy``) over their seeds; the best and the second best; their paired difference
over the seeds (mean and 95% t-interval); and the rule of RESULTS 1c: the pick is "within noise" of
the second best when the best's margin is within the noise of one suggestion, the pooled seed-to-seed
standard deviation of the study divided by sqrt(number of seeds); and which searched values of the
pick lie at an edge of their range (the outer 5% of it, on the log scale for a log range: section 8's
plan reports such a pick as such and does not move the range). Reads only the results files.
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


EDGE = 0.05
"""A float pick in the outer ``EDGE`` of its range (log-scaled for ``log: true``) is at the range's edge."""


def at_edge(value: float, spec: dict[str, object]) -> str | None:
    """``'low'``/``'high'`` when ``value`` lies in the outer ``EDGE`` of the float range ``spec``, else None."""
    if spec.get("type") != "float" or "low" not in spec or "high" not in spec:
        return None
    scale = math.log if spec.get("log") else (lambda x: x)
    low, high = scale(float(spec["low"])), scale(float(spec["high"]))
    where = (scale(float(value)) - low) / (high - low)
    return "low" if where < EDGE else "high" if where > 1 - EDGE else None


def study_row(folder: Path, prefix: str = "tune2_") -> dict[str, object]:
    specs = yaml.safe_load((folder / "experiment.yaml").read_text())["params"]
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
    edges = [f"{k} at its {e} end" for k, v in zip(keys, best, strict=True) if (e := at_edge(v, specs[k]))]
    return {
        "method": folder.name.removeprefix(prefix),
        "trials": f"{len(frame)} ({len(means)} x {seeds})",
        "best setting": setting,
        "best": f"{best_mean:.3f}",
        "2nd best": f"{second_mean:.3f}",
        "best - 2nd, paired over seeds": f"{t['mean']:+.3f} [{t['ci_low']:+.3f}, {t['ci_high']:+.3f}]",
        "noise of one suggestion": f"{noise:.3f}",
        "margin vs noise": "margin > noise" if margin > noise else "within noise",
        "median of suggestions": f"{means.median():.3f}",
        "pick at a range's edge": "; ".join(edges) or "no",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, help="folder with the <prefix><method>/ studies")
    parser.add_argument("--prefix", default="tune2_", help="the studies' folder prefix (default tune2_)")
    args = parser.parse_args(argv)
    folders = sorted(p for p in args.runs.glob(f"{args.prefix}*") if (p / "summary.csv").is_file())
    if not folders:
        print(f"{args.runs}: no finished {args.prefix}<method>/ study (summary.csv)", file=sys.stderr)
        return 2
    rows = [study_row(f, args.prefix) for f in folders]
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + "---|" * len(rows[0]))
    for row in rows:
        print("| " + " | ".join(str(v) for v in row.values()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
