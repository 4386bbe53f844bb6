"""Curves over rollout steps per method: entropy, EntroPIC controller signals, reward and accuracy.

Figures are built with the object-oriented API on an Agg canvas (no pyplot, no global state), so
they can be saved from any thread and shown in a notebook (with ``%matplotlib inline``). Every
function takes an ``Experiment`` and an optional ``path``; it returns the ``Figure`` and, given a
path, also writes a PNG there. One fixed colour per method (``names.METHOD_COLOURS``); lines are
means over seeds with the min-max over seeds shaded; only TERMINATED trials are drawn.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..config import ControllerConfig
from ..results.files import atomic_path
from .loading import Experiment
from .names import (
    ALPHA,
    ENTROPY,
    ERROR,
    EVAL_ACCURACY,
    INTEGRAL,
    METHOD_COLOURS,
    REWARD_MEAN,
    SETTLE_BAND,
    TARGETED,
    method_colour,
)
from .wording import exact

LINESTYLES = ("-", "--", ":", "-.")
SPREAD_NOTE = "line: mean over seeds; shaded: min-max over seeds"
DPI = 120


def new_figure(
    nrows: int = 1,
    ncols: int = 1,
    size: tuple[float, float] = (8.0, 4.8),
    sharex: bool = False,
    integer_x: bool = False,
) -> tuple[Figure, np.ndarray]:
    """A constrained-layout Figure on an Agg canvas and its 2-D array of axes."""
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, sharex=sharex, squeeze=False)
    for ax in axes.flat:
        ax.grid(True, alpha=0.3)
        if integer_x:  # rollout steps
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig, axes


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG (creating the folder) and return the path. Atomically: an interrupted
    report leaves the previous figure, never a cut one (:func:`entropic_tune.results.files.atomic_path`)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")
    return path


def finish_figure(fig: Figure, path: str | Path | None) -> Figure:
    """Save ``fig`` to ``path`` when one is given; return ``fig``."""
    if path is not None:
        save_figure(fig, path)
    return fig


def method_order(methods: Sequence[str]) -> list[str]:
    """The known methods in their canonical order, then any others alphabetically."""
    known = [m for m in METHOD_COLOURS if m in set(methods)]
    return known + sorted(set(methods) - set(known))


def _subgroups(history: pd.DataFrame) -> list[str]:
    """Columns that split a method's runs into separate curves: experiment, ablation variant."""
    cols = ["experiment"] if "experiment" in history and history["experiment"].nunique() > 1 else []
    if "factor" in history and history["factor"].notna().any():
        cols += ["factor", "variant"]
    return cols


def _groups(history: pd.DataFrame) -> Iterator[tuple[str, str, str, pd.DataFrame]]:
    """(label, colour, linestyle, rows) per method; within a method one line style per experiment
    (several loaded) or per ablation variant. The colour always says the method."""
    cols = _subgroups(history)
    subs = list(dict.fromkeys(history[cols].itertuples(index=False, name=None))) if cols else [()]
    for method in method_order(history["method"].dropna().unique().tolist()):
        for i, sub in enumerate(subs):
            mask = history["method"] == method
            for col, value in zip(cols, sub, strict=True):
                mask &= history[col] == value
            if not mask.any():
                continue
            parts = dict(zip(cols, sub, strict=True))
            if "factor" in parts:
                parts["factor"] = f"{parts['factor']}={parts.pop('variant')}"
            label = f"{method} ({', '.join(map(str, parts.values()))})" if parts else method
            yield label, method_colour(method), LINESTYLES[i % len(LINESTYLES)], history[mask]


