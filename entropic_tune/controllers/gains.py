"""PI gains and alpha bounds for EntroPIC from an identified plant (SIMC, Skogestad 2003).

The plant (:mod:`.plant`) is an integrator with slope ``gain`` (nats per step per unit alpha) behind a
first-order lag of time constant ``lag`` steps. SIMC's rule for an integrating process
``k' exp(-theta s) / s`` (Skogestad, "Simple analytic rules for model reduction and PID controller
tuning", J. Process Control 13, 2003, rule for "integrating process", with the half rule for the lag)::

    theta = 1/2 + lag / 2          effective delay: half a step for the sample-and-hold of one alpha per
                                   step, plus half the lag (the half rule: the largest neglected time
                                   constant goes half to the delay; the other half to the integrator,
                                   where it changes nothing)
    tau_c = max(closed_loop_steps, theta)       (SIMC: tau_c >= theta for robustness)
    Kc    = 1 / (|gain| * (tau_c + theta))
    tau_I = 4 * (tau_c + theta)

For this controller's timing (``alpha_k = kp * e_k + ki * sum_{i<k} e_i``, one step = 1 time unit):
``kp = Kc`` and ``ki = Kc / tau_I``. For the delay-free integrator the closed loop is then
``s^2 + s / (tau_c + theta) + 1 / (4 (tau_c + theta)^2) = 0``: a double real pole at
``-1 / (2 (tau_c + theta))`` (damping 1, no oscillation); a setpoint or initial error overshoots once
by at most ~14 % (the PI zero) and then decays. The sign: with ``e = H - target`` and ``kp, ki >= 0``,
negative feedback needs ``gain < 0`` (a larger alpha lowers entropy, as EntroPIC's loss does).
"""

from __future__ import annotations

import math

from ..errors import UserError
from .plant import EntropyPlant

ALPHA_LIMIT = 10.0
"""Safety cap on |alpha| for derived bounds: far beyond the range where the linear plant was probed."""


def effective_delay(plant: EntropyPlant) -> float:
    """``theta = 1/2 + lag/2`` steps (module docstring)."""
    return 0.5 + 0.5 * max(plant.lag, 0.0)


def pi_gains(
    plant: EntropyPlant, closed_loop_steps: float, p_only: bool = False
) -> tuple[float, float]:
    """SIMC ``(kp, ki)`` for :class:`~.base.PIController` on ``plant``, closed-loop time ~``closed_loop_steps``.

    ``p_only``: SIMC's P controller (``ki = 0``; leaves the steady error ``drift / (|gain| kp)``).
    Raises :class:`UserError` when the gain is not negative or the time is not positive.
    """
    if not closed_loop_steps > 0:
        raise UserError(f"pi_gains: closed_loop_steps must be > 0, got {closed_loop_steps}")
    if not (plant.gain < 0 and math.isfinite(plant.gain)):
        raise UserError(
            f"pi_gains: the plant gain must be negative (a larger alpha lowers entropy), "
            f"got {plant.gain:.3g}; the identification did not find a usable plant"
        )
    theta = effective_delay(plant)
    horizon = max(float(closed_loop_steps), theta) + theta  # tau_c + theta
    kp = 1.0 / (-plant.gain * horizon)
    ki = 0.0 if p_only else kp / (4.0 * horizon)
    return kp, ki


def alpha_bounds(
    plant: EntropyPlant, closed_loop_steps: float, z: float = 2.0
) -> tuple[float, float]:
    """Bounds ``alpha* -/+ span`` around the holding alpha ``alpha* = -drift / gain``.

    ``span = max(|alpha*|, noise / (|gain| * closed_loop_steps)) + z * stderr(alpha*)``: at either
    bound the entropy moves at least as fast as the drift, in either direction (RESULTS.md 5b: the
    reference bound -1 had half the authority the task needed), and by at least one noise standard
    deviation per ``closed_loop_steps`` when the drift is small; ``alpha*`` stays inside with its
    uncertainty. Both bounds are capped at ``|alpha| <= ALPHA_LIMIT``. Larger errors are removed at
    the bounds' rate (anti-windup keeps the integral from winding up meanwhile).
    """
    if not (plant.gain < 0 and closed_loop_steps > 0):
        raise UserError("alpha_bounds: needs a negative plant gain and closed_loop_steps > 0")
    hold = plant.holding_alpha
    rate = plant.noise / (-plant.gain * closed_loop_steps)
    span = max(abs(hold), rate) + z * plant.holding_alpha_stderr
    # span >= |alpha*|, so the interval always contains 0 and stays non-empty under the cap.
    return max(hold - span, -ALPHA_LIMIT), min(hold + span, ALPHA_LIMIT)
