"""Check that a speed-up changed no result: the current package vs an older one, metric for metric.

    git worktree add /tmp/et-old <commit-before-the-change>      # any folder holding entropic_tune/
    python benchmarks/check_same_history.py --against /tmp/et-old

    python benchmarks/check_same_history.py --against /tmp/et-old --new-set model.compile=on --rtol 1e-4

Runs a few steps of several methods and regimes (on-policy, per-mini-batch controller, off-policy
mini-batches and epochs, clip/kl-cov, a batch without prompt padding, the default model) with each
package in its own subprocess, and compares every non-``perf/`` metric of every step (evaluations
included) and the sum of the final weights, as exact floats. Exit status 1 when anything differs.
Not a test: it needs the older code on disk.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

FAST = {
    "model.hidden_size": 32, "model.num_layers": 1, "model.num_heads": 2, "model.warmstart_steps": 30,
    "rollout.prompts_per_step": 4, "rollout.group_size": 4, "rollout.max_new_tokens": 32,
    "rollout.eval_samples": 2, "rollout.eval_every": 2, "task.eval_size": 8, "train.total_steps": 4,
    "train.threads": 1,
}  # fmt: skip
CASES = {
    "grpo": {**FAST, "method": "grpo"},
    "entropic": {**FAST, "method": "entropic", "controller.target_entropy": 0.1},
    "entropic_minibatch_controller": {**FAST, "method": "entropic", "controller.update": "minibatch"},
    "entropic_off_policy": {**FAST, "method": "entropic", "optim.mini_batches_per_rollout": 2},
    "entropy_bonus_epochs": {**FAST, "method": "entropy_bonus", "optim.ppo_epochs": 2},
    "clip_cov": {**FAST, "method": "clip_cov"},
    "kl_cov_off_policy": {**FAST, "method": "kl_cov", "optim.mini_batches_per_rollout": 2},
    "adaptive_entropy": {**FAST, "method": "adaptive_entropy"},
    "no_prompt_padding": {**FAST, "method": "entropic", "task.min_digits": 2, "task.max_digits": 2},
    "default_model": {"method": "entropic", "train.total_steps": 3, "rollout.eval_every": 0,
                      "task.eval_size": 16, "train.threads": 1},
}  # fmt: skip


def worker(extra: dict[str, object]) -> None:
    import torch

    import entropic_tune
    from entropic_tune.config import load_config
    # A tree from before the layout move (issue 26) has the trainer at the package root. Decided by
    # the files of the package imported: an editable install can resolve the new path from the
    # other tree too.
    if os.path.isdir(os.path.join(os.path.dirname(entropic_tune.__file__), "engines")):
        from entropic_tune.engines.native.trainer import Trainer
    else:
        from entropic_tune.trainer import Trainer  # type: ignore[no-redef]

    out: dict[str, object] = {"package": os.path.dirname(entropic_tune.__file__)}
    for name, data in CASES.items():
        trainer = Trainer(load_config({**data, **extra}))
        rows = [
            {k: v for k, v in trainer.step().items() if not k.startswith("perf/")}
            for _ in range(trainer.config.train.total_steps)
        ]
        with torch.no_grad():
            weights = float(sum(p.double().sum() for p in trainer.policy.model.parameters()))
        out[name] = {"rows": rows, "weights": weights}
    print(json.dumps(out))


def run(pythonpath: str | None, extra: list[str] | None = None) -> dict[str, object]:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, __file__, "--worker"]
    for item in extra or []:
        cmd += ["--new-set", item]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"worker failed ({pythonpath or 'current'}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def close(a: float, b: float | None, rtol: float) -> bool:
    """Exact when rtol is 0; else |a - b| <= rtol * max(|a|, |b|) + 1e-7 (values near 0 differ absolutely)."""
    if b is None:
        return False
    return a == b if rtol == 0 else abs(a - b) <= rtol * max(abs(a), abs(b)) + 1e-7


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--against", help="folder holding the older entropic_tune package")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--new-set", action="append", default=[], metavar="KEY=VALUE",
        help="config override for the current package only (e.g. model.compile=on); use with --rtol",
    )
    parser.add_argument(
        "--rtol", type=float, default=0.0,
        help="relative tolerance per metric (0 = exact; weights need abs diff <= rtol * |sum|)",
    )
    args = parser.parse_args()
    if args.worker:
        from entropic_tune.config import parse_override

        worker(dict(parse_override(item) for item in args.new_set))
        return
    if not args.against:
        parser.error("--against is required")
    old, new = run(args.against), run(None, args.new_set)
    print(f"old: {old['package']}\nnew: {new['package']}")
    failed = False
    for name in CASES:
        a, b = old[name], new[name]
        diffs = [
            f"step {i + 1} {k}: {ra[k]!r} vs {rb.get(k)!r}"
            for i, (ra, rb) in enumerate(zip(a["rows"], b["rows"], strict=True))
            for k in ra
            if not close(ra[k], rb.get(k), args.rtol)
        ]
        same = not diffs and close(a["weights"], b["weights"], args.rtol)
        failed |= not same
        detail = (
            ""
            if same
            else f"  ({len(diffs)} metric differences; weights {a['weights']!r} vs {b['weights']!r})"
        )
        word = ("identical" if args.rtol == 0 else f"equal within rtol {args.rtol:g}") if same else "DIFFERENT"
        print(f"{name:<32} {word}{detail}")
        for line in diffs[:3]:
            print(f"    {line}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