def draw_band(
    ax: Axes,
    rows: pd.DataFrame,
    metric: str,
    label: str,
    colour: str,
    style: str,
    steps: bool = False,
) -> None:
    """Mean over trials as a line, min-max over trials shaded."""
    if metric not in rows or rows[metric].notna().sum() == 0:
        return
    table = rows.pivot_table(
        index="step",
        columns=["experiment", "trial_id"],
        values=metric,
        aggfunc="mean",
        dropna=False,
    ).sort_index()
    x = table.index.to_numpy(dtype=float)
    mean = table.mean(axis=1).to_numpy()
    where = "post" if steps else None
    ax.plot(
        x,
        mean,
        color=colour,
        linestyle=style,
        linewidth=2,
        drawstyle="steps-post" if steps else "default",
        label=f"{label} (n={table.shape[1]})",
    )
    if steps:
        # Markers where the held value changes: the evaluation steps.
        changed = np.r_[True, np.abs(np.diff(mean)) > 1e-12]
        ax.plot(x[changed], mean[changed], "o", color=colour, markersize=4)
    if table.shape[1] > 1:
        ax.fill_between(
            x,
            table.min(axis=1).to_numpy(),
            table.max(axis=1).to_numpy(),
            color=colour,
            alpha=0.18,
            linewidth=0,
            step=where,
        )


def curves(exp: Experiment, metrics: Sequence[str]) -> pd.DataFrame:
    """History rows of the completed trials, with an ablation's ``factor``/``variant`` joined from
    summary.csv (a run shared by several factors appears once per factor); a ValueError names a
    missing metric column."""
    history = exp.completed_history
    missing = [m for m in metrics if m not in history]
    if history.empty or missing:
        what = f"column(s) {', '.join(missing)}" if missing else "completed trials"
        raise ValueError(f"{exp.path}: history.csv has no {what} to plot")
    extra = [c for c in ("factor", "variant") if c in exp.summary and c not in history]
    if extra:  # ablation variants live in summary.csv only
        keys = exp.completed[["experiment", "trial_id", *extra]]
        history = history.merge(keys, on=["experiment", "trial_id"], how="left")
    return history


def draw_target(ax: Axes, summary: pd.DataFrame) -> None:
    """Each entropy target as a dashed line in its method's colour, labelled with the method: only
    methods with a target (``names.TARGETED``) have one, so no line belongs to no method. More than
    three (method, target) pairs (a lock over targets) are drawn thin and grey, labelled once."""
    if "target_entropy" not in summary:
        return
    rows = summary if "method" not in summary else summary[summary["method"].isin(TARGETED)]
    methods = rows["method"] if "method" in rows else pd.Series([""] * len(rows), index=rows.index)
    values = pd.to_numeric(rows["target_entropy"], errors="coerce")
    pairs = sorted({(str(m), float(t)) for m, t in zip(methods, values, strict=True) if np.isfinite(t)})
    few = len(pairs) <= 3
    owners = ", ".join(dict.fromkeys(m for m, _ in pairs))
    targets = sorted({t for _, t in pairs})
    for i, (method, target) in enumerate(pairs):
        if few:
            label = f"{method} target {exact(target)}".strip()
        else:
            label = (f"{len(targets)} targets of {owners}, {exact(targets[0])} to {exact(targets[-1])}"
                     if i == 0 else None)
        ax.axhline(
            target,
            color=method_colour(method) if few and method else ("black" if few else "grey"),
            linestyle="--" if few else ":",
            linewidth=1.2 if few else 0.8,
            label=label,
        )
        if few:
            ax.axhspan(
                target * (1 - SETTLE_BAND),
                target * (1 + SETTLE_BAND),
                color="grey",
                alpha=0.15,
                label=f"target ±{SETTLE_BAND:.0%}" if i == 0 else None,
            )


def draw_alpha_bounds(ax: Axes, exp: Experiment, methods: Sequence[str]) -> str:
    """The controller's output bounds ``controller.alpha_min``/``alpha_max`` of the plotted methods
    (per trial config, else the experiment's base, else the default): a dotted, labelled line for each bound inside
    the range the curves span (a bound far outside would flatten them); returns the bounds as text
    for the panel title, which names them all."""
    done = exp.completed
    base = exp.meta.get("base") if isinstance(exp.meta.get("base"), dict) else {}
    rows = done[done["method"].isin(methods)] if "method" in done else done
    low, high = ax.get_ylim()
    span = high - low
    parts = []
    for bound in ("alpha_min", "alpha_max"):
        column = f"config/controller.{bound}"
        values = set(pd.to_numeric(rows[column], errors="coerce").dropna()) if column in rows else set()
        if not values:  # the experiment's base, else the config's default
            values = {float(base.get(f"controller.{bound}", getattr(ControllerConfig(), bound)))}
        for value in sorted(values):
            parts.append(f"{bound} {exact(value)}")
            if low - 0.5 * span <= value <= high + 0.5 * span:
                ax.axhline(value, color="dimgrey", linestyle=":", linewidth=1.0,
                           label=f"{bound} {exact(value)} (alpha's bound)")
    return ", ".join(parts)


