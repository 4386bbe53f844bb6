"""Entropy controllers: map the measured batch entropy of a step to the coefficient the loss uses.

GRPO itself has no controller (``constant`` with value 0). EntroPIC adds a PI controller whose output
``alpha`` weights the high-probability term of its loss; Skywork-OR1's adaptive entropy (AEC) adds a
bang-bang integral controller whose output weights an entropy bonus. Controllers are plain Python
(floats in, floats out, no torch), so any controller can drive any loss (METHOD.md sections 3.2, 4).

PI (EntroPIC), with ``e_k = H_k - H_target`` (positive when entropy is too high)::

    alpha_k = clip(kp * e_k + ki * I_k, alpha_min, alpha_max)
    I_{k+1} = I_k + e_k                      (I_0 = 0: the integral holds the errors *before* step k)

Anti-windup (default on) clamps ``I`` to ``[alpha_min / ki, alpha_max / ki]`` after each update, so
``ki * I`` alone never exceeds the output range and the integral cannot grow while alpha saturates.
``anti_windup=False`` is the reference's unbounded integral (the faithful ablation).

Stability on the toy plant ``H_{k+1} = H_k + d - kappa * alpha_k`` (drift ``d``, plant gain
``kappa > 0``): P control (``ki = 0``) is stable for ``0 < kappa * kp < 2`` and leaves a steady error
``d / (kappa * kp)``; PI removes it (fixed point ``e = 0``, ``I = d / (kappa * ki)``) and is stable for
``ki > 0``, ``kp > ki``, ``kappa * (kp - ki) < 2`` and ``kappa * (2 kp - ki) < 4``. Gains must match the
entropy scale of the model and task.

Adaptive entropy (AEC), with gate ``g_k = 1[H_k < H_target]``::

    output_k = c_k * g_k
    c_{k+1} = clip(c_k + delta, c_min, c_max) if H_k < H_target else clip(c_k - delta, c_min, c_max)

The coefficient keeps moving away from either bound as soon as the entropy crosses the target (TRL's
first port stopped controlling once ``c`` reached 0). ``gate="previous"`` is Skywork-OR1's timing,
``g_k = 1[H_{k-1} < H_target]`` (closed at the first step); the coefficient update is the same.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ..config import ControllerConfig
from ..errors import UserError, unknown
from ..names import ALPHA, COEF, ERROR, INTEGRAL, KI, KP, PHASE, PLANT_DRIFT, PLANT_GAIN


def _clip(x: float, lo: float, hi: float) -> float:
    return min(max(x, lo), hi)


def _finite(entropy: float) -> float:
    value = float(entropy)
    if not math.isfinite(value):
        # A NaN would poison the integral / coefficient for the rest of the run.
        raise ValueError(f"controller: measured entropy must be finite, got {entropy!r}")
    return value


class Controller:
    """Common surface: ``update``, ``metrics``, ``state_dict``, ``load_state_dict``.

    ``alpha`` is the last output, ``error`` the last ``H - H_target``; ``integral`` and ``coef`` are 0
    for controllers that have none. ``_STATE`` names the attributes that make up the state.
    """

    _STATE: tuple[str, ...] = ("alpha", "error")

    def __init__(self) -> None:
        self.alpha = 0.0
        self.error = 0.0
        self.integral = 0.0
        self.coef = 0.0

    def update(self, entropy: float) -> float:
        """Read this step's entropy and return the coefficient to use now."""
        raise NotImplementedError

    def metrics(self) -> dict[str, float]:
        """``control/alpha``, ``error``, ``integral``, ``coef``, ``kp``, ``ki``, ``plant_gain``,
        ``plant_drift`` and ``phase`` as floats (0 where a controller has none; see controllers.autotune)."""
        return {
            ALPHA: float(self.alpha),
            ERROR: float(self.error),
            INTEGRAL: float(self.integral),
            COEF: float(self.coef),
            KP: float(getattr(self, "kp", 0.0)),
            KI: float(getattr(self, "ki", 0.0)),
            PLANT_GAIN: float(getattr(self, "plant_gain", 0.0)),
            PLANT_DRIFT: float(getattr(self, "plant_drift", 0.0)),
            PHASE: float(getattr(self, "phase", 0.0)),
        }

    def state_dict(self) -> dict[str, float]:
        """Plain dict of floats; :meth:`load_state_dict` restores it exactly."""
        return {key: float(getattr(self, key)) for key in self._STATE}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore a :meth:`state_dict` of the same controller class (exact key set required)."""
        if set(state) != set(self._STATE):
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: expected keys {sorted(self._STATE)}, "
                f"got {sorted(state)}"
            )
        for key in self._STATE:
            setattr(self, key, float(state[key]))


class PIController(Controller):
    """EntroPIC's PI controller.

    Timing: ``update(H_k)`` returns ``alpha_k = clip(kp * e_k + ki * I_k, alpha_min, alpha_max)``
    with ``e_k = H_k - target`` and ``I_k`` the sum of the errors of *earlier* calls (``I_0 = 0``);
    only afterwards ``I <- I + e_k``. With ``anti_windup`` and ``ki > 0`` the new ``I`` is clamped to
    ``[alpha_min / ki, alpha_max / ki]``; without it the integral is the raw sum (reference behaviour).
    ``ki = 0`` is P-only control.
    """

    _STATE = ("alpha", "error", "integral")

    def __init__(
        self,
        kp: float,
        ki: float,
        target: float,
        alpha_min: float = -1.0,
        alpha_max: float = 1.0,
        anti_windup: bool = True,
    ) -> None:
        super().__init__()
        if kp < 0 or ki < 0:
            raise UserError(f"PIController: kp and ki must be >= 0, got kp={kp}, ki={ki}")
        if not alpha_min < alpha_max:
            raise UserError(
                f"PIController: alpha_min must be < alpha_max, got {alpha_min} >= {alpha_max}"
            )
        self.kp, self.ki, self.target = float(kp), float(ki), float(target)
        self.alpha_min, self.alpha_max = float(alpha_min), float(alpha_max)
        self.anti_windup = bool(anti_windup)

    def update(self, entropy: float) -> float:
        e = _finite(entropy) - self.target
        self.alpha = _clip(self.kp * e + self.ki * self.integral, self.alpha_min, self.alpha_max)
        self.error = e
        integral = self.integral + e
        if self.anti_windup and self.ki > 0:
            integral = _clip(integral, self.alpha_min / self.ki, self.alpha_max / self.ki)
        self.integral = integral
        return self.alpha


class AdaptiveEntropyController(Controller):
    """Skywork-OR1's adaptive entropy coefficient (AEC), a bang-bang integral controller.

    ``update(H_k)`` returns ``c_k * g_k`` with the coefficient *before* this step's adjustment, then
    moves ``c`` by ``+delta`` (entropy below target) or ``-delta`` (at or above), clipped to
    ``[coef_min, coef_max]``. A coefficient at either bound moves off it on the next crossing. The gate
    is ``g_k = 1[H_k < target]`` (``gate="current"``) or ``1[H_{k-1} < target]`` (``"previous"``,
    Skywork-OR1; 0 at the first call), whose state then includes ``gate``, the next step's gate.
    """

    _STATE = ("alpha", "error", "coef")

    def __init__(
        self,
        target: float,
        delta: float = 1e-4,
        coef_min: float = 0.0,
        coef_max: float = 5e-3,
        coef_init: float = 0.0,
        gate: str = "current",
    ) -> None:
        super().__init__()
        if gate not in ("current", "previous"):
            raise UserError(
                f"AdaptiveEntropyController: gate must be 'current' or 'previous', got {gate!r}"
            )
        self.previous_gate = gate == "previous"
        if self.previous_gate:
            self._STATE = (*type(self)._STATE, "gate")
            self.gate = 0.0  # no earlier step: the bonus is off at the first step
        if delta < 0:
            raise UserError(f"AdaptiveEntropyController: delta must be >= 0, got {delta}")
        if not coef_min <= coef_init <= coef_max:
            raise UserError(
                f"AdaptiveEntropyController: coef_init={coef_init} must lie in "
                f"[coef_min, coef_max] = [{coef_min}, {coef_max}]"
            )
        self.target, self.delta = float(target), float(delta)
        self.coef_min, self.coef_max = float(coef_min), float(coef_max)
        self.coef = float(coef_init)

    def update(self, entropy: float) -> float:
        h = _finite(entropy)
        below = h < self.target
        self.error = h - self.target
        if self.previous_gate:
            self.alpha = self.coef if self.gate else 0.0
            self.gate = 1.0 if below else 0.0
        else:
            self.alpha = self.coef if below else 0.0
        step = self.delta if below else -self.delta
        self.coef = _clip(self.coef + step, self.coef_min, self.coef_max)
        return self.alpha


class ConstantController(Controller):
    """Always returns ``value`` (GRPO and the fixed-coefficient baselines); error is reported as 0."""

    def __init__(self, value: float = 0.0) -> None:
        super().__init__()
        self.value = float(value)
        self.alpha = self.value

    def update(self, entropy: float) -> float:
        self.alpha = self.value
        return self.alpha


REGISTRY: dict[str, Callable[[ControllerConfig], Controller]] = {
    "constant": lambda c: ConstantController(c.value),
    "pi": lambda c: PIController(
        c.kp, c.ki, c.target_entropy, c.alpha_min, c.alpha_max, c.anti_windup
    ),
    "adaptive": lambda c: AdaptiveEntropyController(
        c.target_entropy, c.coef_delta, c.coef_min, c.coef_max, c.coef_init, c.coef_gate
    ),
}
"""Controller builders by ``controller.name`` (the names of ``config.CONTROLLERS``)."""


def build_controller(cfg: ControllerConfig) -> Controller:
    """Build the controller named by ``cfg.name`` from its config section."""
    if cfg.name not in REGISTRY:
        raise unknown("controller", cfg.name, REGISTRY)
    return REGISTRY[cfg.name](cfg)
