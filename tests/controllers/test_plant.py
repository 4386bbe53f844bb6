"""Plant identification, SIMC gains, alpha bounds and the entropy filter (controllers.plant, .gains,
.filters; METHOD.md 3.5) on simulated plants with the real trainer's noise level: measurement noise
5e-3 nats against ~2e-4 nats per step per unit alpha (issue 12's probe of the trainer)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from simulated_plant import (  # tests/ is on sys.path (conftest.py): shared with the autotune tests
    NOISE,
    Plant,
)

from entropic_tune.controllers import (
    EntropyFilter,
    EntropyPlant,
    PIController,
    alpha_bounds,
    identify_plant,
    pi_gains,
)
from entropic_tune.controllers.autotune import square_wave
from entropic_tune.errors import UserError


def probe_data(plant: Plant, steps=80, amplitude=1.5, hold=40):
    """The autotuner's default probe: ``steps`` square-wave alphas and ``steps + 1`` entropies."""
    alphas, entropies = [], []
    for k in range(steps + 1):
        entropies.append(plant.measure())
        alphas.append(square_wave(k, amplitude, hold))
        plant.apply(alphas[-1])
    return alphas, entropies


# --- identification ------------------------------------------------------------------------------


@pytest.mark.parametrize("lag", [0.0, 9.5])
@pytest.mark.parametrize("gain", [-2e-4, -2e-3, -2e-2, -2e-1])
def test_identification_recovers_gain_and_drift_within_stated_stderr(gain, lag):
    # Drift 1.75 x gain: holding entropy needs alpha ~ -1.75, as on the real trainer (issue 12).
    drift, draws = 1.75 * gain, 20
    z_gain, z_drift, rel_se = [], [], []
    for seed in range(draws):
        plant = identify_plant(*probe_data(Plant(gain, drift, lag=lag, seed=seed)))
        z_gain.append((plant.gain - gain) / plant.gain_stderr)
        z_drift.append((plant.drift - drift) / plant.drift_stderr)
        rel_se.append(plant.gain_stderr / -gain)
        assert plant.noise == pytest.approx(NOISE, rel=0.35)
    # Within 2 standard errors in most draws (95 % expected), and not only because the error is huge:
    assert np.mean(np.abs(z_gain) < 2) >= 0.8
    assert np.mean(np.abs(z_drift) < 2) >= 0.8
    assert abs(np.mean(z_gain)) < 0.8  # no systematic bias
    assert np.median(rel_se) < 0.5  # at the real level the probe pins the gain to ~+/-35 %


def test_identification_finds_the_lag_when_the_signal_allows_it():
    plant = identify_plant(*probe_data(Plant(-2e-2, -3.5e-2, lag=9.5, seed=3)))
    assert plant.lag == pytest.approx(9.5, rel=0.1)
    no_lag = identify_plant(*probe_data(Plant(-2e-2, -3.5e-2, lag=0.0, seed=3)))
    assert no_lag.lag < 1.0


def test_a_fixed_wrong_lag_biases_the_gain_and_the_identified_lag_does_not():
    # 10-step holds against a 9.5-step lag: ignoring the lag (lag=0) attenuates the fitted gain, which is
    # why the 5-step-hold probe of the trainer gave a positive gain.
    data = [probe_data(Plant(-2e-3, -3.5e-3, lag=9.5, seed=s), hold=10) for s in range(8)]
    ignored = [identify_plant(a, y, lag=0.0).gain for a, y in data]
    fitted = [identify_plant(a, y).gain for a, y in data]
    assert np.mean(ignored) > -1.2e-3  # less than 60 % of the true gain
    assert np.mean(fitted) == pytest.approx(-2e-3, rel=0.2)


