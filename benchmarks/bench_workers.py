"""One run on 2 data-parallel gloo workers vs 1 worker at the same global batch (issue 17).

    nice -n 19 python benchmarks/bench_workers.py                      # 16 prompts x 8, 6 measured steps
    nice -n 19 python benchmarks/bench_workers.py --steps 10 --set rollout.prompts_per_step=32

Three setups, the same config and global batch, 1 torch thread per worker, evaluation off in the
measured steps: ``one`` (1 worker, the default batch-seeded sampler), ``one-prompt`` (1 worker,
per-prompt sampling: what N workers do, so this isolates the sampler's own cost) and ``two`` (2 local
gloo workers, :mod:`entropic_tune.engines.native.local_workers`; rank 0 in this process). Reported: the wall time of a
rollout step (median and minimum over the measured steps, after ``--warmup`` steps) and rank 0's CPU
time per step (the work one worker does, less disturbed by other processes than the wall time); the
time spent waiting in collectives is not separated. On a 2-core machine the 2 workers share the 2 cores with whatever
else runs, so ``two`` is not expected to be faster; the ratio shows the split's overhead here.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

BASE = {"rollout.eval_every": 0, "rollout.final_samples": 0, "model.warmstart_steps": 0,
        "model.compile": "off", "train.threads": 1}


def timed(trainer: object, steps: int, warmup: int, cpu: list[float] | None = None) -> list[float]:
    """Wall seconds of each measured step (and this process's CPU seconds of each, into ``cpu``)."""
    times = []
    for i in range(warmup + steps):
        start, start_cpu = time.perf_counter(), time.process_time()
        trainer.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
            if cpu is not None:
                cpu.append(time.process_time() - start_cpu)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--name", default="bench_workers")
    args = parser.parse_args()

    from entropic_tune.config import load_config
    from entropic_tune.engines.native.local_workers import run_local
    from entropic_tune.engines.native.trainer import Trainer

    C.set_threads(1)
    total = args.steps + args.warmup
    data = {**BASE, "train.total_steps": total + 1}
    results: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {"one": [], "one-prompt": [], "two": []}
    one = load_config(data, args.overrides)
    results["one"] = timed(Trainer(one), args.steps, args.warmup, cpu["one"])
    prompt = load_config({**data, "train.sampling_seed": "prompt"}, args.overrides)
    results["one-prompt"] = timed(Trainer(prompt), args.steps, args.warmup, cpu["one-prompt"])
    two = load_config({**data, "train.num_workers": 2}, args.overrides)

    def lead(group: object) -> list[float]:
        trainer = Trainer(two, group)
        times = timed(trainer, args.steps, args.warmup, cpu["two"])
        trainer.step()  # the followers run total_steps; keep the last collective matched
        return times

    results["two"] = run_local(two, lead)
    print(f"global batch {one.rollout.prompts_per_step} prompts x {one.rollout.group_size}, "
          f"{args.steps} measured steps after {args.warmup}; load {C.machine()['loadavg_1_5_15']}")
    for name, times in results.items():
        s, c = C.summary(times), C.summary(cpu[name])
        print(f"  {name:<11} step median {C.fmt_s(s['median'])}  min {C.fmt_s(s['min'])}   "
              f"(rank 0) CPU median {C.fmt_s(c['median'])}")
    print(f"  rank 0's CPU per step, two / one-prompt: {C.ratio(cpu['two'], cpu['one-prompt'])['of_medians']:.2f}x")
    ratios = {"two/one": C.ratio(results["two"], results["one"]),
              "two/one-prompt": C.ratio(results["two"], results["one-prompt"]),
              "one-prompt/one": C.ratio(results["one-prompt"], results["one"])}
    for name, r in ratios.items():
        print(f"  {name:<15} {r['of_medians']:.2f}x (medians)  {r['of_minima']:.2f}x (minima)")
    C.save(args.name, {"config": {**data, "overrides": args.overrides},
                       "steps": {k: C.summary(v) for k, v in results.items()}, "ratios": ratios,
                       "rank0_cpu": {k: C.summary(v) for k, v in cpu.items()}, "raw": results, "raw_cpu": cpu})


if __name__ == "__main__":
    main()
