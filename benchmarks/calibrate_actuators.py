"""How strongly each actuator's knob moves the entropy, for ``controller.actuator_scale`` (METHOD.md 3.4).

    python benchmarks/calibrate_actuators.py --steps 5 --seeds 2

Runs the base of ``search_spaces/actuators.yaml`` (off-policy, the ablation's model and task) with a
constant controller for ``--steps`` rollout steps, once per knob level and seed, and measures the entropy
of one fixed probe batch (sampled from the starting policy) afterwards, so every run is measured on the
same tokens. Reports the sensitivity ``dH/d(knob)`` of EntroPIC's alpha, the bonus weight beta,
``eps_high`` and ``lambda`` (finite differences around the base), whether each has the documented sign,
and the scale ``|dH/d alpha| / |dH/d knob|`` that makes one unit of controller output move the entropy
about as much through every actuator. ``--eps-sweep 0,0.1,0.2`` also runs plain ``eps_high`` levels
(no actuator, so also below ``eps_low``), to see where the entropy stops rising with ``eps_high``.
Writes ``benchmarks/results/actuator_gains.json``.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import save, set_threads  # noqa: E402

# knob -> (two levels, the config keys that set a level, sign of dH/d(knob) documented in METHOD.md)
KNOBS = {
    "alpha": ((-0.3, 0.3), lambda v: {"controller.value": v}, -1),
    "beta": ((-0.02, 0.02), lambda v: {"controller.actuator": "entropy_bonus", "controller.value": -v}, +1),
    "eps_high": ((0.2, 0.6), lambda v: {"controller.actuator": "clip_high", "loss.clip_eps_high": v}, +1),
    "lambda": ((0.5, 1.5), lambda v: {"controller.actuator": "positive_weight", "loss.positive_weight": v}, -1),
}
ACTUATOR_OF = {"beta": "entropy_bonus", "eps_high": "clip_high", "lambda": "positive_weight"}


def probe_entropy(trainer, probe) -> float:
    import torch

    from entropic_tune import metrics as M
    from entropic_tune.engines.native.rollout import sequence_logprobs

    with torch.no_grad():
        _, ent = sequence_logprobs(trainer.policy, probe.gen, trainer.config.rollout.temperature)
    return M.aggregate(ent, probe.mask).item()


def run(base: dict, keys: dict, seed: int, steps: int, probe_prompts: int) -> tuple[float, float]:
    """Probe entropy before and after ``steps`` rollout steps of one config."""
    import torch

    from entropic_tune.config import load_config
    from entropic_tune.engines.native.rollout import collect_rollout
    from entropic_tune.engines.native.trainer import Trainer

    cfg = load_config({**base, "controller.name": "constant", "controller.value": 0.0, **keys,
                       "train.seed": seed, "train.total_steps": steps})  # fmt: skip
    trainer = Trainer(cfg)
    r = cfg.rollout
    problems = trainer.task.sample_train(random.Random(99), probe_prompts)
    probe = collect_rollout(trainer.policy, trainer.task, problems, r.group_size, r.temperature,
                            r.max_new_tokens, torch.Generator(device=trainer.policy.device).manual_seed(99))  # fmt: skip
    before = probe_entropy(trainer, probe)
    for _ in range(steps):
        trainer.step()
    return before, probe_entropy(trainer, probe)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5, help="rollout steps per run")
    parser.add_argument("--seeds", type=int, default=2, help="seeds 0..n-1 (sensitivities are averaged)")
    parser.add_argument("--probe-prompts", type=int, default=32, help="prompts of the probe batch")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eps-sweep", default="", help="comma-separated eps_high levels to run as well")
    parser.add_argument("--skip-knobs", action="store_true", help="only the --eps-sweep runs")
    args = parser.parse_args()
    set_threads(args.threads)
    from entropic_tune.tune import spaces

    space = spaces.load_space("actuators")
    base = {**space.base, "method": space.method, "rollout.eval_every": 0, "task.eval_size": 8,
            "rollout.eval_samples": 1, "train.threads": args.threads}  # fmt: skip
    slopes: dict[str, list[float]] = {k: [] for k in KNOBS}
    runs, sweep = [], {}
    for seed in range(args.seeds):
        for eps in [float(x) for x in args.eps_sweep.split(",") if x]:
            h = run(base, {"loss.clip_eps_high": eps}, seed, args.steps, args.probe_prompts)[1]
            sweep.setdefault(str(eps), []).append(h)
            print(f"seed {seed} eps_high {eps}: H after {h:.5f}", flush=True)
        if args.skip_knobs:
            continue
        for knob, (levels, keys, _) in KNOBS.items():
            h = [run(base, keys(v), seed, args.steps, args.probe_prompts) for v in levels]
            slopes[knob].append((h[1][1] - h[0][1]) / (levels[1] - levels[0]))
            runs.append({"seed": seed, "knob": knob, "levels": levels, "entropy_before_after": h})
            print(f"seed {seed} {knob:>8} {levels}: H after {h[0][1]:.5f} {h[1][1]:.5f} "
                  f"(before {h[0][0]:.5f})", flush=True)  # fmt: skip
    for eps, hs in sweep.items():
        print(f"eps_high {eps:>5}: mean H after {sum(hs) / len(hs):.5f}")
    if args.skip_knobs:
        save("actuator_eps_sweep", {"steps": args.steps, "seeds": args.seeds, "base": base, "sweep": sweep})
        return
    mean = {k: sum(v) / len(v) for k, v in slopes.items()}
    table = {}
    print(f"\n{'knob':>8}  dH/dknob   documented sign   actuator_scale = |dH/dalpha| / |dH/dknob|")
    for knob, (_, _, sign) in KNOBS.items():
        ok = (mean[knob] > 0) == (sign > 0)
        scale = abs(mean["alpha"]) / abs(mean[knob]) if mean[knob] else float("inf")
        table[knob] = {"dH_dknob": mean[knob], "per_seed": slopes[knob], "documented_sign": sign,
                       "sign_ok": ok, "scale": scale, "actuator": ACTUATOR_OF.get(knob, "entropic")}  # fmt: skip
        print(f"{knob:>8}  {mean[knob]:+.5f}  {'+' if sign > 0 else '-'} {'ok' if ok else 'WRONG'}"
              f"{'':>14}{scale:.3f}")  # fmt: skip
    save("actuator_gains", {"steps": args.steps, "seeds": args.seeds, "base": base, "knobs": table,
                            "runs": runs, "eps_sweep": sweep})  # fmt: skip


if __name__ == "__main__":
    main()
