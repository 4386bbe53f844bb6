"""What every engine and the run loop share: the large evaluation's record, the non-finite stop, the
checkpoint folder's file names. Plain Python (no torch); the lowest module of ``engines``.
"""

from __future__ import annotations

from dataclasses import dataclass

CHECKPOINT_FILE = "trainer.pt"
"""A run's checkpoint in its checkpoint folder: ``{"trainer": engine.state_dict(), "history": [...],
"base": {...}}`` (tensors and plain Python only, read with ``torch.load(weights_only=True)``)."""
HISTORY_FILE = "history.json"
"""The run's per-step rows so far, as a JSON list, beside :data:`CHECKPOINT_FILE` in every checkpoint
folder (read without loading the model: :func:`entropic_tune.tune.layout.saved_history`)."""


class NonFiniteError(RuntimeError):
    """Raised when a loss, entropy or gradient is NaN/Inf; the trial must stop, never report NaN."""


@dataclass(frozen=True)
class FinalEvaluation:
    """The metrics of one large evaluation and what it cost."""

    metrics: dict[str, float]
    """``<prefix>/accuracy`` (greedy), ``<prefix>/pass@k`` for k = 1, 2, 4, ..., n and, for a task
    with many answers (``Task.many_answers``), ``<prefix>/distinct_correct``."""
    problems: int
    samples: int
    seconds: float
    prefix: str

    def describe(self) -> str:
        """One line for the log: size and cost."""
        return (
            f"{self.prefix} evaluation: {self.problems} held-out problems x {self.samples} samples "
            f"= {self.problems * self.samples} responses (+{self.problems} greedy) "
            f"in {self.seconds:.1f} s"
        )
