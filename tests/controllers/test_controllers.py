"""Controllers: PI timing and clipping, anti-windup, toy-plant behaviour (METHOD.md 3.2), the adaptive
entropy coefficient at its bounds (METHOD.md 6), state round trips, metric names and the factory."""

from __future__ import annotations

from itertools import pairwise

import pytest

from entropic_tune import config, controllers, methods, metrics
from entropic_tune.config import load_config
from entropic_tune.controllers import (
    AdaptiveEntropyController,
    ConstantController,
    PIController,
    build_controller,
)


def simulate(ctrl, steps: int, h0: float = 0.5, drift: float = 0.02, kappa: float = 1.0):
    """Toy plant H <- H + d - kappa * alpha; returns the errors H - target seen by the controller."""
    h, errors = h0, []
    for _ in range(steps):
        alpha = ctrl.update(h)
        errors.append(ctrl.error)
        h = h + drift - kappa * alpha
    return errors


# --- PI ------------------------------------------------------------------------------------------


def test_pi_first_call_uses_zero_integral_and_hand_computed_sequence():
    ctrl = PIController(kp=2.0, ki=0.5, target=0.2)
    # e = 0.3, I = 0: alpha = 2 * 0.3 = 0.6; then I = 0.3
    assert ctrl.update(0.5) == pytest.approx(0.6)
    assert ctrl.integral == pytest.approx(0.3)
    # e = -0.1, I = 0.3: alpha = -0.2 + 0.15 = -0.05; then I = 0.2
    assert ctrl.update(0.1) == pytest.approx(-0.05)
    assert ctrl.integral == pytest.approx(0.2)
    # e = 0.1, I = 0.2: alpha = 0.2 + 0.1 = 0.3; then I = 0.3
    assert ctrl.update(0.3) == pytest.approx(0.3)
    assert ctrl.integral == pytest.approx(0.3)
    assert ctrl.error == pytest.approx(0.1)


def test_pi_output_clipped_at_both_bounds():
    ctrl = PIController(kp=10.0, ki=0.0, target=0.2, alpha_min=-0.5, alpha_max=0.25)
    assert ctrl.update(1.2) == 0.25
    assert ctrl.update(-0.8) == -0.5
    assert ctrl.update(0.21) == pytest.approx(0.1)


def test_pi_anti_windup_clamps_integral():
    ctrl = PIController(kp=0.0, ki=0.5, target=0.0, alpha_min=-1.0, alpha_max=1.0)
    for _ in range(10):
        ctrl.update(1.0)
    assert ctrl.integral == pytest.approx(2.0)  # alpha_max / ki
    for _ in range(10):
        ctrl.update(-1.0)
    assert ctrl.integral == pytest.approx(-2.0)  # alpha_min / ki
    # Unwound: one step of opposite error moves the output off the bound immediately.
    assert ctrl.update(1.0) == pytest.approx(-1.0)
    assert ctrl.update(0.0) == pytest.approx(-0.5)


def test_pi_without_anti_windup_keeps_raw_sum():
    ctrl = PIController(kp=0.0, ki=0.5, target=0.0, anti_windup=False)
    for _ in range(10):
        assert ctrl.update(1.0) <= 1.0
    assert ctrl.integral == pytest.approx(10.0)
    # Wound up: a negative error is not enough to leave the upper bound.
    assert ctrl.update(-1.0) == 1.0


def test_pi_anti_windup_ignored_for_p_only():
    ctrl = PIController(kp=1.0, ki=0.0, target=0.0)
    for _ in range(5):
        ctrl.update(1.0)
    assert ctrl.integral == pytest.approx(5.0)


def test_pi_removes_constant_drift_on_toy_plant():
    kp, ki, kappa, drift = 0.5, 0.1, 1.0, 0.02
    ctrl = PIController(kp=kp, ki=ki, target=0.3)
    errors = simulate(ctrl, 300, drift=drift, kappa=kappa)
    assert abs(errors[-1]) < 1e-4
    assert ctrl.integral == pytest.approx(drift / (kappa * ki), rel=1e-3)
    assert ctrl.alpha == pytest.approx(drift / kappa, rel=1e-3)


def test_p_only_leaves_steady_offset_on_toy_plant():
    kp, kappa, drift = 0.5, 1.0, 0.02
    ctrl = PIController(kp=kp, ki=0.0, target=0.3)
    errors = simulate(ctrl, 300, drift=drift, kappa=kappa)
    assert errors[-1] == pytest.approx(drift / (kappa * kp), rel=1e-6)


