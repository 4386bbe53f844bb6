"""The autotuned PI controller (controller.autotune probe | online; METHOD.md 3.5): phases, gains from
the identified plant, exact restore of its state, inert knobs when off, and the trainer around it."""

from __future__ import annotations

import copy
import io
import math

import numpy as np
import pytest
import torch
from simulated_plant import Plant  # tests/ is on sys.path (conftest.py): the simulated plant

from entropic_tune import metrics as M
from entropic_tune.config import load_config
from entropic_tune.controllers import (
    AutotunedPIController,
    PIController,
    alpha_bounds,
    build_controller,
    identify_plant,
    pi_gains,
)
from entropic_tune.controllers.autotune import PHASES, square_wave
from entropic_tune.engines.native.trainer import Trainer
from entropic_tune.errors import UserError


def controller(**keys) -> AutotunedPIController:
    data = {"method": "entropic", "train.total_steps": 1000, "controller.autotune": "probe", **keys}
    ctrl = build_controller(load_config(data).controller)
    assert isinstance(ctrl, AutotunedPIController)
    return ctrl


def drive(ctrl, plant: Plant, steps: int) -> list[dict[str, float]]:
    rows = []
    for _ in range(steps):
        plant.apply(ctrl.update(plant.measure()))
        rows.append(ctrl.metrics())
    return rows


def test_probe_then_simc_gains_from_the_identified_plant():
    ctrl = controller(**{"controller.target_entropy": 0.06})
    rows = drive(ctrl, Plant(-1e-3, -1.75e-3, lag=9.5, seed=0), 81)
    probe, first = rows[:80], rows[80]
    assert [r[M.ALPHA] for r in probe] == [square_wave(k, 1.5, 40) for k in range(80)]
    assert {r[M.PHASE] for r in probe} == {1.0} and {r[M.KP] for r in probe} == {0.0}
    assert first[M.PHASE] == 2.0 and PHASES[2.0] == "tuned"
    # the gains are SIMC's for the plant identified from exactly the probe's data
    plant = identify_plant([*ctrl.alphas[:80], 0.0], ctrl.entropies[:81])
    assert plant.is_identified() and plant == ctrl.plant
    # ... for the cautious gain |g| + stderr (robust to the identification's own error)
    assert (first[M.KP], first[M.KI]) == pytest.approx(pi_gains(plant.cautious(), ctrl.cfg.closed_loop_steps))
    assert plant.cautious().gain == plant.gain - plant.gain_stderr
    assert (first[M.PLANT_GAIN], first[M.PLANT_DRIFT]) == (plant.gain, plant.drift)
    lo, hi = ctrl.pi.alpha_min, ctrl.pi.alpha_max
    assert lo < plant.holding_alpha < hi
    # the integral starts at the holding alpha: alpha = kp * e + alpha*
    assert first[M.ALPHA] == pytest.approx(
        min(max(first[M.KP] * first[M.ERROR] + plant.holding_alpha, lo), hi)
    )


def test_the_default_probe_identifies_the_real_level_plant_in_most_runs():
    phases = [
        drive(controller(), Plant(-2e-4, -3.5e-4, lag=9.5, seed=s), 81)[-1][M.PHASE]
        for s in range(10, 30)
    ]
    assert phases.count(2.0) >= 16  # the rest fall back (phase 4), never tune from noise
    assert set(phases) <= {2.0, 4.0}


def test_probe_run_then_holds_the_target_on_the_real_level_plant():
    ctrl = controller(**{"controller.target_entropy": 0.06})
    plant = Plant(-2e-4, -3.5e-4, lag=9.5, seed=1)
    truth = []
    for _ in range(300):
        plant.apply(ctrl.update(plant.measure()))
        truth.append(plant.h)
    assert abs(np.mean(truth[200:]) - 0.06) < 0.002  # the drift alone would have left ~0.0
    assert np.sqrt(np.mean((np.array(truth[200:]) - 0.06) ** 2)) < 0.003


