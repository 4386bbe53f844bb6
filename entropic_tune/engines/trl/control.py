"""The project's side of one TRL rollout step: the controller, the actuator and the loss call.

:class:`LossControl` holds what the native trainer holds for the loss (``Trainer._minibatch_step``): the
controller built from ``config.controller``, the loss name and hyper-parameters, the generator that
draws the mini-batch order and Clip-Cov's noise. The TRL trainer subclass
(:class:`~entropic_tune.engines.trl.trainer.ControlledGRPOTrainer`) hands it TRL's tensors; nothing here
computes a loss, an entropy or a controller output itself: those are ``losses.compute_policy_loss``,
TRL's per-token entropies and ``controllers``. It also gathers the step's measurements (entropy,
loss metrics, gradient norms) into the per-step metrics of METHOD.md 5.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch

from ... import metrics as M
from ...actuators import Actuation, actuate
from ...config import Config
from ...controllers import build_controller
from ...distributed import Collective
from ...losses import compute_policy_loss
from ..records import NonFiniteError

ROWS = "entropic_rows"
"""Key of a mini-batch's inputs: this process's real rows of the global mini-batch (0: one all-masked
row that only joins the collectives), when it differs from the rows given."""

Reduce = Callable[[torch.Tensor], torch.Tensor]
"""A sum over the processes (accelerate's ``reduce(..., 'sum')``), identity with one process."""
Gather = Callable[[torch.Tensor], torch.Tensor]
"""Rows of every process concatenated in process order (accelerate's ``gather``)."""


class LossControl:
    """Controller, actuator and loss of one run on the TRL engine; one instance per run (its
    ``controller`` state is part of the checkpoint)."""

    def __init__(self, config: Config, generator: torch.Generator | None = None) -> None:
        self.config = config
        self.controller = build_controller(config.controller)
        self.generator = generator
        # as the native engine: every loss hyper-parameter but the name and the KL weight (refused here)
        self.loss_params = {k: v for k, v in dataclasses.asdict(config.loss).items() if k not in ("name", "kl_coef")}
        self.step_count = 0
        self.begin_step(0)

    # --- one rollout step ------------------------------------------------------------------------

    def begin_step(self, step: int) -> None:
        """Forget the previous step's measurements; the next loss call is the step's first (``fresh``)."""
        self.step_count = step
        self.entropy: float | None = None  # H, measured before the update (global batch)
        self.entropy_stderr = 0.0
        self.alpha = 0.0  # the controller output of this step
        self.fresh = True  # the weights still equal the sampling weights
        self.loss_sums: dict[str, float] = {}
        self.loss_calls = 0
        self.grad_norms: list[float] = []
        self.last_actuation: Actuation | None = None

    @property
    def pending(self) -> bool:
        """True while this step's entropy has not been measured yet."""
        return self.entropy is None

    def observe(self, entropy: torch.Tensor, mask: torch.Tensor, reduce: Reduce, gather: Gather) -> float:
        """Measure the step's entropy ``H = sum_r sum m h / sum_r sum m`` over every process's rows and
        update the controller once (``controller.update: step``); returns this step's output.

        ``entropy``/``mask`` (n, T): this process's rows of the rollout batch, the G responses of a prompt
        in consecutive rows. ``actor/entropy_stderr`` gathers the per-prompt sums first (METHOD.md 7.3).
        """
        group = self.config.rollout.group_size
        mask = mask.to(entropy.dtype)
        totals = reduce(torch.stack([(entropy * mask).sum(), mask.sum()]).double())
        value = float((totals[0] / totals[1].clamp_min(1.0)).item())
        self.check_finite(value, "entropy")
        sums = (entropy * mask).sum(-1).view(-1, group).sum(-1)  # (B_r,)
        counts = mask.sum(-1).view(-1, group).sum(-1)  # (B_r,)
        full = gather(torch.stack([sums, counts], dim=-1))  # (B, 2) in prompt order
        self.entropy = value
        self.entropy_stderr = float(M.group_entropy_stderr(full[:, 0], full[:, 1]).item())
        if self.config.controller.update == "step":
            self.alpha = self.controller.update(value)
        return self.alpha

    def actuation(self, output: float) -> Actuation:
        """The loss inputs the controller ``output`` sets through ``controller.actuator`` (METHOD.md 3.4)."""
        c = self.config.controller
        return actuate(c.actuator, output, controller=c.name, scale=c.actuator_scale,
                       params=self.loss_params, loss=self.config.loss.name)

    def loss(self, logps: torch.Tensor, old_logps: torch.Tensor | None, advantages: torch.Tensor,
             mask: torch.Tensor, entropy: torch.Tensor, reduce: Reduce, dist: Collective | None = None,
             rows: int | None = None) -> torch.Tensor:
        """``compute_policy_loss`` of the configured loss on one mini-batch of TRL's tensors.

        ``logps``/``entropy`` (b, T) with grad (TRL's ``_get_per_token_logps_and_entropies``);
        ``old_logps`` TRL's ``old_per_token_logps`` or None (on-policy); ``advantages`` (b,) or (b, T);
        ``mask`` TRL's ``completion_mask``. The first call of a step uses the detached current
        log-probs (rho == 1 exactly, as the native engine). Returns this process's share of the global
        token-mean loss (its sum with ``dist``, else the loss itself).
        """
        cfg = self.config
        old = logps.detach() if self.fresh or old_logps is None else old_logps
        self.fresh = False
        output = self.alpha
        if cfg.controller.update == "minibatch":
            m = mask.to(entropy.dtype)
            totals = reduce(torch.stack([(entropy.detach() * m).sum(), m.sum()]).double())
            mb_entropy = float((totals[0] / totals[1].clamp_min(1.0)).item())
            self.check_finite(mb_entropy, "minibatch entropy")
            output = self.alpha = self.controller.update(mb_entropy)
        act = self.last_actuation = self.actuation(output)
        loss, values = compute_policy_loss(
            cfg.loss.name, logps, old, advantages, mask.to(logps.dtype), entropy=entropy, alpha=act.alpha,
            bonus=act.bonus, generator=self.generator, dist=dist, rows=rows,
            worker_selection=cfg.train.selection == "worker", **act.params,
        )
        if cfg.debug.nan_at_step and self.step_count == cfg.debug.nan_at_step:
            loss = loss * float("nan")
        for key, value in values.items():
            self.loss_sums[key] = self.loss_sums.get(key, 0.0) + value
        self.loss_calls += 1
        return loss

    def record_grad_norm(self, norm: float) -> None:
        self.check_finite(norm, "gradient norm")
        self.grad_norms.append(norm)

    # --- the step's metrics ----------------------------------------------------------------------

    def step_metrics(self) -> dict[str, float]:
        """``actor/*`` and ``control/*`` of the step: entropy and its error, the mean loss metrics over
        the step's optimizer steps, the mean gradient norm, the controller's metrics and the knob."""
        calls = max(self.loss_calls, 1)
        out = {M.ENTROPY: float(self.entropy if self.entropy is not None else math.nan),
               M.ENTROPY_STDERR: self.entropy_stderr}
        out.update({k: self.loss_sums.get(k, 0.0) / calls for k in M.LOSS_KEYS})
        out[M.GRAD_NORM] = sum(self.grad_norms) / max(len(self.grad_norms), 1)
        control = self.controller.metrics()
        out.update(control)
        out[M.ACTUATOR_VALUE] = self.actuation(control[M.ALPHA]).value  # the last mini-batch's knob
        return out

    def check_finite(self, value: float, what: str) -> None:
        if not math.isfinite(value):
            raise NonFiniteError(
                f"non-finite {what} ({value}) at step {self.step_count} (method {self.config.method}, engine "
                "trl); the trial is stopped so no NaN reaches the logs or the search")
