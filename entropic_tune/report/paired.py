"""Paired comparisons with a baseline method over common seeds: t intervals, Holm, power, words.

A method's trial of seed s is paired with the baseline's trial of the same seed (same task, model,
data order and, for the large final evaluation, the same evaluation random numbers), so what the two
share cancels in the difference ``d_s = x_method,s - x_baseline,s``. Over the ``n`` common seeds:

- mean ``d`` and sample sd ``s_d``; 95% t interval ``d +- t_{0.975, n-1} s_d / sqrt(n)`` and the
  two-sided paired t test's p-value (``scipy.stats``);
- one **primary** metric per experiment (the space file's ``primary``, recorded in experiment.yaml;
  ``final/pass@1`` by default): Holm's step-down correction across the ``m`` methods compared with
  the baseline on it (family-wise error 5%). Every other metric is **secondary**: its tests form one
  family, every method on every secondary metric (``m`` = methods x secondary metrics), with its
  own Holm correction. A difference is **resolved** when its Holm-adjusted p-value within its family
  is below 0.05, and the sentence that says so prints the family's corrected interval (Bonferroni's,
  level ``1 - 0.05/m``: when it excludes 0 the difference is resolved; Holm rejects at least as
  often, so it may also resolve a difference whose conservative interval still touches 0);
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
from .names import (
    DISTINCT_CORRECT,
    FINAL,
    FINAL_ACCURACY,
    LATE_ACCURACY,
    metric_label,
    pass_at_k_columns,
)
from .wording import count

ALPHA = 0.05
POWER = 0.8
MAX_SEEDS = 10_000
"""Seeds-needed answers above this are reported as 'more than MAX_SEEDS'."""
COLUMNS = [
    "method",
    "baseline",
    "metric",
    "role",
    "family_size",
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
    standardised difference (mean / sd of the differences) is ``effect``.

    Exact, from the noncentral t in both tails at every ``df = n - 1``: with ``T = (Z + nc) / S``,
    ``nc = effect sqrt(n)``, ``Z ~ N(0, 1)`` and ``S = sqrt(V / df)``, ``V ~ chi2(df)``,

        power = P(T > c) + P(T < -c) = E_S[ Phi(nc - c S) + Phi(-nc - c S) ],   c = t_{1-alpha/2, df},

    one integral over the chi distribution of ``S``, taken over its quantiles ``u = F_S(s)`` in (0, 1)
    by 512-point Gauss-Legendre (the integrand is in [0, 1]; it agrees with adaptive quadrature to
    ~1e-6 from df 1 to 5000). scipy's ``nct.sf``/``cdf`` lose one tail at small ``df`` and large
    ``nc`` (NaN, or a rounded 1), which is why they are not used; a test checks this function
    against simulation at df 1-5.
    """
    if n < 2:
        return math.nan
    df = n - 1
    critical = float(scipy_stats.t.ppf(1 - alpha / 2, df))
    nc = abs(effect) * math.sqrt(n)  # the two-sided power is symmetric in the effect's sign
    if math.isinf(nc):
        return 1.0
    s = scipy_stats.chi.ppf(_QUANTILES, df, scale=1 / math.sqrt(df))
    tails = scipy_stats.norm.cdf(nc - critical * s) + scipy_stats.norm.cdf(-nc - critical * s)
    return float(min(1.0, max(0.0, np.sum(_WEIGHTS * tails))))


