"""How the trainer step time grows when one size doubles: batch, group, response length, model width/depth.

    python benchmarks/bench_scaling.py                   # 5 axes x 3 points, 1 torch thread
    python benchmarks/bench_scaling.py --axes length --rounds 3

Base point: B=16 prompts, G=8 responses, 32 response tokens, hidden 64, 2 layers (the default model).
Each axis doubles one size twice (x1, x2, x4). Response lengths are forced: generation is given an end
token id outside the vocabulary, so every response runs exactly ``max_new_tokens``
(32, 64, 128) and the work per step is known; rewards are then meaningless, the compute is not. The
model-size axes use a fresh random init (``model.warmstart_steps=0``; speed does not depend on the
weights) so no warm-start has to be trained. Points are measured round-robin (``--rounds``), so a load
spike on the shared machine hits every point alike. Reported: median step time, the sampling and
update (forward + loss + backward + optimizer) parts as this thread's CPU time (robust to other
processes; wall time is kept too), and the growth exponent ``log2(t(2x) / t(x))`` (1 = linear,
2 = quadratic).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

BASE = {
    "rollout.prompts_per_step": 16,
    "rollout.group_size": 8,
    "rollout.max_new_tokens": 32,
    "rollout.eval_every": 0,
    "train.total_steps": 1_000_000,
}
AXES = {
    "batch": ("rollout.prompts_per_step", [16, 32, 64], {}),
    "group": ("rollout.group_size", [8, 16, 32], {}),
    "length": ("rollout.max_new_tokens", [32, 64, 128], {}),
    "width": ("model.hidden_size", [64, 128, 256], {"model.warmstart_steps": 0}),
    "depth": ("model.num_layers", [2, 4, 8], {"model.warmstart_steps": 0}),
}
UPDATE_PHASES = ("behaviour_forward", "policy_forward", "loss", "backward", "optimizer")


def force_full_length(trainer: object) -> None:
    """Make generation end only at ``max_new_tokens``: the end token is an id no model can sample."""
    policy = trainer.policy
    never = -1

    class FullLength(type(policy)):
        @property
        def eos_id(self) -> int:
            return never

    policy.__class__ = FullLength


def build(key: str, value: int, extra: dict[str, object], threads: int) -> object:
    from entropic_tune.config import load_config
    from entropic_tune.engines.native.trainer import Trainer

    trainer = Trainer(load_config({**BASE, **extra, key: value, "train.threads": threads}))
    trainer.last_eval = {"eval/accuracy": 0.0, "eval/pass@k": 0.0, "eval/entropy": 0.0}
    force_full_length(trainer)
    trainer.step()  # warm-up
    return trainer


def growth(word_times: list[float]) -> list[float]:
    return [math.log2(b / a) for a, b in zip(word_times[:-1], word_times[1:], strict=True)]


def describe(exponent: float) -> str:
    if exponent < 0.85:
        return "sub-linear"
    if exponent < 1.15:
        return "linear"
    return "super-linear" if exponent < 1.7 else "~quadratic"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--axes", nargs="+", default=list(AXES), choices=list(AXES))
    parser.add_argument("--rounds", type=int, default=2, help="round-robin passes over all points")
    parser.add_argument("--steps", type=int, default=2, help="measured steps per point and round")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--name", default="scaling", help="results file: benchmarks/results/<name>.json"
    )
    args = parser.parse_args()
    C.set_threads(args.threads)

    points = [(axis, value) for axis in args.axes for value in AXES[axis][1]]
    trainers = {}
    for axis, value in points:
        key, _, extra = AXES[axis]
        trainers[(axis, value)] = build(key, value, extra, args.threads)
        print(f"built {axis}={value}", flush=True)
    rows: dict[tuple[str, int], list[dict[str, float]]] = {p: [] for p in points}
    for r in range(args.rounds):
        for point in points:
            trainer = trainers[point]
            for _ in range(args.steps):
                row = C.timed_step(trainer)
                row["tokens"] = (
                    row["rollout/response_length_mean"] * trainer.config.rollout.batch_size
                )
                rows[point].append(row)
        print(f"round {r + 1}/{args.rounds} done", flush=True)

    results: dict[str, object] = {}
    print(
        f"\n{'axis':<7} {'value':>6} {'seqs':>5} {'tokens':>7} {'step':>10} {'sampling':>10} {'update':>10} "
        f"{'step wall':>10}   (CPU time unless marked wall)"
    )
    for axis in args.axes:
        key, values, extra = AXES[axis]
        series = []
        for value in values:
            rs = rows[(axis, value)]
            step = statistics.median(r["step_cpu"] for r in rs)
            sampling = statistics.median(r["sampling_cpu"] for r in rs)
            update = statistics.median(sum(r[p + "_cpu"] for p in UPDATE_PHASES) for r in rs)
            wall = statistics.median(r["step"] for r in rs)
            tokens = statistics.median(r["tokens"] for r in rs)
            seqs = trainers[(axis, value)].config.rollout.batch_size
            series.append(
                {
                    "value": value,
                    "sequences": seqs,
                    "tokens": tokens,
                    "step_s": step,
                    "sampling_s": sampling,
                    "update_s": update,
                    "step_wall_s": wall,
                    "steps": len(rs),
                }
            )
            print(
                f"{axis:<7} {value:>6} {seqs:>5} {tokens:>7.0f} {C.fmt_s(step):>10} {C.fmt_s(sampling):>10} "
                f"{C.fmt_s(update):>10} {C.fmt_s(wall):>10}"
            )
        exps = {
            part: growth([s[f"{part}_s"] for s in series])
            for part in ("step", "sampling", "update")
        }
        results[axis] = {"key": key, "extra": extra, "points": series, "growth_exponents": exps}
        print(
            f"{'':<7} growth exponent per doubling: step "
            + ", ".join(f"{e:.2f} ({describe(e)})" for e in exps["step"])
            + "; sampling "
            + ", ".join(f"{e:.2f}" for e in exps["sampling"])
            + "; update "
            + ", ".join(f"{e:.2f}" for e in exps["update"])
        )
    C.save(args.name, {"settings": vars(args), "base": BASE, "axes": results})


if __name__ == "__main__":
    main()