def test_unstable_p_gain_oscillates_and_grows():
    # kappa * kp = 2.5 > 2: the error flips sign every step and its amplitude grows.
    wide = PIController(kp=2.5, ki=0.0, target=0.3, alpha_min=-1e6, alpha_max=1e6)
    errors = simulate(wide, 12)
    assert all(a * b < 0 for a, b in pairwise(errors[1:]))
    assert all(abs(b) > abs(a) for a, b in pairwise(errors[1:]))
    # With the default bounds it saturates into a limit cycle instead of settling.
    errors = simulate(PIController(kp=2.5, ki=0.0, target=0.3), 300)
    assert min(abs(e) for e in errors[-50:]) > 0.1


def test_pi_rejects_non_finite_entropy_and_bad_gains():
    with pytest.raises(ValueError, match="finite"):
        PIController(1.0, 0.1, 0.2).update(float("nan"))
    with pytest.raises(ValueError, match="kp"):
        PIController(-1.0, 0.1, 0.2)
    with pytest.raises(ValueError, match="alpha_min"):
        PIController(1.0, 0.1, 0.2, alpha_min=1.0, alpha_max=1.0)


# --- adaptive entropy ----------------------------------------------------------------------------


def test_adaptive_coefficient_rises_below_and_falls_above_target():
    ctrl = AdaptiveEntropyController(target=0.5, delta=1e-4, coef_init=1e-3)
    assert ctrl.update(0.4) == pytest.approx(1e-3)  # coefficient before this step's adjustment
    assert ctrl.coef == pytest.approx(1.1e-3)
    assert ctrl.update(0.4) == pytest.approx(1.1e-3)
    assert ctrl.coef == pytest.approx(1.2e-3)
    assert ctrl.update(0.6) == 0.0  # gated off above the target
    assert ctrl.coef == pytest.approx(1.1e-3)
    assert ctrl.update(0.5) == 0.0  # at the target counts as "not below"
    assert ctrl.coef == pytest.approx(1.0e-3)
    assert ctrl.error == pytest.approx(0.0)


def test_adaptive_keeps_working_at_lower_bound():
    ctrl = AdaptiveEntropyController(target=0.5, delta=1e-4, coef_min=0.0, coef_init=0.0)
    for _ in range(5):
        assert ctrl.update(0.9) == 0.0
    assert ctrl.coef == 0.0
    assert ctrl.update(0.1) == 0.0  # c was 0 before this step
    assert ctrl.coef == pytest.approx(1e-4)  # ... but it moves off the bound
    assert ctrl.update(0.1) == pytest.approx(1e-4)


def test_adaptive_keeps_working_at_upper_bound():
    ctrl = AdaptiveEntropyController(target=0.5, delta=1e-3, coef_max=2e-3, coef_init=0.0)
    for _ in range(10):
        ctrl.update(0.1)
    assert ctrl.coef == pytest.approx(2e-3)
    assert ctrl.update(0.1) == pytest.approx(2e-3)
    assert ctrl.update(0.9) == 0.0
    assert ctrl.coef == pytest.approx(1e-3)


def test_adaptive_previous_gate_uses_the_entropy_of_the_step_before():
    # Skywork-OR1's timing: the bonus of step k is on when H_{k-1} < target; c moves as before.
    entropies = [0.4, 0.6, 0.6, 0.4, 0.4]
    current = AdaptiveEntropyController(target=0.5, delta=1e-4, coef_init=1e-3)
    previous = AdaptiveEntropyController(target=0.5, delta=1e-4, coef_init=1e-3, gate="previous")
    out_current, out_previous, coefs = [], [], []
    for h in entropies:
        coef = previous.coef  # c_k, before this step's adjustment
        out_current.append(current.update(h))
        out_previous.append(previous.update(h))
        coefs.append(coef)
        assert previous.coef == current.coef and previous.error == current.error
    below = [h < 0.5 for h in entropies]
    assert out_current == pytest.approx([c * b for c, b in zip(coefs, below, strict=True)])
    # closed at step 1, then the gate of the step before
    shifted = [0.0] + [c * b for c, b in zip(coefs[1:], below[:-1], strict=True)]
    assert out_previous == pytest.approx(shifted)
    assert out_previous != pytest.approx(out_current)


