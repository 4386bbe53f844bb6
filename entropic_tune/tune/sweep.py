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
import math
import os
import re
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
from ray.tune.search import Repeater
from ray.tune.search.optuna import OptunaSearch

from .. import metrics as M
from ..config import load_config, to_flat
from ..errors import UserError
from .callbacks import logger_callbacks, progress_reporter
from .collect import collect_and_write, existing_trials, fail_orphans, read_meta, write_meta
from .layout import WORKERS_DIR, drop_worker_runs, ray_dir
from .plan import (
    STATE_GLOB,
    STATES_BEFORE,
    grid_plan,
    planned_trials,
    run_state,
    search_plan,
    states_now,
)
from .spaces import (
    SPACES_DIR,
    TRIAL_INDEX,
    ParamSpec,
    SearchOptions,
    SearchSpace,
    flat_trial_config,
    grid_cells,
    search_base,
)
from .trainable import train_trial

optuna.logging.set_verbosity(optuna.logging.WARNING)
# Read by Ray Tune when a Tuner runs: the classic progress table honours CLIReporter.metric_columns.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

FAULT_ENV = "ENTROPIC_TUNE_FAULT"
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
    cells, grid_key = plan["cells"], plan["grid_key"]
    keys = sorted({k for cell in cells.values() for k in cell} - {grid_key})
    first = next(iter(cells.values()))
    shared = {k: first[k] for k in keys if all(k in c and c[k] == first[k] for c in cells.values())}
    varying = [k for k in keys if k not in shared]
    table = {label: _explicit(cell, varying) for label, cell in cells.items()}
    param_space: dict[str, Any] = dict(shared)
    for key in varying:
        param_space[key] = tune.sample_from(lambda config, k=key: table[config[grid_key]][k])
    param_space[grid_key] = tune.grid_search(list(cells))
    param_space["train.seed"] = tune.grid_search(list(plan["seeds"]))
    return Plan(param_space, meta)


