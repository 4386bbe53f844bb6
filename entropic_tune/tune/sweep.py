"""Ray Tune + Optuna wiring: a search space becomes a Tuner, its trials become the results contract.

``compare`` and ``ablate`` are grids (``tune.grid_search`` over method or factor level, and seed);
``search`` is an :class:`OptunaSearch` with a seeded sampler whose study lives in ``optuna.db`` in the
experiment folder, so ``optuna.load_study`` reopens it and a later run with the same name adds trials
to it. Every trial runs :func:`entropic_tune.tune.trainable.train_trial`. After the Tuner, the trials are
read back from Ray's experiment state and written as ``summary.csv`` / ``history.csv`` by
:mod:`entropic_tune.tune.collect`. Ray is started here only when it is not already (tests share one).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import re
import secrets
import signal
import socket
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune import CheckpointConfig, FailureConfig, RunConfig, TuneConfig, Tuner
from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining
from ray.tune.search import Repeater, Searcher
from ray.tune.search.optuna import OptunaSearch

from .. import metrics as M
from ..config import load_config, to_flat
from ..errors import UserError, sigterm_as_interrupt
from ..results.files import FAULT_ENV
from .callbacks import logger_callbacks, progress_reporter
from .collect import (
    META_FILE,
    collect_and_write,
    existing_trials,
    fail_orphans,
    load_trials,
    read_meta,
    write_meta,
)
from .layout import CHECKPOINT_GLOB, WORKERS_DIR, drop_worker_runs, ray_dir
from .plan import (
    STATE_GLOB,
    STATES_BEFORE,
    SUPERSEDED,
    grid_configs,
    grid_plan,
    grid_tables,
    planned_steps,
    planned_trials,
    run_state,
    search_plan,
    states_now,
)
from .spaces import (
    RESUME_FROM,
    RESUME_OF,
    RESUME_TICKET,
    SPACES_DIR,
    TRIAL_INDEX,
    ParamSpec,
    SearchOptions,
    SearchSpace,
    grid_cells,
    search_base,
)
from .trainable import train_trial

optuna.logging.set_verbosity(optuna.logging.WARNING)
# Read by Ray Tune when a Tuner runs: the classic progress table honours CLIReporter.metric_columns.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

OBJECTIVES = {
    "tracking": ([M.TRACKING_RMSE], ["min"]),
    "accuracy": ([M.EVAL_ACCURACY], ["max"]),
    "late_accuracy": ([M.LATE_ACCURACY], ["max"]),  # mean of the last LATE_EVALS evaluations
    "both": ([M.EVAL_ACCURACY, M.TRACKING_RMSE], ["max", "min"]),
}


@dataclass
class SweepOptions:
    """How to run (not what): Ray, resources, checkpoints, scheduling. Stored in experiment.yaml."""

    out: str
    name: str
    address: str | None = None
    scheduler: str = "none"
    max_concurrent: int = 0
    cpus_per_trial: float = 1.0
    """CPUs of a trial; with ``workers_per_trial`` > 1, of each of its workers."""
    gpus_per_trial: float = 0.0
    """GPUs of a trial; with ``workers_per_trial`` > 1, of each of its workers."""
    workers_per_trial: int = 1
    """Data-parallel workers per trial (``train.num_workers``): > 1 runs each trial as a Ray Train
    ``TorchTrainer`` from inside the Tune trial (:mod:`entropic_tune.tune.trainable_workers`)."""
    checkpoint_every: int = 25
    max_failures: int = 0
    keep_checkpoints: int | None = None
    """Checkpoints Ray keeps per trial while the run goes (``num_to_keep``); None: all. Ray deletes the
    older ones as new ones arrive, before its next experiment-state snapshot, so a driver killed at that
    moment can leave the state naming a deleted checkpoint and that trial cannot resume (Ray's restore
    raises "does not exist on storage anymore"); keeping all while running avoids that window."""
    delete_checkpoints: bool = True
    """At the end, delete the checkpoints of finished trials (``--keep-checkpoints`` keeps them)."""
    log: str = "none"
    mlflow_uri: str | None = None
    verbose: int = 1

    @property
    def exp_dir(self) -> Path:
        return Path(self.out) / self.name


@dataclass
class Plan:
    """What the Tuner is given, plus the experiment.yaml metadata."""

    param_space: dict[str, Any]
    meta: dict[str, Any]
    num_samples: int = 1
    search_alg: Any = None
    metric: str | None = M.EVAL_ACCURACY
    mode: str | None = "max"
    mutations: dict[str, Any] | None = None
    scheduler: Any = None


def plan_grid(space: SearchSpace) -> Plan:
    """compare/ablate: grid over the cells (methods or factor levels) and the seeds."""
    meta = _meta(space)
    meta["plan"] = grid_plan("method" if space.kind == "compare" else "__cell__", grid_cells(space), space.seeds)
    return grid_from_plan(meta)


def grid_from_plan(meta: dict[str, Any]) -> Plan:
    """The grid of ``meta["plan"]`` (as planned, or as read back from experiment.yaml by --resume).

    Keys whose value differs between cells are ``tune.sample_from`` lookups of the grid value, so
    every trial config is explicit and shows in Ray's config columns.
    """
    plan = meta["plan"]
    grid_key = plan["grid_key"]
    shared, table = grid_tables(plan)
    param_space: dict[str, Any] = dict(shared)
    for key in next(iter(table.values()), {}):
        param_space[key] = tune.sample_from(lambda config, k=key: table[config[grid_key]][k])
    param_space[grid_key] = tune.grid_search(list(plan["cells"]))
    param_space["train.seed"] = tune.grid_search(list(plan["seeds"]))
    return Plan(param_space, meta)


def plan_search(space: SearchSpace, opts: SweepOptions, sopts: SearchOptions, exp_dir: Path) -> Plan:
    """search: OptunaSearch (seeded sampler, study in optuna.db) or, with --scheduler pbt, PBT."""
    meta = {**_meta(space), "metrics": OBJECTIVES[sopts.objective][0], "modes": OBJECTIVES[sopts.objective][1],
            "objective": sopts.objective, "sampler": sopts.sampler, "samples": sopts.samples,
            "repeat": sopts.repeat, "seed": sopts.seed, "params": {p.key: _param_meta(p) for p in space.params},
            "plan": search_plan(search_base(space))}
    if (exp_dir / META_FILE).is_file():  # adding trials to a search (maybe a copied, renamed folder): its study
        meta["study_name"] = read_meta(exp_dir).get("study_name")
    return search_from_plan(meta, opts, exp_dir)


def search_from_plan(meta: dict[str, Any], opts: SweepOptions, exp_dir: Path) -> Plan:
    """The search of ``meta`` (as planned, or as read back from experiment.yaml by --resume)."""
    metrics, modes = meta["metrics"], meta["modes"]
    single = len(metrics) == 1
    params = [ParamSpec(key, spec["type"], spec.get("low"), spec.get("high"), bool(spec.get("log", False)),
                        tuple(spec.get("choices") or ())) for key, spec in meta["params"].items()]
    base = meta["plan"]["base"]
    samples, repeat, seed = int(meta["samples"]), int(meta.get("repeat", 1)), int(meta.get("seed", 0))
    if not single and (repeat > 1 or opts.scheduler != "none"):
        raise UserError("--objective both: not with --repeat > 1 or a --scheduler (they need one metric)")
    if opts.scheduler == "pbt":
        if repeat > 1:
            raise UserError("--scheduler pbt: not with --repeat > 1")
        domains = {p.key: _tune_domain(p) for p in params}
        meta["note"] = "PBT: no Optuna study (PBT cannot be combined with a searcher)"
        return Plan({**base, **domains}, meta, samples, None, metrics[0], modes[0], domains)
    storage_path = exp_dir / "optuna.db"  # in this folder, whatever folder the study was first made in
    study_name = meta.get("study_name") or opts.name  # a resumed (maybe renamed, copied) folder: its own study
    existing = existing_trials(study_name, storage_path)
    # Re-seeding the sampler with the same seed on a continued study would repeat its first points.
    sampler = build_sampler(meta["sampler"], seed + existing, multi=not single)
    exp_dir.mkdir(parents=True, exist_ok=True)
    searcher: Any = _TrackedOptunaSearch(
        space={p.key: _optuna_distribution(p) for p in params},
        metric=metrics[0] if single else metrics, mode=modes[0] if single else modes,
        sampler=sampler, study_name=study_name,
        storage=optuna.storages.RDBStorage(f"sqlite:///{storage_path}"),
    )
    if repeat > 1:
        searcher = Repeater(searcher, repeat=repeat)
    meta.update(study_name=study_name, storage="optuna.db", sampler_seed=seed + existing, previous_trials=existing)
    return Plan(base, meta, samples * repeat, searcher, metrics[0] if single else None, modes[0] if single else None)


def _param_meta(p: ParamSpec) -> dict[str, Any]:
    if p.type == "categorical":
        return {"type": p.type, "choices": list(p.choices)}
    return {"type": p.type, "low": p.low, "high": p.high, "log": p.log}


def _full_base(base: dict[str, Any]) -> dict[str, Any]:
    """The space's base with every method-independent default filled in (model, task, rollout, ...),
    so a report can state the full setup; the method-specific sections stay as the space gives them."""
    full = to_flat(load_config(dict(base)))
    common = {k: v for k, v in full.items() if k.split(".")[0] in ("model", "task", "rollout", "optim", "train")}
    return {**common, **dict(base)}


def _meta(space: SearchSpace) -> dict[str, Any]:
    bundled = space.path.resolve().parent == SPACES_DIR
    meta = {"kind": space.kind, "name": None, "space": space.name if bundled else _shareable(space.path),
            "description": space.description, "base": _full_base(space.base), "methods": list(space.methods),
            "seeds": list(space.seeds)}
    if space.kind == "ablate":
        meta["factors"] = {factor: list(levels) for factor, levels in space.factors.items()}
    if space.kind != "search":
        meta["primary"] = space.primary  # the report's primary metric (report/paired.py)
    return meta


def _shareable(path: Path) -> str:
    """A user's space file as experiment.yaml records it: relative to the working folder when it lies
    under it, else its file name (no absolute machine path in a file meant for sharing; the space's
    content is recorded in full anyway: ``base``, ``plan``, ``params``)."""
    resolved = Path(path).resolve()
    return resolved.relative_to(Path.cwd()).as_posix() if resolved.is_relative_to(Path.cwd()) else resolved.name


def build_sampler(name: str, seed: int, multi: bool = False) -> optuna.samplers.BaseSampler:
    """A seeded Optuna sampler (OptunaSearch ignores ``seed=`` when given a sampler)."""
    if name == "gp" and importlib.util.find_spec("scipy") is None:
        raise UserError("--sampler gp needs scipy, which is not installed (pip install scipy), or use tpe")
    if name == "cmaes":
        if importlib.util.find_spec("cmaes") is None:
            raise UserError("--sampler cmaes needs the 'cmaes' package (pip install cmaes), or use tpe")
        if multi:
            raise UserError("--sampler cmaes: single-objective only; use tpe or random with --objective both")
        return optuna.samplers.CmaEsSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def _optuna_distribution(p: ParamSpec) -> optuna.distributions.BaseDistribution:
    if p.type == "categorical":
        return optuna.distributions.CategoricalDistribution(list(p.choices))
    if p.type == "int":
        return optuna.distributions.IntDistribution(int(p.low), int(p.high), log=p.log)
    return optuna.distributions.FloatDistribution(p.low, p.high, log=p.log)


def _tune_domain(p: ParamSpec) -> Any:
    if p.type == "categorical":
        return tune.choice(list(p.choices))
    if p.type == "int":
        return tune.lograndint(int(p.low), int(p.high) + 1) if p.log else tune.randint(int(p.low), int(p.high) + 1)
    return tune.loguniform(p.low, p.high) if p.log else tune.uniform(p.low, p.high)


class _TrackedOptunaSearch(OptunaSearch):
    """OptunaSearch that records the Ray trial id on each Optuna trial and never tells Optuna NaN.

    A NaN or missing objective would leave the Optuna trial RUNNING and bias the search (e.g. when
    every repeat of a suggestion failed): such trials are told FAIL instead. On a restore (``--resume``)
    the Optuna trials that no restored Ray trial will finish (asked after the killed driver's last
    state save) are told FAIL, and results of Ray trials the restored searcher never saw are ignored.
    An errored trial that the resumed run finishes is added again as COMPLETE (the FAIL one stays).
    """

    def suggest(self, trial_id: str) -> dict | None:
        config = super().suggest(trial_id)
        if trial_id in self._ot_trials:
            self._ot_trials[trial_id].set_user_attr("trial_id", trial_id)
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._ot_trials:
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self._ot_trials:
            return
        names = self.metric if isinstance(self.metric, list) else [self.metric]
        values = [(result or {}).get(n) for n in names]
        if result and any(v is None or not math.isfinite(float(v)) for v in values):
            result, error = None, True
        if trial_id in self._completed_trials:
            if result and not error:
                self._record_retry(trial_id, values)
            return
        super().on_trial_complete(trial_id, result=result, error=error)

    def _record_retry(self, trial_id: str, values: list[Any]) -> None:
        """An errored trial that ``--resume`` retried to the end: its Optuna trial was told FAIL and
        cannot change state, so the finished result is added as a new COMPLETE trial (same params)."""
        number = self._ot_trials[trial_id].number
        failed = next(t for t in self._ot_study.get_trials(deepcopy=False) if t.number == number)
        if failed.state != optuna.trial.TrialState.FAIL:
            return
        self._ot_study.add_trial(optuna.trial.create_trial(
            params=failed.params, distributions=failed.distributions,
            values=[float(v) for v in values],
            user_attrs={**failed.user_attrs, "retry_of": failed.number},
        ))


@contextlib.contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Use the running Ray, connect to ``address``, or start (and stop) a local one. SIGTERM stops the
    driver as Ctrl-C does, before and after ``ray.init`` (which replaces the handler)."""
    if ray.is_initialized():
        yield
        return
    if address:
        check_address(address)
        try:
            ray.init(address=address, log_to_driver=False, logging_level="warning", runtime_env=_runtime_env())
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UserError(f"--address {address}: cannot connect to Ray: {str(exc).splitlines()[0]}") from None
    else:
        start_local_ray(num_cpus=os.cpu_count() or 1, configure_logging=True, logging_level="warning")
    sigterm_as_interrupt()
    try:
        yield
    finally:
        ray.shutdown()
        sigterm_as_interrupt()


