"""What the report adds to the metric names of :mod:`entropic_tune.names` (imported from there, the one
list): the pass@k columns present in a table, the statistics summarised over seeds, the settling band,
the methods' colours.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..names import (  # noqa: F401 - re-exported to the report's modules
    ALPHA,
    BASE,
    DISTINCT_CORRECT,
    ENTROPY,
    ENTROPY_DROP,
    ERROR,
    EVAL_ACCURACY,
    EVAL_PASS_AT_K,
    FINAL,
    FINAL_ACCURACY,
    INTEGRAL,
    LATE_ACCURACY,
    REWARD_MEAN,
    SETTLE_STEP,
    STEP,
    TARGETED,
    TRACKING_RMSE,
    TRACKING_RMSE_DENOISED,
)

TERMINATED = "TERMINATED"


def metric_label(metric: str) -> str:
    """How a report prints ``metric``: the large evaluations' ``accuracy`` is greedy decoding, so it
    is named so (``final/accuracy (greedy)``) wherever it stands beside a sampled ``pass@1``."""
    if metric in (f"{FINAL}/accuracy", f"{BASE}/accuracy"):
        return f"{metric} (greedy)"
    return metric


def pass_at_k_columns(columns: Iterable[str], prefix: str = FINAL) -> dict[int, str]:
    """``{k: "<prefix>/pass@k"}`` for the pass@k columns present, by increasing k."""
    found = {}
    for column in columns:
        head, _, name = str(column).partition("/")
        if head == prefix and name.startswith("pass@") and name[5:].isdigit():
            found[int(name[5:])] = str(column)
    return dict(sorted(found.items()))

STAT_METRICS: tuple[str, ...] = (
    FINAL_ACCURACY,
    LATE_ACCURACY,
    EVAL_ACCURACY,
    EVAL_PASS_AT_K,
    TRACKING_RMSE,
    TRACKING_RMSE_DENOISED,
    SETTLE_STEP,
    ENTROPY_DROP,
)
"""The per-trial numbers summarised over seeds (``method_stats``)."""

SETTLE_BAND = 0.10
"""The relative band around the target that ``summary/settle_step`` uses (METHOD.md section 5)."""

METHOD_COLOURS: dict[str, str] = {
    "grpo": "#4d4d4d",
    "entropy_bonus": "#e69f00",
    "clip_higher": "#56b4e9",
    "clip_cov": "#009e73",
    "kl_cov": "#cc79a7",
    "adaptive_entropy": "#8c564b",
    "entropic": "#d62728",
    "entropic_p": "#0072b2",
    "w_reinforce": "#9467bd",
    "nsr": "#bcbd22",
    "forking_tokens": "#17becf",
}
"""One fixed colour per method, used in every figure (colour-blind friendly where possible)."""

_EXTRA_COLOURS = ("#7f7f7f", "#aec7e8", "#ff9896", "#98df8a", "#c5b0d5", "#f7b6d2")


def method_colour(method: str) -> str:
    """The method's fixed colour; unknown names get a stable colour from a spare palette."""
    if method in METHOD_COLOURS:
        return METHOD_COLOURS[method]
    return _EXTRA_COLOURS[sum(map(ord, str(method))) % len(_EXTRA_COLOURS)]
