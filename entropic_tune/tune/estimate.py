"""Wall-time estimate of a sweep for ``--dry-run``, from step times measured on this machine.

A trial's time is ``steps * step + evaluations * evaluate + 2 * final``: its rollout steps, the
held-out evaluations every ``rollout.eval_every`` steps, and the large evaluation of the base and of
the final model (``rollout.final_samples``). What the first step costs beyond a later one (compiling,
``model.compile``) is paid once per worker process, which Tune reuses for its next trials. Each is timed on this machine with the trial's own config, alone, with
``cpus_per_trial`` threads: a warm-up step, two timed steps, one ``Trainer.evaluate`` and a large
evaluation of ``CPU_ROWS`` responses scaled to its full size. The sweep's wall time is the sum over
trials divided by the trials that run at once. Trials that differ only in what does not change the
cost of a step (seed, step count, gains, targets, learning rate: :func:`cost_key`) share one
measurement, and measurements are kept in ``<warm-start cache>/step_times.json`` (keyed by the cost
config, torch's version and the CPU count), so a second dry run is instant.

Imports torch only to measure (a cached estimate needs none); only ``--dry-run`` uses this module.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from ..config import load_config
from ..names import FINAL

TIMED_STEPS = 2
COST_FREE_SECTIONS = ("debug",)
COST_FREE_KEYS = ("method", "train.seed", "train.total_steps", "train.log_every", "optim.lr",
                  "optim.weight_decay", "optim.grad_clip", "rollout.eval_every", "rollout.final_samples",
                  "task.eval_seed", "model.cache_dir")
"""Keys that leave the cost of one step unchanged (the step and evaluation counts are applied
afterwards). Of ``loss.*`` and ``controller.*`` only the loss and ``controller.update`` count."""


@dataclass(frozen=True)
class StepTimes:
    """Seconds measured for one trial config on this machine."""

    first: float
    """The first rollout step (with compiling, when ``model.compile`` compiles)."""
    step: float
    """A later rollout step (mean of :data:`TIMED_STEPS`)."""
    evaluate: float
    """One held-out evaluation (``Trainer.evaluate``)."""
    final: float
    """One large evaluation at the config's full ``rollout.final_samples`` (0 when none)."""

    def trial(self, flat: Mapping[str, Any]) -> float:
        """Seconds of one trial of ``flat`` (a full flat config)."""
        steps, every = int(flat["train.total_steps"]), int(flat["rollout.eval_every"])
        evaluations = steps // every + (steps % every != 0) if every else 1
        return steps * self.step + evaluations * self.evaluate + 2 * self.final