def start_local_ray(**options: Any) -> None:
    """Start a local Ray for this driver (``ray.init(address="local", ...)``), with token authentication
    and a fresh random token (:func:`local_token`).

    Ray's GCS, raylet and workers listen on every interface (``*:PORT``; ``ray.init`` turns a loopback
    ``_node_ip_address`` into the machine's reachable address), so the session is reachable from the
    network: without authentication anyone who can reach the machine could run tasks in it (issue 27).
    With the token, a client that does not hold it is refused. The token lives only in the environment
    of this driver and the Ray processes it starts (readable by this user alone)."""
    local_token()
    # Ray starts its workers at niceness 15: on a machine doing anything else, trials then get a
    # fraction of the CPU that the same trial gets from `entropic-tune train` (measured: 2-3x its
    # wall time at equal CPU time, BENCHMARKS.md). Trials are the work here; run them at normal priority.
    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(address="local", include_dashboard=False, log_to_driver=False, **options)


def local_token() -> str:
    """Turn on Ray's token authentication with a fresh random token for a local session about to start
    (``RAY_AUTH_MODE=token``, ``RAY_AUTH_TOKEN``; a ``RAY_AUTH_MODE=disabled`` in the environment is
    overridden, ``~/.ray/auth_token`` is neither read nor written). Processes it starts inherit it."""
    token = secrets.token_hex(32)
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = token
    os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
    # Ray caches its config and token per process on first use: refresh both, as ray.init itself does
    # when it turns token auth on (ray 2.60: Config.initialize, AuthenticationTokenLoader.reset_cache).
    try:
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    except (ImportError, AttributeError):  # another Ray version: it reads the environment at start
        pass
    return token