def test_a_plant_with_the_wrong_sign_falls_back_to_the_configured_gains():
    ctrl = controller(**{"controller.kp": 7.0, "controller.ki": 0.3})
    rows = drive(ctrl, Plant(5e-4, -3.5e-4, seed=2), 90)
    assert rows[-1][M.PHASE] == 4.0 and PHASES[4.0] == "fallback"
    assert (rows[-1][M.KP], rows[-1][M.KI]) == (7.0, 0.3)
    assert (ctrl.pi.alpha_min, ctrl.pi.alpha_max) == (-1.0, 1.0)
    assert rows[-1][M.PLANT_GAIN] == 0.0


def test_p_only_stays_p_only():
    ctrl = controller(**{"method": "entropic_p"})
    rows = drive(ctrl, Plant(-1e-3, -1.75e-3, lag=9.5, seed=0), 85)
    assert rows[-1][M.PHASE] == 2.0 and rows[-1][M.KP] > 0 and rows[-1][M.KI] == 0.0


def test_online_dithers_and_reschedules_only_at_its_retune_steps():
    ctrl = controller(**{"controller.autotune": "online", "controller.retune_every": 20})
    plant = Plant(-2e-4, -3.5e-4, lag=2.4, seed=3)
    rows = drive(ctrl, plant, 200)
    assert {r[M.PHASE] for r in rows[80:]} == {3.0}
    changed = [k for k in range(81, 200) if rows[k][M.KP] != rows[k - 1][M.KP]]
    assert changed and all((k - 80) % 20 == 0 for k in changed)
    for k in changed:  # at most 2x per retune
        assert 0.5 <= rows[k][M.KP] / rows[k - 1][M.KP] <= 2.0
    # the dither is in alpha: alpha - PI output is the square wave (where not clipped)
    assert ctrl.excitations[-1] == square_wave(199, 1.0, 40)


STATE_CASES = {
    "probe, restored mid-probe": ({}, 30),
    "probe, restored at the identification": ({}, 80),
    "probe with kalman, restored after": ({"controller.filter": "kalman"}, 95),
    "online with kalman, restored between retunes": (
        {
            "controller.autotune": "online",
            "controller.filter": "kalman",
            "controller.retune_every": 15,
        },
        130,
    ),
    "fallback": ({"controller.probe_steps": 10, "controller.probe_hold": 5}, 40),
}


@pytest.mark.parametrize("keys,cut", STATE_CASES.values(), ids=list(STATE_CASES))
def test_state_round_trip_continues_with_the_same_history(keys, cut):
    original = controller(**keys)
    plant = Plant(-2e-4, -3.5e-4, lag=5.0, seed=4)
    drive(original, plant, cut)
    state = original.state_dict()
    # plain Python only: the trainer's checkpoint is read back with weights_only=True
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    restored = controller(**keys)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.state_dict() == state
    twin = copy.deepcopy(plant)  # the same plant state and noise stream from here on
    assert drive(restored, twin, 80) == drive(original, plant, 80)


def test_load_state_dict_rejects_a_plain_pi_state():
    with pytest.raises(ValueError, match="expected keys"):
        controller().load_state_dict(PIController(1.0, 0.1, 0.06).state_dict())


def test_every_step_reports_the_same_finite_keys():
    for keys in ({}, {"controller.autotune": "online", "controller.filter": "kalman"}):
        rows = drive(controller(**keys), Plant(-2e-4, -3.5e-4, seed=5), 120)
        assert all(list(r) == list(M.CONTROL_KEYS) for r in rows)
        assert all(math.isfinite(v) for r in rows for v in r.values())


