"""RESULTS.md section 2d (issue 12): the autotuned vs the searched gains, as tables.

    python analysis/lock_study.py RUNS        # RUNS = the OUT of `scripts/reproduce_results.sh autotunelock`

Reads the experiment folders that phase writes (``lock_auto``, ``lock_tracking`` and their ``_b512``
twins; ``transfer_<setup>_auto`` / ``_searched``; ``gains/*.yaml``) and prints Markdown: per arm and
target the noise-aware and raw tracking RMSE (second half, relative), the 10-step trailing-mean settle
step (NaN, "never", for a run that then held the band for fewer than max(5, 10%) of its steps) and the mean entropy of the last 50 steps; then the paired differences autotuned - searched of
the noise-aware RMSE with 95% t-intervals and the verdict of the rule fixed before the runs (better:
upper end < 0; no worse: upper end <= +0.02; worse: lower end > 0; else not resolved). Folders not
there yet are skipped, so it also reads a phase that is still running.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import yaml

from entropic_tune import metrics as M
from entropic_tune.report.paired import paired_t
from entropic_tune.report.stats import held_only, smoothed_settle_step

NO_WORSE = 0.02
LOCKS = {128: ("lock_auto", "lock_tracking"), 512: ("lock_auto_b512", "lock_tracking_b512")}
SETUPS = ("on_policy", "lr1e-4", "t0.6")


def find(runs: Path, name: str) -> Path | None:
    """``runs/name``, or ``runs/../name`` (results/: the searched arm at 512 responses is section 2c's
    ``results/lock_tracking_b512``, beside ``results/autotune_lock``)."""
    for folder in (runs / name, runs.parent / name):
        if (folder / "summary.csv").is_file():
            return folder
    return None


def trials(folder: Path) -> pd.DataFrame:
    """One row per finished trial: seed, target and the tracking figures computed from its history."""
    summary = pd.read_csv(folder / "summary.csv")
    history = pd.read_csv(folder / "history.csv")
    rows = []
    for _, trial in summary[summary["status"] == "TERMINATED"].iterrows():
        h = history[history["trial_id"] == trial["trial_id"]].sort_values(M.STEP)
        target = float(trial["target_entropy"])
        entropies = h[M.ENTROPY].tolist()
        stderrs = h[M.ENTROPY_STDERR].tolist() if M.ENTROPY_STDERR in h else None
        rows.append({
            "seed": int(trial["seed"]), "target": target,
            "rmse_denoised": M.entropy_tracking_rmse_denoised(entropies, target, stderrs),
            "rmse": M.entropy_tracking_rmse(entropies, target),
            # a run that enters the band in its last steps does not hold the target (report.stats.held_only)
            "settle": held_only(pd.Series([smoothed_settle_step(h, target)]), pd.Series([len(h)]))[0],
            "last50": float(h[M.ENTROPY].tail(50).mean()),
        })
    return pd.DataFrame(rows)


def _fmt(x: float, digits: int = 3) -> str:
    return "never" if pd.isna(x) else f"{x:.{digits}f}" if digits else f"{x:.0f}"


def arm_table(name: str, frame: pd.DataFrame) -> list[str]:
    lines = []
    for target, g in frame.groupby("target"):
        g = g.sort_values("seed")
        lines.append(
            f"| {name} | {target:g} | {', '.join(_fmt(v, 4) for v in g['last50'])} | "
            f"{g['rmse_denoised'].mean():.3f} +/- {g['rmse_denoised'].std(ddof=1):.3f} | "
            f"{g['rmse'].mean():.3f} | {', '.join(_fmt(v, 0) for v in g['settle'])} |")
    return lines


def verdict(t: dict[str, float]) -> str:
    if t["n"] < 2 or pd.isna(t["ci_high"]):
        return "not resolved (fewer than 2 pairs)"
    if t["ci_high"] < 0:
        return "**better**"
    if t["ci_low"] > 0:
        return "**worse**"
    if t["ci_high"] <= NO_WORSE:
        return "no worse"
    return "not resolved"


def paired_line(label: str, auto: pd.DataFrame, searched: pd.DataFrame) -> str:
    both = auto.merge(searched, on=["seed", "target"], suffixes=("_a", "_s"))
    t = paired_t((both["rmse_denoised_a"] - both["rmse_denoised_s"]).tolist())
    return (f"| {label} | {t['n']} | {both['rmse_denoised_a'].mean():.3f} | {both['rmse_denoised_s'].mean():.3f} | "
            f"{t['mean']:+.3f} [{t['ci_low']:+.3f}, {t['ci_high']:+.3f}] | {verdict(t)} |")


def gains_table(runs: Path) -> list[str]:
    lines = ["| probe | kp | ki | alpha bounds | plant (from the snippet's comments) |", "|---|---|---|---|---|"]
    for path in sorted((runs / "gains").glob("*.yaml")):
        text = path.read_text()
        c = yaml.safe_load(text)["controller"]
        plant = " ".join(line[2:].strip() for line in text.splitlines() if line.startswith("# plant:"))
        lines.append(f"| {path.stem} | {c['kp']:.1f} | {c['ki']:.2f} | [{c['alpha_min']:.2f}, {c['alpha_max']:.2f}] | "
                     f"{plant.removeprefix('plant: ')} |")
    return lines


def main(runs: Path) -> None:
    print("\n".join(gains_table(runs)), end="\n\n")
    head = ("| arm | target | mean entropy, last 50 steps (per seed) | noise-aware RMSE | raw RMSE | "
            "trailing-mean settle step (per seed) |\n|---|---|---|---|---|---|")
    pairs = ["| comparison | pairs | autotuned | searched | autotuned - searched [95% t] | verdict |",
             "|---|---|---|---|---|---|"]
    print(head)
    for batch, (auto_name, searched_name) in LOCKS.items():
        frames = {}
        for name in (auto_name, searched_name):
            if (folder := find(runs, name)) is not None:
                frames[name] = trials(folder)
                print("\n".join(arm_table(f"{name} ({batch})", frames[name])))
        if len(frames) == 2:
            pairs.append(paired_line(f"lock, {batch} responses", frames[auto_name], frames[searched_name]))
    for setup in SETUPS:
        names = [f"transfer_{setup}_auto", f"transfer_{setup}_searched"]
        frames = {n: trials(folder) for n in names if (folder := find(runs, n)) is not None}
        for name, frame in frames.items():
            print("\n".join(arm_table(name, frame)))
        if len(frames) == 2:
            pairs.append(paired_line(f"transfer: {setup}", *frames.values()))
    print()
    print("\n".join(pairs))


if __name__ == "__main__":
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        print("usage: python analysis/lock_study.py RUNS (the OUT folder of reproduce_results.sh autotunelock)",
              file=sys.stderr)
        sys.exit(2)
    main(Path(sys.argv[1]))
