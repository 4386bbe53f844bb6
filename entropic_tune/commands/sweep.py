"""``entropic-tune compare | search | ablate``: run a search space through Ray Tune.

Parsing, ``--dry-run``, the checks of the input and the end-of-run table need no Ray; Ray
(``entropic_tune.tune.sweep``) is imported only after those checks, and only the resource check (GPUs,
CPUs) waits for Ray to start. Nothing is written before all checks pass. Every user error is a :class:`UserError`
(one line, exit status 2); argparse errors of these commands are one line too.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from ..config import parse_override
from ..errors import UserError, sigterm_as_interrupt
from ..folder_lock import check_name, check_writable, hold
from ..methods import METHODS, used_keys
from ..names import ENTROPY_DROP, EVAL_ACCURACY, FINAL, TARGETED, TRACKING_RMSE
from ..tracking import LOGGERS, check_tracking
from ..tune import spaces

DEFAULT_OUT = "entropic_results"
DEFAULT_SPACE = {"compare": "compare", "search": "tune_entropic", "ablate": "ablations"}
# Run options: (default, type). None in argparse means "not given", so --resume keeps the stored value.
RUN_DEFAULTS: dict[str, Any] = {
    "scheduler": "none", "max_concurrent": 0, "cpus_per_trial": 1.0, "gpus_per_trial": 0.0, "workers_per_trial": 1,
    "checkpoint_every": 25, "max_failures": 0, "keep_checkpoints": None, "delete_checkpoints": True,
    "log": "none", "mlflow_uri": None,
}
KEEP = object()  # a bare --keep-checkpoints: keep them, as many per trial as before (not a str: argparse
# would pass a str const through type=int). keep_checkpoints None: Ray deletes none while the run goes.
TABLE_METRICS = ((f"{FINAL}/pass@1", "final pass@1"), (EVAL_ACCURACY, "final eval/accuracy"),
                 (ENTROPY_DROP, "entropy drop"), (TRACKING_RMSE, "tracking RMSE"))


def add_sweep_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``compare``, ``search`` and ``ablate`` on the main parser's subcommands."""
    p = sub.add_parser(
        "compare", help="Grid of methods x seeds through Ray Tune (the main job: no arguments needed).",
        description="Run every method of the space on every seed (tune.grid_search), under the same "
                    "budget, and write summary.csv/history.csv/experiment.yaml to OUT/NAME. The default "
                    "space 'compare' is off-policy so the clipping baselines are active.")
    _common(p, "compare")
    p.add_argument("--methods", default=None, help=f"Comma-separated methods to run instead of the space's "
                                                   f"({', '.join(METHODS)}).")
    p.add_argument("--seeds", type=int, default=None, help="Run seeds 0..N-1 instead of the space's seeds.")
    p.add_argument("--baseline", default=None, metavar="METHOD",
                   help="Method the report compares the others with, paired by seed; recorded in "
                        "experiment.yaml (default: grpo when it runs).")
    p = sub.add_parser(
        "search", help="Optuna search over one method's knobs (study kept in OUT/NAME/optuna.db).",
        description="Tune one method's parameters with OptunaSearch and a seeded sampler. The study is "
                    "stored in OUT/NAME/optuna.db under the study name NAME: optuna.load_study reopens it "
                    "and a new run with the same --name adds trials to it. Note: with several concurrent "
                    "trials (the default on more than one CPU) a seeded search is not deterministic; use "
                    "--max-concurrent 1 to reproduce one exactly.")
    _common(p, "search")
    p.add_argument("--samples", type=int, default=None, help="Suggestions to evaluate (default: the space's).")
    p.add_argument("--sampler", choices=spaces.SAMPLERS, default=None,
                   help="Optuna sampler (default: the space's, else tpe); gp needs scipy, cmaes needs cmaes.")
    p.add_argument("--objective", choices=spaces.OBJECTIVES, default=None,
                   help="tracking: minimise summary/entropy_tracking_rmse; accuracy: maximise eval/accuracy "
                        "at the last step; late_accuracy: maximise summary/late_accuracy (the mean of the last 3 "
                        "evaluations, less noisy); both: multi-objective, Pareto front printed at the end.")
    p.add_argument("--repeat", type=int, default=None,
                   help="Seeds per suggestion (Ray's Repeater; Optuna sees the mean). Default: the space's.")
    p.add_argument("--seed", type=int, default=None, help="Sampler seed (default 0).")
    p = sub.add_parser(
        "ablate", help="Vary one factor at a time from the base (P vs PI, anti-windup, tau, ...).",
        description="Run every level of every factor of the space on each seed; summary.csv gets "
                    "'factor' and 'variant' columns.")
    _common(p, "ablate")
    p.add_argument("--seeds", type=int, default=None, help="Run seeds 0..N-1 instead of the space's seeds.")


