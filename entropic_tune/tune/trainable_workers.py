"""One Ray Tune trial on several data-parallel workers: Ray Train's ``TorchTrainer`` started from
inside the Tune trial function (``--workers-per-trial N``; METHOD.md 7, README "One trial on several
GPUs").

Resources (the nested placement-group trap, ray#47439): the Tune trial itself reserves no CPU and
no GPU (one byte of memory, :func:`trial_resources`), since Ray Train's workers get a placement group
of their own, outside the trial's: had the trial reserved even 0.01 CPU, a trial of 2 x 1 CPU on 2
CPUs would wait forever for its workers; the ``TorchTrainer``'s ``ScalingConfig`` reserves the N
workers (``--cpus-per-trial`` and ``--gpus-per-trial`` each: they are per worker here), so one trial
costs ``N x (cpus, gpus)`` and nothing is reserved twice; Ray Train's controller actor takes no CPU
either. Concurrency is capped by the sweep (``sweep.worker_concurrency``), since Tune no longer sees
what a trial will take.

Data flow per step: every worker runs :func:`entropic_tune.tune.trainable.run_trial` with the group Ray
Train set up (gloo on the CPU, NCCL on GPUs); every worker calls ``ray.train.report`` (rank 0 with a
checkpoint folder every ``checkpoint_every`` steps, written as a single-process trial writes it:
``trainer.pt`` + ``history.json``); a Train callback on the controller hands rank 0's metrics and the
checkpoint's path to this trial process through a Ray queue, and the trial reports them to Tune with
``tune.report(..., checkpoint=...)``, so Tune keeps the trial's checkpoints in the trial folder
(``checkpoint_*``) exactly as for one worker: ``--resume``, ``--max-failures``, PBT and the history
fill-in (``layout.saved_history``) work unchanged. Ray Train's own run folder of an attempt
(``OUT/NAME/workers/<trial>-<id>/``, beside Tune's ``ray/``, on the storage every node shares) is
transient: each checkpoint in it is deleted once Tune holds its copy, and the folder when the attempt
ends. It is not inside the trial's working directory, because Ray Tune copies that directory's files
into the trial folder when a checkpoint is reported, and would keep a copy of a checkpoint deleted
just after. A worker that fails fails the Train run
(``FailureConfig(max_failures=0)``), which fails the Tune trial, which Tune retries from its last
checkpoint like any trial.
"""

from __future__ import annotations

import shutil
import threading
import uuid
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune
from ray.train import Checkpoint as TrainCheckpoint
from ray.train import CheckpointConfig, ScalingConfig
from ray.train import FailureConfig as TrainFailureConfig
from ray.train import RunConfig as TrainRunConfig
from ray.train.torch import TorchTrainer
from ray.train.v2.api.callback import UserCallback
from ray.util.queue import Queue

from ..distributed import Collective
from ..engines.loop import load_checkpoint
from .spaces import RESUME_FROM
from .trainable import run_trial

_DONE = "__entropic_workers_done__"


def trial_resources() -> dict[str, float]:
    """What the Tune trial process itself reserves: no CPU and no GPU (the workers' resources are the
    Train run's placement group), and one byte of memory, because Ray Tune refuses a request that is
    all zeros ("Cannot initialize a ResourceRequest with an empty head and zero worker bundles")."""
    return {"cpu": 0, "gpu": 0, "memory": 1}


class _ToTune(UserCallback):
    """On Ray Train's controller: rank 0's metrics and the checkpoint's path, to the trial's queue."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        self.queue.put((dict(metrics[0]), checkpoint.path if checkpoint is not None else None))


def _worker_loop(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: the trial loop on this worker's part of the global batch."""
    torch.set_num_threads(max(1, int(loop_config["threads"])))
    group = Collective()  # the default process group Ray Train initialised
    rank = group.rank
    state = None
    restore = loop_config.get("restore")
    if restore is not None:
        with restore.as_directory() as directory:
            state = load_checkpoint(directory)

    def report(metrics: dict[str, float], checkpoint_dir: str | None) -> None:
        checkpoint = TrainCheckpoint.from_directory(checkpoint_dir) if checkpoint_dir and rank == 0 else None
        ray.train.report(metrics, checkpoint=checkpoint)

    run_trial(loop_config["config"], report, state, int(loop_config["checkpoint_every"]), dist=group)


