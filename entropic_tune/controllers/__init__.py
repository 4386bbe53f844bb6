"""Entropy controllers (``base``) and the pieces that tune them from measurements.

``base`` holds the controllers themselves (PI for EntroPIC, AEC, constant) and ``build_controller``;
this package re-exports their public names so ``from entropic_tune.controllers import PIController``
keeps working. Everything here is plain Python/numpy: no torch.
"""

from .base import (
    ALPHA,
    COEF,
    ERROR,
    INTEGRAL,
    REGISTRY,
    AdaptiveEntropyController,
    ConstantController,
    Controller,
    PIController,
    build_controller,
)

__all__ = [
    "ALPHA",
    "COEF",
    "ERROR",
    "INTEGRAL",
    "REGISTRY",
    "AdaptiveEntropyController",
    "ConstantController",
    "Controller",
    "PIController",
    "build_controller",
]