def _common(p: argparse.ArgumentParser, kind: str) -> None:
    p.add_argument("--space", default=None,
                   help=f"Search space: a name in search_spaces/ or a YAML file (default: {DEFAULT_SPACE[kind]}).")
    p.add_argument("--steps", type=int, default=None, help="Rollout steps per trial (train.total_steps).")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="Override a key of the space's base, e.g. --set rollout.temperature=0.6 (repeatable).")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"Results root (default ./{DEFAULT_OUT}).")
    p.add_argument("--name", default=None, help=f"Experiment folder under --out (default {kind}-SPACE-TIME).")
    p.add_argument("--resume", action="store_true",
                   help="Continue the interrupted experiment OUT/NAME: finished trials are kept, the others "
                        "continue from their last checkpoint (errored ones are retried).")
    p.add_argument("--address", default=None,
                   help="Existing Ray cluster: 'auto' or HOST:PORT (default: start a local Ray for this run).")
    p.add_argument("--scheduler", choices=("asha", "pbt", "none"), default=None,
                   help="Trial scheduler (default none). ASHA stops weak trials early (they count as complete "
                        "with partial budgets); pbt only for search.")
    p.add_argument("--max-concurrent", type=int, default=None, help="Most trials at once (default: as CPUs allow).")
    p.add_argument("--cpus-per-trial", type=float, default=None, help="CPUs per trial, also torch threads (default 1).")
    p.add_argument("--gpus-per-trial", type=float, default=None,
                   help="GPUs per trial; fractions pack several trials on one GPU (default 0).")
    p.add_argument("--workers-per-trial", type=int, default=None, metavar="N",
                   help="Data-parallel workers per trial (train.num_workers; default 1): each trial runs as a "
                        "Ray Train TorchTrainer of N workers, --cpus-per-trial and --gpus-per-trial each.")
    p.add_argument("--checkpoint-every", type=int, default=None,
                   help="Checkpoint every N steps and at the last step (default 25).")
    p.add_argument("--max-failures", type=int, default=None, help="Retries of a failed trial (default 0).")
    p.add_argument("--keep-checkpoints", type=int, nargs="?", const=KEEP, default=None, metavar="N",
                   help="Keep the checkpoints of finished trials (by default they are deleted at the end of "
                        "the run; unfinished and errored trials always keep theirs for --resume); with N, only "
                        "the last N per trial, also while running (default: all while running).")
    p.add_argument("--log", choices=LOGGERS, default=None,
                   help="Also log every trial to TensorBoard (event files in OUT/NAME/ray/, needs tensorboardX) "
                        "or MLflow (one run per trial: config, per-step metrics, summary; default store "
                        "OUT/NAME/mlflow.db) or Weights & Biases (Ray's WandbLoggerCallback, one run per "
                        "trial, the wandb extra; WANDB_MODE=offline needs no account). Default none.")
    p.add_argument("--mlflow-uri", default=None, metavar="URI",
                   help="MLflow tracking URI for --log mlflow (http(s)://HOST:PORT, file:, sqlite:, ...; a path "
                        "is a local file store). Default: sqlite:///OUT/NAME/mlflow.db.")
    p.add_argument("--dry-run", action="store_true", help="Print the trials it would run and exit.")
    p.add_argument("--quiet", action="store_true", help="No Ray progress table.")
    p.set_defaults(func=run_command, kind=kind)
    p.error = _one_line_error(p)  # type: ignore[method-assign]


