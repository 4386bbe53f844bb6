"""Cost of the large final evaluation (``evaluation.final_evaluation``) and its batch width on the CPU.

    python benchmarks/bench_final_eval.py                   # default task and model, n = 64
    python benchmarks/bench_final_eval.py --widths 128 256 1024 4096 --reps 3

Runs the base model's large evaluation (64 held-out problems x ``rollout.final_samples`` samples,
plus greedy) with ``generate`` called on ``width`` responses at a time, the widths alternating call
by call, and reports this thread's CPU time per evaluation (the work itself, robust to other
processes on a shared machine) and wall time. The width is part of what fixes the sample: one
generator feeds the batches in turn, so another width assigns the random numbers to other rows and
gives other (equally valid) numbers; the script reports whether they agreed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[128, 256, 1024, 4096])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--samples", type=int, default=64, help="rollout.final_samples")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    C.set_threads(args.threads)
    from entropic_tune.config import load_config
    from entropic_tune.engines.native import evaluation
    from entropic_tune.engines.native.trainer import Trainer

    config = load_config({"rollout.final_samples": args.samples, "train.threads": args.threads})
    trainer = Trainer(config)
    cpu: dict[int, list[float]] = {w: [] for w in args.widths}
    wall: dict[int, list[float]] = {w: [] for w in args.widths}
    results = {}
    for _ in range(args.reps):
        for width in args.widths:
            evaluation.CPU_ROWS = width
            start_cpu, start_wall = time.thread_time(), time.perf_counter()
            out = evaluation.final_evaluation(trainer.policy, trainer.task, config, 0, "base")
            cpu[width].append(time.thread_time() - start_cpu)
            wall[width].append(time.perf_counter() - start_wall)
            results.setdefault(width, out.metrics)
    same = all(m == results[args.widths[0]] for m in results.values())
    responses = out.problems * out.samples
    print(
        f"{out.problems} problems x {out.samples} samples = {responses} responses; "
        f"the same metrics at every width: {same}"
    )
    rows = []
    for width in args.widths:
        med = statistics.median(cpu[width])
        rows.append(
            {
                "width": width,
                "cpu_s_median": med,
                "wall_s_median": statistics.median(wall[width]),
                "responses_per_cpu_s": responses / med,
            }
        )
        print(
            f"width {width:>5}: {med:6.2f} s CPU (median of {args.reps}), "
            f"{statistics.median(wall[width]):6.2f} s wall, {responses / med:7.0f} responses/s"
        )
    C.save(
        "final_eval",
        {
            "responses": responses,
            "same_metrics_at_every_width": same,
            "rows": rows,
            "metrics": results[args.widths[0]],
        },
    )


if __name__ == "__main__":
    main()