def _runtime_env() -> dict[str, Any] | None:
    """Cluster workers get the driver's warm-start cache setting (they inherit the raylet's env)."""
    cache = os.environ.get("ENTROPIC_TUNE_CACHE")
    return {"env_vars": {"ENTROPIC_TUNE_CACHE": cache}} if cache else None


def check_address(address: str | None) -> None:
    """Fail in seconds on a HOST:PORT nobody listens on (ray.init would retry for a minute)."""
    if not address or address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        raise UserError(f"--address {address}: expected auto or HOST:PORT, e.g. 127.0.0.1:6379")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=3).close()
    except OSError as exc:
        raise UserError(f"--address {address}: no Ray head reachable ({exc.strerror or exc}); "
                        "start one with 'ray start --head' or omit --address") from None


def check_resources(opts: SweepOptions) -> None:
    """Refuse requests the cluster can never satisfy (Ray would leave the trials pending forever)."""
    have = ray.cluster_resources()
    n = opts.workers_per_trial
    if n > 1:
        for flag, key, per in (("--cpus-per-trial", "CPU", opts.cpus_per_trial), ("--gpus-per-trial", "GPU",
                                                                                  opts.gpus_per_trial)):
            if per * n > have.get(key, 0):
                raise UserError(f"--workers-per-trial {n}: {n} workers x {flag} {per:g} = {per * n:g} {key}(s) "
                                f"per trial, but the Ray cluster has {have.get(key, 0):g}")
        return
    if opts.gpus_per_trial > have.get("GPU", 0):
        raise UserError(f"--gpus-per-trial {opts.gpus_per_trial}: the Ray cluster has "
                        f"{have.get('GPU', 0):g} GPU(s); use --gpus-per-trial 0 or a cluster with GPUs")
    if opts.cpus_per_trial > have.get("CPU", 0):
        raise UserError(f"--cpus-per-trial {opts.cpus_per_trial}: the Ray cluster has {have.get('CPU', 0):g} CPU(s)")


