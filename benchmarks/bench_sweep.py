"""Sweep-layer numbers (issue 3): Ray Tune overhead and concurrency on this machine.

1. overhead: the same trials as a plain Trainer loop (one process, one torch thread, one after the
   other) vs through Ray Tune with --max-concurrent 1 (Ray started once, outside the timing);
2. concurrency: the same trials through Ray Tune with 2 at a time vs 1 at a time (2 CPUs), next to
   the machine's own speedup: the plain loop in 2 fresh processes at once (imports included);
3. optionally (--compare) the wall time of the default ``entropic-tune compare`` in a subprocess,
   Ray start and stop included.

Prints a table and saves JSON to benchmarks/results/bench_sweep-<time>.json.

    python benchmarks/bench_sweep.py [--steps 30] [--methods grpo,entropic] [--compare]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def plain_loop(trials: list[dict]) -> float:
    """Run the trials one after the other without Ray; returns seconds (model loading included)."""
    import torch

    from entropic_tune.config import load_config
    from entropic_tune.trainer import Trainer

    torch.set_num_threads(1)
    start = time.perf_counter()
    for data in trials:
        trainer = Trainer(load_config(data))
        while trainer.step_count < trainer.config.train.total_steps:
            trainer.step()
    return time.perf_counter() - start


def _one_trial(data: dict) -> float:
    return plain_loop([data])


def plain_processes(trials: list[dict]) -> float:
    """Each trial in its own fresh process, all at once (process start and imports included)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    start = time.perf_counter()
    with ProcessPoolExecutor(len(trials), mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(_one_trial, trials))
    return time.perf_counter() - start


def through_tune(space, out: str, name: str, max_concurrent: int) -> float:
    from entropic_tune import sweep

    opts = sweep.SweepOptions(out=out, name=name, max_concurrent=max_concurrent, verbose=0)
    plan = sweep.plan_grid(space)
    total = int(space.base["train.total_steps"])
    start = time.perf_counter()
    sweep.run_plan(plan, opts, total)
    return time.perf_counter() - start


def default_compare(out: str) -> float:
    cli = Path(sys.executable).with_name("entropic-tune")
    start = time.perf_counter()
    subprocess.run([str(cli), "compare", "--out", out, "--name", "default", "--quiet"], check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--methods", default="grpo,entropic")
    parser.add_argument("--compare", action="store_true", help="Also time the default entropic-tune compare.")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    import ray

    from entropic_tune import spaces

    space = spaces.load_space("compare", {"train.total_steps": args.steps})
    space = spaces.with_changes(space, methods=tuple(args.methods.split(",")), seeds=(0,))
    trials = [spaces.trial_config(t) for t in spaces.expand_trials(space)]
    out = tempfile.mkdtemp(prefix="bench-sweep-")
    plain_loop(trials[:1])  # warm the warm-start cache and the imports
    numbers = {"plain_s": plain_loop(trials), "plain_processes_at_once_s": plain_processes(trials)}
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    numbers["tune_1_at_a_time_s"] = through_tune(space, out, "one", 1)
    numbers["tune_2_at_a_time_s"] = through_tune(space, out, "two", 2)
    ray.shutdown()
    numbers["overhead_ratio"] = numbers["tune_1_at_a_time_s"] / numbers["plain_s"]
    numbers["tune_concurrency_speedup"] = numbers["tune_1_at_a_time_s"] / numbers["tune_2_at_a_time_s"]
    numbers["plain_concurrency_speedup"] = numbers["plain_s"] / numbers["plain_processes_at_once_s"]
    if args.compare:
        numbers["default_compare_s"] = default_compare(out)
    record = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": platform.node(), "cpus": os.cpu_count(),
              "load_avg_1m": os.getloadavg()[0], "steps": args.steps, "trials": len(trials),
              "methods": args.methods, **numbers}
    for key, value in record.items():
        print(f"{key:<24} {value:.2f}" if isinstance(value, float) else f"{key:<24} {value}")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"bench_sweep-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"saved {path}")


if __name__ == "__main__":
    main()