@pytest.mark.parametrize(
    "alphas,entropies,match",
    [
        ([0.5] * 20, list(np.linspace(0.09, 0.07, 20)), "alpha is constant"),
        ([1.0, -1.0, 1.0], [0.09, 0.08, 0.09], "at least 4 steps"),
        ([1.0, -1.0, 1.0, -1.0, 1.0], [0.09, float("nan"), 0.08, 0.08, 0.07], "finite"),
        ([1.0, -1.0, 1.0, -1.0], [0.09, 0.08, 0.08], "equal lengths"),
        ([1.0, 1.0, 1.0, 1.0, -1.0], [0.09, 0.08, 0.08, 0.07, 0.06], "alpha is constant"),
    ],
    ids=[
        "constant alpha",
        "too short",
        "nan",
        "unequal lengths",
        "only the unused last alpha moves",
    ],
)
def test_unidentifiable_data_is_refused_with_a_clear_error(alphas, entropies, match):
    with pytest.raises(UserError, match=match):
        identify_plant(alphas, entropies)


def test_constant_excitation_is_refused():
    alphas, entropies = probe_data(Plant(-2e-4, -3.5e-4))
    with pytest.raises(UserError, match="excitation is constant"):
        identify_plant(alphas, entropies, excitation=[0.3] * len(alphas))


def closed_loop_data(seed, steps=200, kp=300.0, ki=5.0, dither=1.0, process=3e-4):
    """PI (with the holding alpha preloaded) plus a square-wave dither, on the real-level plant."""
    plant = Plant(-2e-4, -3.5e-4, process=process, h0=0.06, seed=seed)
    pi = PIController(kp, ki, 0.06, -10.0, 10.0)
    pi.integral = 1.75 / ki
    alphas, entropies, excitation = [], [], []
    for k in range(steps + 1):
        entropies.append(plant.measure())
        excitation.append(square_wave(k, dither, 40))
        alphas.append(pi.update(entropies[-1]) + excitation[-1])
        plant.apply(alphas[-1])
    return alphas, entropies, excitation


def test_closed_loop_identification_with_the_dither_as_instrument_is_unbiased():
    z_iv, z_ls, accepted = [], [], 0
    for seed in range(16):
        alphas, entropies, excitation = closed_loop_data(seed)
        iv = identify_plant(alphas, entropies, excitation=excitation)
        ls = identify_plant(alphas, entropies)  # least squares, ignoring the feedback
        z_iv.append((iv.gain + 2e-4) / iv.gain_stderr)
        z_ls.append((ls.gain + 2e-4) / ls.gain_stderr)
        accepted += iv.is_identified()
        assert iv.instrument_f > 10 and math.isinf(ls.instrument_f)
    assert np.mean(np.abs(z_iv) < 2) >= 0.8
    assert abs(np.mean(z_iv)) < 0.5
    assert np.mean(z_ls) < np.mean(z_iv)  # feedback pushes least squares towards a larger |gain|
    assert accepted >= 12


def test_a_loop_too_tight_for_its_dither_is_not_accepted():
    # kp 1000 cancels most of the dither's effect: a weak instrument, so no retune may trust it.
    fits = [
        identify_plant(
            *closed_loop_data(s, kp=1000.0, ki=30.0, process=1e-3)[:2],
            excitation=closed_loop_data(s, kp=1000.0, ki=30.0, process=1e-3)[2],
        )
        for s in range(6)
    ]
    assert sum(f.is_identified() for f in fits) <= 1


# --- gains ---------------------------------------------------------------------------------------