def _one_line_error(p: argparse.ArgumentParser) -> Any:
    """argparse errors as one line (flag, value, allowed values), exit status 2, like every user error."""

    def error(message: str) -> None:
        p.exit(2, f"entropic-tune: error: {p.prog.split()[-1]}: {message}\n")

    return error


def run_command(args: argparse.Namespace) -> int:
    """Every check that needs no Ray comes first, then the folder is locked for this driver (a second
    driver on it stops here), then Ray starts and the resources are checked; only then is anything
    but the lock file written (a refused run removes it again: it leaves no trace, overwrites nothing)."""
    sigterm_as_interrupt()  # a SIGTERM ends the run as Ctrl-C does (summary, resume command)
    out = Path(args.out).expanduser().resolve()
    if args.resume:
        return _resume(args, out)
    space = _space(args)
    name = _name(args.name) if args.name is not None else \
        f"{args.kind}-{space.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    sopts = _search_options(args, space) if args.kind == "search" else None
    options = _run_options(args, {})
    _validate(options, args.kind, sopts)
    _same_workers(space, options)
    baseline = getattr(args, "baseline", None)
    if baseline is not None and baseline not in space.methods:
        raise UserError(f"--baseline: '{baseline}' is not one of the methods run "
                        f"({', '.join(space.methods)})")
    if args.dry_run:
        _print_plan(space, sopts, options)
        return 0
    exp_dir = out / name
    check_writable(exp_dir)
    with hold(exp_dir):  # one driver per folder, from before it is read until the results are written
        return _run_new(args, space, sopts, options, exp_dir)


def _run_new(args: argparse.Namespace, space: spaces.SearchSpace, sopts: spaces.SearchOptions | None,
             options: dict[str, Any], exp_dir: Path) -> int:
    from ..tune.collect import check_new

    continuing = check_new(exp_dir, args.kind)
    _check_folder(exp_dir, args.kind)
    from ..tune import sweep

    opts = sweep.SweepOptions(out=str(exp_dir.parent), name=exp_dir.name, verbose=0 if args.quiet else 1, **options)
    if sopts is not None and options["scheduler"] != "pbt":
        sweep.build_sampler(sopts.sampler, sopts.seed, multi=sopts.objective == "both")  # missing packages
    sweep.check_address(opts.address)
    total = int(spaces.flat_trial_config(plan_trial(space))["train.total_steps"])
    with sweep.ray_session(opts.address):  # run_plan reuses it
        sweep.check_resources(opts)
        if args.kind == "search":
            plan = sweep.plan_search(space, opts, sopts, opts.exp_dir)
            if continuing:
                print(f"adding trials to study '{plan.meta.get('study_name')}' "
                      f"({plan.meta.get('previous_trials', 0)} trials so far)")
        else:
            plan = sweep.plan_grid(space)
        baseline = getattr(args, "baseline", None)
        if baseline is not None:  # recorded in experiment.yaml: the report compares against it
            plan.meta["baseline"] = baseline
        exp_dir = sweep.run_plan(plan, opts, total)
    return _finish(exp_dir, plan.meta)


