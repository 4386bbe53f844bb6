"""Progress of a sweep: trials done, running and left, and an estimated time to finish.

Shown as the first line under Ray's ``== Status ==`` header (:class:`entropic_tune.tune.callbacks.
ProgressTable`). The estimate is the rollout steps still to run divided by the rate at which this
driver has seen steps finish so far (all trials together, so concurrency is counted): it needs no
model of a step's cost, covers trials of different lengths, and is shown once some steps have been
seen. Early steps include start-up (imports, warm-start), so the first estimates run long. No Ray
here: the formatting is tested as plain functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DONE_STATUSES = ("TERMINATED", "ERROR")


@dataclass(frozen=True)
class Counts:
    """Trials of a run by state; ``left`` are those not started yet (planned but not created or pending)."""

    done: int
    errored: int
    running: int
    left: int

    @property
    def total(self) -> int:
        return self.done + self.errored + self.running + self.left


def count_trials(statuses: list[str], planned: int) -> Counts:
    """Counts from the statuses of the trials Ray has created; ``planned`` trials in all (a searcher
    creates its trials one by one, so the ones not created yet are left too)."""
    done = statuses.count("TERMINATED")
    errored = statuses.count("ERROR")
    running = sum(s not in (*DONE_STATUSES, "PENDING") for s in statuses)
    return Counts(done, errored, running, max(planned - done - errored - running, 0))


def steps_done(statuses: list[str], steps: list[int], total_steps: int) -> int:
    """Rollout steps finished over the trials; a finished trial counts in full (ASHA stops some early)."""
    return sum(total_steps if s in DONE_STATUSES else min(n, total_steps) for s, n in zip(statuses, steps, strict=True))


def eta_seconds(steps_seen: int, seconds: float, steps_left: int) -> float | None:
    """Seconds until the run ends at the rate seen (``steps_seen`` in ``seconds``); None before any step."""
    if steps_seen <= 0 or seconds <= 0:
        return None
    return steps_left * seconds / steps_seen


def format_duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``1 h 05 min``, ``2 d 3 h``: as precise as an estimate deserves."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{math.ceil(seconds)} s"
    minutes = math.ceil(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def progress_line(counts: Counts, eta: float | None, finished: bool = False) -> str:
    """``trials: 2 done, 1 failed, 2 running, 3 left (of 8); about 12 min to go``."""
    parts = [f"{counts.done} done"]
    if counts.errored:
        parts.append(f"{counts.errored} failed")
    parts += [f"{counts.running} running", f"{counts.left} left"]
    text = f"trials: {', '.join(parts)} (of {counts.total})"
    if finished or not counts.running + counts.left:
        return text
    return f"{text}; {'about ' + format_duration(eta) + ' to go' if eta is not None else 'time to go: after the first steps'}"
