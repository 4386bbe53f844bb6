"""Entropy controllers and the pieces that tune them from measurements. Plain Python/numpy, no torch.

- ``base``: the controllers (PI for EntroPIC, AEC, constant), their registry and metric names;
- ``plant``: :func:`identify_plant`, the integrating entropy plant from a run's alphas and entropies;
- ``gains``: :func:`pi_gains` (SIMC) and :func:`alpha_bounds` from an identified plant;
- ``filters``: :class:`EntropyFilter`, a Kalman filter of the measured entropy;
- ``autotune``: :class:`AutotunedPIController`, the PI that probes, identifies and retunes itself.

:func:`build_controller` builds the autotuned PI when ``controller.autotune`` is not ``off`` and the
registry's controller otherwise (``off`` is today's controller, unchanged).
"""

from ..config import ControllerConfig
from . import base
from .autotune import PHASES, AutotunedPIController
from .base import (
    ALPHA,
    COEF,
    ERROR,
    INTEGRAL,
    KI,
    KP,
    PHASE,
    PLANT_DRIFT,
    PLANT_GAIN,
    REGISTRY,
    AdaptiveEntropyController,
    ConstantController,
    Controller,
    PIController,
)
from .filters import EntropyFilter
from .gains import alpha_bounds, pi_gains
from .plant import EntropyPlant, identify_plant


def build_controller(cfg: ControllerConfig) -> Controller:
    """Build the controller of ``cfg``: the autotuned PI for ``autotune`` probe/online, else by name."""
    if cfg.autotune != "off":
        return AutotunedPIController(cfg)
    return base.build_controller(cfg)


__all__ = [
    "ALPHA",
    "COEF",
    "ERROR",
    "INTEGRAL",
    "KI",
    "KP",
    "PHASE",
    "PHASES",
    "PLANT_DRIFT",
    "PLANT_GAIN",
    "REGISTRY",
    "AdaptiveEntropyController",
    "AutotunedPIController",
    "ConstantController",
    "Controller",
    "EntropyFilter",
    "EntropyPlant",
    "PIController",
    "alpha_bounds",
    "build_controller",
    "identify_plant",
    "pi_gains",
]
