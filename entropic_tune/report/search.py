"""Optuna searches: the study as a table, optimisation history, importances, Kp x Ki map, Pareto front.

Optuna is imported lazily (only these functions need it). Its matplotlib helpers draw through
pyplot and change the style sheet, so each call runs inside ``rc_context`` and its figure is
released from pyplot straight away (the returned ``Figure`` stays usable).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib import rc_context
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from ..errors import UserError
from .loading import Experiment
from .plots import finish_figure, new_figure

KP, KI = "controller.kp", "controller.ki"


def search_objectives(exp: Experiment) -> list[tuple[str, str]]:
    """``[(metric, "max"|"min"), ...]`` of the search (``experiment.yaml`` ``metrics``/``modes``)."""
    metrics = list(exp.meta.get("metrics") or ["objective"])
    modes = list(exp.meta.get("modes") or ["max"] * len(metrics))
    # Accept Optuna's spelling too ("maximize"/"minimize").
    modes = ["min" if str(m).lower().startswith("min") else "max" for m in modes]
    return list(zip(metrics, modes, strict=False))


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[Any]:
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            with rc_context():
                yield optuna
    finally:
        optuna.logging.set_verbosity(verbosity)


def study_path(exp: Experiment) -> Path:
    return exp.path / str(exp.meta.get("storage") or "optuna.db")


def study_problem(exp: Experiment) -> str | None:
    """Why the search's Optuna store cannot be read (absent, damaged), or None when it can."""
    from ..results.check import study_problem as problem

    path = study_path(exp)
    if not path.is_file():
        return f"{exp.path}: no {path.name}"
    return problem(path)


def load_study(exp: Experiment) -> Any:
    """The search's Optuna study from ``optuna.db`` (read only; ``ValueError`` when absent)."""
    path = study_path(exp)
    if not path.is_file():
        raise UserError(f"{exp.path}: no Optuna storage {path.name} (not a search folder?)")
    with _quiet_optuna() as optuna:
        return optuna.load_study(
            study_name=exp.meta.get("study_name"), storage=f"sqlite:///{path.resolve()}"
        )


def search_trials(exp: Experiment) -> pd.DataFrame:
    """One row per Optuna trial: number, trial_id (Ray), state, parameters, objective value(s)."""
    study = load_study(exp)
    names = [m for m, _ in search_objectives(exp)]
    rows = []
    for t in study.trials:
        values = t.values or [math.nan] * len(study.directions)
        rows.append(
            {
                "number": t.number,
                "trial_id": t.user_attrs.get("trial_id", ""),
                "state": t.state.name,
                **t.params,
                **{
                    names[i] if i < len(names) else f"objective_{i}": v
                    for i, v in enumerate(values)
                },
            }
        )
    return pd.DataFrame(rows)


def best_trials(exp: Experiment, top: int = 5) -> pd.DataFrame:
    """Completed trials ordered by the first objective (the Pareto set first for two objectives)."""
    trials = search_trials(exp)
    trials = trials[trials["state"] == "COMPLETE"]
    (metric, mode), *rest = search_objectives(exp)
    trials = trials.sort_values(metric, ascending=mode == "min")
    if rest:
        pareto = {t.number for t in load_study(exp).best_trials}
        trials = trials.assign(pareto=trials["number"].isin(pareto))
        trials = trials.sort_values("pareto", ascending=False, kind="stable")
    return trials.head(top).reset_index(drop=True)


def _target(exp: Experiment, objective: int) -> dict[str, Any]:
    metric, mode = search_objectives(exp)[objective]
    kwargs: dict[str, Any] = {"target_name": metric}
    if len(search_objectives(exp)) > 1:
        kwargs["target"] = lambda t: t.values[objective]
    return kwargs


def _adopt(
    ax: Any,
    title: str,
    size: tuple[float, float],
    xlabel: str | None = None,
    ylabel: str | None = None,
) -> Figure:
    """Take an Optuna figure out of pyplot's registry and give it our title, labels and layout."""
    import matplotlib.pyplot as plt

    fig = ax.figure
    plt.close(fig)
    ax.set_title("", loc="left")
    ax.set_title(title)
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    if ax.get_legend() is not None:
        ax.legend(loc="best", fontsize=8)
    fig.set_size_inches(*size)
    fig.set_layout_engine("constrained")
    return fig


def plot_optimization_history(
    exp: Experiment, path: str | Path | None = None, objective: int = 0
) -> Figure:
    """Objective value per trial and the best so far (Optuna's matplotlib helper)."""
    metric, mode = search_objectives(exp)[objective]
    study = load_study(exp)
    with _quiet_optuna() as optuna:
        ax = optuna.visualization.matplotlib.plot_optimization_history(
            study, **_target(exp, objective)
        )
        fig = _adopt(
            ax,
            f"Optuna optimisation history\n{metric} ({mode}imise; failed trials omitted)",
            (8.5, 4.8),
            "trial number",
            f"{metric} (objective)",
        )
        return finish_figure(fig, path)


