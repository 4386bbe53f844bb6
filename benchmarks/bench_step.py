"""Trainer step breakdown on the default task: where a GRPO step spends its time, tokens/s, peak RSS.

    python benchmarks/bench_step.py                       # default config, 1 torch thread
    python benchmarks/bench_step.py --set method=entropic --set rollout.prompts_per_step=32
    python benchmarks/bench_step.py --against /path/to/old/checkout   # before/after, interleaved

Phases (median per step over the measured steps, as this thread's CPU time, robust to other processes
on a shared machine, and as wall time): sampling (``rollout.generate``), scoring (decode + task
reward), behaviour forward (no-grad log-probs/entropy), policy forward (with grad), loss, backward,
optimizer (clip + AdamW), other. Peak memory is the process RSS high-water mark over the measured
steps (torch allocations are invisible to tracemalloc). Evaluation is off during the measured steps and timed on its
own. ``--against DIR`` also builds a trainer from the ``entropic_tune`` package found in ``DIR`` (e.g. a
``git worktree`` of the previous commit) in the same process and alternates their steps, so both sides
see the same machine load; it reports old/new ratios per phase.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

BASE = {
    "rollout.eval_every": 0,
    "train.total_steps": 1_000_000,
}  # no evaluation inside measured steps


def build_trainer(overrides: list[str], threads: int, package: str = "entropic_tune") -> object:
    load_config = importlib.import_module(f"{package}.config").load_config
    Trainer = importlib.import_module(f"{package}.trainer").Trainer

    data = dict(BASE)
    if threads:
        data["train.threads"] = threads
    return Trainer(load_config(data, overrides))


def measure(args: argparse.Namespace) -> dict[str, object]:
    C.set_threads(args.threads)
    trainer = build_trainer(args.set, args.threads)
    rss_model = C.rss_mb()
    result = C.timed_steps(trainer, args.steps, args.warmup)
    evals = []
    for _ in range(args.eval_reps):
        start = time.perf_counter()
        trainer.evaluate()
        evals.append(time.perf_counter() - start)
    cfg = trainer.config
    result.update(
        rss_after_init_mb=rss_model,
        evaluate_s=C.summary(evals) if evals else None,
        config={
            "B": cfg.rollout.prompts_per_step,
            "G": cfg.rollout.group_size,
            "max_new_tokens": cfg.rollout.max_new_tokens,
            "method": cfg.method,
            "hidden_size": cfg.model.hidden_size,
            "num_layers": cfg.model.num_layers,
            "on_policy": cfg.optim.on_policy,
            "device": str(trainer.policy.device),
        },
    )
    import entropic_tune

    result["package"] = str(Path(entropic_tune.__file__).parent)
    return result


def print_breakdown(result: dict[str, object]) -> None:
    med = result["median"]
    print(f"config: {result['config']}  (package {result['package']})")
    print(f"{'phase':<18} {'CPU':>10} {'share':>6} {'wall':>10}   what")
    for phase in (*C.PHASES, "other", "step"):
        cpu, wall = med[phase + "_cpu"], med[phase]
        share = f"{cpu / med['step_cpu']:>6.0%}"
        print(
            f"{phase:<18} {C.fmt_s(cpu):>10} {share} {C.fmt_s(wall):>10}   {C.PHASE_HELP.get(phase, '')}"
        )
    print(
        f"step minimum: CPU {C.fmt_s(result['min']['step_cpu'])}, wall {C.fmt_s(result['min']['step'])}; "
        f"medians over {len(result['per_step'])} steps"
    )
    print(
        f"rollout tokens/s {med['perf/rollout_tokens_per_s']:.0f}   update tokens/s "
        f"{med['perf/update_tokens_per_s']:.0f}   (the trainer's perf/* metrics, wall clock)   "
        f"response length {med['rollout/response_length_mean']:.1f}"
    )
    print(
        f"RSS: after init {result['rss_after_init_mb']:.0f} MiB, peak during steps "
        f"{result['peak_rss_mb']:.0f} MiB"
        + ("" if result["peak_is_since_reset"] else " (process peak; clear_refs not available)")
    )
    if result.get("evaluate_s"):
        print(
            f"evaluate(): {C.fmt_s(result['evaluate_s']['median'])} wall (not in the step times above)"
        )


def compare(args: argparse.Namespace) -> dict[str, object]:
    """The old package (``--against``) and the current one in one process, steps interleaved."""
    old_pkg = C.load_package(args.against)
    C.set_threads(args.threads)
    trainers = {
        "old": build_trainer(args.set, args.threads, old_pkg),
        "new": build_trainer(args.set, args.threads),
    }
    packages = {"old": old_pkg, "new": "entropic_tune"}
    for trainer in trainers.values():
        for _ in range(args.warmup):
            trainer.step()
    sides: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
    for i in range(args.steps):
        for label in ("old", "new") if i % 2 == 0 else ("new", "old"):
            sides[label].append(C.timed_step(trainers[label], packages[label]))
    old_dir = Path(sys.modules[old_pkg].__file__).parent
    print(f"old: {old_dir}   new: {Path(sys.modules['entropic_tune'].__file__).parent}")
    print(f"{'phase':<18} {'old CPU':>10} {'new CPU':>10} {'old/new':>8} {'old/new wall':>13}")
    table = {}
    for key in (*C.PHASES, "other", "step"):
        row = {}
        for sfx in ("_cpu", ""):
            old = statistics.median(r[key + sfx] for r in sides["old"])
            new = statistics.median(r[key + sfx] for r in sides["new"])
            row["old" + sfx], row["new" + sfx] = old, new
            row["old_over_new" + sfx] = old / new if new > 1e-6 else None
        table[key] = row

        def shown(x: float | None) -> str:
            return f"{x:.2f}x" if x is not None else "-"

        print(
            f"{key:<18} {C.fmt_s(row['old_cpu']):>10} {C.fmt_s(row['new_cpu']):>10} "
            f"{shown(row['old_over_new_cpu']):>8} {shown(row['old_over_new']):>13}"
        )
    ratios = {
        "cpu": C.ratio(
            [r["step_cpu"] for r in sides["old"]], [r["step_cpu"] for r in sides["new"]]
        ),
        "wall": C.ratio([r["step"] for r in sides["old"]], [r["step"] for r in sides["new"]]),
    }
    print(
        f"step old/new: CPU {ratios['cpu']['of_medians']:.2f}x (medians) {ratios['cpu']['of_minima']:.2f}x "
        f"(minima); wall {ratios['wall']['of_medians']:.2f}x (medians); {args.steps} interleaved steps each"
    )
    return {"against": args.against, "table": table, "step_ratio": ratios, "per_step": sides}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--steps", type=int, default=8, help="measured steps (each side with --against)"
    )
    parser.add_argument(
        "--warmup", type=int, default=2, help="unmeasured steps first (the first evaluates)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (0 = torch default)"
    )
    parser.add_argument(
        "--set", action="append", default=[], help="config override key=value (repeatable)"
    )
    parser.add_argument(
        "--eval-reps", type=int, default=2, help="timed evaluate() calls after the steps"
    )
    parser.add_argument(
        "--against", help="folder holding an older entropic_tune package to compare with"
    )
    parser.add_argument(
        "--name", default=None, help="results file name (default: step or step_vs_old)"
    )
    args = parser.parse_args()

    if args.against:
        payload = compare(args)
        C.save(args.name or "step_vs_old", {"settings": vars(args), **payload})
        return
    result = measure(args)
    print_breakdown(result)
    C.save(args.name or "step", {"settings": vars(args), **result})


if __name__ == "__main__":
    main()
