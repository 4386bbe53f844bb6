"""A fake ``tune.report`` for driving :func:`entropic_tune.tune.trainable.run_trial` without Ray
(shared by the native and the TRL engine's trainable tests; tests/ is on sys.path through conftest.py)."""

from __future__ import annotations

from entropic_tune import metrics as M
from entropic_tune.tune.trainable import load_checkpoint


class Recorder:
    """Keeps every metrics dict and loads each checkpoint while it exists (the folder is deleted after
    the report returns)."""

    def __init__(self) -> None:
        self.metrics: list[dict[str, float]] = []
        self.checkpoints: dict[int, dict] = {}

    def __call__(self, metrics: dict[str, float], checkpoint_dir: str | None) -> None:
        self.metrics.append(dict(metrics))
        if checkpoint_dir is not None:
            self.checkpoints[int(metrics[M.STEP])] = load_checkpoint(checkpoint_dir)


def deterministic(metrics: dict[str, float]) -> dict[str, float]:
    """``metrics`` without the timings (``perf/*``), which differ between runs."""
    return {k: v for k, v in metrics.items() if not k.startswith("perf/")}
