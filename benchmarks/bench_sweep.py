"""Sweep-layer numbers (issue 3): Ray Tune overhead and concurrency on this machine.

1. overhead: the same trials as a plain Trainer loop (one process, one torch thread, one after the
   other) vs through Ray Tune with --max-concurrent 1 (Ray started once, outside the timing);
2. concurrency: the same trials through Ray Tune with 2 at a time vs 1 at a time (2 CPUs), next to
   the machine's own speedup: the plain loop in 2 fresh processes at once (imports included);
3. optionally (--compare) the wall time of the default ``entropic-tune compare`` in a subprocess,
   Ray start and stop included; with ``--compare-against DIR`` also the same command run with the
   ``entropic_tune`` package in DIR (before/after, alternating ``--compare-repeats`` times).

``--repeats K`` alternates the plain loop and the Tune run K times (the machine is shared: compare the
ratio of medians). Prints a table and saves JSON to benchmarks/results/bench_sweep-<time>.json.

    python benchmarks/bench_sweep.py [--steps 30] [--methods grpo,entropic] [--seeds 1] [--compare]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
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
    from entropic_tune.engines.native.trainer import Trainer

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
    from entropic_tune.tune import sweep

    opts = sweep.SweepOptions(out=out, name=name, max_concurrent=max_concurrent, verbose=0)
    plan = sweep.plan_grid(space)
    total = int(space.base["train.total_steps"])
    start = time.perf_counter()
    sweep.run_plan(plan, opts, total)
    return time.perf_counter() - start


def default_compare(out: str, package_dir: str | None = None, name: str = "default") -> float:
    """Wall time of ``entropic-tune compare`` (the default space) in a fresh process; ``package_dir``
    puts another checkout's ``entropic_tune`` first on the path (its Ray workers inherit it)."""
    env = dict(os.environ)
    if package_dir:
        env["PYTHONPATH"] = package_dir + os.pathsep + env.get("PYTHONPATH", "")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "entropic_tune.commands.main", "compare", "--out", out, "--name", name, "--quiet"],
                   check=True, stdout=subprocess.DEVNULL, env=env, cwd=package_dir or None)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--methods", default="grpo,entropic")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per method (trials = methods x seeds)")
    parser.add_argument("--repeats", type=int, default=1, help="alternating plain / Tune measurements")
    parser.add_argument("--compare", action="store_true", help="Also time the default entropic-tune compare.")
    parser.add_argument("--compare-against", help="folder with an older entropic_tune: time its compare too")
    parser.add_argument("--compare-repeats", type=int, default=1)
    parser.add_argument("--skip-concurrency", action="store_true", help="only the overhead (and compare)")
    args = parser.parse_args()

    from entropic_tune.tune import spaces

    # No large base/final evaluation (issue 13): the plain loop runs only the Trainer, so both sides
    # must do the same work for the ratio to be Tune's overhead
    space = spaces.load_space("compare", {"train.total_steps": args.steps, "rollout.final_samples": 0})
    space = spaces.with_changes(space, methods=tuple(args.methods.split(",")), seeds=tuple(range(args.seeds)))
    trials = [spaces.trial_config(t) for t in spaces.expand_trials(space)]
    out = tempfile.mkdtemp(prefix="bench-sweep-")
    plain_loop(trials[:1])  # warm the warm-start cache and the imports
    from entropic_tune.tune import sweep

    session = sweep.ray_session(None)  # a local Ray as `entropic-tune compare` starts it (2 CPUs here)
    session.__enter__()
    plain, tune_1 = [], []
    for rep in range(args.repeats):
        plain.append(plain_loop(trials))
        tune_1.append(through_tune(space, out, f"one-{rep}", 1))
    numbers: dict[str, object] = {"plain_s_each": plain, "tune_1_at_a_time_s_each": tune_1,
                                  "plain_s": statistics.median(plain), "tune_1_at_a_time_s": statistics.median(tune_1)}
    numbers["overhead_ratio"] = numbers["tune_1_at_a_time_s"] / numbers["plain_s"]
    numbers["overhead_per_trial_s"] = (numbers["tune_1_at_a_time_s"] - numbers["plain_s"]) / len(trials)
    if not args.skip_concurrency:
        numbers["tune_2_at_a_time_s"] = through_tune(space, out, "two", 2)
        numbers["tune_concurrency_speedup"] = numbers["tune_1_at_a_time_s"] / numbers["tune_2_at_a_time_s"]
    session.__exit__(None, None, None)
    if not args.skip_concurrency:
        numbers["plain_processes_at_once_s"] = plain_processes(trials)
        numbers["plain_concurrency_speedup"] = numbers["plain_s"] / numbers["plain_processes_at_once_s"]
    if args.compare or args.compare_against:
        after, before = [], []
        for rep in range(args.compare_repeats):
            if args.compare_against:
                before.append(default_compare(out, args.compare_against, f"before-{rep}"))
            after.append(default_compare(out, None, f"after-{rep}"))
        numbers["default_compare_s_each"] = after
        numbers["default_compare_s"] = statistics.median(after)
        if before:
            numbers["default_compare_before_s_each"] = before
            numbers["default_compare_before_s"] = statistics.median(before)
            numbers["default_compare_before_over_after"] = numbers["default_compare_before_s"] / numbers[
                "default_compare_s"]
    record = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv), "machine": platform.node(),
              "cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0], "steps": args.steps, "trials": len(trials),
              "methods": args.methods, "seeds": args.seeds, **numbers}
    for key, value in record.items():
        print(f"{key:<24} {value:.2f}" if isinstance(value, float) else f"{key:<24} {value}")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"bench_sweep-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"saved {path}")


if __name__ == "__main__":
    main()
