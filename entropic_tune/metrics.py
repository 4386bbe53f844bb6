"""The one entropy definition, token-mean aggregation, pass@k and run summaries; the metric names.

Every metric key the trainer emits is defined once, in :mod:`entropic_tune.names` (METHOD.md section
5), and re-exported here (``metrics.ENTROPY`` is ``names.ENTROPY``). ``token_entropy`` is the only
entropy in the project: the full-vocabulary entropy of ``softmax(logits / T)``, never the
sampled-token NLL. The summary functions are plain Python over a history (list of step dicts). The
tensor functions use only tensor methods, so importing this module imports no torch.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

from .names import *  # noqa: F403 - the names, re-exported: metrics.ENTROPY is names.ENTROPY

LATE_EVALS = 3
"""Evaluations averaged by ``summary/late_accuracy`` (the last ones of the run)."""


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem from ``n`` samples of which ``c`` are correct (Chen et al. 2021).

    ``pass@k = 1 - C(n - c, k) / C(n, k)``: the chance that k samples drawn without replacement from
    the n contain a correct one. Computed as ``1 - prod_{i = n-c+1}^{n} (1 - k / i)`` (the same ratio
    written as a product of c factors), so no binomial coefficient is ever formed and large n cannot
    overflow. Exact cases: ``c = 0`` gives 0, ``n - c < k`` gives 1, ``k = 1`` gives ``c / n``.
    Requires integers ``0 <= c <= n`` and ``1 <= k <= n``.
    """
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (n, c, k)):
        raise ValueError(f"pass_at_k needs integers, got n={n!r}, c={c!r}, k={k!r}")
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:  # every draw of k samples contains a correct one
        return 1.0
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def token_entropy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Full-vocabulary entropy of ``softmax(logits / T)`` over the last dim.

    ``h = logsumexp(z) - sum_v p_v z_v`` with ``z = logits / T - max_v(logits / T)`` in fp32 (also for
    bf16 logits), which stays finite for very peaked distributions. ``h`` is invariant to the shift, but
    without it the two terms are each of the size of ``|z|`` and cancel: at ``|z| ~ 250`` fp32 lost
    ~4e-3 nats. After the shift ``z <= 0`` and the error stays ~1e-6 nats, on LLM-like logits too
    (tests/test_metrics.py checks both against float64). The max is detached: the gradient of ``h``
    through a shift is zero. Shape: ``(..., V) -> (...)``.
    """
    z = logits.float() / temperature  # (..., V)
    z = z - z.detach().amax(dim=-1, keepdim=True)  # (..., V), max 0
    logz = z.logsumexp(dim=-1, keepdim=True)  # (..., 1); the tensor methods are torch.logsumexp/exp
    p = (z - logz).exp()  # (..., V)
    return logz.squeeze(-1) - (p * z).sum(dim=-1)


def aggregate(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Token-mean ``sum(m * l) / sum(m)`` over all masked tokens of the batch (0 when the mask is empty).

    ``values`` and ``mask`` are ``(B, T)``; the result is a scalar.
    """
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def entropy_stderr(values: torch.Tensor, mask: torch.Tensor, group_size: int) -> torch.Tensor:
    """Sampling standard error of the batch's token-mean ``H = sum(m h) / sum(m)``.

    The prompts are the independent units (a group's responses share a prompt), so with
    ``s_b = sum over group b of m h`` and ``n_b = sum of m``, the ratio estimator's delta-method variance
    is ``sum_b (s_b - H n_b)^2 / (n_mean^2 B (B - 1))`` over the ``B`` groups. ``values``/``mask``:
    ``(B * G, T)`` with the G responses of each prompt in consecutive rows; returns a scalar (0 for one
    group). This is the measurement noise of ``actor/entropy``: what a controller sees on top of the
    policy's expected entropy.
    """
    mask = mask.to(values.dtype)
    sums = (values * mask).sum(-1).view(-1, group_size).sum(-1)  # (B,)
    counts = mask.sum(-1).view(-1, group_size).sum(-1)  # (B,)
    return group_entropy_stderr(sums, counts)