def _check_folder(exp_dir: Path, kind: str) -> None:
    """A folder a run continues must be intact (checked before anything is written): its results
    consistent, its Optuna store readable."""
    from ..results.check import DamagedResults, check_results, study_problem

    if (exp_dir / "summary.csv").is_file() or (exp_dir / "history.csv").is_file():
        try:
            check_results(exp_dir)
        except DamagedResults as exc:
            raise UserError(f"{exc}; move the damaged file(s) away: '{kind} --resume' writes them again from "
                            "Ray's state") from None
    problem = study_problem(exp_dir / "optuna.db") if kind == "search" else None
    if problem:
        raise UserError(problem)


def plan_trial(space: spaces.SearchSpace) -> dict[str, Any]:
    """A representative trial config (for the step count)."""
    return spaces.search_base(space) if space.kind == "search" else spaces.expand_trials(space)[0]


def _resume(args: argparse.Namespace, out: Path) -> int:
    if not args.name:
        raise UserError("--resume: give the experiment's --name (and --out if not the default)")
    from ..tune.collect import read_meta

    exp_dir = out / _name(args.name)
    read_meta(exp_dir)  # before the lock: a folder without an experiment is not made a lock file
    with hold(exp_dir):
        meta = read_meta(exp_dir)
        if meta.get("kind") != args.kind:
            raise UserError(f"--resume: '{exp_dir}' is a {meta.get('kind')} experiment; "
                            f"use entropic-tune {meta.get('kind')} --resume")
        _same_plan(args, meta)
        _same_logging(args, meta.get("options") or {})
        options = _run_options(args, meta.get("options") or {})
        _validate(options, args.kind, None)
        check_writable(exp_dir)
        _check_folder(exp_dir, args.kind)
        from ..tune import sweep

        opts = sweep.SweepOptions(out=str(out), name=exp_dir.name, verbose=0 if args.quiet else 1, **options)
        sweep.check_address(opts.address)
        exp_dir = sweep.resume(opts)
        return _finish(exp_dir, read_meta(exp_dir))


def _same_plan(args: argparse.Namespace, meta: dict[str, Any]) -> None:
    """``--resume`` continues the plan in experiment.yaml: a flag that would change what the trials run
    (space, steps, --set, methods, seeds, samples, sampler...) is refused when it differs from the plan,
    instead of being silently ignored. Run options (--max-concurrent, --cpus-per-trial...) may change."""
    from ..tune.plan import grid_configs, planned_steps

    def refuse(flag: str, planned: Any) -> None:
        raise UserError(f"--resume: {flag} differs from the plan of '{args.name}' ({planned}); a resumed run "
                        "continues the plan in its experiment.yaml: drop it, or start a new run under another --name")

    stored = str(meta.get("space") or "")
    if args.space is not None and args.space not in (stored, Path(stored).stem) and \
            Path(args.space).stem != Path(stored).stem:
        refuse(f"--space {args.space}", f"space {stored}")
    if args.steps is not None and args.steps != planned_steps(meta):
        refuse(f"--steps {args.steps}", f"{planned_steps(meta)} steps")
    plan = meta.get("plan") or {}
    configs = list(grid_configs(meta).values()) if "cells" in plan else [plan.get("base") or {}]
    flats = [spaces.flat_trial_config(c) for c in configs]
    for text in args.overrides:
        key, value = parse_override(text)
        key = key.replace("/", ".")
        planned = sorted({repr(f.get(key)) for f in flats})
        if any(f.get(key) != value for f in flats):
            refuse(f"--set {text}", f"{key}: {', '.join(planned)}")
    searched = {"samples": "--samples", "sampler": "--sampler", "objective": "--objective", "repeat": "--repeat",
                "seed": "--seed"}
    for key, flag in searched.items():
        value = getattr(args, key, None)
        if value is not None and value != meta.get(key, 0 if key == "seed" else None):
            refuse(f"{flag} {value}", f"{key} {meta.get(key)}")
    if getattr(args, "methods", None) and spaces.parse_methods(args.methods) != tuple(meta.get("methods") or ()):
        refuse(f"--methods {args.methods}", f"methods {','.join(meta.get('methods') or ())}")
    if getattr(args, "seeds", None) is not None and list(range(args.seeds)) != list(meta.get("seeds") or ()):
        refuse(f"--seeds {args.seeds}", f"seeds {meta.get('seeds')}")
    if getattr(args, "baseline", None) is not None and args.baseline != meta.get("baseline", args.baseline):
        refuse(f"--baseline {args.baseline}", f"baseline {meta.get('baseline')}")