def make_trainable(opts: SweepOptions) -> Any:
    exp_dir = str(opts.exp_dir.resolve())  # where a resumed trial's checkpoint lies (RESUME_FROM)
    if opts.workers_per_trial > 1:  # Ray Train inside the trial: the trial reserves nothing itself
        from .trainable_workers import train_workers_trial, trial_resources

        storage = (opts.exp_dir / WORKERS_DIR).resolve()
        fn = tune.with_parameters(train_workers_trial, train_storage=str(storage), exp_dir=exp_dir,
                                  checkpoint_every=opts.checkpoint_every,
                                  threads=max(1, int(opts.cpus_per_trial)), workers=opts.workers_per_trial,
                                  cpus_per_worker=opts.cpus_per_trial, gpus_per_worker=opts.gpus_per_trial)
        return tune.with_resources(fn, trial_resources())
    fn = tune.with_parameters(train_trial, checkpoint_every=opts.checkpoint_every,
                              threads=max(1, int(opts.cpus_per_trial)), exp_dir=exp_dir)
    return tune.with_resources(fn, {"cpu": opts.cpus_per_trial, "gpu": opts.gpus_per_trial})


def worker_concurrency(opts: SweepOptions) -> int | None:
    """The most trials at once: ``--max-concurrent``, else (with workers per trial, whose resources
    Tune does not see) as many whole trials as the cluster's CPUs and GPUs hold; None = Tune's own."""
    if opts.max_concurrent:
        return opts.max_concurrent
    if opts.workers_per_trial <= 1:
        return None
    have = ray.cluster_resources()
    fits = [have.get(key, 0) // (per * opts.workers_per_trial)
            for key, per in (("CPU", opts.cpus_per_trial), ("GPU", opts.gpus_per_trial)) if per > 0]
    return max(1, int(min(fits)))


