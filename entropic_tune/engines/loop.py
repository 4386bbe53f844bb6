"""The one run loop over an engine: base evaluation, steps, final evaluation, checkpoints.

Every front-end runs an engine through :class:`RunLoop` and only does I/O around it: ``entropic-tune
train`` (:mod:`entropic_tune.commands.train`: progress bar, results folder), ``entropic-tune autotune``
(:mod:`entropic_tune.commands.autotune`: the probe, no large evaluations) and a Ray Tune trial
(:mod:`entropic_tune.tune.trainable`: ``tune.report`` and its checkpoints). What happens, in order::

    restore(checkpoint)            engine state, history and base evaluation of a checkpoint (if any)
    base evaluation                ``base/*`` of the model before step 1 (a fresh run, lead worker only)
    for each step to train.total_steps:
        row = engine.step()        one flat metrics dict (METHOD.md 5); appended to ``history``
        final evaluation           ``final/*`` after the last step (lead worker only)
        yield row                  the front-end reports, writes, saves a checkpoint (:meth:`save`)

Checkpoint folder (:meth:`RunLoop.save`, :func:`load_checkpoint`): ``trainer.pt`` holds
``{"trainer": engine.state_dict(), "history": [...], "base": {...}}`` and ``history.json`` the
history alone; the format of the checkpoints the trials of the committed results wrote.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from .. import metrics as M
from ..config import Config
from .base import Engine
from .records import CHECKPOINT_FILE, HISTORY_FILE


class RunLoop:
    """Drive ``engine`` to ``train.total_steps``: see the module docstring.

    ``lead``: this process writes checkpoints and runs the large evaluations (rank 0 of a data-parallel
    run; the others only step). ``large_evaluations``: run ``base/*`` and ``final/*`` (autotune's probe
    does not). ``describe`` gets each large evaluation's one-line description (size and cost).
    """

    def __init__(self, engine: Engine, *, lead: bool = True, large_evaluations: bool = True,
                 describe: Callable[[str], None] = print) -> None:
        self.engine = engine
        self.lead = lead
        self.large_evaluations = large_evaluations
        self.describe = describe
        self.history: list[dict[str, float]] = []
        self.base: dict[str, float] = {}
        """``base/*`` of the model before step 1 (empty when not run or ``rollout.final_samples`` is 0)."""
        self.final: dict[str, float] = {}
        """``final/*`` after the last step (empty until then)."""
        self.restored = False

    @property
    def config(self) -> Config:
        return self.engine.config

    @property
    def evaluations(self) -> dict[str, float]:
        """``base/*`` then ``final/*``: the large evaluations so far."""
        return {**self.base, **self.final}

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Continue from a :func:`load_checkpoint` dict: the engine's state, the history and the base
        evaluation; the learning rate is the config's (PBT may have changed it since the save)."""
        self.engine.load_state_dict(checkpoint["trainer"])
        self.history = [dict(row) for row in checkpoint["history"]]
        self.base = dict(checkpoint.get("base") or {})
        self.engine.set_learning_rate(self.config.optim.lr)
        self.restored = True

    def iter_steps(self) -> Iterator[dict[str, float]]:
        """The base evaluation (a fresh run), then each step's row to the end; the final evaluation
        runs after the last step, before its row is yielded (so :attr:`final` is set by then)."""
        if not self.restored and self.engine.step_count == 0:
            self.base = self._evaluate(M.BASE)
        total = self.config.train.total_steps
        while self.engine.step_count < total:
            row = self.engine.step()
            self.history.append(row)
            if self.engine.step_count == total:
                self.final = self._evaluate(M.FINAL)
            yield row

    @property
    def done(self) -> bool:
        return self.engine.step_count >= self.config.train.total_steps

    def running_summary(self) -> dict[str, float]:
        """The ``summary/*`` statistics of the history so far, finite values only."""
        return running_summary(self.history, self.config)

    def save(self, directory: str | Path) -> Path:
        """Write a checkpoint of the run so far into ``directory`` (see the module docstring)."""
        path = Path(directory) / CHECKPOINT_FILE
        torch.save({"trainer": self.engine.state_dict(), "history": list(self.history),
                    "base": dict(self.base)}, path)
        (Path(directory) / HISTORY_FILE).write_text(json.dumps(self.history))
        return path

    def _evaluate(self, prefix: str) -> dict[str, float]:
        if not (self.lead and self.large_evaluations):
            return {}
        result = self.engine.large_evaluation(prefix)
        if result is None:
            return {}
        self.describe(result.describe())
        return dict(result.metrics)


def load_checkpoint(directory: str | Path) -> dict[str, Any]:
    """Read a :meth:`RunLoop.save` file (tensors and plain Python only: ``weights_only=True``)."""
    return torch.load(Path(directory) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)


def running_summary(history: list[dict[str, float]], config: Config) -> dict[str, float]:
    """The ``summary/*`` statistics of ``history``, finite values only."""
    stats = M.summarize(history, config.controller.target_entropy, config.rollout.eval_every)
    return {k: float(v) for k, v in stats.items() if v is not None and math.isfinite(v)}
