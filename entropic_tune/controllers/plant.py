"""Identify the entropy plant that EntroPIC's alpha drives, from a run's own alphas and entropies.

Model (docs/METHOD.md section 3.4), in nats per rollout step, step ``k = 0 .. n-1``::

    H[k+1] = H[k] + drift + gain * u[k] + w[k]        (true entropy; w: process noise, variance q)
    y[k]   = H[k] + v[k]                              (measured entropy; v: measurement noise, variance r)
    u[k]   = (1 - b) * sum_{i<=k} b^(k-i) alpha[i] / (1 - b^(k+1)),   b = exp(-1 / lag)

``u`` is alpha through a first-order lag of time constant ``lag`` steps, normalised like Adam's
bias-corrected first moment (the optimizer's momentum is what spreads alpha's effect over ~10 steps;
``lag = 0`` is the pure integrator ``u = alpha``). Summed, the levels are linear in the unknowns::

    y[k] = c + drift * k + gain * S[k] + W[k] + v[k],   S[k] = sum_{i<k} u[i],   W[k] = sum_{i<k} w[i]

so the fit is on *levels*, where the white measurement noise does not grow (a fit on differences
``y[k+1] - y[k]`` doubles the noise variance and throws away the accumulated effect). The error
``W + v`` has covariance ``r (I + lam * M)``, ``M[i, j] = min(i, j)``, ``lam = q / r``; its
generalised-least-squares whitening is the Kalman filter of that local-level noise model (O(n)).

Unknown ``lag`` and ``lam`` are handled by model averaging over grids with weights proportional to each
model's concentrated likelihood (Akaike weights; all models have the same free parameters), so the
standard errors include the uncertainty of the lag and of the noise ratio, not only of the fit.

Closed-loop data: when alpha is computed from the measured entropy, ``S[k]`` is correlated with the
process noise through the feedback and least squares is biased. Pass the externally designed part of
alpha (a probe or dither signal) as ``excitation``: it is then the instrument (instrumental variables,
Söderström & Stoica 1983) in place of alpha in the normal equations, which is consistent whatever the
feedback, because the excitation is independent of every noise term.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import UserError

LAGS: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0, 5.0, 7.0, 10.0, 14.0, 20.0)
"""Lag grid (time constants in steps) averaged over when ``lag`` is not given; at most n / 4 used."""
NOISE_RATIOS: tuple[float, ...] = (0.0, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)
"""Grid of ``q / r`` (process over measurement noise variance) averaged over."""
MIN_STEPS = 4


@dataclass(frozen=True)
class EntropyPlant:
    """An identified integrating entropy plant (units: nats, rollout steps, unit alpha).

    ``gain``: entropy change per step per unit alpha (negative when a larger alpha lowers entropy, as
    for EntroPIC); ``drift``: entropy change per step at alpha = 0; ``gain_stderr`` / ``drift_stderr``
    and ``gain_drift_cov``: their standard errors and covariance; ``noise``: standard deviation of the
    measurement noise ``v``; ``process_noise``: standard deviation of the random-walk step ``w``;
    ``lag``: time constant of alpha's lag in steps; ``steps``: number of entropies used.
    """

    gain: float
    drift: float
    gain_stderr: float
    noise: float
    drift_stderr: float = 0.0
    gain_drift_cov: float = 0.0
    lag: float = 0.0
    process_noise: float = 0.0
    steps: int = 0

    @property
    def holding_alpha(self) -> float:
        """``alpha* = -drift / gain``: the alpha that holds the entropy still."""
        return -self.drift / self.gain

    @property
    def holding_alpha_stderr(self) -> float:
        """Standard error of :attr:`holding_alpha` by the delta method (uses the covariance)."""
        g, d = self.gain, self.drift
        var = (
            self.drift_stderr**2 / g**2
            + d**2 * self.gain_stderr**2 / g**4
            - 2.0 * d * self.gain_drift_cov / g**3
        )
        return math.sqrt(max(var, 0.0))

    def is_identified(self, z: float = 2.0) -> bool:
        """True when the gain is negative and at least ``z`` standard errors away from zero."""
        return self.gain < 0 and -self.gain >= z * self.gain_stderr


def lagged_input(alphas: np.ndarray, lag: float) -> np.ndarray:
    """``u``: alphas through the bias-corrected first-order lag (module docstring). ``(n,) -> (n,)``."""
    if lag <= 0:
        return np.array(alphas, dtype=float)
    b = math.exp(-1.0 / lag)
    out = np.empty(len(alphas))
    m = 0.0
    for k, a in enumerate(alphas):
        m = b * m + (1.0 - b) * float(a)
        out[k] = m / (1.0 - b ** (k + 1))
    return out


def _whiten(columns: np.ndarray, lam: float) -> tuple[np.ndarray, float]:
    """GLS whitening ``L^-1 columns`` for ``Omega = I + lam * M`` by the local-level Kalman filter.

    ``columns`` is ``(n, m)``; returns the standardised innovations ``(n, m)`` and ``log det Omega``.
    The random walk starts at exactly 0 (the intercept carries the initial level).
    """
    n = columns.shape[0]
    out = np.empty_like(columns)
    state = np.zeros(columns.shape[1])
    p, logdet = 0.0, 0.0
    for k in range(n):
        f = p + 1.0  # innovation variance in units of r
        innovation = columns[k] - state
        out[k] = innovation / math.sqrt(f)
        state = state + (p / f) * innovation
        p = p * (1.0 - p / f) + lam
        logdet += math.log(f)
    return out, logdet


def _checked(
    alphas: Sequence[float], entropies: Sequence[float], excitation: Sequence[float] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    a = np.asarray(alphas, dtype=float).reshape(-1)
    y = np.asarray(entropies, dtype=float).reshape(-1)
    if len(a) != len(y):
        raise UserError(
            f"identify_plant: alphas and entropies need equal lengths, got {len(a)} and {len(y)}"
        )
    if len(y) < MIN_STEPS:
        raise UserError(f"identify_plant: need at least {MIN_STEPS} steps, got {len(y)}")
    if not (np.isfinite(a).all() and np.isfinite(y).all()):
        raise UserError("identify_plant: alphas and entropies must be finite (found NaN or Inf)")
    # alpha[n-1] acts after the last measurement: it never reaches the data.
    if np.ptp(a[:-1]) == 0:
        raise UserError(
            "identify_plant: alpha is constant, so its effect cannot be told from the drift; "
            "excite alpha (controller.autotune: probe)"
        )
    x = None
    if excitation is not None:
        x = np.asarray(excitation, dtype=float).reshape(-1)
        if len(x) != len(y) or not np.isfinite(x).all():
            raise UserError(
                "identify_plant: excitation needs the length of entropies and finite values"
            )
        if np.ptp(x[:-1]) == 0:
            raise UserError(
                "identify_plant: the excitation is constant, so it cannot serve as instrument"
            )
    return a, y, x


def _summed(u: np.ndarray) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(u[:-1])])  # S[k] = sum_{i<k} u[i]


def identify_plant(
    alphas: Sequence[float],
    entropies: Sequence[float],
    *,
    lag: float | None = None,
    excitation: Sequence[float] | None = None,
) -> EntropyPlant:
    """Fit the integrating plant of the module docstring to one run's data.

    ``entropies[k]`` is measured before the update of step k, ``alphas[k]`` is applied in that update
    (equal lengths n >= 4; ``alphas[-1]`` is unused). ``lag``: fix the lag (steps) instead of averaging
    over :data:`LAGS`. ``excitation``: the designed part of alpha on closed-loop data (instrument).
    Raises :class:`UserError` on data that cannot identify the gain (too short, non-finite, constant
    alpha or excitation).
    """
    a, y, x = _checked(alphas, entropies, excitation)
    n = len(y)
    k = np.arange(n, dtype=float)
    lags = (float(lag),) if lag is not None else tuple(t for t in LAGS if t <= n / 4) or (0.0,)
    # Columns per lag: [1, k, S(alpha)], then the instrument S(excitation), then y, all whitened at once.
    blocks = []
    for t in lags:
        blocks.append(_summed(lagged_input(a, t)))
        blocks.append(_summed(lagged_input(x, t)) if x is not None else blocks[-1])
    raw = np.column_stack([np.ones(n), k, *blocks, y])
    fits = []
    for lam in NOISE_RATIOS:
        white, logdet = _whiten(raw, lam)
        one, trend, yt = white[:, 0], white[:, 1], white[:, -1]
        for i, t in enumerate(lags):
            xt = np.column_stack([one, trend, white[:, 2 + 2 * i]])  # (n, 3)
            zt = np.column_stack([one, trend, white[:, 3 + 2 * i]])  # (n, 3) instruments
            fit = _iv_fit(xt, zt, yt, logdet, n)
            if fit is not None:
                fits.append((t, lam, *fit))
    if not fits:
        raise UserError("identify_plant: the data cannot separate alpha's effect from the drift")
    return _average(fits, n)


def _iv_fit(
    xt: np.ndarray, zt: np.ndarray, yt: np.ndarray, logdet: float, n: int
) -> tuple[np.ndarray, np.ndarray, float, float] | None:
    """(theta, cov, sigma2, loglik) of ``y = X theta`` with instruments Z (Z = X: least squares)."""
    a = zt.T @ xt  # (3, 3)
    if np.linalg.cond(a) > 1e12:
        return None
    a_inv = np.linalg.inv(a)
    theta = a_inv @ (zt.T @ yt)
    resid = yt - xt @ theta
    sse = float(resid @ resid)
    sigma2 = sse / max(n - 3, 1)
    cov = sigma2 * a_inv @ (zt.T @ zt) @ a_inv.T
    # Restricted (REML) likelihood: plain ML under-weights noisy models because the fitted trend
    # absorbs part of the random walk; REML counts the 3 fitted coefficients (Patterson & Thompson 1971).
    _, logdet_x = np.linalg.slogdet(xt.T @ xt)
    loglik = -0.5 * (n - 3) * math.log(max(sigma2, 1e-300)) - 0.5 * logdet - 0.5 * logdet_x
    return theta, cov, sigma2, loglik


def _average(fits: list, n: int) -> EntropyPlant:
    """Likelihood-weighted average of the grid's fits; the spread between models enters the variance."""
    loglik = np.array([f[5] for f in fits])
    w = np.exp(loglik - loglik.max())
    w /= w.sum()
    thetas = np.array([f[2][1:] for f in fits])  # (m, 2): drift, gain
    mean = w @ thetas
    dev = thetas - mean
    cov = sum(wi * f[3][1:, 1:] for wi, f in zip(w, fits, strict=True)) + (w[:, None] * dev).T @ dev
    r = float(w @ np.array([f[4] for f in fits]))
    q = float(w @ np.array([f[1] * f[4] for f in fits]))
    lag = float(w @ np.array([f[0] for f in fits]))
    return EntropyPlant(
        gain=float(mean[1]),
        drift=float(mean[0]),
        gain_stderr=math.sqrt(cov[1, 1]),
        noise=math.sqrt(r),
        drift_stderr=math.sqrt(cov[0, 0]),
        gain_drift_cov=float(cov[0, 1]),
        lag=lag,
        process_noise=math.sqrt(q),
        steps=n,
    )
