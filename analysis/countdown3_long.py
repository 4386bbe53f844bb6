"""RESULTS.md section 8, H3: does GRPO gain less than EntroPIC from step 150 to step 450?

    python analysis/countdown3_long.py results/countdown3/compare results/countdown3/long

``COMPARE`` is the 150-step comparison (``compare --seeds 9``), ``LONG`` the same space at 450 steps
(``compare --steps 450 --seeds 3``). A trial of the long run is the 150-step trial of the same method
and seed continued (the rate is constant and nothing else reads ``train.total_steps`` before step
150), so its late gain is paired per seed:

    gain_m(s) = final/pass@1 of LONG (method m, seed s) - final/pass@1 of COMPARE (m, s)

and per method the table prints the mean gain with its 95% t interval over the seeds both runs
have, then the difference of gains against GRPO, paired per seed (``gain_m(s) - gain_grpo(s)``).
The plan resolves H3 only by the primary rule on the long run's own ``final/pass@1`` (its report,
Holm over 2 comparisons); this table is its interval, as the plan says. Reads only results files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from entropic_tune.report.paired import paired_t

METRIC = "final/pass@1"
REFERENCE = "grpo"


def finals(folder: Path) -> pd.Series:
    """``final/pass@1`` of each finished trial, indexed by (method, seed)."""
    summary = pd.read_csv(folder / "summary.csv")
    summary = summary[summary["status"] == "TERMINATED"]
    return summary.set_index(["method", "seed"])[METRIC].astype(float)


def gains(compare: Path, long: Path) -> pd.DataFrame:
    """One row per (method, seed) in both folders: the 150-step and 450-step pass@1 and the gain."""
    short, late = finals(compare), finals(long)
    both = short.index.intersection(late.index)
    frame = pd.DataFrame({"at 150": short[both], "at 450": late[both]})
    frame["gain"] = frame["at 450"] - frame["at 150"]
    return frame.sort_index()


def rows(frame: pd.DataFrame) -> list[dict[str, str]]:
    def interval(t: dict[str, float]) -> str:
        return f"{t['mean']:+.3f} [{t['ci_low']:+.3f}, {t['ci_high']:+.3f}]"

    out = []
    reference = frame.loc[REFERENCE, "gain"] if REFERENCE in frame.index.get_level_values(0) else None
    for method in frame.index.get_level_values(0).unique():
        part = frame.loc[method]
        row = {
            "method": method,
            "seeds": ", ".join(str(s) for s in part.index),
            "pass@1 at 150": f"{part['at 150'].mean():.3f}",
            "pass@1 at 450": f"{part['at 450'].mean():.3f}",
            "gain 150 -> 450 [95% t]": interval(paired_t(part["gain"].tolist())),
            f"gain - {REFERENCE}'s gain, paired [95% t]": "",
        }
        if reference is not None and method != REFERENCE:
            diffs = (part["gain"] - reference).dropna()
            row[f"gain - {REFERENCE}'s gain, paired [95% t]"] = interval(paired_t(diffs.tolist()))
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("compare", type=Path, help="the 150-step comparison's folder")
    parser.add_argument("long", type=Path, help="the 450-step run's folder")
    args = parser.parse_args(argv)
    for folder in (args.compare, args.long):
        if not (folder / "summary.csv").is_file():
            print(f"{folder}: no summary.csv (a finished compare folder is needed)", file=sys.stderr)
            return 2
    frame = gains(args.compare, args.long)
    if frame.empty:
        print(f"{args.compare} and {args.long} share no (method, seed) trial", file=sys.stderr)
        return 2
    table = rows(frame)
    print("| " + " | ".join(table[0]) + " |")
    print("|" + "---|" * len(table[0]))
    for row in table:
        print("| " + " | ".join(row.values()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
