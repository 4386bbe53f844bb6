"""Paired comparisons with a baseline method over common seeds: t intervals, Holm, power, words.

A method's trial of seed s is paired with the baseline's trial of the same seed (same task, model,
data order and, for the large final evaluation, the same evaluation random numbers), so what the two
share cancels in the difference ``d_s = x_method,s - x_baseline,s``. Over the ``n`` common seeds:

- mean ``d`` and sample sd ``s_d``; 95% t interval ``d +- t_{0.975, n-1} s_d / sqrt(n)`` and the
  two-sided paired t test's p-value (``scipy.stats``);
- Holm's step-down correction across the ``m`` methods compared with the baseline on one metric
  (family-wise error 5%): a difference is **resolved** when its Holm-adjusted p-value is below 0.05.
  The corrected interval is Bonferroni's (level ``1 - 0.05/m``): when it excludes 0 the difference
  is resolved (Holm rejects at least as often as Bonferroni, so it may also resolve a difference
  whose conservative interval still touches 0);
- seeds needed: the smallest ``n`` at which the paired two-sided t test at level ``0.05/m`` has 80%
  power if the true difference were the observed one, from the noncentral t
  (``T ~ nct(n - 1, sqrt(n) d / s_d)``). It is a planning figure: the observed effect is itself noisy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from .loading import completed
from .names import FINAL, FINAL_ACCURACY, LATE_ACCURACY, pass_at_k_columns
from .wording import count

ALPHA = 0.05
POWER = 0.8
MAX_SEEDS = 10_000
"""Seeds-needed answers above this are reported as 'more than MAX_SEEDS'."""
COLUMNS = [
    "method",
    "baseline",
    "metric",
    "n",
    "mean_diff",
    "sd_diff",
    "ci_low",
    "ci_high",
    "p",
    "p_holm",
    "corrected_low",
    "corrected_high",
    "resolved",
    "seeds_needed",
]


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values in the input order; NaN entries stay NaN and do not count in ``m``.

    With the finite p-values sorted, ``p_(1) <= ... <= p_(m)``:
    ``adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``.
    """
    values = [float(p) for p in p_values]
    finite = sorted((p, i) for i, p in enumerate(values) if math.isfinite(p))
    out = [math.nan] * len(values)
    running, m = 0.0, len(finite)
    for rank, (p, i) in enumerate(finite):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def paired_t(diffs: Sequence[float], confidence: float = 1 - ALPHA) -> dict[str, float]:
    """``n``, ``mean``, ``sd``, two-sided t interval at ``confidence`` and p-value of mean 0.

    ``sd = 0`` (all differences equal): p is 0 for a nonzero mean (no noise to hide it) and 1 for zero.
    Below two differences the sd, interval and p are NaN.
    """
    d = np.asarray([x for x in diffs if math.isfinite(x)], dtype=float)
    n = len(d)
    mean = float(d.mean()) if n else math.nan
    if n < 2:
        return {
            "n": n,
            "mean": mean,
            "sd": math.nan,
            "ci_low": math.nan,
            "ci_high": math.nan,
            "p": math.nan,
        }
    sd = float(d.std(ddof=1))
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    if sd == 0.0:
        p = 1.0 if mean == 0.0 else 0.0
    else:  # two-sided p of t = mean / (sd / sqrt(n)) with n - 1 degrees of freedom
        p = float(2.0 * scipy_stats.t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1))
    return {"n": n, "mean": mean, "sd": sd, "ci_low": mean - half, "ci_high": mean + half, "p": p}


