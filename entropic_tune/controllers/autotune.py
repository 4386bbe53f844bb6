"""EntroPIC's PI controller with gains from measurements (``controller.autotune: probe | online``).

Phases (logged as ``control/phase``; METHOD.md 3.5 and section 5):

- ``1`` probe: steps ``0 .. probe_steps-1`` apply a designed square wave ``alpha = +/-probe_amplitude``
  (half-period ``probe_hold``), open loop. At step ``probe_steps`` the plant is identified from the
  ``probe_steps + 1`` entropies (:func:`.plant.identify_plant`), then
- ``2`` tuned (``probe``): PI with SIMC gains (:func:`.gains.pi_gains`) for the cautious gain
  ``|gain| + stderr`` (:meth:`.plant.EntropyPlant.cautious`) and derived bounds
  (:func:`.gains.alpha_bounds`); the integral starts at the holding alpha ``-drift / gain`` (the
  identified drift is fed forward, so the loop does not first have to wind up against it);
- ``3`` online (``online``): the same PI plus a square-wave dither of ``dither_amplitude``; every
  ``retune_every`` steps the last ``retune_window`` steps are re-identified with the designed signal
  (probe, then dither) as instrument, so closed-loop data gives no feedback bias, and the gains are
  rescheduled bumplessly (``ki * integral`` is kept), by at most 2x per retune, when the new fit is
  identified (gain negative by 2 standard errors, instrument F >= 10);
- ``4`` fallback: the probe could not identify a plant (gain not negative by 1 standard error):
  the configured kp/ki/bounds are used (``online`` keeps trying at each retune).

``controller.filter: kalman`` feeds the PI the filtered entropy (:mod:`.filters`) instead of the
measurement. The state (history window, PI, plant, filter, phase) is plain Python; ``load_state_dict``
restores it exactly, so a restored run continues with the same history.
"""

from __future__ import annotations

import dataclasses

from ..config import ControllerConfig
from ..errors import UserError
from .base import Controller, PIController, _clip, _finite
from .filters import EntropyFilter
from .gains import alpha_bounds, pi_gains
from .plant import EntropyPlant, identify_plant

PHASE_OFF, PHASE_PROBE, PHASE_TUNED, PHASE_ONLINE, PHASE_FALLBACK = 0.0, 1.0, 2.0, 3.0, 4.0
PHASES = {
    PHASE_OFF: "off",
    PHASE_PROBE: "probe",
    PHASE_TUNED: "tuned",
    PHASE_ONLINE: "online",
    PHASE_FALLBACK: "fallback",
}
"""``control/phase`` codes (``0`` = fixed gains, every controller without autotuning)."""

ACCEPT_Z_PROBE = 1.0
"""The probe's gain must be negative by this many standard errors (else: fallback)."""
ACCEPT_Z_RETUNE = 2.0
"""An online re-identification must be negative by this many standard errors (and F >= 10)."""

_STATE = (
    "alpha",
    "error",
    "step",
    "phase",
    "alphas",
    "entropies",
    "excitations",
    "pi",
    "gains",
    "plant",
    "filter",
)


