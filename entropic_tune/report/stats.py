"""Statistics over seeds: mean, sample std (ddof=1), 95% Student-t interval, and method ranking.

Quantiles come from ``scipy.stats``. Only TERMINATED trials count. Paired comparisons against a
baseline method (Holm correction, power) are in ``report.paired``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import pandas as pd
from scipy import stats as scipy_stats

from .loading import completed
from .names import (
    ENTROPY,
    EVAL_ACCURACY,
    FINAL,
    FINAL_ACCURACY,
    SETTLE_BAND,
    SETTLE_STEP,
    STAT_METRICS,
    STEP,
    TRACKING_RMSE,
)

CONFIDENCE = 0.95
FINAL_PASS_1 = f"{FINAL}/pass@1"
SMOOTH_WINDOW = 10
"""Steps in the trailing mean of ``smoothed_settle_step``."""


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df > 0`` degrees of freedom (``scipy.stats.t.ppf``)."""
    if not 0.0 < p < 1.0 or not df > 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    return float(scipy_stats.t.ppf(p, df))


def describe(
    values: Iterable[float], confidence: float = CONFIDENCE, bounds: tuple[float, float] | None = None
) -> dict[str, float]:
    """``n``, ``mean``, ``std`` (ddof=1) and the two-sided t interval of the finite values.

    ``std`` and the interval are NaN below two values. ``bounds``: the range the quantity can take
    (``(0, 1)`` for an accuracy or a pass@k); the interval is clipped to it, since the t interval of a
    few values near 1 reaches past 1, where no true value can lie.
    """
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(xs)
    mean = sum(xs) / n if n else math.nan
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else math.nan
    half = t_quantile(0.5 + confidence / 2, n - 1) * std / math.sqrt(n) if n > 1 else math.nan
    low, high = mean - half, mean + half
    if bounds is not None and n > 1:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return {"n": n, "mean": mean, "std": std, "ci_low": low, "ci_high": high}


def metric_bounds(metric: str) -> tuple[float, float] | None:
    """``(0, 1)`` for the accuracies and pass@k values (shares of problems solved), else None."""
    name = metric.partition("/")[2]
    return (0.0, 1.0) if name.startswith("pass@") or name.endswith("accuracy") else None


def group_columns(summary: pd.DataFrame) -> list[str]:
    """How trials are grouped: by method, within each experiment when several are loaded."""
    cols = ["method"]
    if "experiment" in summary and summary["experiment"].nunique() > 1:
        cols.insert(0, "experiment")
    return cols