def t_power(effect: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t test with ``n`` pairs at level ``alpha`` when the true
    standardised difference (mean / sd of the differences) is ``effect``."""
    if n < 2:
        return math.nan
    df = n - 1
    critical = float(scipy_stats.t.ppf(1 - alpha / 2, df))
    nc = effect * math.sqrt(n)
    power = float(scipy_stats.nct.sf(critical, df, nc) + scipy_stats.nct.cdf(-critical, df, nc))
    if not math.isfinite(
        power
    ):  # scipy's nct can fail far in the tail (large nc and df): normal limit
        power = float(scipy_stats.norm.sf(critical - nc) + scipy_stats.norm.cdf(-critical - nc))
    return power


def seeds_needed(
    effect: float, alpha: float = ALPHA, power: float = POWER, max_seeds: int = MAX_SEEDS
) -> float:
    """Smallest ``n >= 2`` with ``t_power(effect, n, alpha) >= power``; ``inf`` for a zero effect or
    when even ``max_seeds`` is not enough; 2 for an infinite effect (differences without spread)."""
    if math.isnan(effect) or effect == 0.0:
        return math.inf
    if math.isinf(effect):
        return 2.0
    hi = 2  # power grows with n: double until it is reached, then bisect for the first n
    while t_power(effect, hi, alpha) < power:
        if hi >= max_seeds:
            return math.inf
        hi = min(2 * hi, max_seeds)
    lo = max(2, hi // 2)
    while lo < hi:
        mid = (lo + hi) // 2
        if t_power(effect, mid, alpha) >= power:
            hi = mid
        else:
            lo = mid + 1
    return float(lo)


def decision_metrics(summary: pd.DataFrame) -> list[str]:
    """What a comparison is decided on: final pass@1, pass@8 and pass@n (the largest k), greedy final
    accuracy and the mean of the last evaluations; ``summary/final_accuracy`` for older folders."""
    ks = pass_at_k_columns(c for c in summary.columns if summary[c].notna().any())
    chosen = [ks[k] for k in dict.fromkeys((1, 8, max(ks, default=1))) if k in ks]
    chosen += [
        c for c in (f"{FINAL}/accuracy", LATE_ACCURACY) if c in summary and summary[c].notna().any()
    ]
    return chosen or [FINAL_ACCURACY]


def _per_seed(done: pd.DataFrame, method: str, metric: str) -> pd.Series:
    rows = done[done["method"] == method]
    return pd.to_numeric(rows[metric], errors="coerce").groupby(rows["seed"]).mean().dropna()


def paired_differences(
    summary: pd.DataFrame,
    baseline: str = "grpo",
    metrics: Sequence[str] | None = None,
    alpha: float = ALPHA,
) -> pd.DataFrame:
    """One row per (method, metric): the paired difference ``method - baseline`` over common seeds.

    Columns: ``COLUMNS`` (with ``experiment`` first when several experiments are loaded; pairs never
    cross experiments). Empty when the baseline has no completed trial.
    """
    done = completed(summary)
    metrics = list(metrics) if metrics is not None else decision_metrics(done)
    several = "experiment" in done and done["experiment"].nunique() > 1
    parts = []
    for name, part in done.groupby("experiment", sort=False) if several else [(None, done)]:
        table = _family(part, baseline, metrics, alpha)
        parts.append(table.assign(experiment=name) if several else table)
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=COLUMNS)
    return frame[(["experiment"] if several else []) + COLUMNS]


def _family(
    done: pd.DataFrame, baseline: str, metrics: Sequence[str], alpha: float
) -> pd.DataFrame:
    """The comparisons of one experiment: per metric, every method against the baseline (one Holm
    family per metric)."""
    if baseline not in set(done["method"]):
        return pd.DataFrame(columns=COLUMNS)
    methods = [m for m in dict.fromkeys(done["method"]) if m != baseline]
    rows = []
    for metric in (m for m in metrics if m in done):
        base = _per_seed(done, baseline, metric)
        family = []
        for method in methods:
            other = _per_seed(done, method, metric)
            common = base.index.intersection(other.index)
            family.append((method, paired_t((other[common] - base[common]).tolist())))
        level = alpha / max(1, sum(1 for _, t in family if math.isfinite(t["p"])))
        for (method, t), p_holm in zip(family, holm([t["p"] for _, t in family]), strict=True):
            rows.append(
                {
                    "method": method,
                    "baseline": baseline,
                    "metric": metric,
                    **_decision(t, p_holm, level, alpha),
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS)


def _decision(t: dict[str, float], p_holm: float, level: float, alpha: float) -> dict[str, object]:
    """Table cells of one comparison: ``t`` from :func:`paired_t`, its Holm p, the Bonferroni level."""
    n, mean, sd = t["n"], t["mean"], t["sd"]
    lo = hi = needed = math.nan
    if n >= 2:
        half = float(scipy_stats.t.ppf(1 - level / 2, n - 1)) * sd / math.sqrt(n)
        lo, hi = mean - half, mean + half
        effect = mean / sd if sd > 0 else (math.inf if mean != 0 else 0.0)
        needed = seeds_needed(abs(effect), level)
    return {
        "n": n,
        "mean_diff": mean,
        "sd_diff": sd,
        "ci_low": t["ci_low"],
        "ci_high": t["ci_high"],
        "p": t["p"],
        "p_holm": p_holm,
        "corrected_low": lo,
        "corrected_high": hi,
        "resolved": bool(math.isfinite(p_holm) and p_holm < alpha),
        "seeds_needed": needed,
    }


def _seeds_text(needed: float) -> str:
    if math.isinf(needed):
        return f"no number of seeds up to {MAX_SEEDS} would resolve a difference of this size"
    return f"about {int(needed)} seeds would resolve a difference of this size at {POWER:.0%} power"


def paired_sentences(table: pd.DataFrame, digits: int = 3) -> list[str]:
    """One plain sentence per row of :func:`paired_differences`."""
    out = []
    for r in table.itertuples(index=False):
        head = f"{r.method} - {r.baseline} on {r.metric}: {r.mean_diff:+.{digits}f}"
        if r.n < 2:
            out.append(f"{head} from {count(r.n, 'common seed')}: no interval, not resolved.")
            continue
        head += (
            f" (95% CI [{r.ci_low:+.{digits}f}, {r.ci_high:+.{digits}f}], Holm p = {r.p_holm:.3g}, "
            f"{r.n} paired seeds)"
        )
        if r.resolved:
            word = "higher" if r.mean_diff > 0 else "lower"
            out.append(f"{head}: resolved, {r.method} is {word} than {r.baseline}.")
        else:
            out.append(
                f"{head}: not resolved, these seeds cannot tell which is higher; "
                f"{_seeds_text(r.seeds_needed)}."
            )
    return out


def paired_display(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """The table for a report: difference, 95% and corrected intervals, Holm p, seeds needed."""

    def fmt(x: float) -> str:
        return f"{x:+.{digits}f}" if math.isfinite(x) else "n/a"

    keys = [c for c in ("experiment", "method", "metric") if c in table]
    out = table[keys].copy()
    out["paired seeds"] = table["n"].astype(int)
    out["difference"] = table["mean_diff"].map(fmt)
    out["95% CI"] = [
        f"[{fmt(lo)}, {fmt(hi)}]" for lo, hi in zip(table["ci_low"], table["ci_high"], strict=True)
    ]
    out["corrected CI (Bonferroni)"] = [
        f"[{fmt(lo)}, {fmt(hi)}]"
        for lo, hi in zip(table["corrected_low"], table["corrected_high"], strict=True)
    ]
    out["Holm p"] = table["p_holm"].map(lambda p: f"{p:.3g}" if math.isfinite(p) else "n/a")
    out["resolved"] = table["resolved"].map({True: "yes", False: "no"})
    out["seeds for 80% power"] = table["seeds_needed"].map(
        lambda n: "n/a" if math.isnan(n) else (f"> {MAX_SEEDS}" if math.isinf(n) else str(int(n)))
    )
    return out