def test_adaptive_previous_gate_state_round_trip_and_bad_gate():
    ctrl = AdaptiveEntropyController(target=0.5, coef_init=1e-3, gate="previous")
    ctrl.update(0.4)
    state = ctrl.state_dict()
    assert state["gate"] == 1.0
    restored = AdaptiveEntropyController(target=0.5, coef_init=1e-3, gate="previous")
    restored.load_state_dict(state)
    assert restored.update(0.9) == ctrl.update(0.9) == pytest.approx(1.1e-3)  # gated by H = 0.4
    default = AdaptiveEntropyController(target=0.5).state_dict()
    assert "gate" not in default  # the default's state keeps its keys (old checkpoints still load)
    with pytest.raises(ValueError, match="gate"):
        AdaptiveEntropyController(target=0.5, gate="next")
    cfg = load_config({"method": "adaptive_entropy", "controller.coef_gate": "previous"})
    assert build_controller(cfg.controller).previous_gate


def test_adaptive_rejects_coef_init_outside_bounds():
    with pytest.raises(ValueError, match="coef_init"):
        AdaptiveEntropyController(target=0.5, coef_init=1.0)


# --- constant ------------------------------------------------------------------------------------

# Controllers without autotuning report no plant and phase 0 (controllers.autotune.PHASES).
NO_TUNING = {metrics.KP: 0.0, metrics.KI: 0.0, metrics.PLANT_GAIN: 0.0, metrics.PLANT_DRIFT: 0.0,
             metrics.PHASE: 0.0}


def test_constant_always_returns_value():
    ctrl = ConstantController(0.3)
    assert ctrl.metrics()[controllers.ALPHA] == 0.3
    assert [ctrl.update(h) for h in (0.0, 1.0, 5.0)] == [0.3, 0.3, 0.3]
    assert ctrl.metrics() == {
        metrics.ALPHA: 0.3,
        metrics.ERROR: 0.0,
        metrics.INTEGRAL: 0.0,
        metrics.COEF: 0.0,
        **NO_TUNING,
    }


# --- shared surface ------------------------------------------------------------------------------

ENTROPIES = [0.5, 0.1, 0.33, 0.05, 0.9, 0.2, 0.21, 0.15]


def make_all():
    return [
        PIController(kp=2.0, ki=0.3, target=0.2, alpha_min=-0.4, alpha_max=0.4),
        PIController(kp=2.0, ki=0.3, target=0.2, anti_windup=False),
        AdaptiveEntropyController(target=0.2, delta=1e-3, coef_max=2e-3),
        ConstantController(0.7),
    ]


@pytest.mark.parametrize("index", range(4))
def test_state_dict_round_trip_gives_identical_outputs(index):
    original = make_all()[index]
    for h in ENTROPIES[:4]:
        original.update(h)
    state = original.state_dict()
    assert all(type(v) is float for v in state.values())
    restored = make_all()[index]
    restored.load_state_dict(dict(state))
    assert restored.state_dict() == state
    assert restored.metrics() == original.metrics()
    for h in ENTROPIES[4:]:
        assert restored.update(h) == original.update(h)
        assert restored.metrics() == original.metrics()


def test_load_state_dict_rejects_other_controllers_state():
    pi, _, adaptive, constant = make_all()
    with pytest.raises(ValueError, match="expected keys"):
        pi.load_state_dict(adaptive.state_dict())
    with pytest.raises(ValueError, match="expected keys"):
        constant.load_state_dict(pi.state_dict())


def test_metric_names_match_metrics_module():
    assert (controllers.ALPHA, controllers.ERROR, controllers.INTEGRAL, controllers.COEF,
            controllers.KP, controllers.KI, controllers.PLANT_GAIN, controllers.PLANT_DRIFT,
            controllers.PHASE) == metrics.CONTROL_KEYS
    for ctrl in make_all():
        ctrl.update(0.3)
        out = ctrl.metrics()
        assert set(out) == set(metrics.CONTROL_KEYS)
        assert all(type(v) is float for v in out.values())