def method_stats(
    summary: pd.DataFrame, metrics: Sequence[str] = STAT_METRICS, by: Sequence[str] | None = None
) -> pd.DataFrame:
    """Long table: one row per group and metric with n, n_trials, mean, std, ci_low, ci_high.

    Only TERMINATED trials count; ``n`` is the number of finite values (e.g. settled runs for
    ``summary/settle_step``), ``n_trials`` the number of completed trials in the group.
    """
    by = list(by) if by is not None else group_columns(summary)
    done = completed(summary)
    rows = []
    for key, group in done.groupby(by, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        for metric in metrics:
            if metric not in group:
                continue
            values = pd.to_numeric(group[metric], errors="coerce")
            rows.append(
                {
                    **dict(zip(by, key, strict=True)),
                    "metric": metric,
                    "n_trials": len(group),
                    **describe(values, bounds=metric_bounds(metric)),
                }
            )
    columns = [*by, "metric", "n_trials", "n", "mean", "std", "ci_low", "ci_high"]
    return pd.DataFrame(rows, columns=columns)


def accuracy_metric(summary: pd.DataFrame) -> str:
    """The accuracy a ranking uses: ``final/pass@1`` (mean@n of the large final evaluation, far less
    noisy than one training evaluation) when any trial has it, else ``summary/final_accuracy``, else
    ``eval/accuracy``."""
    if FINAL_PASS_1 in summary and pd.to_numeric(summary[FINAL_PASS_1], errors="coerce").notna().any():
        return FINAL_PASS_1
    return FINAL_ACCURACY if FINAL_ACCURACY in summary else EVAL_ACCURACY


def rank_methods(summary: pd.DataFrame, by: Sequence[str] | None = None) -> pd.DataFrame:
    """Groups ordered by mean final accuracy (higher first), ties broken by tracking RMSE (lower).

    Final accuracy is :func:`accuracy_metric`: ``final/pass@1`` of the large final evaluation when
    present, else ``summary/final_accuracy`` (or ``eval/accuracy``). Returns the group columns with
    ``rank`` (1 = best), ``final_accuracy``, ``tracking_rmse`` and ``n``.
    """
    by = list(by) if by is not None else group_columns(summary)
    acc_metric = accuracy_metric(summary)
    stats = method_stats(summary, (acc_metric, TRACKING_RMSE), by)
    out = completed(summary).groupby(by, sort=False).size().rename("n").reset_index()
    for metric, name in ((acc_metric, "final_accuracy"), (TRACKING_RMSE, "tracking_rmse")):
        means = stats[stats["metric"] == metric][[*by, "mean"]].rename(columns={"mean": name})
        out = out.merge(means, on=by, how="left") if len(means) else out.assign(**{name: math.nan})
    # Rounding makes accuracies that differ only by float noise count as ties.
    out["_acc"] = out["final_accuracy"].round(12)
    out = out.sort_values(["_acc", "tracking_rmse"], ascending=[False, True], na_position="last")
    out.insert(0, "rank", range(1, len(out) + 1))
    return out.drop(columns="_acc").reset_index(drop=True)


def held_settle_step(summary: pd.DataFrame) -> pd.Series:
    """``summary/settle_step`` of the runs that then stayed in the band for at least max(5, 10% of
    their steps); NaN for the others. Entering the band in a run's last few steps is not holding a
    target (the metric itself, METHOD.md section 5, only asks that the last point be inside)."""
    settle = pd.to_numeric(summary.get(SETTLE_STEP), errors="coerce")
    return held_only(settle, pd.to_numeric(summary.get("steps"), errors="coerce"))


def held_only(settle: pd.Series, steps: pd.Series) -> pd.Series:
    """``settle`` with NaN where the run then stayed in the band for fewer than max(5, 10% of its
    ``steps``) steps (settle steps and run lengths aligned by index)."""
    late = settle.notna() & (steps - settle + 1 < (0.1 * steps).clip(lower=5))
    return settle.mask(late)


def smoothed_settle_step(
    history: pd.DataFrame, target: float, window: int = SMOOTH_WINDOW, band: float = SETTLE_BAND
) -> float:
    """First step after which the ``window``-step trailing mean of ``actor/entropy`` stays within
    ``band`` (relative) of ``target`` to the end of the run; NaN if its last point is outside.

    ``history`` holds one trial's rows (``step``, ``actor/entropy``). ``summary/settle_step`` asks the
    same of the raw per-step entropy, whose batch noise (~12% relative at 128 responses, RESULTS.md)
    can exceed the 10% band even when the controller holds the mean on target; the trailing mean
    lags by about ``window / 2`` steps, so this settle step errs late. The first ``window - 1`` steps
    (no full window yet) count as outside the band.
    """
    if window < 1:
        raise ValueError(f"smoothed_settle_step: window must be >= 1, got {window}")
    rows = history.sort_values(STEP)
    mean = pd.to_numeric(rows[ENTROPY], errors="coerce").rolling(window, min_periods=window).mean()
    inside = ((mean - target).abs() / target <= band).to_numpy()
    if len(inside) == 0 or not inside[-1]:
        return math.nan
    outside = (~inside).nonzero()[0]
    first = outside[-1] + 1 if len(outside) else 0
    return float(rows[STEP].iloc[first])