@pytest.mark.parametrize(
    "keys,match",
    [
        ({"method": "adaptive_entropy", "controller.autotune": "probe"}, "controller.autotune"),
        (
            {"controller.autotune": "probe", "controller.update": "minibatch"},
            "controller.update 'step'",
        ),
        ({"controller.filter": "kalman"}, "controller.filter"),
        ({"controller.autotune": "probe", "controller.probe_steps": 30}, "controller.probe_steps"),
        ({"controller.autotune": "probe", "train.total_steps": 80}, "train.total_steps"),
        ({"controller.autotune": "sometimes"}, "allowed: off, probe, online"),
        ({"controller.plant_lag": -1}, "controller.plant_lag"),
    ],
)
def test_bad_autotune_settings_are_one_line_user_errors(keys, match):
    with pytest.raises(UserError, match=match):
        load_config({"method": "entropic", "train.total_steps": 200, **keys})


# --- in the trainer ------------------------------------------------------------------------------

PROBE = {
    "method": "entropic",
    "controller.autotune": "probe",
    "controller.probe_steps": 4,
    "controller.probe_hold": 2,
    "train.total_steps": 8,
}


def _no_perf(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith("perf/")}


@pytest.mark.slow
@pytest.mark.parametrize("cut", [2, 5])
@pytest.mark.parametrize("mode", ["probe", "online"])
def test_trainer_restores_an_autotuned_run_exactly(fast_config, mode, cut):
    cfg = load_config(
        {
            **fast_config,
            **PROBE,
            "controller.autotune": mode,
            "controller.retune_every": 2,
            "controller.retune_window": 4,
        }
    )
    straight = Trainer(cfg)
    for _ in range(cut):
        straight.step()
    buffer = io.BytesIO()
    torch.save(straight.state_dict(), buffer)
    expected = [_no_perf(straight.step()) for _ in range(8 - cut)]
    buffer.seek(0)
    resumed = Trainer(cfg)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    got = [_no_perf(resumed.step()) for _ in range(8 - cut)]
    assert got == expected
    assert resumed.controller.state_dict() == straight.controller.state_dict()  # window, plant, PI
    assert [r[M.PHASE] for r in expected][-1] in (2.0, 3.0, 4.0)  # past the probe


def test_trainer_probe_run_emits_documented_keys_and_probe_alphas(fast_config):
    trainer = Trainer(load_config({**fast_config, **PROBE}))
    rows = [trainer.step() for _ in range(6)]
    assert all(list(r) == list(M.STEP_KEYS) for r in rows)
    assert [r[M.ALPHA] for r in rows[:4]] == [1.5, 1.5, -1.5, -1.5]
    assert [r[M.PHASE] for r in rows] == [1.0] * 4 + [rows[4][M.PHASE]] * 2


@pytest.mark.slow
def test_autotune_off_ignores_the_autotune_knobs(fast_config):
    base = {**fast_config, "method": "entropic", "train.total_steps": 3}
    knobs = {
        "controller.probe_steps": 2,
        "controller.probe_hold": 1,
        "controller.closed_loop_steps": 3.0,
        "controller.plant_lag": 2.0,
        "controller.retune_every": 1,
        "controller.dither_amplitude": 0.0,
        "controller.probe_amplitude": 9.0,
    }
    plain, knobbed = Trainer(load_config(base)), Trainer(load_config({**base, **knobs}))
    assert type(plain.controller) is PIController and type(knobbed.controller) is PIController
    a = [_no_perf(plain.step()) for _ in range(3)]
    b = [_no_perf(knobbed.step()) for _ in range(3)]
    assert a == b
    assert {r[M.PHASE] for r in a} == {0.0} and {r[M.KP] for r in a} == {10.0}


def test_alpha_bounds_of_a_tuned_run_come_from_the_plant():
    ctrl = controller()
    drive(ctrl, Plant(-1e-3, -1.75e-3, lag=9.5, seed=0), 81)
    lo, hi = ctrl.pi.alpha_min, ctrl.pi.alpha_max
    assert (lo, hi) == alpha_bounds(ctrl.plant, ctrl.cfg.closed_loop_steps) != (-1.0, 1.0)
    assert lo < ctrl.plant.holding_alpha < hi
