"""Command line: ``entropic-tune train | autotune | compare | search | ablate | report``.

User errors (bad keys, files, ranges) print one line to stderr and exit with status 2, no traceback.
Every command checks its input (flags, config keys and values, sizes against the model and machine,
folders) before it imports torch, transformers, Ray or pandas, so a typo is answered at once; the
heavy imports happen inside the subcommands, after those checks (``tests/commands/test_bad_input.py``).
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError

if TYPE_CHECKING:
    from ..config import Config

EXIT_USER_ERROR = 2
DEFAULT_OUT = "entropic_results"


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", action="append", default=[], metavar="FILE.yaml",
                        help="YAML config file(s) with nested or 'section.key' keys; later files win.")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="Override one config key, e.g. --set controller.kp=2 --set rollout.temperature=0.6 "
                             "(repeatable; wins over --config).")


def _train_parser(sub: argparse._SubParsersAction) -> None:
    from ..methods import METHODS

    p = sub.add_parser(
        "train", help="Run one trial without Ray and write its history and summary.",
        description="Run one GRPO-style trial of METHOD on the configured task and model, without Ray. "
                    "Writes config.yaml, history.csv (one row per step), summary.csv and summary.json to "
                    "OUT/NAME and prints where.",
    )
    p.add_argument("--method", default=None, metavar="METHOD",
                   help=f"Method preset: {', '.join(METHODS)} (default: grpo, or the config file's).")
    p.add_argument("--steps", type=int, default=None, help="Rollout steps (train.total_steps).")
    p.add_argument("--seed", type=int, default=None, help="Run seed (train.seed).")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="Data-parallel workers of this run (train.num_workers): N local gloo processes "
                        "sharing the global batch; the results equal one worker's up to float rounding.")
    _add_config_options(p)
    p.add_argument("--out", default=DEFAULT_OUT, help=f"Results root folder (default: ./{DEFAULT_OUT}).")
    p.add_argument("--name", default=None, help="Run folder name under --out (default: train-METHOD-sSEED-TIME).")
    p.add_argument("--quiet", action="store_true", help="No progress bar or per-step lines.")
    p.add_argument("--log", choices=("none", "tensorboard", "mlflow", "wandb"), default="none",
                   help="Also log the run to TensorBoard (OUT/NAME/tensorboard, needs tensorboardX), MLflow "
                        "(config, per-step metrics, summary; default store OUT/NAME/mlflow.db) or Weights & "
                        "Biases (the wandb extra; files in OUT/NAME/wandb; WANDB_MODE=offline needs no account).")
    p.add_argument("--mlflow-uri", default=None, metavar="URI",
                   help="MLflow tracking URI for --log mlflow (default: sqlite:///OUT/NAME/mlflow.db).")
    p.set_defaults(func=_run_train)


def _autotune_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "autotune", help="Identify the entropy plant of your setup and write recommended PI gains.",
        description="Probe EntroPIC's alpha with a square wave on your setup (model, data, learning rate, "
                    "batch, temperature), identify the entropy plant (gain, drift, lag, noise, with standard "
                    "errors) and print the SIMC gains and alpha bounds; writes them as a YAML snippet for "
                    "--config and the probe's history next to it (METHOD.md 3.5).",
    )
    p.add_argument("--method", default="entropic", metavar="METHOD",
                   help="entropic (PI) or entropic_p (P only); default entropic.")
    p.add_argument("--steps", type=int, default=None,
                   help="Probe length in rollout steps (controller.probe_steps); one more step is run.")
    p.add_argument("--seed", type=int, default=None, help="Run seed (train.seed).")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="Data-parallel workers of this run (train.num_workers): N local gloo processes "
                        "sharing the global batch; the results equal one worker's up to float rounding.")
    _add_config_options(p)
    p.add_argument("--out", default="autotune.yaml", help="YAML snippet to write (default: ./autotune.yaml).")
    p.add_argument("--quiet", action="store_true", help="No progress bar or per-step lines.")
    p.set_defaults(func=_run_autotune)


def _run_autotune(args: argparse.Namespace) -> int:
    from ..config import load_config

    data: dict[str, object] = {**_explicit(args.config), "method": args.method}
    if args.steps is not None:
        data["controller.probe_steps"] = args.steps
    if args.seed is not None:
        data["train.seed"] = args.seed
    config = load_config(data, overrides=args.overrides)
    if config.controller.name != "pi":
        raise UserError(f"autotune: method '{config.method}' has no PI controller to tune; "
                        "allowed: entropic, entropic_p")
    steps = config.controller.probe_steps
    # The probe is what this command runs: autotune probe, for the probe and the step that measures it.
    config = _train_config({**data, "controller.autotune": "probe", "train.total_steps": steps + 1},
                           [*args.overrides, "controller.autotune=probe", f"train.total_steps={steps + 1}"])
    from .autotune import output_paths, run_autotune  # torch-free until run_autotune starts

    output_paths(args.out)  # refuse a bad --out before the model loads
    return run_autotune(config, args.out, quiet=args.quiet)


def _report_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="Write report.md (and report.html) with tables and figures for experiment folders.",
        description="Read summary.csv / history.csv from one or more experiment folders and write a report "
                    "with per-method statistics, figures (PNG) and computed findings.",
    )
    p.add_argument("dirs", nargs="+", metavar="DIR", help="Experiment folder(s).")
    p.add_argument("--format", choices=("md", "html"), default="md",
                   help="md writes report.md; html also writes report.html with embedded images.")
    p.add_argument("--baseline", default=None, metavar="METHOD",
                   help="Method the others are compared with, paired by seed (default: the one recorded "
                        "by compare --baseline, else grpo).")
    p.set_defaults(func=_run_report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="entropic-tune",
        description="Study entropy control (EntroPIC and baselines) in GRPO-style RL of language models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _train_parser(sub)
    _autotune_parser(sub)
    try:
        from .sweep import add_sweep_parsers
    except ImportError:  # pragma: no cover - the Ray layer is optional for the core
        add_sweep_parsers = None
    if add_sweep_parsers is not None:
        add_sweep_parsers(sub)
    _report_parser(sub)
    return parser


def _run_train(args: argparse.Namespace) -> int:
    from ..folder_lock import check_name, check_run_dir, hold

    if args.name is not None:
        check_name(args.name)  # before anything is loaded

    data: dict[str, object] = {}
    if args.method:
        data["method"] = args.method
    if args.steps is not None:
        data["train.total_steps"] = args.steps
    if args.seed is not None:
        data["train.seed"] = args.seed
    if args.workers is not None:
        data["train.num_workers"] = args.workers
    # Precedence: config files < --method/--steps/--seed < --set.
    from ..tracking import check_tracking

    uri = check_tracking(args.log, args.mlflow_uri)
    config = _train_config({**_explicit(args.config), **data}, args.overrides)
    name = args.name or f"train-{config.method}-s{config.train.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(args.out).expanduser().resolve() / name
    check_run_dir(run_dir)
    with hold(run_dir):
        from .train import run_single  # torch and transformers: only once the input is checked

        return run_single(config, run_dir, quiet=args.quiet, log=args.log, mlflow_uri=uri)


def _train_config(data: dict[str, object], overrides: list[str]) -> Config:
    """The run's config, with its sizes checked against the model and machine; an error that only a
    ``--set`` value causes names that ``--set``."""
    from ..config import load_config, parse_override
    from ..model.limits import check_limits

    try:
        config = load_config(data, overrides=overrides)
        check_limits(config)
        return config
    except UserError as exc:
        error = exc
    if overrides and not str(error).startswith("--set"):
        try:
            check_limits(load_config(data))
        except UserError:
            raise error from None  # wrong without the --set values too
        named = [t for t in overrides if parse_override(t)[0].replace("/", ".") in str(error)] or overrides
        raise UserError(f"{', '.join(f'--set {t}' for t in named)}: {error}") from None
    raise error


def _explicit(files: Sequence[str]) -> dict[str, object]:
    from ..config import normalize, read_yaml

    merged: dict[str, object] = {}
    for path in files:
        merged.update(normalize(read_yaml(path), str(path)))
    return merged


def _run_report(args: argparse.Namespace) -> int:
    from ..folder_lock import holder, is_locked
    from ..results.check import check_experiment_folder, study_problem

    for d in args.dirs:
        if not Path(d).is_dir():
            raise UserError(f"report: '{d}' is not a folder (expected an experiment folder with summary.csv)")
        if is_locked(Path(d)):  # its driver writes the results (and the report) when it finishes
            raise UserError(f"report: '{d}' is in use by a running driver ({holder(Path(d))}); "
                            "report it when the driver has finished")
        check_experiment_folder(Path(d))
    if args.baseline is not None:
        check_baseline(args.baseline, [Path(d) for d in args.dirs])
    for d in args.dirs:
        problem = study_problem(Path(d) / "optuna.db")
        if problem:
            print(f"entropic-tune: warning: {problem}; the report leaves out the search figures", file=sys.stderr)
    target = Path(args.dirs[0])  # the report goes into the first folder
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".entropic-tune-probe-", dir=target))
    except OSError as exc:
        raise UserError(f"report: cannot write into '{target}' ({exc.strerror or type(exc).__name__}); make it "
                        "writable, or report a copy of the folder") from None
    from ..report import write_report  # pandas, matplotlib: once the folders are checked

    try:
        path = write_report([Path(d) for d in args.dirs], fmt=args.format, baseline=args.baseline)
    except ValueError as exc:
        raise UserError(str(exc).splitlines()[0]) from None
    except OSError as exc:  # a full disk, a read-only figures/: the previous report and figures stay whole
        where = f"'{exc.filename}'" if exc.filename else f"'{target}'"
        raise UserError(f"report: cannot write {where} ({exc.strerror or type(exc).__name__}); the previous "
                        "report and figures are unchanged") from None
    print(f"report written: {path}")
    return 0


def check_baseline(baseline: str, dirs: Sequence[Path]) -> None:
    """An explicit --baseline must be a method of the experiments (checked before anything is written)."""
    import csv

    methods: set[str] = set()
    for folder in dirs:
        summary = folder / "summary.csv"
        if summary.is_file():
            with open(summary, newline="") as handle:
                methods |= {row.get("method", "") for row in csv.DictReader(handle)}
    if methods and baseline not in methods:
        raise UserError(f"--baseline: '{baseline}' is not a method of {', '.join(map(str, dirs))}; "
                        f"allowed: {', '.join(sorted(methods))}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"entropic-tune: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("entropic-tune: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        again = (f"continue with 'entropic-tune {args.kind} --resume --name {getattr(args, 'name', None) or 'NAME'}' "
                 "(what was written before is intact)") if getattr(args, "kind", None) else "run the command again"
        print(f"entropic-tune: error: {where}{exc.strerror}; free some space (or make it writable), then {again}",
              file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. `entropic-tune compare --dry-run | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
