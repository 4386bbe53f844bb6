"""Plain-language findings computed from the numbers (never hand-written claims).

Each function returns sentences; ``findings(exp)`` gathers them for the report and the notebooks.
"""

from __future__ import annotations

import math

import pandas as pd

from .loading import Experiment, errored_trials
from .names import (
    ENTROPY,
    SETTLE_BAND,
    SETTLE_STEP,
    STEP,
    TARGETED,
    TRACKING_RMSE,
    TRACKING_RMSE_DENOISED,
)
from .stats import (
    FINAL_PASS_1,
    SMOOTH_WINDOW,
    accuracy_metric,
    group_columns,
    held_only,
    held_settle_step,
    method_stats,
    rank_methods,
    smoothed_settle_step,
)
from .tables import regime
from .wording import count, every, pronoun

INERT_ON_POLICY = ("clip_higher", "kl_cov")


def _name(key: tuple) -> str:
    return " / ".join(map(str, key))


def _interval(row: pd.Series) -> str:
    if math.isfinite(row["ci_low"]):
        return f"{row['mean']:.3f}, 95% CI [{row['ci_low']:.3f}, {row['ci_high']:.3f}], n={int(row['n'])}"
    return f"{row['mean']:.3f}, n={int(row['n'])}, no interval"


def _trials_sentence(exp: Experiment) -> list[str]:
    # an ablation run reported under several factors is one trial
    runs = exp.summary.drop_duplicates(["experiment", "trial_id"])
    total, bad = len(runs), errored_trials(runs)
    if bad.empty:
        return [
            f"All {total} trials completed (status TERMINATED)."
            if total != 1
            else "The trial completed."
        ]
    several = exp.summary["experiment"].nunique() > 1
    listed = "; ".join(
        f"{r.experiment + ' / ' if several else ''}{r.method} seed {r.seed}: {r.status}{' - ' + r.error if r.error else ''}"
        for r in bad.itertuples()
    )
    verb = "is" if len(bad) == 1 else "are"
    return [
        f"{total - len(bad)} of {total} trials completed; {len(bad)} did not and {verb} excluded "
        f"from every statistic ({listed})."
    ]


def _trial_rows(hist: pd.DataFrame, trial) -> pd.DataFrame:
    return hist[(hist["experiment"] == trial.experiment) & (hist["trial_id"] == trial.trial_id)]


def _smoothed_sentence(group: pd.DataFrame, hist: pd.DataFrame) -> str:
    """How many runs' trailing-mean entropy settled (``stats.smoothed_settle_step``), and when."""
    settle = pd.Series(
        [smoothed_settle_step(_trial_rows(hist, t), t.target_entropy) for t in group.itertuples()],
        index=group.index,
        dtype=float,
    )
    steps = held_only(settle, pd.to_numeric(group.get("steps"), errors="coerce")).dropna()
    what = f"; its {SMOOTH_WINDOW}-step trailing mean"
    if steps.empty:
        return f"{what} did not settle within {SETTLE_BAND:.0%} and stay there"
    share = every(len(group), "run") if len(steps) == len(group) else f"{len(steps)} of {count(len(group), 'run')}"
    return (
        f"{what} settled within {SETTLE_BAND:.0%} in {share} "
        f"(median step {steps.median():g}, latest {steps.max():g})"
    )