def _same_logging(args: argparse.Namespace, stored: dict[str, Any]) -> None:
    """A resumed run keeps the loggers it started with (Ray restores them with the run)."""
    log, uri = stored.get("log", "none"), stored.get("mlflow_uri")
    if args.log is not None and args.log != log:
        raise UserError(f"--log {args.log}: '{args.name}' was started with --log {log}, and a resumed run "
                        "logs as it started; drop --log")
    if args.mlflow_uri is not None and check_tracking("mlflow", args.mlflow_uri) != uri:
        raise UserError(f"--mlflow-uri {args.mlflow_uri}: '{args.name}' logs to {uri or 'its own mlruns/'}; "
                        "a resumed run logs as it started; drop --mlflow-uri")


def _name(name: str) -> str:
    """An experiment folder name: :func:`entropic_tune.folder_lock.check_name`."""
    return check_name(name)


def _space(args: argparse.Namespace) -> spaces.SearchSpace:
    overrides: dict[str, Any] = {}
    labels: dict[str, str] = {}  # which flag set each key, for errors that only that value causes
    for text in args.overrides:
        key, value = parse_override(text)
        overrides[key] = value
        labels[key.replace("/", ".")] = f"--set {text}"
    if args.steps is not None:
        if args.steps < 1:
            raise UserError(f"--steps: must be >= 1, got {args.steps}")
        overrides["train.total_steps"] = args.steps
        labels["train.total_steps"] = f"--steps {args.steps}"
    if getattr(args, "workers_per_trial", None) is not None and args.workers_per_trial >= 1:
        if "train.num_workers" in labels:
            raise UserError(f"{labels['train.num_workers']}: a sweep's workers per trial are set by "
                            "--workers-per-trial (it also sizes the trial's resources); drop the --set")
        overrides["train.num_workers"] = args.workers_per_trial
        labels["train.num_workers"] = f"--workers-per-trial {args.workers_per_trial}"
    name = args.space if args.space is not None else DEFAULT_SPACE[args.kind]
    space = spaces.load_space(name, overrides, labels)
    if space.kind != args.kind:
        raise UserError(f"--space {name}: is a {space.kind} space; use entropic-tune {space.kind}")
    changes: dict[str, Any] = {}
    if getattr(args, "methods", None):
        changes["methods"] = spaces.parse_methods(args.methods)
    if getattr(args, "seeds", None) is not None:
        if args.seeds < 1:
            raise UserError(f"--seeds: must be >= 1, got {args.seeds}")
        changes["seeds"] = tuple(range(args.seeds))
    return spaces.with_changes(space, **changes) if changes else space


def _same_workers(space: spaces.SearchSpace, options: dict[str, Any]) -> None:
    """Every trial's ``train.num_workers`` is ``--workers-per-trial`` (the resources are sized by it)."""
    workers = int(spaces.flat_trial_config(plan_trial(space))["train.num_workers"])
    if workers != options["workers_per_trial"]:
        raise UserError(f"train.num_workers: the space sets {workers}; a sweep takes its workers per trial "
                        f"from --workers-per-trial (it also sizes the trial's resources): use "
                        f"--workers-per-trial {workers}")


def _search_options(args: argparse.Namespace, space: spaces.SearchSpace) -> spaces.SearchOptions:
    samples = args.samples if args.samples is not None else space.samples
    repeat = args.repeat if args.repeat is not None else space.repeat
    for flag, value in (("--samples", samples), ("--repeat", repeat)):
        if value < 1:
            raise UserError(f"{flag}: must be >= 1, got {value}")
    return spaces.SearchOptions(samples, args.sampler or space.sampler, args.objective or space.objective,
                                repeat, args.seed if args.seed is not None else 0)


