"""The Ray Tune function trainable: one trial = one engine run through the run loop
(:class:`~entropic_tune.engines.loop.RunLoop`); this module only reports.

Per rollout step the trial reports one flat metrics dict: the engine's step dict plus the running
``summary/*`` statistics of the history so far (finite values only, so a search objective such as
``summary/entropy_tracking_rmse`` is present at every step). Every ``checkpoint_every`` steps and at
the last step the report carries a checkpoint (:meth:`RunLoop.save`: the engine's state, the history
and the base evaluation), so a restored trial (``--resume``, ``--max-failures``, PBT) continues exactly
where it stopped.

:func:`run_trial` is the loop without Ray (tests drive it with a fake ``report``); :func:`train_trial`
wires it to ``tune.report`` / ``tune.get_checkpoint`` (Ray is imported there, so ``run_trial`` runs
without it).
"""

from __future__ import annotations

import queue
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from ..config import load_config
from ..distributed import Collective
from ..engines.base import build_engine
from ..engines.loop import RunLoop, load_checkpoint
from ..engines.records import NonFiniteError
from .spaces import RESUME_FROM, trial_config

Report = Callable[[dict[str, float], "str | None"], None]
"""``report(metrics, checkpoint_dir_or_None)``; the directory only lives during the call."""


def run_trial(config: dict[str, Any], report: Report, checkpoint: dict[str, Any] | None = None,
              checkpoint_every: int = 25, dist: Collective | None = None) -> list[dict[str, float]]:
    """Train a trial config (dotted keys + bookkeeping keys) to the end; returns the history.

    ``checkpoint`` is a :func:`~entropic_tune.engines.loop.load_checkpoint` dict to continue from. A
    non-finite value stops the trial with :class:`NonFiniteError` (the trial is ERROR; nothing
    non-finite is reported). Reporting is pipelined: the next step runs in a worker thread while
    ``report`` waits for Ray Tune's driver (a function trainable's report blocks until the driver has
    processed the result, ~10-30 ms per step on a busy 2-core machine); see :class:`_Prefetch`.

    ``dist``: this is one worker of a data-parallel trial (:mod:`entropic_tune.tune.trainable_workers`);
    every worker reports every step, and only rank 0 writes checkpoints and runs the large evaluations
    (which need no other worker).
    """
    cfg = load_config(trial_config(config))
    loop = RunLoop(build_engine(cfg, dist), lead=dist is None or dist.rank == 0)
    if checkpoint is not None:
        loop.restore(checkpoint)
    with _Prefetch(_trial_steps(loop, checkpoint_every)) as steps:
        for metrics, checkpoint_dir in steps:
            try:
                report(metrics, checkpoint_dir)
            finally:
                if checkpoint_dir is not None:
                    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return loop.history


def _trial_steps(loop: RunLoop, checkpoint_every: int) -> Iterator[tuple[dict[str, float], str | None]]:
    """Per step the metrics to report (the step's row and the running ``summary/*``) and a checkpoint
    folder (or None), written before the next step changes the engine; the consumer deletes the folder
    once reported. The last step's metrics also carry the large evaluations (``base/*`` and ``final/*``)."""
    cfg = loop.config
    steps = loop.iter_steps()
    while True:
        try:
            row = next(steps)
        except StopIteration:
            return
        except NonFiniteError as exc:
            raise NonFiniteError(f"{exc} [trial: method={cfg.method} seed={cfg.train.seed}]") from None
        metrics = {**row, **loop.running_summary()}
        if loop.done and loop.final:
            metrics.update(loop.evaluations)
        checkpoint_dir = None
        if loop.lead and (loop.done or loop.engine.step_count % max(checkpoint_every, 1) == 0):
            checkpoint_dir = tempfile.mkdtemp(prefix="entropic-ckpt-")
            loop.save(checkpoint_dir)
        yield metrics, checkpoint_dir


class _Prefetch:
    """Iterate a generator one item ahead in a worker thread, so the next training step overlaps the
    consumer's wait for the driver. Errors reach the consumer in order (after the items before them).
    On exit (normally, or when Tune stops the trial inside ``report``) the worker finishes its current
    step and stops before the next one, and is joined, so nothing of this trial still runs when a
    reused worker process starts the next trial; checkpoint folders never reported are deleted."""

    _DONE = object()

    def __init__(self, items: Iterator[Any]) -> None:
        self._items, self._queue = items, queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="entropic-trial-steps", daemon=True)

    def _run(self) -> None:
        try:
            for item in self._items:
                self._put(item)
                if self._stop.is_set():
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            self._put(exc)
        else:
            self._put(self._DONE)

    def _put(self, item: Any) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        if isinstance(item, tuple) and item[1] is not None:
            shutil.rmtree(item[1], ignore_errors=True)

    def __enter__(self) -> Iterator[Any]:
        self._thread.start()
        return self._consume()

    def _consume(self) -> Iterator[Any]:
        while True:
            item = self._queue.get()
            if item is self._DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if isinstance(item, tuple) and item[1] is not None:
                shutil.rmtree(item[1], ignore_errors=True)


def _tune_report(metrics: dict[str, float], checkpoint_dir: str | None) -> None:
    from ray import tune  # only inside a Ray Tune trial: run_trial itself needs no Ray

    checkpoint = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
    tune.report(metrics, checkpoint=checkpoint)


def starting_state(config: dict[str, Any], exp_dir: str | None) -> dict[str, Any] | None:
    """The checkpoint a trial starts from: Ray's own (a retry, PBT), else the one ``--resume`` names in
    ``config[RESUME_FROM]`` (relative to the experiment folder ``exp_dir``), else None (a fresh start)."""
    from ray import tune

    restored = tune.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as directory:
            return load_checkpoint(directory)
    origin = config.get(RESUME_FROM)
    if isinstance(origin, str) and origin and exp_dir:
        return load_checkpoint(Path(exp_dir) / origin)
    return None


def train_trial(config: dict[str, Any], checkpoint_every: int = 25, threads: int = 1,
                exp_dir: str | None = None) -> None:
    """Ray Tune function trainable (wrap with ``tune.with_parameters`` and ``tune.with_resources``).

    ``threads`` caps torch to the trial's CPU share so concurrent trials do not oversubscribe cores.
    ``exp_dir``: the experiment folder (absolute), where a resumed trial's checkpoint lies.
    """
    torch.set_num_threads(max(1, int(threads)))
    run_trial(config, _tune_report, starting_state(config, exp_dir), checkpoint_every)