def plot_param_importances(
    exp: Experiment, path: str | Path | None = None, objective: int = 0
) -> Figure:
    """Importance of each searched parameter for one objective (Optuna's default PED-ANOVA;
    fANOVA would need scikit-learn)."""
    metric, mode = search_objectives(exp)[objective]
    study = load_study(exp)
    with _quiet_optuna() as optuna:
        kwargs = _target(exp, objective)
        if "target" in kwargs:
            # PED-ANOVA ranks by what gives *low* target values: negate a maximised objective.
            sign = -1.0 if mode == "max" else 1.0
            kwargs["target"] = lambda t: sign * t.values[objective]
            warnings.filterwarnings("ignore", message="PedAnovaImportanceEvaluator computes")
        ax = optuna.visualization.matplotlib.plot_param_importances(study, **kwargs)
        fig = _adopt(
            ax,
            f"Parameter importances (Optuna PED-ANOVA)\nfor {metric} ({mode}imise)",
            (8.5, 4.0),
            "importance for reaching the best trials (normalised, sums to 1)",
            "parameter",
        )
        return finish_figure(fig, path)


def plot_pareto_front(exp: Experiment, path: str | Path | None = None) -> Figure:
    """The Pareto front of a two-objective study (Optuna's helper)."""
    goals = search_objectives(exp)
    study = load_study(exp)
    if len(study.directions) < 2:
        raise ValueError(f"{exp.path}: the study has one objective; no Pareto front")
    with _quiet_optuna() as optuna:
        ax = optuna.visualization.matplotlib.plot_pareto_front(
            study, target_names=[m for m, _ in goals[:2]]
        )
        (m0, d0), (m1, d1) = goals[:2]
        fig = _adopt(
            ax,
            "Pareto front of the two search objectives\n(red: Pareto-optimal trials)",
            (8.5, 5.5),
            f"{m0} ({d0}imise)",
            f"{m1} ({d1}imise)",
        )
        return finish_figure(fig, path)


def _plain(value: float, _pos: int = 0) -> str:
    return f"{value:g}"


def _log_axis(ax: Any, axis: Any, values: pd.Series) -> None:
    """Log scale (symlog when a value is <= 0) with plain numbers; minor labels on short ranges."""
    positive = values[values > 0].astype(float)
    set_scale = ax.set_xscale if axis is ax.xaxis else ax.set_yscale
    if len(positive) == len(values):
        set_scale("log")
    else:
        set_scale("symlog", linthresh=float(positive.min()) if len(positive) else 1.0)
    axis.set_major_formatter(FuncFormatter(_plain))
    short = len(positive) and positive.max() / positive.min() < 30
    axis.set_minor_formatter(
        FuncFormatter(lambda v, _p: _plain(v) if short and f"{v:.0e}"[0] in "25" else "")
    )


def plot_kp_ki_map(exp: Experiment, path: str | Path | None = None, objective: int = 0) -> Figure:
    """Each completed trial at (Kp, Ki) on log axes, coloured by the objective; the best is starred."""
    metric, mode = search_objectives(exp)[objective]
    trials = search_trials(exp)
    if KP not in trials or KI not in trials:
        raise ValueError(f"{exp.path}: the study has no {KP}/{KI} parameters for a Kp x Ki map")
    trials = trials[(trials["state"] == "COMPLETE") & trials[[KP, KI, metric]].notna().all(axis=1)]
    if trials.empty:
        raise ValueError(f"{exp.path}: no completed trial with {KP}, {KI} and {metric}")
    fig, axes = new_figure(size=(8.0, 6.0))
    ax = axes[0, 0]
    values = trials[metric].astype(float)
    norm = LogNorm() if metric.endswith("rmse") and (values > 0).all() else Normalize()
    points = ax.scatter(
        trials[KP],
        trials[KI],
        c=values,
        cmap="viridis",
        norm=norm,
        s=90,
        edgecolors="black",
        linewidths=0.6,
        zorder=3,
    )
    best = trials.loc[values.idxmax() if mode == "max" else values.idxmin()]
    ax.scatter(
        [best[KP]],
        [best[KI]],
        marker="*",
        s=420,
        facecolors="none",
        edgecolors="red",
        linewidths=1.8,
        zorder=4,
        label=f"best: trial {best['number']} ({metric} = {best[metric]:.3g})",
    )
    for _, t in trials.iterrows():
        ax.annotate(
            str(t["number"]), (t[KP], t[KI]), textcoords="offset points", xytext=(7, 5), fontsize=8
        )
    for axis, values in ((ax.xaxis, trials[KP]), (ax.yaxis, trials[KI])):
        _log_axis(ax, axis, values)
    ax.set(
        xlabel=f"Kp ({KP}, log scale)",
        ylabel=f"Ki ({KI}, log scale)",
        title=f"Kp x Ki map of {metric} ({mode}imise)\nnumbers: Optuna trial; completed trials only",
    )
    bar = fig.colorbar(
        points, ax=ax, label=f"{metric} ({'higher' if mode == 'max' else 'lower'} is better)"
    )
    bar.ax.yaxis.set_major_formatter(FuncFormatter(_plain))
    bar.ax.yaxis.set_minor_formatter(FuncFormatter(_plain))
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    return finish_figure(fig, path)