def _run_options(args: argparse.Namespace, stored: dict[str, Any]) -> dict[str, Any]:
    """The stored options (of a run to resume) or the defaults, overridden by the flags given."""
    options = {k: stored.get(k, default) for k, default in RUN_DEFAULTS.items()}
    given = {k: getattr(args, k, None) for k in RUN_DEFAULTS}
    if given["keep_checkpoints"] is not None:
        options["delete_checkpoints"] = False
        if given["keep_checkpoints"] is KEEP:  # bare flag: the stored or default number per trial
            given["keep_checkpoints"] = None
    options.update({k: v for k, v in given.items() if v is not None})
    options["address"] = args.address
    return options


def _validate(options: dict[str, Any], kind: str, sopts: spaces.SearchOptions | None) -> None:
    """Ranges of the run options and the combinations that cannot work (before Ray starts)."""
    checks = (("--cpus-per-trial", "cpus_per_trial", "> 0", lambda v: v > 0),
              ("--gpus-per-trial", "gpus_per_trial", ">= 0", lambda v: v >= 0),
              ("--workers-per-trial", "workers_per_trial", ">= 1", lambda v: v >= 1),
              ("--checkpoint-every", "checkpoint_every", ">= 1", lambda v: v >= 1),
              ("--max-failures", "max_failures", ">= -1 (-1: retry forever)", lambda v: v >= -1),
              ("--keep-checkpoints", "keep_checkpoints", ">= 1", lambda v: v is None or v >= 1),
              ("--max-concurrent", "max_concurrent", ">= 0 (0: as the CPUs allow)", lambda v: v >= 0))
    for flag, key, allowed, ok in checks:
        if not ok(options[key]):
            raise UserError(f"{flag}: must be {allowed}, got {options[key]:g}")
    options["mlflow_uri"] = check_tracking(options["log"], options["mlflow_uri"])
    scheduler = options["scheduler"]
    if scheduler == "pbt" and kind != "search":
        raise UserError(f"--scheduler pbt: only for 'search' (PBT mutates the searched parameters); "
                        f"for {kind} use asha or none")
    if sopts is not None and sopts.objective == "both" and (sopts.repeat > 1 or scheduler != "none"):
        raise UserError("--objective both: not with --repeat > 1 or a --scheduler (they need one metric)")
    if sopts is not None and scheduler == "pbt" and sopts.repeat > 1:
        raise UserError("--scheduler pbt: not with --repeat > 1")


