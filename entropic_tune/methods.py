"""Methods as data: each method is a named preset of loss + controller + their defaults.

This module is plain Python (no torch) so that the config loader, the loss registry and the search
spaces share one table. Keys are dotted config keys (``section.field``); explicit user keys override
the preset. See ``shared/docs/METHOD.md`` sections 2-4 for where each default comes from.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from .actuators import ACTUATORS
from .errors import unknown

# Loss hyper-parameters every loss accepts (METHOD.md sections 2-4). The defaults are GRPO's; a
# method's preset below changes only what differs for it.
LOSS_DEFAULTS = MappingProxyType(
    {
        "clip_eps_low": 0.2,
        "clip_eps_high": 0.2,
        "dual_clip_c": 3.0,
        "dual_clip": 1.0,  # a flag (1.0 = on); clip_cov's preset turns it off (Cui et al. have none)
        "beta": 1e-3,
        "tau": 0.95,
        "clip_cov_ratio": 2e-4,
        "clip_cov_lb": 1.0,
        "clip_cov_ub": 5.0,
        "kl_cov_ratio": 2e-3,
        "kl_cov_coef": 1.0,
        "positive_weight": 1.0,  # lambda on positive-advantage tokens; 1 = GRPO
        "entropy_quantile": 0.2,  # forking_tokens: share of highest-entropy tokens with gradient
    }
)

_PRESETS: dict[str, dict[str, object]] = {
    "grpo": {"loss.name": "grpo", "controller.name": "constant", "controller.value": 0.0},
    "entropy_bonus": {
        "loss.name": "entropy_bonus",
        "controller.name": "constant",
        "controller.value": 0.0,
    },
    # DAPO's decoupled clip: only the upper bound moves.
    "clip_higher": {
        "loss.name": "clip_higher",
        "loss.clip_eps_high": 0.28,
        "controller.name": "constant",
        "controller.value": 0.0,
    },
    # Cui et al.'s recipe disables ordinary clipping (eps = 1) and relies on Clip-Cov instead.
    "clip_cov": {
        "loss.name": "clip_cov",
        "loss.clip_eps_low": 1.0,
        "loss.clip_eps_high": 1.0,
        "loss.dual_clip": False,
        "controller.name": "constant",
        "controller.value": 0.0,
    },
    "kl_cov": {"loss.name": "kl_cov", "controller.name": "constant", "controller.value": 0.0},
    # Skywork-OR1's adaptive entropy coefficient: the controller's output is the bonus weight.
    "adaptive_entropy": {"loss.name": "adaptive_entropy", "controller.name": "adaptive"},
    "entropic": {"loss.name": "entropic", "controller.name": "pi"},
    "entropic_p": {"loss.name": "entropic", "controller.name": "pi", "controller.ki": 0.0},
    # Zhu et al. (arXiv 2506.01347): positive samples weighted by lambda = 0.1, negative ones by 1.
    "w_reinforce": {
        "loss.name": "w_reinforce",
        "loss.positive_weight": 0.1,
        "controller.name": "constant",
        "controller.value": 0.0,
    },
    # The same paper's negative-sample reinforcement: W-REINFORCE with lambda = 0.
    "nsr": {
        "loss.name": "w_reinforce",
        "loss.positive_weight": 0.0,
        "controller.name": "constant",
        "controller.value": 0.0,
    },
    # Wang et al. (arXiv 2506.01939): gradient only on the top 20% of tokens by entropy.
    "forking_tokens": {
        "loss.name": "forking_tokens",
        "loss.entropy_quantile": 0.2,
        "controller.name": "constant",
        "controller.value": 0.0,
    },
}

METHODS: tuple[str, ...] = tuple(_PRESETS)

# The knob(s) that matter most for each method: what a fair tuning search varies.
MAIN_KNOBS: dict[str, tuple[str, ...]] = {
    "grpo": ("optim.lr",),
    "entropy_bonus": ("loss.beta",),
    "clip_higher": ("loss.clip_eps_high",),
    "clip_cov": ("loss.clip_cov_ratio",),
    "kl_cov": ("loss.kl_cov_ratio", "loss.kl_cov_coef"),
    "adaptive_entropy": ("controller.target_entropy", "controller.coef_delta"),
    "entropic": ("controller.kp", "controller.ki", "controller.target_entropy"),
    "entropic_p": ("controller.kp", "controller.target_entropy"),
    "w_reinforce": ("loss.positive_weight",),
    "nsr": ("optim.lr",),  # lambda is fixed at 0 by definition; the step size is what is left
    "forking_tokens": ("loss.entropy_quantile",),
}


SURROGATE_PARAMS = ("clip_eps_low", "clip_eps_high", "dual_clip", "dual_clip_c", "positive_weight")
"""The hyper-parameters of GRPO's clipped surrogate (``losses.clipped_surrogate``)."""