def square_wave(step: int, amplitude: float, hold: int) -> float:
    """``+amplitude`` for the first ``hold`` steps, then ``-amplitude`` for ``hold``, and so on."""
    return amplitude if (step // hold) % 2 == 0 else -amplitude


class AutotunedPIController(Controller):
    """PI controller that identifies its plant and sets its own gains (module docstring)."""

    def __init__(self, cfg: ControllerConfig) -> None:
        super().__init__()
        if cfg.autotune not in ("probe", "online"):
            raise UserError(
                f"AutotunedPIController: controller.autotune must be probe or online, got {cfg.autotune}"
            )
        self.cfg = cfg
        self.pi = PIController(
            cfg.kp, cfg.ki, cfg.target_entropy, cfg.alpha_min, cfg.alpha_max, cfg.anti_windup
        )
        self.step = 0
        self.phase = PHASE_PROBE
        self.alphas: list[float] = []
        self.entropies: list[float] = []
        self.excitations: list[float] = []
        self.plant: EntropyPlant | None = None
        self.filter: EntropyFilter | None = None
        self.kp = self.ki = 0.0  # no feedback during the probe

    @property
    def plant_gain(self) -> float:
        return self.plant.gain if self.plant is not None else 0.0

    @property
    def plant_drift(self) -> float:
        return self.plant.drift if self.plant is not None else 0.0

    # --- per step -----------------------------------------------------------------------------------

    def update(self, entropy: float) -> float:
        y = _finite(entropy)
        cfg = self.cfg
        self.entropies.append(y)
        if self.phase == PHASE_PROBE and self.step < cfg.probe_steps:
            excitation = square_wave(self.step, cfg.probe_amplitude, cfg.probe_hold)
            self.alpha, self.error = excitation, y - cfg.target_entropy
        else:
            if self.phase == PHASE_PROBE:
                self._identify(first=True)
            elif cfg.autotune == "online" and (self.step - cfg.probe_steps) % cfg.retune_every == 0:
                self._identify(first=False)
            measured = self.filter.correct(y) if self.filter is not None else y
            excitation = 0.0
            if cfg.autotune == "online":
                excitation = square_wave(self.step, cfg.dither_amplitude, cfg.probe_hold)
            base = self.pi.update(measured)
            self.alpha = _clip(base + excitation, self.pi.alpha_min, self.pi.alpha_max)
            self.error = self.pi.error
        if self.filter is not None:
            self.filter.predict(self.alpha)
        self.alphas.append(self.alpha)
        self.excitations.append(excitation)
        self.integral = self.pi.integral if self.phase != PHASE_PROBE else 0.0
        self._trim()
        self.step += 1
        return self.alpha

    def _trim(self) -> None:
        keep = max(self.cfg.retune_window, self.cfg.probe_steps + 1)
        if len(self.entropies) > keep:
            del self.alphas[:-keep], self.entropies[:-keep], self.excitations[:-keep]

    def _identify(self, first: bool) -> None:
        """Fit the window (entropies up to this step; the last alpha is not yet known), then retune."""
        cfg = self.cfg
        alphas = [*self.alphas, 0.0]  # placeholder for this step's alpha: it never reaches the data
        excitation = [*self.excitations, 0.0] if cfg.autotune == "online" else None
        try:
            plant = identify_plant(alphas, self.entropies, lag=cfg.plant_lag, excitation=excitation)
        except UserError:
            plant = None
        online = cfg.autotune == "online"
        # The probe is accepted when the gain is negative by one standard error (alpha sharpens by the
        # loss's construction; the gains then come from the cautious |gain| + stderr); a retune on
        # closed-loop data needs two and a strong instrument, since it happens again and again.
        if plant is None or not plant.is_identified(z=ACCEPT_Z_PROBE if first else ACCEPT_Z_RETUNE):
            if first:
                self.phase = PHASE_ONLINE if online else PHASE_FALLBACK
                self.kp, self.ki = self.pi.kp, self.pi.ki
            return
        self._retune(plant, first)
        self.phase = PHASE_ONLINE if online else PHASE_TUNED

    def _retune(self, plant: EntropyPlant, first: bool) -> None:
        cfg = self.cfg
        kp, ki = pi_gains(plant.cautious(), cfg.closed_loop_steps, p_only=cfg.ki == 0)
        if not first and self.plant is not None:
            # Rescheduling moves the gains by at most 2x per retune: one unlucky fit cannot make the
            # loop tight enough to cancel its own dither (a weak instrument for the next fit).
            kp = _clip(kp, self.kp / 2, self.kp * 2)
            ki = _clip(ki, self.ki / 2, self.ki * 2)
        lo, hi = alpha_bounds(plant, cfg.closed_loop_steps)
        held = plant.holding_alpha if first else self.pi.ki * self.pi.integral
        pi = PIController(kp, ki, cfg.target_entropy, lo, hi, cfg.anti_windup)
        if ki > 0:  # bumpless: the integral term keeps its value (first time: the holding alpha)
            pi.integral = _clip(held, lo, hi) / ki
        pi.alpha, pi.error = self.pi.alpha, self.pi.error
        self.pi, self.plant, self.kp, self.ki = pi, plant, kp, ki
        if cfg.filter == "kalman":
            self.filter = EntropyFilter(plant)
            self.filter.run(self.alphas, self.entropies[:-1])  # primed up to the previous step
            if self.alphas:
                self.filter.predict(self.alphas[-1])

    # --- state --------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, object]:
        """Plain Python (floats, ints, lists, dicts): safe for ``torch.load(weights_only=True)``."""
        return {
            "alpha": float(self.alpha),
            "error": float(self.error),
            "step": int(self.step),
            "phase": float(self.phase),
            "alphas": list(self.alphas),
            "entropies": list(self.entropies),
            "excitations": list(self.excitations),
            "pi": self.pi.state_dict(),
            "gains": {
                "kp": self.pi.kp,
                "ki": self.pi.ki,
                "alpha_min": self.pi.alpha_min,
                "alpha_max": self.pi.alpha_max,
                "reported_kp": self.kp,
                "reported_ki": self.ki,
            },
            "plant": dataclasses.asdict(self.plant) if self.plant is not None else None,
            "filter": self.filter.state_dict() if self.filter is not None else None,
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        if set(state) != set(_STATE):
            raise ValueError(
                f"AutotunedPIController.load_state_dict: expected keys {sorted(_STATE)}, "
                f"got {sorted(state)}"
            )
        gains = state["gains"]
        self.pi = PIController(
            gains["kp"],
            gains["ki"],
            self.cfg.target_entropy,
            gains["alpha_min"],
            gains["alpha_max"],
            self.cfg.anti_windup,
        )
        self.pi.load_state_dict(state["pi"])
        self.kp, self.ki = float(gains["reported_kp"]), float(gains["reported_ki"])
        self.alpha, self.error = float(state["alpha"]), float(state["error"])
        self.step, self.phase = int(state["step"]), float(state["phase"])
        self.integral = self.pi.integral if self.phase != PHASE_PROBE else 0.0
        self.alphas = [float(v) for v in state["alphas"]]
        self.entropies = [float(v) for v in state["entropies"]]
        self.excitations = [float(v) for v in state["excitations"]]
        self.plant = EntropyPlant(**state["plant"]) if state["plant"] is not None else None
        self.filter = None
        if state["filter"] is not None:
            self.filter = EntropyFilter(self.plant)
            self.filter.load_state_dict(state["filter"])
