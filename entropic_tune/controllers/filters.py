"""A Kalman filter of the measured entropy for the controller (``controller.filter: kalman``).

The per-step entropy is a token mean over one rollout batch; its sampling noise (~5e-3 nats, 8-12 % of
the level at 128 responses, RESULTS.md) is larger than a step's controlled change (~2e-4 nats per unit
alpha). A PI controller with kp ~ 100-500 passes that noise straight into alpha. The filter estimates
the *true* entropy from the identified plant (:mod:`.plant`), with state ``x = (h, b)``::

    h[k+1] = h[k] + drift + b[k] + gain * u[k] + w_h      (u: alpha through the plant's lag)
    b[k+1] = b[k] + w_b                                   (b: what the identified drift gets wrong)
    y[k]   = h[k] + v,        Var v = noise^2,  Var w_h = max(process_noise^2, 1e-3 noise^2),
                              Var w_b = drift_stderr^2 / 100

The bias state ``b`` makes the filter unbiased when the identified drift (or, near the holding alpha,
the gain) is off: the PI then still holds the true entropy on the target. Its variance lets the drift
error refresh over ~100 steps (the plant changes slowly as the policy sharpens). The floor on
``Var w_h`` keeps the filter from trusting the model forever. Because the filter predicts the effect of
the controller's own alpha, it adds no lag to the loop for the modelled dynamics (the separation
principle); it only averages the noise. Plain floats, no numpy in the per-step path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .plant import EntropyPlant

_STATE = ("h", "b", "p_hh", "p_hb", "p_bb", "ema", "ema_steps", "primed")


class EntropyFilter:
    """Two-state Kalman filter of the module docstring; ``correct(y)`` then ``predict(alpha)`` per step."""

    def __init__(self, plant: EntropyPlant) -> None:
        self.gain, self.drift = float(plant.gain), float(plant.drift)
        self.r = max(float(plant.noise) ** 2, 1e-12)
        self.q_h = max(float(plant.process_noise) ** 2, 1e-3 * self.r)
        self.q_b = float(plant.drift_stderr) ** 2 / 100.0
        self.beta = math.exp(-1.0 / plant.lag) if plant.lag > 0 else 0.0
        self.h = self.b = 0.0
        self.p_hh, self.p_hb, self.p_bb = 0.0, 0.0, float(plant.drift_stderr) ** 2
        self.ema, self.ema_steps = 0.0, 0
        self.primed = False

    def correct(self, measured: float) -> float:
        """Fold in this step's measurement; returns the filtered entropy ``h[k|k]``."""
        if not self.primed:  # first measurement: the level is the measurement, with its noise
            self.h, self.p_hh, self.primed = float(measured), self.r, True
            return self.h
        s = self.p_hh + self.r
        k_h, k_b = self.p_hh / s, self.p_hb / s
        innovation = float(measured) - self.h
        self.h += k_h * innovation
        self.b += k_b * innovation
        # P <- (I - K H) P with H = (1, 0)
        p_hh, p_hb, p_bb = self.p_hh, self.p_hb, self.p_bb
        self.p_hh = p_hh - k_h * p_hh
        self.p_hb = p_hb - k_h * p_hb
        self.p_bb = p_bb - k_b * p_hb
        return self.h

    def predict(self, alpha: float) -> None:
        """Advance the state by one step under this step's ``alpha`` (after the controller chose it)."""
        self.ema = self.beta * self.ema + (1.0 - self.beta) * float(alpha)
        self.ema_steps += 1
        u = self.ema / (
            1.0 - self.beta**self.ema_steps
        )  # bias-corrected, as in plant.lagged_inputs
        self.h += self.drift + self.b + self.gain * u
        # P <- F P F' + Q with F = [[1, 1], [0, 1]]
        p_hh, p_hb, p_bb = self.p_hh, self.p_hb, self.p_bb
        self.p_hh = p_hh + 2.0 * p_hb + p_bb + self.q_h
        self.p_hb = p_hb + p_bb
        self.p_bb = p_bb + self.q_b

    def run(self, alphas: Sequence[float], entropies: Sequence[float]) -> float:
        """Filter a past stretch (``alphas[k]`` applied after ``entropies[k]``); returns the last ``h[k|k]``.

        The last alpha is not applied: the caller decides it from the returned estimate.
        """
        h = self.h
        for k, y in enumerate(entropies):
            h = self.correct(y)
            if k < len(entropies) - 1:
                self.predict(alphas[k])
        return h

    def state_dict(self) -> dict[str, float]:
        return {key: float(getattr(self, key)) for key in _STATE}

    def load_state_dict(self, state: dict[str, float]) -> None:
        if set(state) != set(_STATE):
            raise ValueError(
                f"EntropyFilter.load_state_dict: expected keys {sorted(_STATE)}, got {sorted(state)}"
            )
        for key in _STATE:
            setattr(self, key, float(state[key]))
        self.ema_steps = int(self.ema_steps)
        self.primed = bool(self.primed)