def plot_entropy(exp: Experiment, path: str | Path | None = None) -> Figure:
    """Entropy vs rollout step per method, with the target line and its ±10% band."""
    history = curves(exp, (ENTROPY,))
    fig, axes = new_figure(size=(8.5, 5.0), integer_x=True)
    ax = axes[0, 0]
    for label, colour, style, rows in _groups(history):
        draw_band(ax, rows, ENTROPY, label, colour, style)
    draw_target(ax, exp.completed)
    ax.set(xlabel="rollout step", ylabel="entropy (nats/token)", ylim=(0, None))
    ax.set_title(f"Policy entropy per method\n({SPREAD_NOTE})")
    ax.legend(fontsize=8, loc="best")
    return finish_figure(fig, path)


def plot_control(
    exp: Experiment,
    path: str | Path | None = None,
    methods: Sequence[str] = ("entropic", "entropic_p"),
) -> Figure:
    """EntroPIC's controller: alpha, error and integral vs step (3 panels)."""
    history = curves(exp, (ALPHA, ERROR, INTEGRAL))
    history = history[history["method"].isin(methods)]
    if history.empty:
        raise ValueError(
            f"{exp.path}: no completed {' or '.join(methods)} trial to plot controller signals"
        )
    fig, axes = new_figure(3, 1, size=(8.5, 8.0), sharex=True, integer_x=True)
    panels = (
        (ALPHA, "alpha (loss coefficient)"),
        (ERROR, "error H - H_target\n(nats/token)"),
        (INTEGRAL, "integral of error\n(nats/token x steps)"),
    )
    for ax, (metric, ylabel) in zip(axes[:, 0], panels, strict=True):
        for label, colour, style, rows in _groups(history):
            draw_band(ax, rows, metric, label, colour, style)
        ax.axhline(0.0, color="black", linewidth=0.8)
        bounds = draw_alpha_bounds(ax, exp, methods) if metric == ALPHA else ""
        ax.set_ylabel(ylabel)
        ax.set_title(f"{metric}" + (f" (bounds: {bounds})" if bounds else ""), fontsize=10, loc="left")
    axes[-1, 0].set_xlabel("rollout step")
    axes[0, 0].legend(fontsize=8, loc="best")
    fig.suptitle(f"EntroPIC PI controller signals ({SPREAD_NOTE})")
    return finish_figure(fig, path)


def plot_reward_accuracy(exp: Experiment, path: str | Path | None = None) -> Figure:
    """Training reward and held-out accuracy vs step (accuracy drawn as a step function)."""
    history = curves(exp, (REWARD_MEAN,))
    fig, axes = new_figure(2, 1, size=(8.5, 7.0), sharex=True, integer_x=True)
    for label, colour, style, rows in _groups(history):
        draw_band(axes[0, 0], rows, REWARD_MEAN, label, colour, style)
        draw_band(axes[1, 0], rows, EVAL_ACCURACY, label, colour, style, steps=True)
    axes[0, 0].set(ylabel="mean rollout reward (0-1)", title=f"{REWARD_MEAN} (training batches)")
    axes[1, 0].set(
        ylabel="eval accuracy (fraction correct)",
        xlabel="rollout step",
        title=f"{EVAL_ACCURACY} (held-out set; dots: evaluations, value held in between)",
    )
    axes[0, 0].legend(fontsize=8, loc="best")
    fig.suptitle(f"Reward and accuracy per method ({SPREAD_NOTE})")
    return finish_figure(fig, path)