def test_pi_gains_follow_simc_for_an_integrating_plant_with_lag():
    plant = EntropyPlant(gain=-2e-4, drift=-3.5e-4, gain_stderr=2e-5, noise=NOISE, lag=9.5)
    kp, ki = pi_gains(plant, 20.0)
    theta = 0.5 + 9.5 / 2  # half a step of sample-and-hold + half the lag (half rule)
    assert kp == pytest.approx(1 / (2e-4 * (20 + theta)))
    assert ki == pytest.approx(kp / (4 * (20 + theta)))
    # tau_c below the effective delay is raised to it (SIMC's robustness floor)
    assert pi_gains(plant, 1.0) == pytest.approx(pi_gains(plant, theta))
    assert pi_gains(plant, 20.0, p_only=True) == (pytest.approx(kp), 0.0)
    # ten times the plant gain, a tenth of the controller gain
    tenfold = pi_gains(
        EntropyPlant(gain=-2e-3, drift=-3.5e-3, gain_stderr=0.0, noise=NOISE, lag=9.5), 20.0
    )
    assert tenfold == pytest.approx((kp / 10, ki / 10))


@pytest.mark.parametrize("gain", [2e-4, 0.0, float("nan")])
def test_pi_gains_refuse_a_plant_without_negative_gain(gain):
    with pytest.raises(UserError, match="negative"):
        pi_gains(EntropyPlant(gain=gain, drift=-3.5e-4, gain_stderr=1e-5, noise=NOISE), 10.0)


def test_alpha_bounds_hold_the_drift_with_authority_both_ways():
    plant = EntropyPlant(gain=-2e-4, drift=-3.5e-4, gain_stderr=0.0, noise=1e-3, drift_stderr=0.0)
    lo, hi = alpha_bounds(plant, 10.0)
    assert plant.holding_alpha == pytest.approx(-1.75)
    assert (lo, hi) == pytest.approx(
        (-3.5, 0.0)
    )  # at either bound entropy moves at the drift's speed
    # without drift, the noise sets the authority: alpha* +/- noise / (|gain| tau_c)
    calm = EntropyPlant(gain=-2e-4, drift=0.0, gain_stderr=0.0, noise=5e-3, drift_stderr=0.0)
    assert alpha_bounds(calm, 10.0) == pytest.approx((-2.5, 2.5))
    # uncertainty of alpha* widens them too
    unsure = EntropyPlant(
        gain=-2e-4, drift=-3.5e-4, gain_stderr=5e-5, noise=1e-3, drift_stderr=5e-5
    )
    assert unsure.holding_alpha_stderr > 0
    wide = alpha_bounds(unsure, 10.0)
    assert wide[0] < -3.5 and wide[1] > 0.0
    # a plant that barely responds would ask for alpha -1000: the cap keeps alpha in [-10, 0]
    assert alpha_bounds(EntropyPlant(gain=-1e-6, drift=-1e-3, gain_stderr=0, noise=1e-3), 10.0) == (
        -10.0,
        0.0,
    )


def simulate_loop(plant: Plant, kp, ki, lo, hi, target, steps):
    pi = PIController(kp, ki, target, lo, hi)
    errors, alphas = [], []
    for _ in range(steps):
        y = plant.measure()
        alphas.append(pi.update(y))
        errors.append(plant.h - target)
        plant.apply(alphas[-1])
    return np.array(errors), np.array(alphas)


@pytest.mark.parametrize("lag", [0.0, 2.4, 9.5])
@pytest.mark.parametrize("gain", [-2e-4, -2e-3, -2e-2, -2e-1])
def test_closed_loop_with_pi_gains_settles_without_oscillation(gain, lag):
    # Noise-free, so oscillation would show; the initial error and drift scale with the gain (the
    # loop sees the same problem at every scale), and the integral starts at 0 (it must also find
    # the holding alpha, a load disturbance).
    scale = gain / -2e-4
    target, e0, tau_c = 0.5, 0.03 * scale, 10.0
    identified = EntropyPlant(
        gain=gain, drift=1.75 * gain, gain_stderr=0.0, noise=NOISE * scale, lag=lag
    )
    kp, ki = pi_gains(identified, tau_c)
    lo, hi = alpha_bounds(identified, tau_c)
    plant = Plant(gain, 1.75 * gain, lag=lag, noise=0.0, process=0.0, h0=target + e0)
    errors, alphas = simulate_loop(plant, kp, ki, lo, hi, target, 400)
    big = errors[np.abs(errors) > 0.02 * e0]
    assert np.count_nonzero(np.diff(np.sign(big))) <= 1  # at most one crossing: no oscillation
    horizon = tau_c + 0.5 + lag / 2
    assert np.all(np.abs(errors[int(12 * horizon) :]) < 0.05 * e0)  # settled, and stays
    assert np.abs(errors).max() <= 1.6 * e0  # the drift's push before the integral has caught up
    assert alphas[-1] == pytest.approx(-1.75, rel=0.02)  # the integral found the holding alpha


