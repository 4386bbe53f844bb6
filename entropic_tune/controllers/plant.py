"""Identify the entropy plant that EntroPIC's alpha drives, from a run's own alphas and entropies.

Model (docs/METHOD.md section 3.5), in nats per rollout step, step ``k = 0 .. n-1``::

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

Unknown ``lag`` and ``lam`` are handled by model averaging over grids, with weights proportional to
each model's restricted (REML) likelihood (all models have the same free parameters), so the standard
errors include the uncertainty of the lag and of the noise ratio, not only of the fit. The lag grid is
refined around its best point until it resolves the likelihood (at high signal-to-noise a coarse grid
would leave a misfit far larger than the stated error).

Closed-loop data: when alpha is computed from the measured entropy, ``S[k]`` is correlated with the
process noise through the feedback and least squares is biased. Pass the externally designed part of
alpha (a probe or dither signal) as ``excitation``: it is then the instrument (instrumental variables,
Söderström & Stoica 1983) in place of alpha in the normal equations, which is consistent whatever the
feedback, because the excitation is independent of every noise term.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import UserError

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
    ``lag``: time constant of alpha's lag in steps; ``steps``: number of entropies used;
    ``instrument_f``: first-stage F of the excitation on closed-loop data (``inf`` open loop).
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
    instrument_f: float = math.inf

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

    def is_identified(self, z: float = 2.0, min_f: float = 10.0) -> bool:
        """Gain negative by at least ``z`` standard errors, from an instrument with F >= ``min_f``."""
        return self.gain < 0 and -self.gain >= z * self.gain_stderr and self.instrument_f >= min_f

    def cautious(self) -> EntropyPlant:
        """The same plant with the larger plausible gain magnitude ``|gain| + gain_stderr``.

        SIMC gains for it are at most as aggressive as designed when the true gain is that large and
        slower when it is smaller: the design is robust to the identification's own uncertainty.
        """
        return dataclasses.replace(
            self, gain=self.gain - self.gain_stderr if self.gain < 0 else self.gain
        )


def lagged_inputs(alphas: np.ndarray, lags: Sequence[float]) -> np.ndarray:
    """``u`` for each lag: alphas through the bias-corrected first-order lag. ``(n,) -> (n, L)``."""
    a = np.asarray(alphas, dtype=float)
    b = np.array([math.exp(-1.0 / t) if t > 0 else 0.0 for t in lags])  # (L,)
    out = np.empty((len(a), len(b)))
    m = np.zeros(len(b))
    power = np.ones(len(b))
    for k, value in enumerate(a):
        m = b * m + (1.0 - b) * value
        power = power * b
        out[k] = m / (1.0 - power)  # b = 0 (no lag): m / 1 = alpha
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
    """``S[k] = sum_{i<k} u[i]`` along the first axis (``S[0] = 0``)."""
    return np.concatenate([np.zeros((1, *u.shape[1:])), np.cumsum(u[:-1], axis=0)])


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
    over it. ``excitation``: the designed part of alpha on closed-loop data (the instrument).
    Raises :class:`UserError` on data that cannot identify the gain (too short, non-finite, constant
    alpha or excitation).
    """
    a, y, x = _checked(alphas, entropies, excitation)
    n = len(y)
    if lag is not None:
        fits = _fits(a, x, y, [float(lag)])
    else:
        fits = _fits_refined(a, x, y, max(n / 4.0, 1.0))
    if not fits:
        raise UserError("identify_plant: the data cannot separate alpha's effect from the drift")
    return _average(fits, n)


def _fits_refined(a: np.ndarray, x: np.ndarray | None, y: np.ndarray, max_lag: float) -> list:
    """Fits on a lag grid that is refined around its best point until it resolves the likelihood.

    Coarse grid: 0 and 12 log-spaced lags from 0.5 to ``max_lag``. While the (noise-ratio marginal)
    log-likelihood falls by more than 1 between the best lag and a neighbour, the grid is replaced by 9
    evenly spaced lags between the two neighbours (at most 5 times); the fits of the final grid are
    averaged, so at high signal-to-noise the lag is pinned down finely, at low it stays averaged wide.
    """
    lags = [0.0, *np.geomspace(0.5, max(max_lag, 0.5), 12).tolist()]
    for _ in range(5):
        fits = _fits(a, x, y, lags)
        if not fits:
            return fits
        marginal = [_logsumexp([f[5] for f in fits if f[0] == t]) for t in lags]
        best = int(np.argmax(marginal))
        left, right = max(best - 1, 0), min(best + 1, len(lags) - 1)
        if max(marginal[best] - marginal[left], marginal[best] - marginal[right]) <= 1.0:
            break
        lags = np.linspace(lags[left], lags[right], 9).tolist()
    return fits


def _logsumexp(values: list[float]) -> float:
    if not values:
        return -math.inf
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def _fits(a: np.ndarray, x: np.ndarray | None, y: np.ndarray, lags: Sequence[float]) -> list:
    """``(lag, lam, theta, cov, sigma2, loglik, F)`` for every lag x noise ratio that is not singular."""
    n = len(y)
    k = np.arange(n, dtype=float)
    s_alpha = _summed(lagged_inputs(a, lags))  # (n, L)
    s_inst = _summed(lagged_inputs(x, lags)) if x is not None else s_alpha  # (n, L)
    raw = np.column_stack([np.ones(n), k, y, s_alpha, s_inst])  # (n, 3 + 2L), whitened at once
    n_lags = len(lags)
    fits = []
    for lam in NOISE_RATIOS:
        white, logdet = _whiten(raw, lam)
        base, yt = white[:, :2], white[:, 2]
        for i, t in enumerate(lags):
            xt = np.column_stack([base, white[:, 3 + i]])  # (n, 3) regressors
            zt = np.column_stack([base, white[:, 3 + n_lags + i]])  # (n, 3) instruments
            fit = _iv_fit(xt, zt, yt, logdet, n)
            if fit is not None:
                fits.append((float(t), lam, *fit))
    return fits


def _iv_fit(
    xt: np.ndarray, zt: np.ndarray, yt: np.ndarray, logdet: float, n: int
) -> tuple[np.ndarray, np.ndarray, float, float, float] | None:
    """(theta, cov, sigma2, loglik, F) of ``y = X theta`` with instruments Z (Z = X: least squares)."""
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
    return theta, cov, sigma2, loglik, _first_stage_f(xt, zt, n)


def _first_stage_f(xt: np.ndarray, zt: np.ndarray, n: int) -> float:
    """First-stage F of the instrument for S (both with intercept and trend partialled out).

    ``F = rho^2 / (1 - rho^2) * (n - 3)`` with ``rho`` their partial correlation; ``inf`` when the
    instrument is the regressor itself (open loop). F < 10 is a weak instrument (Staiger & Stock 1997):
    the IV estimate is then biased and its standard error is not to be trusted.
    """
    base = xt[:, :2]
    proj = base @ np.linalg.lstsq(base, np.column_stack([xt[:, 2], zt[:, 2]]), rcond=None)[0]
    sx, sz = xt[:, 2] - proj[:, 0], zt[:, 2] - proj[:, 1]
    denom = float(sx @ sx) * float(sz @ sz)
    rho2 = float(sx @ sz) ** 2 / denom if denom > 0 else 0.0
    return math.inf if rho2 >= 1.0 - 1e-12 else rho2 / (1.0 - rho2) * (n - 3)


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
    strength = np.array([f[6] for f in fits])
    instrument_f = math.inf if np.isinf(strength).all() else float(w @ np.minimum(strength, 1e12))
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
        instrument_f=instrument_f,
    )