def test_metrics_values():
    pi = PIController(kp=1.0, ki=0.5, target=0.2)
    pi.update(0.5)
    assert pi.metrics() == pytest.approx(
        {metrics.ALPHA: 0.3, metrics.ERROR: 0.3, metrics.INTEGRAL: 0.3, metrics.COEF: 0.0,
         **NO_TUNING, metrics.KP: 1.0, metrics.KI: 0.5}
    )
    aec = AdaptiveEntropyController(target=0.2, delta=1e-3, coef_init=1e-3)
    aec.update(0.1)
    assert aec.metrics() == pytest.approx(
        {metrics.ALPHA: 1e-3, metrics.ERROR: -0.1, metrics.INTEGRAL: 0.0, metrics.COEF: 2e-3,
         **NO_TUNING}
    )


def test_registry_covers_config_controller_names():
    assert set(controllers.REGISTRY) == set(config.CONTROLLERS)


EXPECTED_CLASS = {
    "pi": PIController,
    "adaptive": AdaptiveEntropyController,
    "constant": ConstantController,
}


@pytest.mark.parametrize("method", methods.METHODS)
def test_build_controller_for_every_method(method):
    cfg = load_config({"method": method})
    ctrl = build_controller(cfg.controller)
    assert type(ctrl) is EXPECTED_CLASS[cfg.controller.name]
    if method == "entropic_p":
        assert isinstance(ctrl, PIController) and ctrl.ki == 0.0
    if method == "entropic":
        assert isinstance(ctrl, PIController) and ctrl.ki > 0
        assert ctrl.ki == cfg.controller.ki
    if method == "adaptive_entropy":
        assert isinstance(ctrl, AdaptiveEntropyController)
    if cfg.controller.name == "constant":
        assert ctrl.update(0.1) == 0.0


def test_build_controller_passes_every_field():
    cfg = load_config(
        {
            "method": "entropic",
            "controller": {
                "kp": 3,
                "ki": 0.2,
                "target_entropy": 0.4,
                "alpha_min": -0.3,
                "alpha_max": 0.6,
                "anti_windup": False,
            },
        }
    )
    pi = build_controller(cfg.controller)
    assert (pi.kp, pi.ki, pi.target, pi.alpha_min, pi.alpha_max, pi.anti_windup) == (
        3.0,
        0.2,
        0.4,
        -0.3,
        0.6,
        False,
    )
    cfg = load_config(
        {
            "method": "adaptive_entropy",
            "controller.coef_delta": 2e-4,
            "controller.coef_min": 1e-4,
            "controller.coef_max": 1e-2,
            "controller.coef_init": 1e-3,
            "controller.target_entropy": 0.7,
        }
    )
    aec = build_controller(cfg.controller)
    assert (aec.target, aec.delta, aec.coef_min, aec.coef_max, aec.coef) == (
        0.7,
        2e-4,
        1e-4,
        1e-2,
        1e-3,
    )
    const = build_controller(load_config({"method": "grpo", "controller.value": 0.25}).controller)
    assert const.update(1.0) == 0.25


def test_controllers_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, entropic_tune.controllers; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


class _Recording:
    """A ControllerConfig that records which fields are read."""

    def __init__(self, cfg):
        object.__setattr__(self, "_cfg", cfg)
        object.__setattr__(self, "read", set())

    def __getattr__(self, name):
        self.read.add(name)
        return getattr(self._cfg, name)


@pytest.mark.parametrize("name,autotune", [("constant", "off"), ("adaptive", "off"), ("pi", "off"),
                                           ("pi", "probe"), ("pi", "online")])
def test_controller_params_are_the_fields_each_controller_reads(name, autotune):
    """issue 16: methods.CONTROLLER_PARAMS/AUTOTUNE_PARAMS (what --dry-run lists) against the builders."""
    small = {"controller.probe_steps": 4, "controller.probe_hold": 2, "controller.retune_every": 2,
             "controller.retune_window": 4, "train.total_steps": 50}
    cfg = load_config({"controller.name": name, "controller.autotune": autotune, **small}).controller
    recording = _Recording(cfg)
    ctrl = controllers.build_controller(recording)
    simulate(ctrl, 40, h0=0.06, drift=0.001, kappa=0.01)  # identifiable: the probe's gains get set
    expected = {*methods.CONTROLLER_PARAMS[name], *methods.AUTOTUNE_PARAMS[autotune]}
    # build_controller reads `autotune` for every controller; only the PI's depends on it
    # the autotuned PI reads retune_window in probe mode too (the history it keeps), without effect
    read = recording.read - {"name", "autotune", *(["retune_window"] if autotune == "probe" else [])}
    assert read == expected - {"autotune"}, (sorted(read - expected), sorted(expected - read))

