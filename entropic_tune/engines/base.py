"""The engine seam: what the run loop (:mod:`entropic_tune.engines.loop`) needs of an engine.

An engine turns a :class:`~entropic_tune.config.Config` into rollout steps. The native engine
(:class:`entropic_tune.engines.native.trainer.Trainer`) is one; the TRL engine
(:class:`entropic_tune.engines.trl.engine.TRLEngine`, METHOD.md 8) is another; each implements the same
surface and is named in :func:`build_engine`, without touching a front-end
(``commands.train``, ``commands.autotune``, ``tune.trainable``): they drive an engine only through the
loop and this interface. Every engine calls the same losses (:mod:`entropic_tune.losses`) and
controllers (:mod:`entropic_tune.controllers`); none writes its own.

Plain Python (no torch): the command line checks ``train.engine`` before anything heavy is imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..config import ENGINES
from ..errors import unknown
from .records import FinalEvaluation

if TYPE_CHECKING:
    from ..config import Config
    from ..controllers import Controller
    from ..distributed import Collective


@runtime_checkable
class Engine(Protocol):
    """One run's trainer: model, optimizer, controller, RNG streams and step counter.

    ``step()`` runs one rollout step and returns one flat dict with exactly the keys of
    ``names.STEP_KEYS`` (METHOD.md section 5), every value a finite float (else it raises
    :class:`~entropic_tune.engines.records.NonFiniteError`). ``large_evaluation(prefix)`` is the large evaluation of the current model
    (``base`` before step 1, ``final`` after the last step; METHOD.md section 5), None when
    ``rollout.final_samples`` is 0. ``state_dict()`` / ``load_state_dict()`` round-trip exactly (a
    restored engine continues as if it had never stopped). ``set_learning_rate`` sets the optimizer's
    rate (PBT changes it between checkpoints).
    """

    config: Config
    step_count: int
    """Rollout steps done."""
    controller: Controller
    last_eval: dict[str, float] | None
    """The latest periodic evaluation (``eval/*``, plus ``eval/greedy_accuracy``), None before step 1."""

    def step(self) -> dict[str, float]: ...

    def large_evaluation(self, prefix: str) -> FinalEvaluation | None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def set_learning_rate(self, lr: float) -> None: ...


def build_engine(config: Config, dist: Collective | None = None) -> Engine:
    """The engine ``train.engine`` names, for ``config`` (``dist``: one worker of a data-parallel run)."""
    if config.train.engine == "native":
        from .native.trainer import Trainer  # torch and transformers: only when an engine is built

        return Trainer(config, dist)
    if config.train.engine == "trl":
        from .trl.engine import TRLEngine  # TRL: only when this engine is built (the `trl` extra)

        return TRLEngine(config, dist)
    raise unknown("train.engine", config.train.engine, ENGINES)
