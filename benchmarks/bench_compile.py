"""What ``model.compile`` costs and when it pays: compile time cold and warm, saving per step, break-even.

    python benchmarks/bench_compile.py                       # default task and model, 1 torch thread
    python benchmarks/bench_compile.py --set optim.mini_batches_per_rollout=4   # the compare default

1. Compile cost, each in a fresh process (imports and model load excluded): the first sampling call
   with the compiled decoder minus an eager call of the same work, with an empty inductor cache
   (cold) and again with the cache the cold run left (warm: dynamo still traces, inductor's FX-graph
   and AOT-autograd caches skip code generation and the C++ compiler). CPU time counts the C++
   compiler too (the child compiles in-process, ``TORCHINDUCTOR_COMPILE_THREADS=1``); wall time is
   what it took on this (shared) machine.
2. Saving per rollout step: two trainers in this process, ``model.compile=off`` and the compiled
   decoding that ``auto`` picks on the CPU (steps alternate, CPU time of this thread), with the
   compile paid in the warm-up.
3. Break-even run length = compile cost / saving per step, cold and warm; ``compiling.AUTO_DECODE_MIN_STEPS``
   should sit at or above the warm one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402


def compile_cost(args: argparse.Namespace) -> None:
    """(child process) Time an eager sampling call, then the first compiled one; print JSON."""
    import random

    import torch

    from entropic_tune.config import load_config
    from entropic_tune.engines.native.rollout import generate
    from entropic_tune.model import compiling, decoding
    from entropic_tune.model.loading import load_policy
    from entropic_tune.tasks import build_task

    C.set_threads(args.threads)
    cfg = load_config({}, args.set)
    task = build_task(cfg.task)
    policy = load_policy(cfg.model, cfg.task, task)
    policy.model.eval()
    prompts = [policy.encode_prompt(p.prompt) for p in task.sample_train(random.Random(0), cfg.rollout.prompts_per_step)
               for _ in range(cfg.rollout.group_size)]
    def timed() -> tuple[float, float]:
        wall, cpu = time.perf_counter(), C.cpu_with_children()
        generate(policy, prompts, cfg.rollout.max_new_tokens, cfg.rollout.temperature, torch.Generator().manual_seed(1))
        return time.perf_counter() - wall, C.cpu_with_children() - cpu

    generate(policy, prompts, cfg.rollout.max_new_tokens, cfg.rollout.temperature, torch.Generator().manual_seed(0))
    eager_wall, eager_cpu = timed()
    compiling.use_shared_cache(cfg)
    policy.decoder = decoding.get_decoder(policy.model, cfg.rollout.batch_size, policy.pad_id, policy.eos_id)
    first_wall, first_cpu = timed()
    print(json.dumps({"compile_wall_s": first_wall - eager_wall, "compile_cpu_s": first_cpu - eager_cpu,
                      "eager_call_wall_s": eager_wall}))


def run_child(args: argparse.Namespace, cache_dir: str) -> dict[str, float]:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache_dir, "TORCHINDUCTOR_COMPILE_THREADS": "1"}
    cmd = [sys.executable, __file__, "--child", "--threads", str(args.threads)]
    for item in args.set:
        cmd += ["--set", item]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def saving_per_step(args: argparse.Namespace) -> dict[str, object]:
    from entropic_tune.config import load_config
    from entropic_tune.engines.native.trainer import Trainer

    C.set_threads(args.threads)
    base = {"rollout.eval_every": 0, "train.total_steps": 1_000_000, "train.threads": args.threads}
    trainers = {"off": Trainer(load_config({**base, "model.compile": "off"}, args.set)),
                "auto": Trainer(load_config({**base, "model.compile": "auto"}, args.set))}
    plan = trainers["auto"].compile_plan
    for trainer in trainers.values():
        for _ in range(args.warmup):
            trainer.step()
    rows: dict[str, list[dict[str, float]]] = {"off": [], "auto": []}
    for i in range(args.steps):
        for label in ("off", "auto") if i % 2 == 0 else ("auto", "off"):
            rows[label].append(C.timed_step(trainers[label]))
    out = {"plan": plan.reason}
    for key in ("step_cpu", "sampling_cpu", "behaviour_forward_cpu", "step"):
        off = statistics.median(r[key] for r in rows["off"])
        auto = statistics.median(r[key] for r in rows["auto"])
        out[key] = {"off": off, "auto": auto, "saving": off - auto, "off_over_auto": off / auto if auto else None}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="measured steps per trainer")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured steps first (compile, first eval)")
    parser.add_argument("--warm-runs", type=int, default=2, help="fresh processes with the warm cache")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], help="config override key=value")
    parser.add_argument("--name", default="compile", help="results file: benchmarks/results/<name>.json")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        compile_cost(args)
        return
    cache_dir = tempfile.mkdtemp(prefix="bench-inductor-")
    cold = run_child(args, cache_dir)
    warm = [run_child(args, cache_dir) for _ in range(args.warm_runs)]
    saving = saving_per_step(args)
    per_step = saving["step_cpu"]["saving"]
    warm_cpu = statistics.median(w["compile_cpu_s"] for w in warm)
    warm_wall = statistics.median(w["compile_wall_s"] for w in warm)
    even = {"cold": cold["compile_cpu_s"] / per_step if per_step > 0 else None,
            "warm": warm_cpu / per_step if per_step > 0 else None}
    print(f"plan of the compiled trainer: {saving['plan']}")
    print(f"compile cost (first compiled sampling call minus an eager one): cold {cold['compile_cpu_s']:.1f} s CPU "
          f"({cold['compile_wall_s']:.1f} s wall), warm {warm_cpu:.1f} s CPU ({warm_wall:.1f} s wall)")
    for key in ("step_cpu", "sampling_cpu", "behaviour_forward_cpu"):
        row = saving[key]
        ratio = f"{row['off_over_auto']:.2f}x" if row["off_over_auto"] else "-"
        print(f"{key:<22} off {C.fmt_s(row['off'])}  compiled {C.fmt_s(row['auto'])}  saving {C.fmt_s(row['saving'])}"
              f"  off/compiled {ratio}")
    if per_step > 0:
        from entropic_tune.model.compiling import AUTO_DECODE_MIN_STEPS

        print(f"break-even run length: {even['cold']:.0f} rollout steps with a cold cache, {even['warm']:.0f} warm "
              f"(auto compiles from {AUTO_DECODE_MIN_STEPS} steps)")
    C.save(args.name, {"settings": vars(args), "cold": cold, "warm": warm, "saving": saving,
                       "break_even_steps": even})


if __name__ == "__main__":
    main()
