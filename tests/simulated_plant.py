"""A simulated entropy plant with the real trainer's noise level, shared by the controller and autotune
tests (tests/ is on sys.path through conftest.py; not a test module)."""

from __future__ import annotations

import math

import numpy as np

NOISE = 5e-3  # measurement noise of the per-step entropy at 128 responses (nats)


class Plant:
    """``H <- H + drift + gain * u + w``, ``u`` = alpha through Adam's bias-corrected lag; ``y = H + v``."""

    def __init__(self, gain, drift, lag=0.0, noise=NOISE, process=2e-4, h0=0.09, seed=0):
        self.gain, self.drift, self.noise, self.process = gain, drift, noise, process
        self.beta = math.exp(-1.0 / lag) if lag > 0 else 0.0
        self.h, self.m, self.k = h0, 0.0, 0
        self.rng = np.random.default_rng(seed)

    def measure(self) -> float:
        return self.h + self.noise * self.rng.standard_normal()

    def apply(self, alpha: float) -> None:
        self.m = self.beta * self.m + (1 - self.beta) * alpha
        self.k += 1
        u = self.m / (1 - self.beta**self.k)
        self.h += self.drift + self.gain * u + self.process * self.rng.standard_normal()