def group_entropy_stderr(sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """:func:`entropy_stderr` from the per-group ``s_b`` and ``n_b``, both (B,) (a data-parallel run
    gathers them from its workers first)."""
    b = sums.numel()
    if b < 2:
        return sums.new_zeros(())
    mean = sums.sum() / counts.sum().clamp_min(1.0)
    dev = (sums - mean * counts) / counts.mean().clamp_min(1.0)  # (B,)
    return (dev.square().sum() / (b * (b - 1))).sqrt()


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def entropy_tracking_rmse(entropies: Sequence[float], target: float) -> float:
    """RMS of ``(H - H_target) / H_target`` over the second half of the run."""
    tail = _finite(entropies[len(entropies) // 2 :])
    if not tail:
        return float("nan")
    return math.sqrt(sum(((h - target) / target) ** 2 for h in tail) / len(tail))


def measurement_noise_variance(values: Sequence[float]) -> float:
    """Variance of the white measurement noise in a series, from its first differences.

    For ``y = H + v`` with ``H`` a random walk (step variance ``q``) and ``v`` white (variance ``r``),
    the differences have variance ``q + 2r`` and lag-1 autocovariance ``-r``; the estimate is
    ``clip(-c1, 0, c0 / 2)`` (``c0``, ``c1`` the sample autocovariances of the differences), which a
    smooth trend in ``H`` does not inflate the way ``var(diff) / 2`` would. ``nan`` below 4 values.
    """
    y = _finite(values)
    if len(y) < 4:
        return float("nan")
    d = [b - a for a, b in itertools.pairwise(y)]
    mean = sum(d) / len(d)
    c0 = sum((x - mean) ** 2 for x in d) / len(d)
    c1 = sum((a - mean) * (b - mean) for a, b in itertools.pairwise(d)) / len(d)
    return min(max(-c1, 0.0), c0 / 2.0)


def entropy_tracking_rmse_denoised(entropies: Sequence[float], target: float,
                                   stderrs: Sequence[float] | None = None) -> float:
    """Tracking RMSE of the *true* entropy: ``sqrt(max(MS - r / H_target^2, 0))`` over the second half.

    ``MS`` is the mean of ``((H - H_target) / H_target)^2`` (the square of the raw tracking RMSE) and
    ``r`` the measurement noise variance of the same steps: the mean square of the per-step sampling
    standard errors (``actor/entropy_stderr``) when given, else estimated from the entropies
    themselves (:func:`measurement_noise_variance`; histories written before the standard error was
    logged). With noise independent of the true error, ``MS = true MS + r / H_target^2``, so removing
    ``r`` leaves how well the controller holds the entropy itself, not the sampler's noise floor.
    """
    raw = entropy_tracking_rmse(entropies, target)
    tail = len(entropies) // 2
    errors = _finite(stderrs[tail:]) if stderrs is not None else []
    if errors:
        noise = sum(e * e for e in errors) / len(errors)
    else:
        noise = measurement_noise_variance(entropies[tail:])
    if not (math.isfinite(raw) and math.isfinite(noise)):
        return float("nan")
    return math.sqrt(max(raw**2 - noise / target**2, 0.0))


def settle_step(entropies: Sequence[float], target: float, steps: Sequence[int] | None = None,
                band: float = 0.10) -> float:
    """First step after which ``|H - H_target| / H_target`` stays within ``band`` to the end.

    Returns the step number (from ``steps``, default 1-based positions), or ``nan`` when the run never
    settles (the last point is outside the band).
    """
    steps = list(steps) if steps is not None else list(range(1, len(entropies) + 1))
    settled = float("nan")
    for step, h in zip(reversed(steps), reversed(list(entropies)), strict=True):
        if abs(h - target) / target > band:
            break
        settled = float(step)
    return settled


def entropy_drop(entropies: Sequence[float]) -> float:
    """``1 - H_last / H_first`` (positive when entropy fell)."""
    values = _finite(entropies)
    if len(values) < 2 or values[0] == 0:
        return float("nan")
    return 1.0 - values[-1] / values[0]


def late_accuracy(accuracies: Sequence[float], steps: Sequence[int], eval_every: int,
                  last: int = LATE_EVALS) -> float:
    """Mean held-out accuracy of the run's ``last`` evaluations, not one noisy point.

    A history row carries the latest evaluation, so the evaluations are the rows at multiples of
    ``eval_every`` and the final row (the trainer evaluates at the last step); ``eval_every = 0`` means
    the final row only. NaN for an empty history.
    """
    n = len(steps)
    points = [a for i, (s, a) in enumerate(zip(steps, accuracies, strict=True))
              if (eval_every and s % eval_every == 0) or i == n - 1]
    values = _finite(points[-last:])
    return sum(values) / len(values) if values else float("nan")


def summarize(history: Sequence[dict[str, float]], target_entropy: float,
              eval_every: int = 0) -> dict[str, float]:
    """The ``summary/*`` statistics of one run from its per-step history.

    ``eval_every`` (``rollout.eval_every``) locates the evaluations for ``summary/late_accuracy``.
    """
    entropies = [row[ENTROPY] for row in history]
    stderrs = [row[ENTROPY_STDERR] for row in history] if all(ENTROPY_STDERR in r for r in history) else None
    steps = [int(row.get(STEP, i + 1)) for i, row in enumerate(history)]
    accuracies = [row.get(EVAL_ACCURACY, float("nan")) for row in history]
    accuracy = accuracies[-1] if history else float("nan")
    return {
        TRACKING_RMSE: entropy_tracking_rmse(entropies, target_entropy),
        TRACKING_RMSE_DENOISED: entropy_tracking_rmse_denoised(entropies, target_entropy, stderrs),
        SETTLE_STEP: settle_step(entropies, target_entropy, steps),
        FINAL_ACCURACY: float(accuracy),
        ENTROPY_DROP: entropy_drop(entropies),
        LATE_ACCURACY: late_accuracy(accuracies, steps, eval_every),
    }