def _print_plan(space: spaces.SearchSpace, sopts: spaces.SearchOptions | None, options: dict[str, Any]) -> None:
    """The trials, each with the settings its method uses that differ between trials
    (``methods.used_keys``), then the estimated wall time (``estimate``)."""
    print(f"space {space.name} ({space.kind}): {space.description}")
    if space.kind == "search":
        base = spaces.flat_trial_config(spaces.search_base(space))
        used = used_keys(base)
        print(f"method {space.method}, {base['train.total_steps']} steps, seed {space.seeds[0]}; "
              f"{sopts.samples} suggestions x {sopts.repeat} seed(s) = {sopts.samples * sopts.repeat} trials; "
              f"sampler {sopts.sampler} (seed {sopts.seed}), objective {sopts.objective}")
        for p in space.params:
            rng = f"{list(p.choices)}" if p.choices else f"[{p.low}, {p.high}]{' log' if p.log else ''}"
            unused = "" if p.key in used else f"  (not used by {space.method})"
            print(f"  {p.key:<32} {p.type:<12} {rng}{unused}")
        _print_estimate([base] * (sopts.samples * sopts.repeat), options)
        return
    trials = spaces.expand_trials(space)
    flats = [spaces.flat_trial_config(t) for t in trials]
    from ..results.writers import varying_keys

    varying = [k for k in varying_keys(flats) if k not in ("method", "train.seed")]
    print(f"{len(trials)} trials, {flats[0]['train.total_steps']} steps each (listed: the settings that "
          "differ between trials, where the trial's method uses them):")
    if flats[0]["rollout.final_samples"]:
        n, size = flats[0]["rollout.final_samples"], flats[0]["task.eval_size"]
        print(f"  + per trial, a large evaluation of the base model (before step 1) and of the final model "
              f"(after the last step): {size} held-out problems x {n} samples = {size * n} responses each, "
              f"for pass@k, k = 1..{n}")
    for i, (trial, flat) in enumerate(zip(trials, flats, strict=True), 1):
        label = f"{trial['factor']}={trial['variant']}" if "factor" in trial else ""
        if trial.get(spaces.SAME_AS):
            label += f" (= {trial[spaces.SAME_AS].replace(';', ', ')})"
        used = used_keys(flat)
        keys = " ".join(f"{k}={flat[k]}" for k in varying if k in used)
        print(f"  {i:>3}  {flat['method']:<16} seed {flat['train.seed']:<3} {label} {keys}".rstrip())
    _print_estimate(flats, options)


