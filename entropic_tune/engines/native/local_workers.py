"""Several data-parallel workers on this machine without Ray (``entropic-tune train --workers N``).

Rank 0 runs in the calling process (so the run's files, progress and exit status are the plain
``train`` command's); ranks 1..N-1 are ``spawn``-ed processes that run the same trainer steps and
nothing else (no files, no evaluations of their own beyond the trainer's). The group is gloo over a
rendezvous file in a temporary folder (CPU; on GPUs use a sweep with ``--workers-per-trial``, which
runs NCCL through Ray Train). A worker that dies takes the run down: a watchdog in rank 0 stops the
others and exits with status 1, since rank 0 would otherwise wait in a collective until gloo's timeout.
"""

from __future__ import annotations

import datetime
import multiprocessing as mp
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
import torch.distributed as dist

from ...config import Config
from ...distributed import Collective

T = TypeVar("T")
TIMEOUT = datetime.timedelta(minutes=30)
"""gloo's timeout of one collective (a step of the slowest worker must fit in it)."""


def follow(config: Config, group: Collective) -> list[dict[str, float]]:
    """A worker other than rank 0: the engine's steps to the end through the run loop, without the
    large evaluations (rank 0's); its rows are the same global values."""
    from ..base import build_engine
    from ..loop import RunLoop
    from ..records import NonFiniteError

    loop = RunLoop(build_engine(config, group), lead=False)
    try:
        for _ in loop.iter_steps():
            pass
    except NonFiniteError:  # the values are global: rank 0 meets the same one, and reports it
        pass
    return loop.history


def _worker(config: Config, rank: int, world: int, init: str,
            target: Callable[[Config, Collective], object]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is rank 0's to handle; it stops the workers
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world, timeout=TIMEOUT)
    try:
        target(config, Collective())
    finally:
        dist.destroy_process_group()


def run_local(config: Config, lead: Callable[[Collective], T],
              target: Callable[[Config, Collective], object] = follow) -> T:
    """Run ``lead(group)`` as rank 0 here and ``target(config, group)`` on ``train.num_workers - 1``
    spawned processes; returns what ``lead`` returns. ``target`` must be a module-level function."""
    world = config.train.num_workers
    context = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="entropic-workers-") as tmp:
        init = Path(tmp, "rendezvous").as_uri()
        procs = [context.Process(target=_worker, args=(config, rank, world, init, target), daemon=True)
                 for rank in range(1, world)]
        for proc in procs:
            proc.start()
        stop = threading.Event()
        watchdog = threading.Thread(target=_watch, args=(procs, stop), daemon=True)
        watchdog.start()
        dist.init_process_group("gloo", init_method=init, rank=0, world_size=world, timeout=TIMEOUT)
        try:
            result = lead(Collective())
        finally:
            stop.set()
            dist.destroy_process_group()
            for proc in procs:
                proc.join(timeout=60)
                if proc.is_alive():
                    proc.terminate()
        return result


def _watch(procs: list[mp.Process], stop: threading.Event) -> None:
    """Exit the run (status 1) as soon as a worker process died with an error."""
    while not stop.wait(0.5):
        for rank, proc in enumerate(procs, 1):
            if proc.exitcode not in (None, 0) and not stop.is_set():
                print(f"entropic-tune: worker {rank} stopped with exit status {proc.exitcode}; stopping the "
                      "run", file=sys.stderr)
                for other in procs:
                    if other.is_alive():
                        other.terminate()
                os._exit(1)
