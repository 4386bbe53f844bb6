"""Core numbers on the default task (issue 2): GRPO's entropy drop and accuracy, EntroPIC's tracking.

Runs each (method, seed) as a plain Trainer loop (no Ray), two processes at a time with one torch thread
each, and prints/saves: summary/entropy_drop, summary/final_accuracy, summary/entropy_tracking_rmse,
summary/settle_step, seconds per step and rollout tokens per second.

    python benchmarks/bench_core.py [--seeds 3] [--steps N] [--methods grpo,entropic] [--set k=v ...]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def run_one(args: tuple[str, int, int | None, list[str]]) -> dict:
    import torch

    from entropic_tune import metrics as M
    from entropic_tune.config import load_config
    from entropic_tune.engines.native.trainer import Trainer

    method, seed, steps, overrides = args
    torch.set_num_threads(1)
    data = {"method": method, "train.seed": seed}
    if steps:
        data["train.total_steps"] = steps
    config = load_config(data, overrides=overrides)
    trainer = Trainer(config)
    history = [trainer.step() for _ in range(config.train.total_steps)]
    summary = M.summarize(history, config.controller.target_entropy)
    return {
        "method": method, "seed": seed, "steps": config.train.total_steps,
        "target_entropy": config.controller.target_entropy,
        "entropy_first": history[0][M.ENTROPY], "entropy_last": history[-1][M.ENTROPY],
        "initial_accuracy": history[0]["eval/accuracy"], **summary,
        "step_s_median": statistics.median(r[M.STEP_S] for r in history),
        "rollout_tokens_per_s_median": statistics.median(r[M.ROLLOUT_TOKENS_PER_S] for r in history),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--methods", default="grpo,entropic")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    jobs = [(m, s, args.steps, args.overrides) for m in args.methods.split(",") for s in range(args.seeds)]
    start = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        rows = list(pool.map(run_one, jobs))
    wall = time.perf_counter() - start
    print(f"{'method':<12} {'seed':>4} {'H first':>8} {'H last':>8} {'drop':>6} {'acc0':>6} {'acc':>6} "
          f"{'rmse':>6} {'settle':>6} {'s/step':>7} {'tok/s':>8}")
    for r in rows:
        print(f"{r['method']:<12} {r['seed']:>4} {r['entropy_first']:>8.4f} {r['entropy_last']:>8.4f} "
              f"{r['summary/entropy_drop']:>6.2f} {r['initial_accuracy']:>6.3f} "
              f"{r['summary/final_accuracy']:>6.3f} {r['summary/entropy_tracking_rmse']:>6.3f} "
              f"{r['summary/settle_step']:>6} {r['step_s_median']:>7.3f} {r['rollout_tokens_per_s_median']:>8.0f}")
    for method in args.methods.split(","):
        sel = [r for r in rows if r["method"] == method]
        for key in ("summary/entropy_drop", "summary/final_accuracy", "summary/entropy_tracking_rmse"):
            vals = [r[key] for r in sel]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            print(f"{method:<12} {key:<32} mean {statistics.mean(vals):.3f} sd {sd:.3f}")
    print(f"wall {wall:.0f} s with {args.workers} workers")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "core.json"
    out.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "wall_s": wall,
                               "command": "python benchmarks/bench_core.py " + " ".join(
                                   f"--{k} {v}" for k, v in vars(args).items() if v), "rows": rows},
                              indent=2, default=str))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
