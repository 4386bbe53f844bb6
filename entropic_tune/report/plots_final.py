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
from .names import ALPHA, ENTROPY, FINAL_ACCURACY, TARGETED, TRACKING_RMSE, method_colour
from .plots import SPREAD_NOTE, curves, draw_band, draw_target, finish_figure, new_figure
from .stats import accuracy_metric, group_columns, method_stats, rank_methods
from .wording import count

VARIANT_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
"""Okabe-Ito colours, one per level of an ablation factor."""


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
    colours: Sequence[str] | None = None,
) -> None:
    """Mean and 95% t-interval per group (error bars), each seed's value as a hollow dot.

    Colours: ``colours[i]`` for ``order[i]`` when given, else the group's method colour."""
    stats = method_stats(summary, (metric,), by)
    done = summary[summary["status"] == "TERMINATED"] if "status" in summary else summary
    for i, key in enumerate(order):
        colour = colours[i] if colours else method_colour(
            key[list(by).index("method")] if "method" in by else "")
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
    """Final accuracy (``stats.accuracy_metric``) and entropy tracking RMSE per method: mean with 95%
    t-interval, seeds as dots."""
    summary = exp.completed
    if summary.empty:
        raise ValueError(f"{exp.path}: no completed trial to plot")
    by = group_columns(summary)
    order = [tuple(r) for r in rank_methods(summary, by)[by].itertuples(index=False)]
    fig, axes = new_figure(1, 2, size=(11.0, 4.8))
    metric = accuracy_metric(summary)  # final/pass@1 of the large evaluation when present
    label = "final pass@1 (large evaluation)" if metric != FINAL_ACCURACY else "final accuracy"
    interval_panel(axes[0, 0], summary, by, order, metric, f"{label} (fraction correct)")
    targeted = summary  # no tracking error for a method without a target (names.TARGETED)
    if "method" in summary and TRACKING_RMSE in summary:
        rmse = pd.to_numeric(summary[TRACKING_RMSE], errors="coerce")
        targeted = summary.assign(**{TRACKING_RMSE: rmse.where(summary["method"].isin(TARGETED))})
    interval_panel(
        axes[0, 1],
        targeted,
        by,
        order,
        TRACKING_RMSE,
        "entropy tracking RMSE\n(relative to target, 2nd half)",
    )
    # the metric's name on the first line, what it means on the second: a title no wider than its panel
    axes[0, 0].set_title(f"{metric}\nranked, best left", fontsize=10)
    axes[0, 1].set_title(f"{TRACKING_RMSE}\nmethods with a target; lower is better", fontsize=10)
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


def plot_ablation_factor(exp: Experiment, factor: str, path: str | Path | None = None) -> Figure:
    """One ablation factor, one colour per level in all four panels: entropy and the controller's
    alpha vs step (mean over seeds, min-max shaded; target band), final accuracy and tracking RMSE
    per level (mean, 95% t-interval, seeds as hollow dots)."""
    summary = exp.completed
    if "factor" not in summary or factor not in set(summary["factor"].dropna()):
        known = ", ".join(dict.fromkeys(summary.get("factor", pd.Series(dtype=str)).dropna()))
        raise ValueError(f"{exp.path}: no ablation factor '{factor}' (factors: {known or 'none'})")
    history = curves(exp, (ENTROPY,))
    history = history[history["factor"] == factor]
    part = summary[summary["factor"] == factor]
    by = ["variant", "method"] if part["method"].nunique() > 1 else ["variant"]
    order = list(dict.fromkeys(tuple(r) for r in part[by].itertuples(index=False)))
    colours = [VARIANT_COLOURS[i % len(VARIANT_COLOURS)] for i in range(len(order))]
    fig, axes = new_figure(2, 2, size=(12.0, 8.0))
    for key, colour in zip(order, colours, strict=True):
        rows = history[history["variant"] == key[0]]
        if len(key) > 1:
            rows = rows[rows["method"] == key[1]]
        label = f"{factor}={key[0]}" + (f" ({key[1]})" if len(key) > 1 else "")
        draw_band(axes[0, 0], rows, ENTROPY, label, colour, "-")
        draw_band(axes[0, 1], rows, ALPHA, label, colour, "-")
    draw_target(axes[0, 0], part)
    axes[0, 0].set(xlabel="rollout step", ylabel="entropy (nats/token)", ylim=(0, None))
    axes[0, 0].set_title(f"entropy ({SPREAD_NOTE})", fontsize=10)
    axes[0, 0].legend(fontsize=8, loc="best")
    axes[0, 1].axhline(0.0, color="black", linewidth=0.8)
    axes[0, 1].set(xlabel="rollout step", ylabel="alpha (loss coefficient)")
    axes[0, 1].set_title(f"{ALPHA}: the controller's output", fontsize=10)
    interval_panel(axes[1, 0], part, by, order, FINAL_ACCURACY, "final accuracy (fraction correct)",
                   colours)
    interval_panel(axes[1, 1], part, by, order, TRACKING_RMSE, "entropy tracking RMSE (relative)",
                   colours)
    for ax in axes[1]:
        ax.set_xlabel(factor if len(by) == 1 else f"{factor} / method")
    axes[1, 0].set_title("final held-out accuracy: mean, 95% t-interval, seeds", fontsize=10)
    axes[1, 1].set_title("tracking RMSE over the 2nd half (lower is better)", fontsize=10)
    seeds = part.groupby("variant")["seed"].nunique().min()
    fig.suptitle(f"Ablation of {factor}: {len(order)} levels, {count(int(seeds), 'seed')} each")
    return finish_figure(fig, path)