def _print_estimate(flats: list[dict[str, Any]], options: dict[str, Any]) -> None:
    """The wall-time estimate from step times measured here; concurrency as Ray's local default."""
    import os

    from ..tune import estimate

    threads = max(1, int(options["cpus_per_trial"]))
    workers = int(options.get("workers_per_trial") or 1)
    per_trial = options["cpus_per_trial"] * workers  # CPUs one trial reserves
    concurrent = options["max_concurrent"] or int((os.cpu_count() or 1) // per_trial) or 1
    where = "" if options["address"] is None else (
        f" (for this machine; on the cluster {options['address']} the trials that run at once and "
        "their speed differ)")
    try:
        text = estimate.describe(flats, threads, concurrent)
    except Exception as exc:  # noqa: BLE001 - the plan is printed; a failed measurement only loses the estimate
        print(f"no time estimate: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        return
    print(text + where)
    if workers > 1:
        print(f"  (each trial on {workers} workers x {options['cpus_per_trial']:g} CPU: timed as one worker, so the "
              "estimate leaves out the split's gain and the collectives' cost; BENCHMARKS.md has both)")
        if options["address"] is None and per_trial > (os.cpu_count() or 1):
            print(f"  note: a trial needs {per_trial:g} CPUs and this machine has {os.cpu_count()}; the run will "
                  "refuse it unless --address names a cluster that has them")
    if options["scheduler"] != "none":
        print(f"  (an upper bound: --scheduler {options['scheduler']} stops or changes trials early)")


def _finish(exp_dir: Path, meta: dict[str, Any]) -> int:
    """Print the per-group table, the study's best trials and the files written; return the exit status."""
    import csv

    problem = meta.get("plan_check", "ok")
    resume = f"entropic-tune {meta.get('kind')} --resume --name {exp_dir.name} --out {exp_dir.parent}"
    if problem != "ok":  # the results are written (they are what ran) but not reported as a success
        print(f"entropic-tune: error: {exp_dir}: the trials that ran are not the planned ones: {problem}; "
              "no report written", file=sys.stderr)
        if not meta.get("finished", True):  # interrupted before every planned trial started
            print(f"entropic-tune: the run was interrupted; continue it with: {resume}", file=sys.stderr)
            return 130
        return 1
    with open(exp_dir / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    print()
    print(summary_table(rows, meta.get("kind", "compare")))
    if meta.get("study_name"):
        _print_study(exp_dir, meta)
    files = [exp_dir / f for f in ("summary.csv", "history.csv", "experiment.yaml", "optuna.db", "mlflow.db")]
    report = _write_report(exp_dir)
    print("written:")
    for path in [*files, *([report] if report else [])]:
        if path.exists():
            print(f"  {path}")
    from ..tune.layout import size_line

    print(size_line(exp_dir, deleted=(meta.get("options") or {}).get("delete_checkpoints", False)))
    rows = list({r["trial_id"]: r for r in rows}.values())  # an ablation run shared by factors: once
    failed = [r for r in rows if r["status"] == "ERROR"]
    unfinished = [r for r in rows if r["status"] not in ("TERMINATED", "ERROR")]
    if unfinished or not meta.get("finished", True):
        print(f"entropic-tune: {len(unfinished)} trial(s) unfinished; continue with: {resume}", file=sys.stderr)
        return 130
    if failed:
        print(f"entropic-tune: {len(failed)} of {len(rows)} trial(s) failed, e.g. {failed[0]['trial_id']}: "
              f"{failed[0]['error']}", file=sys.stderr)
        return 1
    return 0


def summary_table(rows: list[dict[str, str]], kind: str) -> str:
    """mean ± std over seeds of the final metrics, one line per method (or factor level)."""
    groups: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        key = f"{row.get('factor')}={row.get('variant')}" if kind == "ablate" else row["method"]
        groups.setdefault(key, []).append(row)
    head = f"{'method' if kind != 'ablate' else 'factor=level':<24} {'done':>6}" + "".join(
        f"  {label:>20}" for _, label in TABLE_METRICS)
    lines = [head, "-" * len(head)]
    for key, group in groups.items():
        done = [r for r in group if r["status"] == "TERMINATED"]
        # tracking RMSE only for a method with an entropy target (names.TARGETED)
        targeted = all(r.get("method") in TARGETED for r in group)
        cells = "".join(
            f"  {_mean_std([r.get(metric, '') for r in done]) if targeted or metric != TRACKING_RMSE else '-':>20}"
            for metric, _ in TABLE_METRICS
        )
        lines.append(f"{key:<24} {len(done):>3}/{len(group):<2}{cells}")
    return "\n".join(lines)


def _mean_std(values: list[str]) -> str:
    nums = [float(v) for v in values if v not in ("", None) and math.isfinite(float(v))]
    if not nums:
        return "-"
    if len(nums) == 1:
        return f"{nums[0]:.3f}"
    return f"{statistics.mean(nums):.3f} ± {statistics.stdev(nums):.3f}"


def _print_study(exp_dir: Path, meta: dict[str, Any]) -> None:
    import optuna

    storage = optuna.storages.RDBStorage(f"sqlite:///{exp_dir / meta['storage']}")
    study = optuna.load_study(study_name=meta["study_name"], storage=storage)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    print(f"\nstudy '{study.study_name}': {len(complete)} complete of {len(study.trials)} trials; "
          f"objective {', '.join(f'{m} ({d})' for m, d in zip(meta['metrics'], meta['modes'], strict=True))}")
    if not complete:
        return
    best = study.best_trials if len(meta["metrics"]) > 1 else [study.best_trial]
    print("Pareto front:" if len(best) > 1 or len(meta["metrics"]) > 1 else "best trial:")
    for t in best:
        params = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items())
        values = ", ".join(f"{v:.4f}" for v in t.values)
        print(f"  #{t.number} [{values}] {params} (Ray trial {t.user_attrs.get('trial_id', '?')})")


def _write_report(exp_dir: Path) -> Path | None:
    """The report is optional: a failure there never fails the sweep. Its baseline is the one recorded
    in experiment.yaml (``--baseline``), else grpo."""
    try:
        from ..report import write_report

        return Path(write_report([exp_dir]))
    except Exception as exc:  # noqa: BLE001 - any report problem is only a warning here
        print(f"entropic-tune: warning: no report written ({type(exc).__name__}: "
              f"{str(exc).splitlines()[0] if str(exc) else ''})", file=sys.stderr)
        return None
