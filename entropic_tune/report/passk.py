"""pass@k curves per method against the base model's, and where they cross (RLVR narrowing).

The large evaluation (``entropic_tune.engines.native.evaluation``) gives every trial ``final/pass@k`` for
k = 1, 2, 4, ..., n and ``base/pass@k``, the same evaluation of the base model before step 1. A
curve is the mean over a method's completed seeds with a 95% t interval; the base curve is the mean
over all completed trials (its values are the same in every trial of an experiment, so its interval
has zero width unless the trials did not share their base model). The difference to the base is
paired per trial (``final/pass@k - base/pass@k``). Yue et al. (2025) report that RLVR narrows what
a model can solve: pass@1 rises while pass@k for large k falls below the base model's; the findings
say for each method whether and where its curve crosses the base's.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .loading import Experiment, completed
from .names import BASE, FINAL, method_colour, pass_at_k_columns
from .paired import paired_t
from .plots import LINESTYLES, finish_figure, new_figure
from .stats import describe
from .wording import count

CURVE_COLUMNS = ["experiment", "curve", "k", "n", "mean", "std", "ci_low", "ci_high"]


def pass_at_k_curves(summary: pd.DataFrame) -> pd.DataFrame:
    """Long table, one row per (experiment, curve, k); ``curve`` is a method name or ``"base"``.

    Empty when the summary has no ``final/pass@k`` columns (an older folder or
    ``rollout.final_samples = 0``).
    """
    done = completed(summary)
    final, base = pass_at_k_columns(done.columns, FINAL), pass_at_k_columns(done.columns, BASE)
    rows = []
    for name, part in (
        done.groupby("experiment", sort=False) if "experiment" in done else [("", done)]
    ):
        curves = [("base", part, base)] + [
            (m, g, final) for m, g in part.groupby("method", sort=False)
        ]
        for curve, rows_of, columns in curves:
            for k, column in columns.items():
                stats = describe(pd.to_numeric(rows_of[column], errors="coerce"), bounds=(0.0, 1.0))
                if stats["n"]:
                    rows.append({"experiment": name, "curve": curve, "k": k, **stats})
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def _cell(row: pd.Series, digits: int = 3) -> str:
    text = f"{row['mean']:.{digits}f}"
    if math.isfinite(row["std"]) and row["std"] <= 1e-12 * max(1.0, abs(row["mean"])):
        return text + f" (the same in all {int(row['n'])} trials)"
    if math.isfinite(row["ci_low"]):
        text += f" [{row['ci_low']:.{digits}f}, {row['ci_high']:.{digits}f}]"
    return text + f" (n={int(row['n'])})"


def pass_at_k_table(summary: pd.DataFrame, ks: tuple[int, ...] = (1, 8)) -> pd.DataFrame:
    """Display table: one row per curve (base first), pass@k for ``ks`` and the largest k, each
    ``mean [95% CI] (n=seeds)``."""
    curves = pass_at_k_curves(summary)
    if curves.empty:
        return pd.DataFrame()
    shown = [k for k in dict.fromkeys((*ks, int(curves["k"].max()))) if k in set(curves["k"])]
    several = curves["experiment"].nunique() > 1
    keys = ["experiment", "curve"] if several else ["curve"]
    table = curves[keys].drop_duplicates().reset_index(drop=True)
    for k in shown:
        part = curves[curves["k"] == k]
        cells = part[keys].assign(**{f"pass@{k}": part.apply(_cell, axis=1).to_numpy()})
        table = table.merge(cells, on=keys, how="left")
    return table.rename(columns={"curve": "model"}).fillna("n/a")


def curve_differences(summary: pd.DataFrame) -> pd.DataFrame:
    """Per experiment, method and k: ``final/pass@k - base/pass@k`` paired per trial (t interval)."""
    done = completed(summary)
    final, base = pass_at_k_columns(done.columns, FINAL), pass_at_k_columns(done.columns, BASE)
    rows = []
    for key, part in done.groupby(
        ["experiment", "method"] if "experiment" in done else ["method"], sort=False
    ):
        key = key if isinstance(key, tuple) else ("", key)
        for k in (k for k in final if k in base):
            diff = pd.to_numeric(part[final[k]], errors="coerce") - pd.to_numeric(
                part[base[k]], errors="coerce"
            )
            stats = paired_t(diff.dropna().tolist())
            if stats["n"]:
                rows.append({"experiment": key[0], "method": key[1], "k": k, **stats})
    return pd.DataFrame(
        rows, columns=["experiment", "method", "k", "n", "mean", "sd", "ci_low", "ci_high", "p"]
    )


ZERO = 0.0005
"""A mean difference below this in magnitude prints as +0.000 and is treated as none."""


def _diff_text(row: pd.Series) -> str:
    text = f"pass@{int(row['k'])} {row['mean']:+.3f}"
    if math.isfinite(row["ci_low"]):
        text += f" (95% CI [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}])"
    return text


def _resolved(row: pd.Series) -> bool:
    return math.isfinite(row["ci_low"]) and (row["ci_low"] > 0 or row["ci_high"] < 0)


def crossing_sentences(summary: pd.DataFrame) -> list[str]:
    """For each method, its pass@k against the base's at the smallest and largest k and where the
    mean curves cross."""
    diffs = curve_differences(summary)
    out = []
    for (experiment, method), rows in diffs.groupby(["experiment", "method"], sort=False):
        rows = rows.sort_values("k").reset_index(drop=True)
        first, last = rows.iloc[0], rows.iloc[-1]
        where = f"{experiment} / {method}" if diffs["experiment"].nunique() > 1 else method
        head = (
            f"{where} against the base model over {count(int(last['n']), 'seed')}: {_diff_text(first)}, "
            f"{_diff_text(last)}"
        )
        # A difference that prints as +0.000 (or -0.000) is no difference: it neither makes a curve
        # "fall below" nor counts as "pass@large-k down" (issue 28: arithmetic's pass@64 1.000 = 1.000).
        level = [0 if abs(m) < ZERO else (1 if m > 0 else -1) for m in rows["mean"]]
        signs = [x >= 0 for x in level]
        change = next((i for i in range(1, len(rows)) if signs[i] != signs[0]), None)
        if change is not None and signs[0] and level[-1] == 0:
            text = (
                f"{head}; its mean curve falls below the base's between k = "
                f"{int(rows['k'][change - 1])} and k = {int(rows['k'][change])} and meets it again "
                f"at k = {int(last['k'])} (no difference there at 3 decimals): pass@1 up, pass@large-k "
                "not down."
            )
        elif change is None:
            text = head + (
                "; its curve stays at or above the base's at every k (no narrowing)."
                if signs[0]
                else "; below the base's curve at every k."
            )
        elif signs[0]:
            text = (
                f"{head}; its mean curve falls below the base's between k = "
                f"{int(rows['k'][change - 1])} and k = {int(rows['k'][change])}: pass@1 up, "
                "pass@large-k down, the narrowing Yue et al. (2025) report for RLVR"
            )
            seeds = int(rows["n"].min())
            if seeds < 2:
                text += " (one seed: no interval, not resolved)."
            elif _resolved(first) and _resolved(last):
                text += "."
            else:
                text += f" (not resolved at both ends: an interval includes 0 at {seeds} seeds)."
        else:
            text = (
                f"{head}; below the base's curve at small k, at or above it from k = "
                f"{int(rows['k'][change])}."
            )
        out.append(text)
    return out


def plot_pass_at_k(exp: Experiment, path: str | Path | None = None) -> Figure:
    """Left: pass@k vs k (log2 axis) per method, mean and 95% t band over seeds, with the base
    model's curve (black, dashed). Right: each method minus the base, paired per trial, with its 95%
    band; below zero the method solves fewer problems in k tries than the model it started from."""
    curves = pass_at_k_curves(exp.completed)
    if curves.empty:
        raise ValueError(
            f"{exp.path}: summary.csv has no final/pass@k columns (no large evaluation)"
        )
    diffs = curve_differences(exp.completed)
    several = curves["experiment"].nunique() > 1
    fig, axes = new_figure(1, 2, size=(12.0, 4.8))
    left, right = axes[0, 0], axes[0, 1]
    for (experiment, curve), rows in curves.groupby(["experiment", "curve"], sort=False):
        base = curve == "base"
        colour = "black" if base else method_colour(curve)
        style = LINESTYLES[
            list(dict.fromkeys(curves["experiment"])).index(experiment) % len(LINESTYLES)
        ]
        label = ("base model" if base else curve) + (f" ({experiment})" if several else "")
        # the base curve is one evaluation (the same in every trial), not a mean over seeds
        size = " (one evaluation, the same in every trial)" if base else f" (n={int(rows['n'].max())})"
        _band(left, rows, colour, "--" if base else style, label + size)
    for (experiment, method), rows in diffs.groupby(["experiment", "method"], sort=False):
        label = method + (f" ({experiment})" if several else "")
        _band(right, rows, method_colour(method), "-", label)
    right.axhline(0.0, color="black", linewidth=1.0, linestyle="--")
    ks = sorted(set(curves["k"]))
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_xlabel("k (samples per problem)")
        ax.legend(fontsize=8, loc="best")
    left.set(ylabel="pass@k (held-out)", ylim=(0, 1.02))
    left.set_title("pass@k: mean and 95% t band over seeds", fontsize=10)
    right.set(ylabel="pass@k - base pass@k")
    right.set_title("difference to the base model (paired per trial)", fontsize=10)
    fig.suptitle("Large final evaluation: pass@k per method and of the base model")
    return finish_figure(fig, path)


def _band(ax: Axes, rows: pd.DataFrame, colour: str, style: str, label: str) -> None:
    rows = rows.sort_values("k")
    ax.plot(rows["k"], rows["mean"], style, color=colour, marker="o", markersize=3, label=label)
    lo, hi = rows["ci_low"], rows["ci_high"]
    if lo.notna().all():
        ax.fill_between(rows["k"], lo, hi, color=colour, alpha=0.15, linewidth=0)