def cost_key(flat: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a flat config that sets the cost of a step (see :data:`COST_FREE_KEYS`)."""
    return {
        k: v for k, v in sorted(flat.items())
        if k not in COST_FREE_KEYS and k.partition(".")[0] not in COST_FREE_SECTIONS
        and not (k.startswith("loss.") and k != "loss.name")
        and not (k.startswith("controller.") and k != "controller.update")
    }


def _digest(flat: Mapping[str, Any], threads: int) -> str:
    payload = {"cost": cost_key(flat), "threads": threads, "torch": version("torch"),
               "cpus": os.cpu_count(), "machine": platform.machine()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def measure(flat: Mapping[str, Any], threads: int) -> StepTimes:
    """Time a warm-up step, :data:`TIMED_STEPS` steps, one evaluation and a reduced large evaluation
    of the trial config ``flat`` with ``threads`` torch threads."""
    from ..engines.base import build_engine
    from ..engines.native.evaluation import CPU_ROWS

    # At least 10 steps, so no timed step is the last one (which also evaluates); below 100 steps
    # either way, so model.compile's 'auto' decides as for the trial itself.
    total = max(int(flat["train.total_steps"]), 10)
    size, n = int(flat["task.eval_size"]), int(flat["rollout.final_samples"])
    small = max(1, CPU_ROWS // size)
    config = load_config({**flat, "train.total_steps": total, "rollout.eval_every": 0,
                          "train.threads": threads, "rollout.final_samples": min(n, small)})
    trainer = build_engine(config)  # train.engine: the trial's own engine is timed
    start = time.perf_counter()
    trainer.step()
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(TIMED_STEPS):
        trainer.step()
    step = (time.perf_counter() - start) / TIMED_STEPS
    start = time.perf_counter()
    trainer.evaluate()
    evaluate = time.perf_counter() - start
    final = 0.0
    if n:
        start = time.perf_counter()
        trainer.large_evaluation(FINAL)
        # the greedy pass over the problems plus the sampled responses, scaled to n per problem
        final = (time.perf_counter() - start) * (size + size * n) / (size + size * min(n, small))
    return StepTimes(first, step, evaluate, final)


def _cache_path(flat: Mapping[str, Any]) -> Path:
    return load_config(flat).model.cache_root / "step_times.json"


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def step_times(flats: Sequence[Mapping[str, Any]], threads: int) -> tuple[list[StepTimes], str]:
    """The times of each trial config (measured now or read from the cache) and how they were got."""
    path = _cache_path(flats[0])
    cache = _read_cache(path)
    keys = [_digest(f, threads) for f in flats]
    measured, reused = 0, 0
    todo = len({k for k in keys if k not in cache})
    if todo:  # the first dry run of a config on a machine runs a few steps (and compiles, where auto does)
        print(f"timing {todo} trial config(s) on this machine for the estimate (once; cached in {path}) ...",
              flush=True)
    for key, flat in zip(keys, flats, strict=True):
        if key in cache:
            continue
        cache[key] = {**asdict(measure(flat, threads)), "measured": time.strftime("%Y-%m-%d %H:%M"),
                      "load": os.getloadavg()[0]}
        measured += 1
    reused = len(set(keys)) - measured
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(cache, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)
    except OSError:
        pass  # an unwritable cache only means measuring again next time
    fields = ("first", "step", "evaluate", "final")
    times = [StepTimes(**{f: float(cache[k][f]) for f in fields}) for k in keys]
    parts = []
    if measured:
        parts.append(f"{measured} trial config(s) timed now ({TIMED_STEPS} steps after a warm-up step, "
                     "one evaluation, a large evaluation scaled to its size)")
    if reused:
        dates = sorted({cache[k]["measured"] for k in set(keys) if k in cache})
        parts.append(f"{reused} read from {path} (timed {dates[0]})")
    load = max(float(cache[k].get("load", 0.0)) for k in keys)
    how = (f"{'; '.join(parts)}; each alone on this machine with {threads} thread(s) (load average "
           f"up to {load:.1f} on {os.cpu_count()} CPUs while timed), so concurrent trials, which share "
           "its cores and memory, may take longer")
    return times, how


def describe(flats: Sequence[Mapping[str, Any]], threads: int, concurrent: int) -> str:
    """Lines for ``--dry-run``: the estimated wall time of the trials ``flats`` and how it was got."""
    times, how = step_times(flats, threads)
    seconds = [t.trial(f) for t, f in zip(times, flats, strict=True)]
    at_once = max(1, min(concurrent, len(flats)))
    # each worker pays the first step's extra (compiling) once; a later config reuses what it compiled
    warm_up = max(t.first - t.step for t in times)
    wall = sum(seconds) / at_once + max(warm_up, 0.0)
    mean = sum(seconds) / len(seconds)
    step = sum(t.step for t in times) / len(times)
    final = sum(t.final for t in times) / len(times)
    return (f"estimated wall time: ~{_duration(wall)} ({len(flats)} trials of ~{_duration(mean)} each, "
            f"{at_once} at once; ~{step:.2f} s per rollout step, ~{final:.1f} s per large evaluation, "
            f"2 per trial; +{warm_up:.0f} s for each worker's first step)\n  how: {how}")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