def trial_dirname(trial: Any) -> str:
    """Short trial folder names: ``entropic-s0-<trial id>``, ``tau-0.95-s0-<trial id>`` (ablations).

    Ablations are labelled by the grid value ``__cell__`` (``factor=level``): ``factor``/``variant``
    may still be unresolved ``sample_from`` placeholders when Ray names the folder."""
    config = trial.config or {}
    ticket = config.get(RESUME_TICKET)  # a resumed run: the label is in the ticket (the rest may be unresolved)
    label = ticket.split("|", 1)[1] if isinstance(ticket, str) and "|" in ticket else trial_label(config)
    return f"{label}-{trial.trial_id}"[:80]


def trial_label(config: dict[str, Any]) -> str:
    """``entropic-s0``, ``tau-0.95-s0``: the cell (or method) and the seed of a trial config."""
    cell = config.get("__cell__")
    label = str(cell).replace("=", "-") if isinstance(cell, str) else str(config.get("method", "t"))
    label = re.sub(r"[^A-Za-z0-9_.+-]+", "_", label)
    try:
        seed = int(config.get("train.seed", 0) or 0) + int(config.get(TRIAL_INDEX) or 0)  # --repeat adds its index
    except (TypeError, ValueError):
        seed = 0
    return f"{label}-s{seed}"


def _run_config(opts: SweepOptions, meta: dict[str, Any], total_steps: int) -> RunConfig:
    """Ray's experiment is ``ray/`` inside the experiment folder (:mod:`entropic_tune.tune.layout`):
    storage path ``OUT/NAME``, name ``ray``, so the user's files stay at the top."""
    quiet_loggers()
    ray_exp = ray_dir(opts.exp_dir)
    return RunConfig(
        name=ray_exp.name, storage_path=str(ray_exp.parent.resolve()), verbose=opts.verbose,
        progress_reporter=progress_reporter(meta, planned_trials(meta) or 0, total_steps),
        callbacks=logger_callbacks(opts.log, opts.mlflow_uri, opts.exp_dir),
        checkpoint_config=CheckpointConfig(num_to_keep=opts.keep_checkpoints or None),
        failure_config=FailureConfig(max_failures=opts.max_failures),
    )


def quiet_loggers() -> None:
    """Results need Ray's CSV and JSON logs (``ExperimentAnalysis`` reads them), not its TensorBoard
    ones: without this, Tune adds a TensorBoard logger whenever tensorboardX is installed (~3 s to import
    in the driver and ~9 ms of driver CPU per reported step on this 2-core machine). The loggers are
    passed explicitly (:func:`entropic_tune.tune.callbacks.logger_callbacks`; TensorBoard with
    ``--log tensorboard``)."""
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"


