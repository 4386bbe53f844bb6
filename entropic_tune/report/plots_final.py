"""Per-method summary figures: final accuracy and tracking RMSE with 95% t-intervals, and ablations.

Same conventions as ``plots``: an Agg-canvas Figure per call, one fixed colour per method, only
TERMINATED trials; each seed's value is drawn as a hollow dot next to the mean and its interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .loading import Experiment
from .names import FINAL_ACCURACY, TRACKING_RMSE, method_colour
from .plots import finish_figure, new_figure
from .stats import group_columns, method_stats, rank_methods


def _select(frame: pd.DataFrame, by: Sequence[str], key: tuple) -> pd.DataFrame:
    mask = np.ones(len(frame), dtype=bool)
    for column, value in zip(by, key, strict=True):
        mask &= (frame[column] == value).to_numpy()
    return frame[mask]


def interval_panel(
    ax: Axes,
    summary: pd.DataFrame,
    by: Sequence[str],
    order: Sequence[tuple],
    metric: str,
    ylabel: str,
) -> None:
    """Mean and 95% t-interval per group (error bars), each seed's value as a hollow dot."""
    stats = method_stats(summary, (metric,), by)
    done = summary[summary["status"] == "TERMINATED"] if "status" in summary else summary
    for i, key in enumerate(order):
        colour = method_colour(key[list(by).index("method")] if "method" in by else "")
        if metric in done:
            values = pd.to_numeric(_select(done, by, key)[metric], errors="coerce").dropna()
            offsets = (
                np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else np.zeros(len(values))
            )
            ax.scatter(i + offsets, values, facecolors="none", edgecolors=colour, s=28, zorder=3)
        row = _select(stats, by, key)
        if row.empty or not math.isfinite(float(row["mean"].iloc[0])):
            continue
        mean, lo, hi = (float(row[c].iloc[0]) for c in ("mean", "ci_low", "ci_high"))
        yerr = [[mean - lo], [hi - mean]] if math.isfinite(lo) else None
        ax.errorbar(
            i,
            mean,
            yerr=yerr,
            fmt="o",
            color=colour,
            markersize=8,
            capsize=6,
            elinewidth=2,
            zorder=4,
        )
    many = len(order) > 6
    ax.set_xticks(
        range(len(order)),
        ["\n".join(map(str, k)) for k in order],
        rotation=30 if many else 0,
        ha="right" if many else "center",
    )
    ax.set_xlim(-0.6, len(order) - 0.4)
    ax.set_ylabel(ylabel)


def plot_final_metrics(exp: Experiment, path: str | Path | None = None) -> Figure:
    """Final accuracy and entropy tracking RMSE per method: mean with 95% t-interval, seeds as dots."""
    summary = exp.completed
    if summary.empty:
        raise ValueError(f"{exp.path}: no completed trial to plot")
    by = group_columns(summary)
    order = [tuple(r) for r in rank_methods(summary, by)[by].itertuples(index=False)]
    fig, axes = new_figure(1, 2, size=(11.0, 4.8))
    interval_panel(
        axes[0, 0], summary, by, order, FINAL_ACCURACY, "final accuracy (fraction correct)"
    )
    interval_panel(
        axes[0, 1],
        summary,
        by,
        order,
        TRACKING_RMSE,
        "entropy tracking RMSE\n(relative to target, 2nd half)",
    )
    axes[0, 0].set_title("Final accuracy (ranked, best left)")
    axes[0, 1].set_title("Entropy tracking error (lower is better)")
    fig.suptitle("Per-method results: mean and 95% t-interval over seeds (hollow dots: seeds)")
    return finish_figure(fig, path)


def plot_ablation(exp: Experiment, path: str | Path | None = None) -> Figure:
    """One row per ablation factor: final accuracy and tracking RMSE per variant, with 95% intervals
    (the same y range in every row of a column)."""
    summary = exp.completed
    if not {"factor", "variant"} <= set(summary.columns) or summary["factor"].isna().all():
        raise ValueError(f"{exp.path}: summary.csv has no factor/variant columns (not an ablation)")
    factors = list(dict.fromkeys(summary["factor"].dropna()))
    fig, axes = new_figure(len(factors), 2, size=(11.0, 3.6 * len(factors) + 0.6))
    for row, factor in enumerate(factors):
        part = summary[summary["factor"] == factor]
        by = ["variant", "method"]
        order = list(dict.fromkeys(tuple(r) for r in part[by].itertuples(index=False)))
        interval_panel(
            axes[row, 0], part, by, order, FINAL_ACCURACY, "final accuracy\n(fraction correct)"
        )
        interval_panel(
            axes[row, 1], part, by, order, TRACKING_RMSE, "entropy tracking RMSE\n(relative)"
        )
        for ax in axes[row]:
            ax.set_title(f"factor: {factor}", loc="left", fontsize=10)
            ax.set_xlabel("variant / method")
    for col in range(2):  # one y scale per column, so factors compare at a glance
        lows, highs = zip(*(axes[row, col].get_ylim() for row in range(len(factors))), strict=True)
        for row in range(len(factors)):
            axes[row, col].set_ylim(min(lows), max(highs))
    fig.suptitle("Ablations: mean and 95% t-interval over seeds per variant (hollow dots: seeds)")
    return finish_figure(fig, path)
