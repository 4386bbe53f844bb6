"""Actuators: what the controller's output drives (METHOD.md section 3.4). Plain Python, no torch.

A controller maps the measured entropy to one number per step; the actuator decides which knob of the
loss that number moves, so any controller can drive any of them (``controller.actuator``):

- ``entropic`` (default): the number is the loss's own coefficient ``alpha``, unchanged: EntroPIC's
  high-probability reweighting for the ``entropic`` loss, the bonus weight ``c_k g_k`` for
  ``adaptive_entropy``. This is the behaviour before actuators existed, bit for bit.
- ``entropy_bonus``: an entropy bonus ``- beta_k * agg(h)`` added to whatever the loss does.
- ``clip_high``: clip-higher's upper epsilon ``eps_high`` of the clipped surrogate.
- ``positive_weight``: W-REINFORCE's weight ``lambda`` of positive-advantage tokens.

Sign convention. The *drive* ``u`` is the output in EntroPIC's convention: ``u > 0`` asks for lower
entropy. The PI controller's output ``alpha = kp e + ki I`` (``e = H - H_target``) and a constant
controller's value already are; the adaptive coefficient's output ``c_k g_k`` is a bonus weight (positive
asks for *higher* entropy), so it enters as ``u = -c_k g_k`` (:data:`OUTPUT_SIGN`). With ``k`` =
``controller.actuator_scale`` (units of the knob per unit of output) each non-default actuator maps::

    entropy_bonus:    beta_k   = beta_0 - k u               no clip (beta_k < 0 is an entropy penalty)
    clip_high:        eps_k    = max(eps_0 - k u, eps_low)   never tighter than the lower clip
    positive_weight:  lambda_k = max(lambda_0 + k u, 0)      lambda_k < 0 would push correct answers down

so a positive error (entropy too high, ``u > 0``) lowers the bonus, tightens the upper clip (fewer
low-probability tokens can rise) and raises the weight of positive samples (which sharpen), and each
lowers the entropy. The floor of ``eps_k`` at ``eps_low = loss.clip_eps_low`` keeps that direction: far
below it the upper clip silences nearly every positive-advantage token after the first mini-batch, which
leaves mostly negative samples and *raises* the entropy (measured, METHOD.md 3.4). The offsets are the configured values of the method: ``beta_0`` the method's own
bonus (``loss.beta`` for the ``entropy_bonus`` loss, 0 for every other loss), ``eps_0 = loss.clip_eps_high``
and ``lambda_0 = loss.positive_weight``. Further bounds come from the controller (``alpha_min`` /
``alpha_max`` for PI, ``[coef_min, coef_max]`` for the adaptive coefficient). Under a non-default
actuator the loss's own ``alpha`` is 0, so e.g. the ``entropic`` loss is plain GRPO plus the actuated
knob. ``clip_high`` needs off-policy training (on-policy ``rho == 1`` and the clip never binds), and the
``kl_cov`` loss, which has no clipped surrogate, ignores ``clip_high`` and ``positive_weight``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

ACTUATORS: tuple[str, ...] = ("entropic", "entropy_bonus", "clip_high", "positive_weight")
"""The allowed values of ``controller.actuator``; the first is the default."""

OUTPUT_SIGN: Mapping[str, float] = {"adaptive": -1.0}
"""Sign that turns a controller's output into the drive ``u`` (``u > 0``: lower the entropy); +1 for
controllers not listed (``pi``, ``constant``)."""

OWN_BONUS_LOSSES = ("entropy_bonus",)
"""Losses that already subtract ``loss.beta * agg(h)``: their ``beta`` is the bonus actuator's offset."""


@dataclass(frozen=True)
class Actuation:
    """What the loss receives for one optimizer step."""

    alpha: float
    """The loss's own coefficient (``alpha`` of :func:`losses.compute_policy_loss`)."""
    params: dict[str, float]
    """Loss hyper-parameters for this step: the configured ones with the actuated knob replaced."""
    bonus: float
    """Extra entropy-bonus weight on top of the loss (``bonus`` of ``compute_policy_loss``)."""
    value: float
    """The actuated quantity (``control/actuator_value``): alpha, beta_k, eps_k or lambda_k."""


def actuate(
    actuator: str,
    output: float,
    *,
    controller: str,
    scale: float,
    params: Mapping[str, float],
    loss: str,
) -> Actuation:
    """Map the controller ``output`` of this step to the loss inputs (module docstring for the equations).

    ``controller`` is ``controller.name`` (for the sign of its output), ``scale`` is
    ``controller.actuator_scale``, ``params`` the configured loss hyper-parameters and ``loss`` the
    registered loss name the method uses.
    """
    params = dict(params)
    if actuator == "entropic":
        alpha = scale * output  # scale 1 (the default) leaves the output's bits unchanged
        return Actuation(alpha=alpha, params=params, bonus=0.0, value=alpha)
    u = OUTPUT_SIGN.get(controller, 1.0) * output  # the drive: > 0 asks for lower entropy
    if actuator == "entropy_bonus":
        own = params["beta"] if loss in OWN_BONUS_LOSSES else 0.0
        return Actuation(alpha=0.0, params=params, bonus=-scale * u, value=own - scale * u)
    if actuator == "clip_high":
        params["clip_eps_high"] = max(params["clip_eps_high"] - scale * u, params["clip_eps_low"])
        return Actuation(alpha=0.0, params=params, bonus=0.0, value=params["clip_eps_high"])
    if actuator == "positive_weight":
        params["positive_weight"] = max(params["positive_weight"] + scale * u, 0.0)
        return Actuation(alpha=0.0, params=params, bonus=0.0, value=params["positive_weight"])
    raise ValueError(f"unknown actuator '{actuator}'; allowed: {', '.join(ACTUATORS)}")