def _explicit(cell: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    """The cell's value of each key; keys the cell leaves alone get their value in the loaded config."""
    resolved = flat_trial_config(cell)
    return {k: cell[k] if k in cell else resolved[k] for k in keys}


def plan_search(space: SearchSpace, opts: SweepOptions, sopts: SearchOptions, exp_dir: Path) -> Plan:
    """search: OptunaSearch (seeded sampler, study in optuna.db) or, with --scheduler pbt, PBT."""
    meta = {**_meta(space), "metrics": OBJECTIVES[sopts.objective][0], "modes": OBJECTIVES[sopts.objective][1],
            "objective": sopts.objective, "sampler": sopts.sampler, "samples": sopts.samples,
            "repeat": sopts.repeat, "seed": sopts.seed, "params": {p.key: _param_meta(p) for p in space.params},
            "plan": search_plan(search_base(space))}
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
    storage_path = exp_dir / "optuna.db"
    existing = existing_trials(opts.name, storage_path)
    # Re-seeding the sampler with the same seed on a continued study would repeat its first points.
    sampler = build_sampler(meta["sampler"], seed + existing, multi=not single)
    exp_dir.mkdir(parents=True, exist_ok=True)
    searcher: Any = _TrackedOptunaSearch(
        space={p.key: _optuna_distribution(p) for p in params},
        metric=metrics[0] if single else metrics, mode=modes[0] if single else modes,
        sampler=sampler, study_name=opts.name,
        storage=optuna.storages.RDBStorage(f"sqlite:///{storage_path}"),
    )
    if repeat > 1:
        searcher = Repeater(searcher, repeat=repeat)
    meta.update(study_name=opts.name, storage="optuna.db", sampler_seed=seed + existing, previous_trials=existing)
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
    meta = {"kind": space.kind, "name": None, "space": space.name if bundled else str(space.path),
            "description": space.description, "base": _full_base(space.base), "methods": list(space.methods),
            "seeds": list(space.seeds)}
    if space.kind == "ablate":
        meta["factors"] = {factor: list(levels) for factor, levels in space.factors.items()}
    if space.kind != "search":
        meta["primary"] = space.primary  # the report's primary metric (report/paired.py)
    return meta


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

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        live = {t.number for tid, t in self._ot_trials.items() if tid not in self._completed_trials}
        fail_orphans(self._ot_study, keep=live)


@contextlib.contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Use the running Ray, connect to ``address``, or start (and stop) a local one."""
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
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private, local-only instance
        # Ray starts its workers at niceness 15: on a machine doing anything else, trials then get a
        # fraction of the CPU that the same trial gets from `entropic-tune train` (measured: 2-3x its
        # wall time at equal CPU time, BENCHMARKS.md). Trials are the work here; run them at normal priority.
        os.environ.setdefault("RAY_worker_niceness", "0")
        ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False,
                 log_to_driver=False, configure_logging=True, logging_level="warning")
    try:
        yield
    finally:
        ray.shutdown()


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
    if opts.workers_per_trial > 1:  # Ray Train inside the trial: the trial reserves nothing itself
        from .trainable_workers import train_workers_trial, trial_resources

        storage = (opts.exp_dir / WORKERS_DIR).resolve()
        fn = tune.with_parameters(train_workers_trial, train_storage=str(storage),
                                  checkpoint_every=opts.checkpoint_every,
                                  threads=max(1, int(opts.cpus_per_trial)), workers=opts.workers_per_trial,
                                  cpus_per_worker=opts.cpus_per_trial, gpus_per_worker=opts.gpus_per_trial)
        return tune.with_resources(fn, trial_resources())
    fn = tune.with_parameters(train_trial, checkpoint_every=opts.checkpoint_every,
                              threads=max(1, int(opts.cpus_per_trial)))
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
    cell = config.get("__cell__")
    label = str(cell).replace("=", "-") if isinstance(cell, str) else str(config.get("method", "t"))
    label = re.sub(r"[^A-Za-z0-9_.+-]+", "_", label)
    seed = int(config.get("train.seed", 0) or 0) + int(config.get(TRIAL_INDEX) or 0)  # --repeat adds its index
    return f"{label}-s{seed}-{trial.trial_id}"[:80]


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
    return plan.search_alg is not None or plan.mutations is not None


def run_plan(plan: Plan, opts: SweepOptions, total_steps: int) -> Path:
    """Run a new experiment (or add trials to a search); write the results; return the folder."""
    exp_dir = opts.exp_dir
    plan.meta["name"] = opts.name
    plan.meta["options"] = {k: v for k, v in asdict(opts).items() if k not in ("out", "name", "verbose")}
    scheduler = _scheduler(opts, plan, total_steps)
    with ray_session(opts.address):
        check_resources(opts)
        plan.meta[STATES_BEFORE] = states_now(exp_dir)  # Ray's states of earlier runs (a search adds runs)
        write_meta(exp_dir, plan.meta)  # first, so --resume works even if this driver is killed
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
        finished = _fit(tuner)
    drop_worker_runs(exp_dir)
    collect_and_write(exp_dir, plan.meta, finished, delete_checkpoints=opts.delete_checkpoints)
    return exp_dir


def fault(point: str) -> None:
    """Fault injection for tests: ``ENTROPIC_TUNE_FAULT=<point>`` kills this driver at ``point`` with
    SIGKILL (as the OOM killer or a lost machine would: no handler, no cleanup)."""
    if os.environ.get(FAULT_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


def resume(opts: SweepOptions) -> Path:
    """Continue an interrupted experiment: finished trials are kept, unfinished ones restart from their
    last checkpoint, errored ones are retried; the searcher state is restored too (and Optuna trials
    the killed driver left RUNNING without a Ray trial to finish them are marked FAIL).

    Without a readable Ray state of this run (the driver died before Ray saved one), the run is
    rebuilt from the plan in experiment.yaml instead: its planned trials run again from the start.
    """
    exp_dir = opts.exp_dir
    meta = read_meta(exp_dir)
    state, path = run_state(exp_dir, meta)
    if state != "ok" or not Tuner.can_restore(str(ray_dir(exp_dir))):
        reason = {"missing": "none saved", "unreadable": f"{path.name if path else ''} unreadable"}
        return _rebuild(opts, meta, path if state == "unreadable" else None, reason.get(state, "no tuner.pkl"))
    with ray_session(opts.address):
        check_resources(opts)
        # The restored run keeps its RunConfig (storage, checkpoints, failures, progress table).
        quiet_loggers()
        tuner = Tuner.restore(str(ray_dir(exp_dir)), trainable=make_trainable(opts), resume_errored=True)
        finished = _fit(tuner)
    drop_worker_runs(exp_dir)
    collect_and_write(exp_dir, meta, finished, delete_checkpoints=opts.delete_checkpoints)
    return exp_dir


def _rebuild(opts: SweepOptions, meta: dict[str, Any], unreadable: Path | None, reason: str) -> Path:
    """Run the planned trials of ``meta`` again (Ray's state of this run is missing or unreadable)."""
    exp_dir = opts.exp_dir
    planned = planned_trials(meta)
    if planned is None:
        raise UserError(f"--resume: '{exp_dir}' holds no Ray Tune experiment to resume (the driver stopped "
                        "before Ray saved any state) and no plan of trials; start it again without --resume")
    if unreadable is not None and meta["kind"] == "search":
        raise UserError(f"--resume: {unreadable}: Ray's state of this search is unreadable, so its trials "
                        "cannot be matched with the study's; start the search again without --resume (it adds "
                        "the planned trials to the study)")
    with ray_session(opts.address):
        check_resources(opts)
        before = set(meta.get(STATES_BEFORE) or ())
        for path in ray_dir(exp_dir).glob(STATE_GLOB):  # this run's states are not used: keep them, out of the way
            if path.name not in before:
                path.rename(path.with_name(path.name + ".unused"))
        print(f"entropic-tune: no usable Ray state of this run ({reason}); running its {planned} planned "
              f"trial(s) again from {exp_dir / 'experiment.yaml'}", file=sys.stderr)
        plan = grid_from_plan(meta) if "cells" in meta["plan"] else search_from_plan(meta, opts, exp_dir)
        return run_plan(plan, opts, _planned_steps(meta))


def _planned_steps(meta: dict[str, Any]) -> int:
    plan = meta["plan"]
    trial = {**next(iter(plan["cells"].values())), "train.seed": plan["seeds"][0]} if "cells" in plan else plan["base"]
    return int(flat_trial_config(trial)["train.total_steps"])


def _fit(tuner: Tuner) -> bool:
    """Run the Tuner; False when the user interrupted it (the results so far are still written)."""
    try:
        tuner.fit()
    except KeyboardInterrupt:
        return False
    return True