def test_closed_loop_is_robust_to_the_identification_error():
    # Gains from a gain estimate off by the probe's typical error (+/- 40 %) still settle calmly.
    for factor in (0.6, 1.4):
        identified = EntropyPlant(
            gain=-2e-4 * factor, drift=-3.5e-4, gain_stderr=0.0, noise=NOISE, lag=9.5
        )
        kp, ki = pi_gains(identified, 10.0)
        plant = Plant(-2e-4, -3.5e-4, lag=9.5, noise=0.0, process=0.0, h0=0.065)
        errors, _ = simulate_loop(plant, kp, ki, -10.0, 10.0, 0.06, 600)
        big = errors[np.abs(errors) > 1e-4]
        assert np.count_nonzero(np.diff(np.sign(big))) <= 2
        assert np.all(np.abs(errors[-100:]) < 2.5e-4)


# --- filter --------------------------------------------------------------------------------------


def test_kalman_filter_tracks_the_true_entropy_better_than_the_measurement():
    model = EntropyPlant(
        gain=-2e-4,
        drift=-3.5e-4,
        gain_stderr=2e-5,
        noise=NOISE,
        lag=9.5,
        drift_stderr=3e-5,
        process_noise=2e-4,
    )
    plant = Plant(-2e-4, -3.5e-4, lag=9.5, process=2e-4, seed=5)
    filt = EntropyFilter(model)
    raw, filtered = [], []
    for k in range(300):
        y = plant.measure()
        filtered.append(filt.correct(y) - plant.h)
        raw.append(y - plant.h)
        alpha = -1.75 + square_wave(k, 1.0, 40)
        filt.predict(alpha)
        plant.apply(alpha)
    tail = slice(100, None)
    assert np.sqrt(np.mean(np.square(filtered[tail]))) < 0.4 * np.sqrt(
        np.mean(np.square(raw[tail]))
    )


def test_kalman_filter_learns_a_wrong_drift_instead_of_keeping_its_bias():
    wrong = EntropyPlant(
        gain=-2e-4,
        drift=-2.5e-4,
        gain_stderr=2e-5,
        noise=NOISE,
        lag=0.0,
        drift_stderr=5e-5,
        process_noise=1e-4,
    )  # true drift -3.5e-4
    plant = Plant(-2e-4, -3.5e-4, process=1e-4, seed=6)
    filt = EntropyFilter(wrong)
    errors = []
    for _ in range(400):
        y = plant.measure()
        errors.append(filt.correct(y) - plant.h)
        filt.predict(-1.75)
        plant.apply(-1.75)
    assert abs(np.mean(errors[200:])) < 0.2 * NOISE
    assert filt.b == pytest.approx(-1e-4, abs=4e-5)


def test_filter_state_round_trips_exactly():
    model = EntropyPlant(
        gain=-2e-4, drift=-3.5e-4, gain_stderr=2e-5, noise=NOISE, lag=4.0, drift_stderr=3e-5
    )
    a, b = EntropyFilter(model), EntropyFilter(model)
    for y, alpha in [(0.09, 1.0), (0.085, -1.0), (0.088, 0.5)]:
        a.correct(y)
        a.predict(alpha)
    b.load_state_dict(a.state_dict())
    assert b.state_dict() == a.state_dict()
    assert b.correct(0.08) == a.correct(0.08)