def _scheduler(opts: SweepOptions, plan: Plan, total_steps: int) -> Any:
    """ASHA or PBT; a grid has no TuneConfig metric, so its scheduler gets the metric itself."""
    objective = {} if _tune_metric(plan) else {"metric": plan.metric, "mode": plan.mode}
    if opts.scheduler == "asha":
        if plan.metric is None:
            raise UserError("--scheduler asha needs a single objective (not --objective both)")
        return ASHAScheduler(time_attr="training_iteration", max_t=total_steps,
                             grace_period=max(1, total_steps // 4), **objective)
    if opts.scheduler == "pbt":
        if not plan.mutations:
            raise UserError("--scheduler pbt: only for 'search' (PBT mutates the searched parameters)")
        return PopulationBasedTraining(time_attr="training_iteration", hyperparam_mutations=plan.mutations,
                                       perturbation_interval=max(1, opts.checkpoint_every))
    return None


def _tune_metric(plan: Plan) -> bool:
    """Searches give Ray the objective (searcher, PBT, best trial); a grid has none to rank by."""
    return plan.meta.get("kind") == "search"


def run_plan(plan: Plan, opts: SweepOptions, total_steps: int, resumed: bool = False) -> Path:
    """Run a new experiment (add trials to a search, or with ``resumed`` carry on this run of the
    folder: see :func:`resume`); write the results; return the folder."""
    exp_dir = opts.exp_dir
    plan.meta["name"] = opts.name
    plan.meta["options"] = {k: v for k, v in asdict(opts).items() if k not in ("out", "name", "verbose")}
    scheduler = _scheduler(opts, plan, total_steps)
    with ray_session(opts.address):
        check_resources(opts)
        if not resumed:  # Ray's states of earlier runs (a search adds runs); a resumed run keeps its own
            plan.meta[STATES_BEFORE] = states_now(exp_dir)
        write_meta(exp_dir, plan.meta)  # first, so --resume works even if this driver is killed
        finished = _tune(plan, opts, scheduler, total_steps) if plan.num_samples else True
    drop_worker_runs(exp_dir)
    tell_study(exp_dir, plan.meta)
    collect_and_write(exp_dir, plan.meta, finished, delete_checkpoints=opts.delete_checkpoints)
    return exp_dir


def _tune(plan: Plan, opts: SweepOptions, scheduler: Any, total_steps: int) -> bool:
    """Build the Tuner of ``plan`` and run it; False when the user interrupted it."""
    tuner = Tuner(
        make_trainable(opts), param_space=plan.param_space, run_config=_run_config(opts, plan.meta, total_steps),
        tune_config=TuneConfig(
            metric=plan.metric if _tune_metric(plan) else None, mode=plan.mode if _tune_metric(plan) else None,
            num_samples=plan.num_samples, search_alg=plan.search_alg,
            scheduler=scheduler, max_concurrent_trials=worker_concurrency(opts),
            # a trial with workers owns Ray Train's controller: a fresh trial process each time
            trial_dirname_creator=trial_dirname, reuse_actors=opts.workers_per_trial <= 1),
    )
    fault("after_tuner_pkl")  # Tuner() has written tuner.pkl; Ray saves its first state in fit()
    return _fit(tuner)


def fault(point: str) -> None:
    """Fault injection for tests: ``ENTROPIC_TUNE_FAULT=<point>`` kills this driver at ``point`` with
    SIGKILL (as the OOM killer or a lost machine would: no handler, no cleanup)."""
    if os.environ.get(FAULT_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


def resume(opts: SweepOptions) -> Path:
    """Continue an interrupted experiment from the project's own records, never from Ray's pickles.

    Ray's ``Tuner.restore`` unpickles ``ray/tuner.pkl``, the searcher's state and fields of every
    trial in ``experiment_state-*.json``; a folder received from someone else could run any code that
    way (issue 27). So the run is rebuilt here from ``experiment.yaml``'s plan, the trials listed (as
    plain JSON, :func:`~entropic_tune.tune.collect.read_state`) in Ray's state files of this run, their
    checkpoints (``torch.load(weights_only=True)``) and the Optuna store:

    - finished trials (TERMINATED) are kept as they are;
    - every other trial of this run (running, pending, errored) is replaced by a new trial with the
      same config that starts from its newest intact checkpoint (``RESUME_FROM``; a damaged newer one
      is named in one line and skipped), the old one is listed as ``superseded`` in experiment.yaml;
    - planned trials that never started run from the start; a search asks its study for the rest.

    Without a readable Ray state of this run (the driver died before Ray saved one) every planned
    trial runs from the start. Every path is taken relative to this folder, so a copied folder
    resumes into itself only.
    """
    exp_dir = opts.exp_dir
    meta = read_meta(exp_dir)
    planned = planned_trials(meta)
    if planned is None:
        raise UserError(f"--resume: '{exp_dir}' holds no Ray Tune experiment to resume (the driver stopped "
                        "before Ray saved any state) and no plan of trials; start it again without --resume")
    state, path = run_state(exp_dir, meta)
    before = set(meta.get(STATES_BEFORE) or ())
    if state == "unreadable" and meta["kind"] == "search":
        raise UserError(f"--resume: {path}: Ray's state of this search is unreadable, so its trials "
                        "cannot be matched with the study's; start the search again without --resume (it adds "
                        "the planned trials to the study)")
    if state != "ok":
        for stale in ray_dir(exp_dir).glob(STATE_GLOB):  # this run's states are not used: keep them, out of the way
            if stale.name not in before:
                stale.rename(stale.with_name(stale.name + ".unused"))
        reason = "none saved" if state == "missing" else f"{path.name if path else ''} unreadable"
        print(f"entropic-tune: no usable Ray state of this run ({reason}); running its {planned} planned "
              f"trial(s) again from {META_FILE}", file=sys.stderr)
    superseded = set(meta.get(SUPERSEDED) or ())
    records = [r for r in load_trials(exp_dir, skip=superseded) if r.state not in before]
    fixed, fresh = _carried_on(meta, records, exp_dir, planned)
    meta[SUPERSEDED] = sorted(superseded | {str(c[RESUME_OF]) for c in fixed if c.get(RESUME_OF)})
    kept, carried = sum(r.status == "TERMINATED" for r in records), sum(bool(c.get(RESUME_FROM)) for c in fixed)
    if fixed or fresh:
        print(f"entropic-tune: resuming '{opts.name}': {kept} finished trial(s) kept, {carried} continue from "
              f"a checkpoint, {len(fixed) + fresh - carried} start from the beginning", file=sys.stderr)
    with ray_session(opts.address):
        check_resources(opts)
        if meta["kind"] == "search" and opts.scheduler != "pbt":
            plan = search_from_plan(meta, opts, exp_dir)
            plan.search_alg = _FixedFirst(fixed, plan.search_alg)
            plan.num_samples = len(fixed) + fresh
        else:  # a grid, or PBT (which takes no searcher): the trials as a grid over their tickets
            plan = grid_from_plan(meta) if "cells" in meta["plan"] else search_from_plan(meta, opts, exp_dir)
            fixed += [{**plan.param_space, **{k: d.sample() for k, d in (plan.mutations or {}).items()}}
                      for _ in range(fresh)]  # PBT: trials Ray had not created (it samples them the same way)
            plan.param_space, plan.num_samples = ticket_space(fixed), 1 if fixed else 0
        return run_plan(plan, opts, planned_steps(meta), resumed=True)


def _carried_on(meta: dict[str, Any], records: list[Any], exp_dir: Path,
                planned: int) -> tuple[list[dict[str, Any]], int]:
    """The trial configs a resumed run gives Ray (each unfinished trial of this run with ``RESUME_OF``
    and, when it has an intact one, ``RESUME_FROM``; planned trials that never started without) and,
    for a search, how many more trials it asks the searcher for beyond them."""
    fixed: list[dict[str, Any]] = []
    plan = meta["plan"]
    if "cells" in plan:
        key, latest = plan["grid_key"], {}
        for r in records:  # later runs' records come later: the newest attempt of a cell wins
            latest[(str(r.config.get(key)), _seed(r.config))] = r
        for cell, config in grid_configs(meta).items():
            r = latest.get(cell)
            if r is None:
                fixed.append(config)
            elif r.status != "TERMINATED":
                fixed.append(_continue(r, exp_dir))
        return fixed, 0
    fixed = [_continue(r, exp_dir) for r in records if r.status != "TERMINATED"]
    repeat = int(meta.get("repeat", 1))
    if repeat > 1:  # a suggestion whose seeds Ray had not all created: its missing repeats, from the start
        params = list(meta.get("params") or {})
        groups: dict[str, set[int]] = {}
        configs: dict[str, dict[str, Any]] = {}
        for r in records:
            group = json.dumps([r.config.get(k) for k in params], default=str)
            groups.setdefault(group, set()).add(int(r.config.get(TRIAL_INDEX) or 0))
            configs[group] = _plain_config(r.config)
        for group, seen in groups.items():
            fixed.extend({**configs[group], TRIAL_INDEX: i} for i in range(repeat) if i not in seen)
    return fixed, max(0, planned - len(records) - sum(RESUME_OF not in c for c in fixed))


def _seed(config: dict[str, Any]) -> int:
    try:
        return int(config.get("train.seed"))
    except (TypeError, ValueError):
        return -1


def _plain_config(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in (RESUME_FROM, RESUME_OF)}


def _continue(record: Any, exp_dir: Path) -> dict[str, Any]:
    """The config of a trial that carries on ``record`` (same config) from its newest intact checkpoint."""
    config = {**_plain_config(record.config), RESUME_OF: record.trial_id}
    checkpoint = newest_intact_checkpoint(record, exp_dir)
    if checkpoint is not None:
        config[RESUME_FROM] = checkpoint.relative_to(exp_dir.resolve()).as_posix()
    return config


def newest_intact_checkpoint(record: Any, exp_dir: Path) -> Path | None:
    """The newest checkpoint of ``record`` that loads (``weights_only=True``) and holds a trainer state
    and its history: its own ``checkpoint_*`` folders, newest first, then the one it was itself resumed
    from. Each damaged one (empty, cut, not a checkpoint) is named on stderr in one line."""
    from ..engines.loop import load_checkpoint
    from ..engines.records import CHECKPOINT_FILE

    exp_dir = exp_dir.resolve()
    folders = sorted(record.folder.glob(CHECKPOINT_GLOB), reverse=True) if record.folder else []
    origin = record.config.get(RESUME_FROM)
    if isinstance(origin, str) and origin:
        folders.append(exp_dir / origin)
    for folder in folders:
        folder = folder.resolve()
        if not folder.is_relative_to(exp_dir) or not folder.is_dir():
            continue  # only checkpoints inside this experiment folder are ever read
        path = folder / CHECKPOINT_FILE
        problem = None
        try:
            size = path.stat().st_size
            if size == 0:
                problem = "empty file"
            else:
                state = load_checkpoint(folder)
                if not isinstance(state, dict) or not {"trainer", "history"} <= set(state):
                    problem = "not a trainer checkpoint"
        except FileNotFoundError:
            problem = "missing"
        except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is skipped and named
            problem = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:120]}"
        if problem is None:
            return folder
        print(f"entropic-tune: warning: {path.relative_to(exp_dir)} is damaged ({problem}); trial "
              f"{record.trial_id} resumes from an earlier checkpoint", file=sys.stderr)
    return None


def ticket_space(configs: list[dict[str, Any]]) -> dict[str, Any]:
    """A param space whose trials are exactly ``configs``: a grid over one ticket per config
    (``RESUME_TICKET``, ``index|label``), every other key looked up from the ticket's config."""
    if not configs:
        return {}
    tickets = {f"{i}|{trial_label(c)}": c for i, c in enumerate(configs)}
    keys = sorted({k for c in configs for k in c})
    space: dict[str, Any] = {k: tune.sample_from(lambda config, k=k: tickets[config[RESUME_TICKET]].get(k))
                             for k in keys}
    space[RESUME_TICKET] = tune.grid_search(list(tickets))
    return space


class _FixedFirst(Searcher):
    """A resumed search: the given trial configs first (the unfinished trials carried on), then the
    wrapped searcher's suggestions. The wrapped searcher never hears of the fixed trials; their results
    reach the Optuna study through :func:`tell_study` once they finish."""

    def __init__(self, fixed: list[dict[str, Any]], inner: Searcher) -> None:
        super().__init__(metric=inner.metric, mode=inner.mode)
        self._fixed, self._inner, self._mine = list(fixed), inner, set()

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return self._inner.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str) -> dict | None:
        if self._fixed:
            self._mine.add(trial_id)
            return self._fixed.pop(0)
        return self._inner.suggest(trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self._mine:
            self._inner.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self._mine:
            self._inner.on_trial_complete(trial_id, result=result, error=error)


def tell_study(exp_dir: Path, meta: dict[str, Any]) -> None:
    """Give the Optuna study the results its searcher never saw: a suggestion whose trials all finished
    but that has no COMPLETE Optuna trial (carried on by ``--resume``, or finished after the killed
    driver's last word to Optuna) is added as a COMPLETE trial with the mean objective of its seeds,
    ``retry_of`` the FAIL trial it replaces. RUNNING trials nobody will finish are told FAIL first."""
    if meta.get("kind") != "search" or not meta.get("study_name"):
        return
    storage = optuna.storages.RDBStorage(f"sqlite:///{exp_dir / meta.get('storage', 'optuna.db')}")
    study = optuna.load_study(study_name=meta["study_name"], storage=storage)
    fail_orphans(study)
    trials = study.get_trials(deepcopy=False)
    told = {t.user_attrs.get("trial_id") for t in trials if t.state == optuna.trial.TrialState.COMPLETE}
    told |= {t.user_attrs.get("resume_of") for t in trials if t.state == optuna.trial.TrialState.COMPLETE}
    params = {key: ParamSpec(key, spec["type"], spec.get("low"), spec.get("high"), bool(spec.get("log", False)),
                             tuple(spec.get("choices") or ())) for key, spec in (meta.get("params") or {}).items()}
    before = set(meta.get(STATES_BEFORE) or ())
    groups: dict[str, list[Any]] = {}
    for r in load_trials(exp_dir, skip=meta.get(SUPERSEDED) or ()):
        if r.state not in before and all(k in r.config for k in params):
            groups.setdefault(json.dumps([r.config[k] for k in params], default=str), []).append(r)
    for members in groups.values():
        ids = {m.trial_id for m in members} | {str(m.config[RESUME_OF]) for m in members if m.config.get(RESUME_OF)}
        if (len(members) < int(meta.get("repeat", 1)) or any(m.status != "TERMINATED" for m in members)
                or ids & told):
            continue
        try:
            values = [sum(float((m.last or {})[n]) for m in members) / len(members) for n in meta["metrics"]]
        except (KeyError, TypeError, ValueError):
            continue
        if not all(math.isfinite(v) for v in values):
            continue
        twins = [t for t in trials if t.state == optuna.trial.TrialState.FAIL and t.user_attrs.get("trial_id") in ids]
        attrs: dict[str, Any] = {"trial_id": members[0].trial_id}
        if twins:
            attrs.update(retry_of=twins[-1].number, resume_of=twins[-1].user_attrs.get("trial_id"))
        study.add_trial(optuna.trial.create_trial(
            params={k: members[0].config[k] for k in params},
            distributions={k: _optuna_distribution(p) for k, p in params.items()}, values=values, user_attrs=attrs))


def _fit(tuner: Tuner) -> bool:
    """Run the Tuner; False when the user interrupted it (the results so far are still written)."""
    try:
        tuner.fit()
    except KeyboardInterrupt:
        return False
    return True
