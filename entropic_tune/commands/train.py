"""Run one trial without Ray (``entropic-tune train``): progress on the terminal, results on disk.

Writes into the run folder: ``config.yaml``, ``experiment.yaml`` (kind: train), ``history.csv`` (rewritten
atomically every ``train.log_every`` steps, so an interrupted run keeps what it did), ``summary.csv``
and ``summary.json``. The folder layout is the results contract shared with sweeps, so
``entropic-tune report`` reads a single run too.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml
from tqdm import tqdm

from .. import metrics as M
from ..config import Config, to_dict, to_flat
from ..distributed import Collective
from ..engines.base import build_engine
from ..engines.loop import RunLoop
from ..engines.records import NonFiniteError
from ..errors import UserError
from ..folder_lock import check_run_dir
from ..results.writers import (
    atomic_write_text,
    history_columns,
    history_rows,
    summary_columns,
    summary_row,
    write_csv,
)


def progress_line(row: dict[str, float], total: int) -> str:
    """One human line: step, entropy, alpha, reward, eval accuracy, speed."""
    return (f"step {int(row[M.STEP]):>4}/{total}  entropy {row[M.ENTROPY]:.4f}  alpha {row[M.ALPHA]:+.4f}  "
            f"reward {row[M.REWARD_MEAN]:.3f}  eval_acc {row[M.EVAL_ACCURACY]:.3f}  "
            f"{row[M.STEP_S]:.2f}s/step")


def run_single(config: Config, run_dir: Path, quiet: bool = False, log: str = "none",
               mlflow_uri: str | None = None, dist: Collective | None = None) -> int:
    """Train ``config`` to the end, writing results to ``run_dir``; returns a process exit status.
    ``log``: ``mlflow``, ``tensorboard`` or ``wandb`` also logs the run there (:mod:`entropic_tune.tracking`).

    ``train.num_workers`` > 1: this process is rank 0 of that many local gloo workers
    (:func:`entropic_tune.engines.native.local_workers.run_local`); it alone writes files and runs the large evaluations.
    """
    if config.train.num_workers > 1 and dist is None:
        from ..engines.native.local_workers import run_local

        return run_local(config, lambda group: run_single(config, run_dir, quiet, log, mlflow_uri, group))
    check_run_dir(run_dir)
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out: cannot create '{run_dir}': {exc.strerror}") from None
    try:
        engine = build_engine(config, dist)  # validates model, task and data before any result is written
    except BaseException:
        if created and not any(run_dir.iterdir()):
            run_dir.rmdir()
        raise
    flat = to_flat(config)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(to_dict(config), sort_keys=False))
    atomic_write_text(run_dir / "experiment.yaml", yaml.safe_dump(
        {"kind": "train", "name": run_dir.name, "base": flat, "methods": [config.method],
         "seeds": [config.train.seed]}, sort_keys=False))
    trial_id = run_dir.name
    from ..tracking import train_tracker

    tracker = train_tracker(log, mlflow_uri, run_dir, flat, {"trial_id": trial_id, "method": config.method,
                                                            "seed": str(config.train.seed)})
    status, error = "TERMINATED", ""
    total = config.train.total_steps
    if not quiet:
        print(f"entropic-tune train: method={config.method} steps={total} seed={config.train.seed} "
              f"-> {run_dir}", file=sys.stderr)
    bar = tqdm(total=total, disable=quiet, unit="step", dynamic_ncols=True)
    # base/* before step 1, final/* after the last step: the loop's large evaluations
    loop = RunLoop(engine, describe=lambda line: None if quiet else tqdm.write(line, file=sys.stderr))
    history = loop.history
    try:
        for row in loop.iter_steps():
            if tracker is not None:
                tracker.log(row, engine.step_count)
            bar.update(1)
            bar.set_postfix(H=f"{row[M.ENTROPY]:.3f}", alpha=f"{row[M.ALPHA]:+.3f}",
                            R=f"{row[M.REWARD_MEAN]:.2f}")
            if engine.step_count % config.train.log_every == 0 or engine.step_count == total:
                if not quiet:
                    tqdm.write(progress_line(row, total), file=sys.stderr)
                _write_history(run_dir, trial_id, config, history)
    except NonFiniteError as exc:
        status, error = "ERROR", str(exc)
    except KeyboardInterrupt:
        status, error = "INTERRUPTED", "interrupted by the user"
    finally:
        bar.close()
    _write_history(run_dir, trial_id, config, history)
    summary = summary_row(trial_id, flat, history, status, error, loop.evaluations)
    write_csv(run_dir / "summary.csv", [summary], summary_columns([summary]))
    if tracker is not None:  # the summary and the large evaluations, at the last step
        tracker.log({k: v for k, v in summary.items() if k.startswith(("summary/", f"{M.BASE}/", f"{M.FINAL}/"))},
                    max(len(history), 1))
        tracker.end(status)
    final = engine.last_eval or {}
    summary_json = {**summary, M.EVAL_GREEDY_ACCURACY: final.get(M.EVAL_GREEDY_ACCURACY)}
    atomic_write_text(run_dir / "summary.json", json.dumps(summary_json, indent=2, default=str) + "\n")
    if not quiet:
        _print_summary(summary)
    print(f"results: {run_dir}  (config.yaml, history.csv, summary.csv, summary.json)")
    if status == "ERROR":
        print(f"entropic-tune: trial failed: {error}", file=sys.stderr)
        return 1
    return 130 if status == "INTERRUPTED" else 0


def _write_history(run_dir: Path, trial_id: str, config: Config, history: list[dict[str, float]]) -> None:
    rows = history_rows(trial_id, config.method, config.train.seed, history)
    write_csv(run_dir / "history.csv", rows, history_columns())


def _print_summary(summary: dict) -> None:
    keys = (M.EVAL_ACCURACY, M.EVAL_PASS_AT_K, M.ENTROPY, *M.SUMMARY_KEYS)
    keys += tuple(k for k in summary if k.startswith((f"{M.BASE}/", f"{M.FINAL}/")))
    print("summary:", file=sys.stderr)
    greedy = (f"{M.BASE}/accuracy", f"{M.FINAL}/accuracy")  # greedy decoding, beside sampled pass@k
    for key in keys:
        value = summary.get(key, float("nan"))
        label = f"{key} (greedy)" if key in greedy else key
        print(f"  {label:<32} {value:.4f}" if isinstance(value, float) else f"  {label:<32} {value}",
              file=sys.stderr)
