"""Every metric and column name the project emits or reads, as plain strings (no torch, no pandas).

The one list (METHOD.md section 5): the trainer's per-step keys (:data:`STEP_KEYS`), the run
summaries (:data:`SUMMARY_KEYS`) and the large evaluations' prefixes (``base/*``, ``final/*``).
:mod:`entropic_tune.metrics`, :mod:`entropic_tune.controllers` and :mod:`entropic_tune.report` import
them from here, so code that only reads results (the report, ``analysis/``) needs no torch.
"""

from __future__ import annotations

# --- per-step metric names (METHOD.md section 5) -------------------------------------------------
ENTROPY = "actor/entropy"
ENTROPY_STDERR = "actor/entropy_stderr"
PG_LOSS = "actor/pg_loss"
PG_CLIPFRAC = "actor/pg_clipfrac"
PG_CLIPFRAC_LOWER = "actor/pg_clipfrac_lower"
PPO_KL = "actor/ppo_kl"
GRAD_NORM = "actor/grad_norm"
HIGH_PROB_FRAC = "actor/high_prob_frac"
ALPHA = "control/alpha"
ERROR = "control/error"
INTEGRAL = "control/integral"
COEF = "control/coef"
ACTUATOR_VALUE = "control/actuator_value"
KP = "control/kp"
KI = "control/ki"
PLANT_GAIN = "control/plant_gain"
PLANT_DRIFT = "control/plant_drift"
PHASE = "control/phase"
DETACHED_FRAC = "cov/detached_frac"
PENALISED_FRAC = "cov/penalised_frac"
REWARD_MEAN = "rollout/reward_mean"
RESPONSE_LENGTH_MEAN = "rollout/response_length_mean"
SOLVE_NONE_FRAC = "rollout/solve_none_frac"
SOLVE_ALL_FRAC = "rollout/solve_all_frac"
EVAL_ACCURACY = "eval/accuracy"
EVAL_PASS_AT_K = "eval/pass@k"
EVAL_ENTROPY = "eval/entropy"
EVAL_GREEDY_ACCURACY = "eval/greedy_accuracy"
"""The latest evaluation's greedy accuracy: in ``Engine.last_eval`` and ``summary.json``, not a step key."""
STEP_S = "perf/step_s"
ROLLOUT_TOKENS_PER_S = "perf/rollout_tokens_per_s"
UPDATE_TOKENS_PER_S = "perf/update_tokens_per_s"

# Loss-side metrics: every loss returns all of these (zeros where a mechanism is absent), so the
# per-step dict has the same keys whatever the method.
LOSS_KEYS = (PG_LOSS, PG_CLIPFRAC, PG_CLIPFRAC_LOWER, PPO_KL, HIGH_PROB_FRAC, DETACHED_FRAC, PENALISED_FRAC)
ACTUATOR_KEYS = (ACTUATOR_VALUE,)
"""Set by the trainer from the controller output and ``controller.actuator`` (not by the controller)."""
CONTROL_KEYS = (ALPHA, ERROR, INTEGRAL, COEF, KP, KI, PLANT_GAIN, PLANT_DRIFT, PHASE)
ROLLOUT_KEYS = (REWARD_MEAN, RESPONSE_LENGTH_MEAN, SOLVE_NONE_FRAC, SOLVE_ALL_FRAC)
EVAL_KEYS = (EVAL_ACCURACY, EVAL_PASS_AT_K, EVAL_ENTROPY)
PERF_KEYS = (STEP_S, ROLLOUT_TOKENS_PER_S, UPDATE_TOKENS_PER_S)
STEP = "step"
"""1-based rollout step index; present in every step dict."""

STEP_KEYS: tuple[str, ...] = (
    (STEP, ENTROPY, ENTROPY_STDERR) + LOSS_KEYS + (GRAD_NORM,) + CONTROL_KEYS + ACTUATOR_KEYS + ROLLOUT_KEYS
    + EVAL_KEYS + PERF_KEYS
)
"""Exactly the keys of one ``Engine.step()`` dict (engines/base.py). Eval keys carry the latest evaluation."""

# --- run summaries --------------------------------------------------------------------------------
TRACKING_RMSE = "summary/entropy_tracking_rmse"
TRACKING_RMSE_DENOISED = "summary/entropy_tracking_rmse_denoised"
SETTLE_STEP = "summary/settle_step"
FINAL_ACCURACY = "summary/final_accuracy"
ENTROPY_DROP = "summary/entropy_drop"
LATE_ACCURACY = "summary/late_accuracy"
SUMMARY_KEYS = (TRACKING_RMSE, TRACKING_RMSE_DENOISED, SETTLE_STEP, FINAL_ACCURACY, ENTROPY_DROP, LATE_ACCURACY)

# --- final evaluation (summary values, not per-step; METHOD.md section 5) ----------------------------
FINAL = "final"
"""Prefix of the large evaluation after the last step: ``final/accuracy``, ``final/pass@1``, ..."""
BASE = "base"
"""Prefix of the same evaluation of the base (warm-start) model before step 1: ``base/pass@k``."""
DISTINCT_CORRECT = "distinct_correct"
"""``<prefix>/distinct_correct``: mean over held-out problems of the number of distinct correct
responses (stripped text) among the n samples; only for tasks with many answers (countdown)."""
TARGETED = ("entropic", "entropic_p", "adaptive_entropy")
"""Methods with an entropy target (``controller.target_entropy`` is a setting of theirs): only they
have a tracking error; for the others the target is a number they never see."""


def pass_at_k_ks(n: int) -> list[int]:
    """The k of a final evaluation with ``n`` samples per problem: 1, 2, 4, ... up to n, and n itself."""
    ks = [1 << i for i in range(n.bit_length()) if 1 << i <= n]
    return ks if not ks or ks[-1] == n else [*ks, n]


def final_keys(n: int, prefix: str = FINAL) -> list[str]:
    """``<prefix>/accuracy`` (greedy) then ``<prefix>/pass@k`` for each k of :func:`pass_at_k_ks`."""
    return [f"{prefix}/accuracy", *(f"{prefix}/pass@{k}" for k in pass_at_k_ks(n))]