LOSS_PARAMS: MappingProxyType[str, tuple[str, ...]] = MappingProxyType(
    {
        "grpo": SURROGATE_PARAMS,
        "clip_higher": SURROGATE_PARAMS,
        "w_reinforce": SURROGATE_PARAMS,
        "entropy_bonus": (*SURROGATE_PARAMS, "beta"),
        "adaptive_entropy": SURROGATE_PARAMS,
        "entropic": (*SURROGATE_PARAMS, "tau"),
        "forking_tokens": (*SURROGATE_PARAMS, "entropy_quantile"),
        "clip_cov": (*SURROGATE_PARAMS, "clip_cov_ratio", "clip_cov_lb", "clip_cov_ub"),
        "kl_cov": ("kl_cov_ratio", "kl_cov_coef"),  # no clipped surrogate
    }
)
"""The ``loss.*`` hyper-parameters each registered loss reads (``tests/test_losses.py`` checks, for
every loss and every key of :data:`LOSS_DEFAULTS`, that the listed keys change the loss or its
gradient and the others leave both unchanged). ``loss.tau`` also sets the metric
``actor/high_prob_frac`` of every loss, which is no setting of the training."""

ALPHA_LOSSES = ("adaptive_entropy", "entropic")
"""Losses that read the controller output ``alpha``; the others ignore it under the default
actuator, so their controller is unused."""

CONTROLLER_PARAMS: MappingProxyType[str, tuple[str, ...]] = MappingProxyType(
    {
        "constant": ("value",),
        "pi": ("kp", "ki", "target_entropy", "alpha_min", "alpha_max", "anti_windup", "autotune"),
        "adaptive": ("target_entropy", "coef_delta", "coef_min", "coef_max", "coef_init", "coef_gate"),
    }
)
"""The ``controller.*`` fields each controller of ``controllers.REGISTRY`` reads (checked by
``tests/controllers/test_controllers.py`` against the registry's builders)."""

AUTOTUNE_PARAMS: MappingProxyType[str, tuple[str, ...]] = MappingProxyType(
    {
        "off": (),
        "probe": ("probe_steps", "probe_amplitude", "probe_hold", "closed_loop_steps", "plant_lag",
                  "filter"),
        "online": ("probe_steps", "probe_amplitude", "probe_hold", "closed_loop_steps", "plant_lag",
                   "filter", "retune_every", "retune_window", "dither_amplitude"),
    }
)
"""The further ``controller.*`` fields the autotuned PI reads (``controller.autotune``)."""


def used_keys(flat: Mapping[str, object]) -> set[str]:
    """The dotted keys of a full flat config (``config.to_flat``) that its trial actually uses.

    Every ``model/task/rollout/optim/train/debug`` key (and ``trl.*`` with ``train.engine: trl``); of ``loss.*`` the loss's own
    (:data:`LOSS_PARAMS`); of ``controller.*`` nothing when the controller's output reaches no loss
    (the default actuator and a loss outside :data:`ALPHA_LOSSES`, e.g. grpo), else the controller's
    own fields (:data:`CONTROLLER_PARAMS`, :data:`AUTOTUNE_PARAMS`), its actuator and, for a
    controller that reads the entropy, ``controller.update``. ``controller.target_entropy`` is also
    the reference of the tracking metrics of every trial; that is no setting of the training.
    """
    loss, controller = str(flat["loss.name"]), str(flat["controller.name"])
    skip = ("loss", "controller") + (("trl",) if flat.get("train.engine", "native") == "native" else ())
    keys = {k for k in flat if k.partition(".")[0] not in skip}  # trl.*: the TRL engine's settings only
    keys |= {"loss.name", *(f"loss.{p}" for p in LOSS_PARAMS[loss])}
    if not flat["loss.dual_clip"]:  # clip_cov's preset: no dual clip, so no bound c
        keys.discard("loss.dual_clip_c")
    if flat["loss.positive_weight"] == 0 and flat["controller.actuator"] != "positive_weight":
        keys.discard("loss.clip_eps_high")  # nsr: the upper clip binds only where A > 0, weighted 0
    if flat["controller.actuator"] == ACTUATORS[0] and loss not in ALPHA_LOSSES:
        return keys
    own = list(CONTROLLER_PARAMS[controller])
    if controller == "pi":
        own += AUTOTUNE_PARAMS[str(flat["controller.autotune"])]
    if controller != "constant":
        own.append("update")
    keys |= {f"controller.{p}" for p in ("name", "actuator", "actuator_scale", *own)}
    return keys


def method_preset(method: str) -> dict[str, object]:
    """Dotted config keys the method sets, e.g. ``{"loss.name": "entropic", ...}``."""
    if method not in _PRESETS:
        raise unknown("method", method, METHODS)
    return dict(_PRESETS[method])


def loss_defaults(method: str) -> dict[str, float]:
    """Loss hyper-parameters of a method: GRPO's defaults with the preset's ``loss.*`` applied."""
    params = dict(LOSS_DEFAULTS)
    for key, value in method_preset(method).items():
        section, _, name = key.partition(".")
        if section == "loss" and name in params:
            params[name] = float(value)  # type: ignore[arg-type]
    return params
