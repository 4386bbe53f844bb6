"""Display tables: the experiment setup, the per-method summary (mean ± std [95% CI]) and errors."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from .loading import Experiment
from .names import (
    ENTROPY_DROP,
    EVAL_ACCURACY,
    EVAL_PASS_AT_K,
    FINAL_ACCURACY,
    LATE_ACCURACY,
    SETTLE_STEP,
    TARGETED,
    TRACKING_RMSE,
    TRACKING_RMSE_DENOISED,
)
from .stats import FINAL_PASS_1, group_columns, held_settle_step, method_stats, rank_methods
from .wording import count, exact

TABLE_METRICS: dict[str, str] = {
    FINAL_PASS_1: "final pass@1 (large eval)",
    FINAL_ACCURACY: "final accuracy",
    LATE_ACCURACY: "eval accuracy (mean of last 3)",
    EVAL_ACCURACY: "eval accuracy (last)",
    EVAL_PASS_AT_K: "pass@k (last)",
    TRACKING_RMSE: "entropy tracking RMSE (rel.; methods with a target)",
    TRACKING_RMSE_DENOISED: "tracking RMSE, noise removed (rel.; methods with a target)",
    SETTLE_STEP: "settle step",
    ENTROPY_DROP: "entropy drop",
}
"""Metric -> column title of the summary table, in display order."""


def format_stat(mean: float, std: float, lo: float, hi: float, digits: int = 3) -> str:
    """``0.612 ± 0.031 [0.551, 0.673]``; without std/CI when they are NaN (one value)."""
    if not math.isfinite(mean):
        return "n/a"
    text = f"{mean:.{digits}f}"
    if math.isfinite(std):
        text += f" ± {std:.{digits}f}"
    if math.isfinite(lo) and math.isfinite(hi):
        text += f" [{lo:.{digits}f}, {hi:.{digits}f}]"
    return text


def summary_table(
    summary: pd.DataFrame, by: Sequence[str] | None = None, digits: int = 3
) -> pd.DataFrame:
    """One row per group, ranked; cells ``mean ± std [95% CI]`` over completed seeds.

    The settle-step cell also says how many runs settled (``(k/n settled)``, see ``held_settle_step``).
    """
    by = list(by) if by is not None else group_columns(summary)
    if "method" in summary:  # no tracking error for a method without a target (names.TARGETED)
        summary = summary.assign(**{
            c: pd.to_numeric(summary[c], errors="coerce").where(summary["method"].isin(TARGETED))
            for c in (TRACKING_RMSE, TRACKING_RMSE_DENOISED) if c in summary
        })
    if SETTLE_STEP in summary:  # a run that only entered the band in its last steps has not settled
        summary = summary.assign(**{SETTLE_STEP: held_settle_step(summary)})
    ranked = rank_methods(summary, by)[[*by, "rank", "n"]]
    stats = method_stats(summary, tuple(TABLE_METRICS), by)
    table = ranked.copy()
    for metric, title in TABLE_METRICS.items():
        part = stats[stats["metric"] == metric]
        if part.empty:
            continue
        places = 1 if metric == SETTLE_STEP else digits
        cells = part.apply(
            lambda r, p=places: format_stat(r["mean"], r["std"], r["ci_low"], r["ci_high"], p),
            axis=1,
        )
        if metric == SETTLE_STEP:
            cells = cells + part.apply(lambda r: f" ({r['n']}/{r['n_trials']} settled)", axis=1)
        table = table.merge(part[by].assign(**{title: cells.to_numpy()}), on=by, how="left")
    return table.rename(columns={"n": "completed runs"})


def ablation_table(summary: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """``summary_table`` per ablation factor (ranked within the factor), with a ``factor`` column."""
    parts = [
        summary_table(part, ["variant", "method"], digits).assign(factor=factor)
        for factor, part in summary.dropna(subset=["factor"]).groupby("factor", sort=False)
    ]
    if not parts:
        raise ValueError("summary has no factor/variant rows (not an ablation)")
    table = pd.concat(parts, ignore_index=True)
    return table[["factor", *[c for c in table.columns if c != "factor"]]]


def _base_value(
    meta: dict[str, Any], summary: pd.DataFrame, key: str, column: str | None = None
) -> Any:
    """A config value: ``config/<key>`` when it varies between trials, else ``base``, else ``column``."""
    base = meta.get("base") or {}
    for col in (f"config/{key}", None, column):
        if col is None:
            if key in base:
                return base[key]
            continue
        if col in summary and summary[col].notna().any():
            values = sorted(summary[col].dropna().unique().tolist(), key=str)
            return values[0] if len(values) == 1 else _varies(values)
    return None


def _varies(values: list[Any]) -> str:
    """Configured values that differ between trials, each as it was set (``wording.exact``)."""
    if all(isinstance(v, (int, float)) for v in values) and len(values) > 4:
        return f"varies: {min(values):.3g} to {max(values):.3g} ({len(values)} values)"  # e.g. searched
    return "varies: " + ", ".join(exact(v) if isinstance(v, float) else str(v) for v in values)


def regime(meta: dict[str, Any], summary: pd.DataFrame | None = None) -> str:
    """``on-policy`` (one optimizer step per rollout) or ``off-policy (...)`` from the base config.

    Missing keys count as the config defaults (1 mini-batch, 1 epoch).
    """
    summary = summary if summary is not None else pd.DataFrame()
    mb = _base_value(meta, summary, "optim.mini_batches_per_rollout")
    ep = _base_value(meta, summary, "optim.ppo_epochs")
    if isinstance(mb, str) or isinstance(ep, str):
        return f"varies between trials (mini-batches {mb}, epochs {ep})"
    mb, ep = int(mb or 1), int(ep or 1)
    if mb * ep == 1:
        return "on-policy (1 optimizer step per rollout)"
    return (
        f"off-policy ({count(mb, 'mini-batch', 'mini-batches')} x {count(ep, 'epoch')} = "
        f"{mb * ep} optimizer steps per rollout)"
    )


def _model(meta: dict[str, Any], summary: pd.DataFrame) -> str:
    path = _base_value(meta, summary, "model.path")
    if path:
        return str(path)
    arch = _base_value(meta, summary, "model.arch")
    size = _base_value(meta, summary, "model.hidden_size")
    layers = _base_value(meta, summary, "model.num_layers")
    details = ", ".join(
        p for p in (f"hidden {size}" if size else "", f"{layers} layers" if layers else "") if p
    )
    return f"built-in tiny {arch or 'model'}" + (f" ({details})" if details else "")


def _split(meta: dict[str, Any], v: Any) -> str:
    """Which held-out problems every eval/, base/ and final/ number comes from (``task.split``; a
    folder written before splits existed scored what is now the test split)."""
    split = v("task.split") or "test"
    size, seed = v("task.eval_size"), v("task.eval_seed")
    extra = ", ".join(p for p in (f"{size} problems" if size else "", f"task.eval_seed {seed}" if seed else "") if p)
    return f"{split}" + (f" ({extra})" if extra else "")


def _dataset_config(meta: dict[str, Any]) -> str:
    """``task.dataset_config`` as ``, key value, ...`` (``read_meta`` flattens it into
    ``task.dataset_config.<key>`` entries of the base), or ``''`` when it is empty."""
    prefix = "task.dataset_config."
    items = [f"{k.removeprefix(prefix)} {v}" for k, v in (meta.get("base") or {}).items() if k.startswith(prefix)]
    return "".join(f", {item}" for item in items)


def setup_rows(meta: dict[str, Any], summary: pd.DataFrame) -> dict[str, str]:
    """The setup of one experiment as ordered ``label -> text``."""

    def v(key: str, column: str | None = None) -> Any:
        return _base_value(meta, summary, key, column)

    methods = meta.get("methods") or sorted(summary["method"].dropna().unique())
    seeds = meta.get("seeds")
    if not seeds and "seed" in summary:
        seeds = sorted(summary["seed"].dropna().unique().tolist())
    task = v("task.name")
    rows = {
        "kind": str(meta.get("kind", "train")),
        "task": f"{task}" + (f" ({v('task.path')})" if v("task.path") else "")
        + (f" ({v('task.dataset')}{_dataset_config(meta)})" if task == "reasoning_gym" else "")
        if task
        else "not recorded",
        "held-out split (scored)": _split(meta, v),
        "model": _model(meta, summary),
        "rollout steps": str(
            v("train.total_steps") or (summary["steps"].max() if "steps" in summary else "?")
        ),
        "seeds": ", ".join(map(str, seeds or [])),
        "methods": ", ".join(map(str, methods)),
        "regime": regime(meta, summary),
        "temperature": str(v("rollout.temperature", "temperature")),
        "target entropy (nats/token)": str(v("controller.target_entropy", "target_entropy")),
        "prompts x group size": f"{v('rollout.prompts_per_step')} x {v('rollout.group_size')}",
        "trials (completed / total)": f"{(summary['status'] == 'TERMINATED').sum()} / {len(summary)}",
    }
    if meta.get("kind") == "search":
        modes = meta.get("modes") or []
        rows["search objective(s)"] = ", ".join(
            f"{m} ({d})" for m, d in zip(meta.get("metrics") or [], modes, strict=False)
        )
        rows["search space"] = str(meta.get("space", ""))
    varying = [c.removeprefix("config/") for c in summary.columns if c.startswith("config/")]
    if varying:
        rows["varied between trials"] = ", ".join(varying)
    return rows


def experiment_setup(exp: Experiment) -> pd.DataFrame:
    """Setup table: one row per item, one column per experiment."""
    columns = {}
    for name, meta in exp.metas.items():
        part = exp.summary[exp.summary["experiment"] == name]
        columns[name] = setup_rows(meta, part)
    return pd.DataFrame(columns)