def train_workers_trial(config: dict[str, Any], train_storage: str, checkpoint_every: int = 25,
                        threads: int = 1, workers: int = 2, cpus_per_worker: float = 1.0,
                        gpus_per_worker: float = 0.0, exp_dir: str | None = None) -> None:
    """Ray Tune function trainable of a ``workers``-worker trial (wrap with ``tune.with_parameters``
    and ``tune.with_resources(fn, trial_resources())``). ``train_storage``: the absolute folder of Ray
    Train's run folders (``OUT/NAME/workers``); ``exp_dir``: the experiment folder, where the checkpoint
    that ``--resume`` names in ``config[RESUME_FROM]`` lies (used when Ray has none of its own)."""
    restored = tune.get_checkpoint()
    origin = config.get(RESUME_FROM)
    if restored is None and isinstance(origin, str) and origin and exp_dir:
        restored = tune.Checkpoint.from_directory(str(Path(exp_dir) / origin))
    queue = Queue(maxsize=1, actor_options={"num_cpus": 0})
    trial_name = Path(tune.get_context().get_trial_dir()).name  # the trial folder's name
    run_name = f"{trial_name}-{uuid.uuid4().hex[:8]}"
    run_dir = Path(train_storage) / run_name
    use_gpu = gpus_per_worker > 0
    resources = {"CPU": cpus_per_worker, **({"GPU": gpus_per_worker} if use_gpu else {})}
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"config": dict(config), "checkpoint_every": checkpoint_every, "threads": threads,
                           "restore": restored},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=TrainRunConfig(
            name=run_name, storage_path=str(train_storage),
            callbacks=[_ToTune(queue)], failure_config=TrainFailureConfig(max_failures=0),
            checkpoint_config=CheckpointConfig(num_to_keep=None)),
    )
    errors: list[BaseException] = []
    # Ray Train's controller runs in a task that knows its cluster's address: the controller's
    # placement-group cleaner looks the cluster up by address, and on a machine with several Ray
    # instances (a shared workstation, CI) it cannot, so a failed attempt's workers' placement group
    # would stay reserved and the retry would wait for it forever.
    address = ray.get_runtime_context().gcs_address
    remote_fit = ray.remote(num_cpus=0)(_fit).options(runtime_env={"env_vars": {"RAY_ADDRESS": address}})

    def fit() -> None:
        try:
            ray.get(remote_fit.remote(trainer))
        except BaseException as exc:  # noqa: BLE001 - raised in the trial's thread below
            errors.append(exc)
        finally:
            queue.put(_DONE)

    runner = threading.Thread(target=fit, name="entropic-workers-fit", daemon=True)
    runner.start()
    try:
        while (item := queue.get()) != _DONE:
            metrics, path = item
            checkpoint = tune.Checkpoint.from_directory(path) if path else None
            tune.report(metrics, checkpoint=checkpoint)
            if path:  # Tune holds its own copy now (trial folder, checkpoint_*)
                shutil.rmtree(path, ignore_errors=True)
    finally:
        runner.join(timeout=5)
        shutil.rmtree(run_dir, ignore_errors=True)  # this attempt's Ray Train folder (Tune keeps its copies)
    if errors:
        raise RuntimeError(f"a worker of this trial failed: {_first_line(errors[0])}") from errors[0]


def _fit(trainer: TorchTrainer) -> None:
    trainer.fit()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    cause = exc
    while cause.__cause__ is not None:  # Ray Train wraps the worker's error
        cause = cause.__cause__
    inner = str(cause).strip()
    for candidate in (inner, text):
        for line in reversed(candidate.splitlines()):  # the exception's own line, not the code raising it
            if ("simulated crash" in line or "non-finite" in line) and "raise " not in line:
                return line.strip()
    return (text.splitlines() or [type(exc).__name__])[0]
