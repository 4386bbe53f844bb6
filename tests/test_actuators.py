"""Actuators (METHOD.md 3.4): the default passes the output through bit for bit; every other actuator
moves its knob in the direction that lowers entropy for a positive drive, from the documented offset,
within the documented bounds; the adaptive coefficient's output enters with the opposite sign."""

from __future__ import annotations

import pytest

from entropic_tune import actuators
from entropic_tune.actuators import ACTUATORS, actuate
from entropic_tune.config import ControllerConfig, LossConfig, load_config
from entropic_tune.methods import LOSS_DEFAULTS

PARAMS = {**LOSS_DEFAULTS, "clip_eps_high": 0.28, "positive_weight": 0.5, "beta": 2e-3}


def act(actuator: str, output: float, controller: str = "pi", scale: float = 1.0, loss="grpo"):
    return actuate(actuator, output, controller=controller, scale=scale, params=PARAMS, loss=loss)


def test_names_match_the_config_choices_and_default():
    assert ACTUATORS[0] == ControllerConfig().actuator == "entropic"
    for name in ACTUATORS:
        assert load_config({"controller.actuator": name}).controller.actuator == name


@pytest.mark.parametrize("output", [0.3, -0.7, 0.1 + 0.2, 0.0])
@pytest.mark.parametrize("controller", ["pi", "adaptive", "constant"])
def test_entropic_passes_the_output_through_unchanged(output, controller):
    out = act("entropic", output, controller)
    assert out.alpha == output and out.value == output  # exact, whatever the controller
    assert out.params == PARAMS and out.bonus == 0.0


def test_entropic_scale_multiplies_alpha():
    assert act("entropic", 0.3, scale=2.0).alpha == pytest.approx(0.6)


# knob value for a drive u, read from the Actuation, and the direction that lowers entropy
KNOBS = {
    "entropy_bonus": (lambda a: a.value, -1),  # less bonus
    "clip_high": (lambda a: a.params["clip_eps_high"], -1),  # tighter upper clip
    "positive_weight": (lambda a: a.params["positive_weight"], +1),  # more weight on positives
}


@pytest.mark.parametrize("actuator", list(KNOBS))
def test_positive_error_moves_every_knob_towards_lower_entropy(actuator):
    read, lowers = KNOBS[actuator]
    base = read(act(actuator, 0.0))
    up, down = read(act(actuator, 0.1)), read(act(actuator, -0.1))  # PI: 0.1 = entropy too high
    assert lowers * (up - base) > 0 and lowers * (down - base) < 0
    # the adaptive coefficient's output is a bonus weight: positive asks for more entropy
    aec = read(act(actuator, 0.1, controller="adaptive"))
    assert aec == pytest.approx(down)
    # the loss's own coefficient is off under any other actuator
    assert act(actuator, 0.1).alpha == 0.0


def test_offsets_scale_and_bounds():
    # entropy_bonus: beta_k = beta_0 - k u, beta_0 the loss's own bonus (only the entropy_bonus loss)
    assert act("entropy_bonus", 0.1, scale=0.01).bonus == pytest.approx(-1e-3)
    assert act("entropy_bonus", 0.1, scale=0.01).value == pytest.approx(-1e-3)
    own = act("entropy_bonus", 0.1, scale=0.01, loss="entropy_bonus")
    assert own.bonus == pytest.approx(-1e-3) and own.value == pytest.approx(2e-3 - 1e-3)
    assert own.params["beta"] == PARAMS["beta"]  # the loss keeps its own beta; the bonus adds to it
    assert act("entropy_bonus", 5.0).value == pytest.approx(-5.0)  # no clip: a penalty is allowed
    # clip_high: eps_k = max(eps_0 - k u, eps_low)
    assert act("clip_high", 0.1, scale=0.5).params["clip_eps_high"] == pytest.approx(0.28 - 0.05)
    assert act("clip_high", 10.0).params["clip_eps_high"] == PARAMS["clip_eps_low"] == 0.2
    assert act("clip_high", -10.0).value == pytest.approx(10.28)
    # positive_weight: lambda_k = max(lambda_0 + k u, 0)
    assert act("positive_weight", 0.1, scale=2.0).params["positive_weight"] == pytest.approx(0.7)
    assert act("positive_weight", -10.0).value == 0.0
    # the other parameters are left alone, and the caller's dict is not modified
    out = act("clip_high", 0.1)
    assert {k: v for k, v in out.params.items() if k != "clip_eps_high"} == {
        k: v for k, v in PARAMS.items() if k != "clip_eps_high"
    }
    assert PARAMS["clip_eps_high"] == 0.28


def test_output_signs_cover_the_controllers():
    from entropic_tune import config

    assert set(actuators.OUTPUT_SIGN) <= set(config.CONTROLLERS)
    assert actuators.OUTPUT_SIGN["adaptive"] == -1.0


def test_unknown_actuator_and_config_checks():
    with pytest.raises(ValueError, match="allowed: entropic"):
        act("eps_high", 0.1)
    assert LossConfig().positive_weight == 1.0  # the knob the positive_weight actuator starts from