_NODES, _RAW_WEIGHTS = np.polynomial.legendre.leggauss(512)
_QUANTILES, _WEIGHTS = (_NODES + 1) / 2, _RAW_WEIGHTS / 2
"""Gauss-Legendre nodes and weights on (0, 1) for :func:`t_power`."""


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
    accuracy, the distinct correct responses per problem (where the task measures them) and the mean
    of the last evaluations; ``summary/final_accuracy`` for older folders."""
    ks = pass_at_k_columns(c for c in summary.columns if summary[c].notna().any())
    chosen = [ks[k] for k in dict.fromkeys((1, 8, max(ks, default=1))) if k in ks]
    chosen += [
        c for c in (f"{FINAL}/accuracy", f"{FINAL}/{DISTINCT_CORRECT}", LATE_ACCURACY)
        if c in summary and summary[c].notna().any()
    ]
    return chosen or [FINAL_ACCURACY]


def _per_seed(done: pd.DataFrame, method: str, metric: str) -> pd.Series:
    rows = done[done["method"] == method]
    return pd.to_numeric(rows[metric], errors="coerce").groupby(rows["seed"]).mean().dropna()


def primary_metric(summary: pd.DataFrame, declared: str | None = None) -> str:
    """The experiment's primary metric: ``declared`` (the space's ``primary``) when given, else the
    first of :func:`decision_metrics` (``final/pass@1`` when the large evaluation ran)."""
    return declared or decision_metrics(completed(summary))[0]


def paired_differences(
    summary: pd.DataFrame,
    baseline: str = "grpo",
    metrics: Sequence[str] | None = None,
    alpha: float = ALPHA,
    primary: str | None = None,
) -> pd.DataFrame:
    """One row per (method, metric): the paired difference ``method - baseline`` over common seeds.

    ``primary`` (default :func:`primary_metric`) is always compared; its family is the methods on it,
    the other metrics' family every method on every other metric (module docstring). Columns:
    ``COLUMNS`` (with ``experiment`` first when several experiments are loaded; pairs never cross
    experiments). Empty when the baseline has no completed trial.
    """
    done = completed(summary)
    metrics = list(metrics) if metrics is not None else decision_metrics(done)
    several = "experiment" in done and done["experiment"].nunique() > 1
    parts = []
    for name, part in done.groupby("experiment", sort=False) if several else [(None, done)]:
        first = primary_metric(part, primary)
        chosen = [first, *(m for m in metrics if m != first)]
        table = _family(part, baseline, chosen, alpha)
        parts.append(table.assign(experiment=name) if several else table)
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=COLUMNS)
    return frame[(["experiment"] if several else []) + COLUMNS]


def _family(
    done: pd.DataFrame, baseline: str, metrics: Sequence[str], alpha: float
) -> pd.DataFrame:
    """The comparisons of one experiment: every method against the baseline on the primary metric
    (``metrics[0]``, one Holm family) and on the others (one Holm family for all of them)."""
    if baseline not in set(done["method"]):
        return pd.DataFrame(columns=COLUMNS)
    methods = [m for m in dict.fromkeys(done["method"]) if m != baseline]
    tests = []  # (role, method, metric, t)
    for i, metric in enumerate(m for m in metrics if m in done):
        base = _per_seed(done, baseline, metric)
        for method in methods:
            other = _per_seed(done, method, metric)
            common = base.index.intersection(other.index)
            t = paired_t((other[common] - base[common]).tolist())
            tests.append(("primary" if i == 0 and metric == metrics[0] else "secondary", method, metric, t))
    rows = []
    for role in ("primary", "secondary"):
        family = [x for x in tests if x[0] == role]
        size = sum(1 for *_, t in family if math.isfinite(t["p"]))
        level = alpha / max(1, size)
        for (_, method, metric, t), p_holm in zip(family, holm([x[3]["p"] for x in family]), strict=True):
            rows.append({"method": method, "baseline": baseline, "metric": metric, "role": role,
                         "family_size": size, **_decision(t, p_holm, level, alpha)})
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
    """One plain sentence per row of :func:`paired_differences`; "resolved" always comes with the
    Holm family it was corrected over and that family's corrected interval."""
    out = []
    for r in table.itertuples(index=False):
        role = "primary" if r.role == "primary" else "secondary"
        head = f"{r.method} - {r.baseline} on {metric_label(r.metric)} ({role}): {r.mean_diff:+.{digits}f}"
        if r.n < 2:
            out.append(f"{head} from {count(r.n, 'common seed')}: no interval, not resolved.")
            continue
        family = count(int(r.family_size), f"{role} comparison")
        head += (
            f" (95% CI [{r.ci_low:+.{digits}f}, {r.ci_high:+.{digits}f}], {r.n} paired seeds; "
            f"Holm p = {r.p_holm:.3g} over {family}"
        )
        corrected = f"corrected CI [{r.corrected_low:+.{digits}f}, {r.corrected_high:+.{digits}f}]"
        if r.resolved:
            word = "higher" if r.mean_diff > 0 else "lower"
            out.append(f"{head}): resolved ({corrected}), {r.method} is {word} than {r.baseline}.")
        else:
            out.append(
                f"{head}, {corrected}): not resolved, these seeds cannot tell which is higher; "
                f"{_seeds_text(r.seeds_needed)}."
            )
    return out


def paired_display(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """The table for a report: difference, 95% and corrected intervals, Holm p, seeds needed."""

    def fmt(x: float) -> str:
        return f"{x:+.{digits}f}" if math.isfinite(x) else "n/a"

    keys = [c for c in ("experiment", "method", "metric", "role") if c in table]
    out = table[keys].copy()
    if "metric" in out:
        out["metric"] = out["metric"].map(metric_label)
    out["Holm family"] = table["family_size"].astype(int)
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