def _tracking(exp: Experiment, by: list[str]) -> list[str]:
    """How well each targeted method held its entropy target."""
    out, done, hist = [], exp.completed, exp.completed_history
    for key, group in done.groupby(by, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        if key[-1] not in TARGETED or "target_entropy" not in group:
            continue
        raw = pd.to_numeric(group.get(SETTLE_STEP), errors="coerce")
        settle = held_settle_step(group)
        late = raw.notna() & settle.isna()
        settled = group[settle.notna()]
        rmse = pd.to_numeric(group.get(TRACKING_RMSE), errors="coerce").mean()
        denoised = (  # absent in folders written before the noise-aware figure existed
            pd.to_numeric(group[TRACKING_RMSE_DENOISED], errors="coerce").mean()
            if TRACKING_RMSE_DENOISED in group
            else float("nan")
        )
        tail = (
            f"; tracking RMSE over the second half {rmse:.1%} of the target"
            if math.isfinite(rmse)
            else ""
        )
        if tail and math.isfinite(denoised):
            tail += f" ({denoised:.1%} with the measurement noise removed)"
        n_late = int(late.sum())
        note = (f" ({count(n_late, 'run')} only entered the band in {pronoun(n_late)} last steps)"
                if n_late else "")
        tail += _smoothed_sentence(group, hist)
        if settled.empty:
            out.append(
                f"{_name(key)} never stayed within {SETTLE_BAND:.0%} of its target in "
                f"{'its one run' if len(group) == 1 else f'any of its {len(group)} runs'}{note}{tail}."
            )
            continue
        worst = 0.0
        for trial in settled.itertuples():
            rows = _trial_rows(hist, trial)
            after = rows[rows[STEP] >= settle[trial.Index]]
            worst = max(
                worst,
                float(((after[ENTROPY] - trial.target_entropy).abs() / trial.target_entropy).max()),
            )
        steps = settle[settle.notna()]
        if len(settled) == len(group):
            out.append(
                f"{_name(key)} held entropy within {worst:.1%} of the target from step {steps.max():g} "
                f"in {every(len(group), 'run')} "
                f"(median settle step {steps.median():g}){tail}."
            )
        else:
            out.append(
                f"{_name(key)} settled within {SETTLE_BAND:.0%} of the target in only {len(settled)} of "
                f"{len(group)} runs (by step {steps.max():g}, then within {worst:.1%}); the others "
                f"did not{note}{tail}."
            )
    return out


def _entropy_change(exp: Experiment, by: list[str]) -> list[str]:
    hist = exp.completed_history
    if hist.empty or ENTROPY not in hist:
        return []
    ends = (
        hist.sort_values(STEP).groupby(["experiment", "trial_id"])[ENTROPY].agg(["first", "last"])
    )
    keys = list(dict.fromkeys(["experiment", "trial_id", *by]))
    trials = exp.completed[keys].merge(
        ends.reset_index(), on=["experiment", "trial_id"], how="inner"
    )
    parts = []
    for key, g in trials.groupby(by, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        first, last = g["first"].mean(), g["last"].mean()
        change = 1 - last / first if first else math.nan
        verb = (
            f"lost {change:.0%} of its entropy" if change >= 0 else f"gained {-change:.0%} entropy"
        )
        parts.append(
            f"{_name(key)} {verb} ({first:.3g} -> {last:.3g} nats/token, mean of {len(g)})"
        )
    return ["From first to last step, " + "; ".join(parts) + "."] if parts else []


def _best(summary: pd.DataFrame, by: list[str], what: str = "method") -> list[str]:
    ranked = rank_methods(summary, by)
    if ranked.empty or not math.isfinite(ranked["final_accuracy"].iloc[0]):
        return []
    metric = accuracy_metric(summary)
    stats = method_stats(summary, (metric,), by).set_index(by)
    keys = [tuple(r) for r in ranked[by].itertuples(index=False)]
    first = stats.loc[keys[0] if len(by) > 1 else keys[0][0]]
    label = "final accuracy" if metric != FINAL_PASS_1 else "final pass@1 (large evaluation)"
    text = f"Best {what} by {label}: {_name(keys[0])} ({_interval(first)})"
    if len(keys) < 2:
        return [text + "; it is the only one."]
    second = stats.loc[keys[1] if len(by) > 1 else keys[1][0]]
    text += f"; runner-up {_name(keys[1])} ({_interval(second)})."
    if not (math.isfinite(first["ci_low"]) and math.isfinite(second["ci_low"])):
        return [text + " At least one has a single run, so the ranking is anecdotal."]
    overlap = first["ci_low"] <= second["ci_high"] and second["ci_low"] <= first["ci_high"]
    return [
        text
        + (
            " The 95% intervals overlap: the difference is not clear at this number of seeds."
            if overlap
            else " The 95% intervals do not overlap."
        )
    ]


def _ablation(exp: Experiment) -> list[str]:
    done = exp.completed
    if "factor" not in done or done["factor"].isna().all():
        return []
    out = []
    for factor, part in done.groupby("factor", sort=False):
        out += [
            f"Factor {factor}: " + s[0].lower() + s[1:] for s in _best(part, ["variant"], "variant")
        ]
        rmse = method_stats(part, (TRACKING_RMSE,), ["variant"]).sort_values(
            "mean"
        )
        if len(rmse) > 1:
            out.append(
                f"Factor {factor}: lowest tracking RMSE with variant {rmse['variant'].iloc[0]} "
                f"({rmse['mean'].iloc[0]:.3f} vs {rmse['mean'].iloc[-1]:.3f} for "
                f"{rmse['variant'].iloc[-1]})."
            )
    return out


def _regime_note(exp: Experiment) -> list[str]:
    methods = set(exp.summary["method"].dropna())
    inert = sorted(methods & set(INERT_ON_POLICY))
    if inert and regime(exp.meta, exp.summary).startswith("on-policy"):
        return [
            f"The runs are on-policy, where {', '.join(inert)} cannot differ from grpo "
            "(the ratio is exactly 1; METHOD.md section 6)."
        ]
    return []


def findings(exp: Experiment) -> list[str]:
    """Sentences about this experiment, each computed from summary.csv / history.csv."""
    by = group_columns(exp.summary)
    if exp.kind == "ablate" and "factor" in exp.summary:
        by = [c for c in by if c != "method"] + ["factor", "variant", "method"]
    sentences = _trials_sentence(exp) + _regime_note(exp)
    sentences += _tracking(exp, by) + _entropy_change(exp, by)
    sentences += _ablation(exp) if exp.kind == "ablate" else _best(exp.summary, by)
    return sentences
