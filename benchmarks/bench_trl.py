"""The native engine, the TRL engine (``train.engine: trl``) and plain TRL ``GRPOTrainer`` on the same work.

    pip install 'entropic-tune[bench]'
    python benchmarks/bench_trl.py                     # B=16 prompts x G=8, 40 new tokens, 1 thread

Three sides, in alternating order per round: ``project`` (the native engine), ``trl_engine`` (the TRL
engine: TRL's generation and scoring, the project's loss and controller, the engine's own optimizer
loop) and ``trl`` (plain ``GRPOTrainer.train()`` with the same ``GRPOConfig``, from
``engines.trl.settings.grpo_arguments``, and TRL's own loss). ``trl_engine / trl`` is the TRL engine's
overhead over plain TRL; ``project / trl_engine`` the native engine against the TRL engine.

Both sides start from the same warm-started model folder (the project's cache, a ``save_pretrained``
directory), run offline on the CPU in fp32 with no reference model (beta 0), one on-policy optimizer step
per rollout, AdamW with the same learning rate and gradient clipping, token-mean loss (TRL
``loss_type='dapo'``), temperature 1 with no top-k/top-p, and the task's own reward. TRL gets a
``datasets.Dataset.from_list`` of the same prompts (the BOS token spelled out, so both tokenise alike).
Rounds alternate TRL and the project so both see the same machine load; the figure is the median step
time ratio (project / TRL), with the share of each step spent generating.

Same work: the rewards and lengths of every response both sides sampled over the measured steps are
compared with a two-sample z score (as ``bench_generate`` checks its sampler). At a fixed policy the
two samplers agree (same prompts, BOS, EOS and padding; with the same seed even the same tokens), but
at a learning rate like 1e-3 the two trainings part after the first update (TRL's group std is the
unbiased one, the project's the biased one, and any rounding difference then grows) and sample
different responses, so the default learning rate is small enough that the policy stays put.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402


def project_config(args: argparse.Namespace) -> object:
    from entropic_tune.config import load_config

    return load_config(
        {
            "method": "grpo",
            "rollout.prompts_per_step": args.prompts,
            "rollout.group_size": args.group,
            "rollout.max_new_tokens": args.max_new_tokens,
            "rollout.temperature": 1.0,
            "rollout.eval_every": 0,
            "train.total_steps": 1_000_000,
            "train.threads": args.threads,
            "optim.lr": args.lr,
            "optim.grad_clip": 1.0,
            "train.seed": args.seed,
            "model.compile": args.compile,
        }
    )


KEYS = (
    "step_s",
    "step_cpu",
    "process_cpu",
    "generate_s",
    "generate_cpu",
    "completion_length",
    "reward",
)


def run_project(args: argparse.Namespace) -> dict[str, object]:
    import entropic_tune.engines.native.trainer as trainer_mod
    from entropic_tune.engines.native.trainer import Trainer

    trainer = Trainer(project_config(args))
    responses: list[tuple[float, float]] = []  # (reward, length in tokens) of every sampled response
    collect = trainer_mod.collect_rollout

    def recording_collect(*a: object, **k: object) -> object:
        batch = collect(*a, **k)
        responses.extend(zip(batch.rewards.tolist(), batch.mask.sum(1).tolist(), strict=True))
        return batch

    trainer_mod.collect_rollout = recording_collect
    trainer.last_eval = {
        "eval/accuracy": 0.0,
        "eval/pass@k": 0.0,
        "eval/entropy": 0.0,
    }  # TRL does not evaluate
    for _ in range(args.warmup):
        trainer.step()
    del responses[:]
    res: dict[str, list[float]] = {k: [] for k in KEYS}
    for _ in range(args.steps):
        proc = time.process_time()
        row = C.timed_step(trainer)
        res["process_cpu"].append(time.process_time() - proc)
        res["step_s"].append(row["step"])
        res["step_cpu"].append(row["step_cpu"])
        res["generate_s"].append(row["sampling"])
        res["generate_cpu"].append(row["sampling_cpu"])
        res["completion_length"].append(row["rollout/response_length_mean"])
        res["reward"].append(row["rollout/reward_mean"])
    trainer_mod.collect_rollout = collect
    res["response_reward"] = [r for r, _ in responses]
    res["response_length"] = [n for _, n in responses]
    return res


def time_generate(model: object) -> list[tuple[float, float]]:
    """Wrap ``model.generate`` so each call appends its (wall, CPU) seconds to the returned list."""
    gen_times: list[tuple[float, float]] = []
    original_generate = model.generate

    def timed_generate(*a: object, **k: object) -> object:
        wall, cpu = C.clock()
        try:
            return original_generate(*a, **k)
        finally:
            wall_end, cpu_end = C.clock()
            gen_times.append((wall_end - wall, cpu_end - cpu))

    model.generate = timed_generate
    return gen_times


def run_trl_engine(args: argparse.Namespace) -> dict[str, object]:
    """The TRL engine (``train.engine: trl``) on the project's config: step and generation times."""
    from entropic_tune.config import replace
    from entropic_tune.engines.trl.engine import TRLEngine

    engine = TRLEngine(replace(project_config(args), **{"train.engine": "trl", "model.compile": "off"}))
    C.set_threads(args.threads)
    engine.last_eval = {"eval/accuracy": 0.0, "eval/pass@k": 0.0, "eval/entropy": 0.0}  # TRL does not evaluate
    model = engine.trl.model
    gen_times = time_generate(model)  # (wall, cpu) per generate call
    lengths: list[list[float]] = []  # per response of each step, up to and including EOS
    original_score = engine.trl._generate_and_score_completions

    def recording_score(inputs: list) -> dict:
        out = original_score(inputs)
        lengths.append(out["completion_mask"].sum(1).tolist())
        return out

    engine.trl._generate_and_score_completions = recording_score
    responses: list[tuple[float, float]] = []
    res: dict[str, list[float]] = {k: [] for k in KEYS}
    for i in range(args.warmup + args.steps):
        proc = time.process_time()
        wall, cpu = C.clock()
        row = engine.step()
        wall_end, cpu_end = C.clock()
        if i < args.warmup:
            continue
        responses.extend(zip(engine.trl.last_rewards.tolist(), lengths[-1], strict=True))
        res["process_cpu"].append(time.process_time() - proc)
        res["step_s"].append(wall_end - wall)
        res["step_cpu"].append(cpu_end - cpu)
        res["generate_s"].append(gen_times[-1][0])
        res["generate_cpu"].append(gen_times[-1][1])
        res["completion_length"].append(row["rollout/response_length_mean"])
        res["reward"].append(row["rollout/reward_mean"])
    res["response_reward"] = [r for r, _ in responses]
    res["response_length"] = [n for _, n in responses]
    return res


def run_trl(args: argparse.Namespace, model_dir: Path) -> dict[str, object]:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from entropic_tune.engines.trl.settings import grpo_arguments
    from entropic_tune.tasks import Problem, build_task

    cfg = project_config(args)
    task = build_task(cfg.task)
    n_steps = args.warmup + args.steps
    problems = task.sample_train(random.Random(args.seed), args.prompts * n_steps)
    answers = {f"<bos>{p.prompt}": p for p in problems}
    dataset = Dataset.from_list(
        [{"prompt": f"<bos>{p.prompt}", "answer": p.answer} for p in problems]
    )

    responses: list[tuple[float, float]] = []  # (reward, length in tokens) of every sampled response

    def reward(prompts: list[str], completions: list[str], completion_ids: list, **_: object) -> list[float]:
        values = [
            task.reward(answers.get(p) or Problem(p, "", None), c)
            for p, c in zip(prompts, completions, strict=True)
        ]
        lengths = [len(ids) for ids in completion_ids]  # up to and including EOS, as the project counts
        responses.extend(zip(values, lengths, strict=True))
        return values

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    gen_times = time_generate(model)  # (wall, cpu) per generate call

    ends: list[tuple[float, float, float]] = []  # (wall, thread CPU, process CPU) at each step end

    def now() -> tuple[float, float, float]:
        return (*C.clock(), time.process_time())

    class StepClock(TrainerCallback):
        def on_step_begin(self, *_: object, **__: object) -> None:
            if not ends:
                ends.append(now())

        def on_step_end(self, *_: object, **__: object) -> None:
            ends.append(now())

    with tempfile.TemporaryDirectory() as out_dir:
        # The TRL engine's arguments for this config (engines.trl.settings: one mapping for both), with
        # TRL's own advantages (its `group` scaling) since plain TRL has no native ones.
        config = GRPOConfig(**{**grpo_arguments(cfg, out_dir), "max_steps": n_steps, "scale_rewards": "group"})
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=[reward],
            args=config,
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=[StepClock()],
        )
        trainer.remove_callback(PrinterCallback)
        C.set_threads(args.threads)  # accelerate may reset threads; keep both sides equal
        trainer.train()
        history = [h for h in trainer.state.log_history if "completions/mean_length" in h]
    deltas = [
        [y - x for x, y in zip(a, b, strict=True)] for a, b in zip(ends[:-1], ends[1:], strict=True)
    ]
    deltas = deltas[args.warmup :]
    return {
        "step_s": [d[0] for d in deltas],
        "step_cpu": [d[1] for d in deltas],
        "process_cpu": [d[2] for d in deltas],
        "generate_s": [g[0] for g in gen_times[args.warmup :]],
        "generate_cpu": [g[1] for g in gen_times[args.warmup :]],
        "completion_length": [h["completions/mean_length"] for h in history][args.warmup :],
        "reward": [h.get("reward", float("nan")) for h in history][args.warmup :],
        "response_reward": [r for r, _ in responses[args.warmup * args.prompts * args.group :]],
        "response_length": [n for _, n in responses[args.warmup * args.prompts * args.group :]],
        "step_rewards_all": [h.get("reward", float("nan")) for h in history],
    }


def same_distribution(sides: dict[str, dict[str, list[float]]], num: str, den: str) -> dict[str, dict[str, float]]:
    """Two-sample z scores of the mean reward and length of the responses both sides sampled over the
    measured steps (as ``bench_generate`` checks its sampler): |z| < 3 = the same distribution within
    noise, so both sides did the same work."""
    out = {}
    print(f"{num} vs {den}:")
    for key in ("response_reward", "response_length"):
        a, b = sides[num][key], sides[den][key]
        ma, mb = statistics.mean(a), statistics.mean(b)
        se = math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
        out[key] = {num: ma, den: mb, "z": (ma - mb) / se if se > 0 else 0.0, "n": len(a)}
        print(f"  {key:<16} {num} {ma:8.4f}   {den} {mb:8.4f}   z {out[key]['z']:6.2f}   ({len(a)} vs {len(b)})")
    worst = max(abs(v["z"]) for v in out.values())
    print(f"  max |z| = {worst:.2f} -> {'same distribution within noise' if worst < 3 else 'DIFFERENT work'}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=16, help="B: prompts per step")
    parser.add_argument("--group", type=int, default=8, help="G: responses per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--steps", type=int, default=6, help="measured optimizer steps per round")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each side runs first in one of three")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--lr", type=float, default=1e-6,
        help="both sides' learning rate; small so neither policy drifts over the measured steps and both "
        "sample the same distribution, i.e. do the same work (at 1e-3 the two trainings part after the "
        "first update and sample responses of different lengths and rewards)",
    )
    parser.add_argument("--compile", default="auto", choices=("auto", "on", "off"),
                        help="the project's model.compile (auto: the compiled decoding on the CPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--name", default="trl", help="results file: benchmarks/results/<name>.json"
    )
    args = parser.parse_args()

    try:
        import trl
    except ImportError:
        sys.exit("bench_trl: TRL is not installed (pip install 'entropic-tune[bench]'); nothing measured")
    C.set_threads(args.threads)
    from entropic_tune.model.warmstarts import warmstart_model
    from entropic_tune.tasks import build_task

    cfg = project_config(args)
    model_dir = warmstart_model(
        cfg.model, cfg.task, build_task(cfg.task)
    )  # a save_pretrained folder

    sides: dict[str, dict[str, list[float]]] = {"project": {}, "trl_engine": {}, "trl": {}}
    runners = {"project": lambda: run_project(args), "trl_engine": lambda: run_trl_engine(args),
               "trl": lambda: run_trl(args, model_dir)}
    for r in range(args.rounds):
        names = list(sides)
        order = names[r % 3:] + names[: r % 3]  # each side first in turn: the same machine load for all
        for side in order:
            res = runners[side]()
            for key, values in res.items():
                sides[side].setdefault(key, []).extend(values)
            print(
                f"round {r + 1}/{args.rounds} {side}: step median {C.fmt_s(statistics.median(res['step_s']))}, "
                f"rewards of the measured steps {' '.join(f'{x:.3f}' for x in res['reward'])}",
                flush=True,
            )

    print(
        f"\nB={args.prompts} G={args.group} max_new_tokens={args.max_new_tokens}, {args.rounds} rounds x "
        f"{args.steps} steps, trl {trl.__version__}; CPU = this thread's CPU time"
    )
    print(
        f"{'':<10} {'step CPU':>10} {'step wall':>10} {'gen CPU':>10} {'gen share':>9} {'proc/thread':>11} "
        f"{'length':>7} {'reward':>7}"
    )
    rows = {}
    for side, res in sides.items():
        rows[side] = {key: C.summary(res[key]) for key in KEYS[:5]}
        rows[side]["completion_length_mean"] = statistics.mean(res["completion_length"])
        rows[side]["reward_mean"] = statistics.mean(res["reward"])
        step, gen = rows[side]["step_cpu"]["median"], rows[side]["generate_cpu"]["median"]
        threads = (
            rows[side]["process_cpu"]["median"] / step
        )  # ~1: all the work is on the timed thread
        print(
            f"{side:<11} {C.fmt_s(step):>10} {C.fmt_s(rows[side]['step_s']['median']):>10} {C.fmt_s(gen):>10} "
            f"{gen / step:>8.0%} {threads:>11.2f} {rows[side]['completion_length_mean']:>7.1f} "
            f"{rows[side]['reward_mean']:>7.3f}"
        )
    pairs = {"project_over_trl": ("project", "trl"), "trl_engine_over_trl": ("trl_engine", "trl"),
             "project_over_trl_engine": ("project", "trl_engine")}
    ratios: dict[str, dict[str, object]] = {}
    for pair, (num, den) in pairs.items():
        ratios[pair] = {}
        for clock, step_key, gen_key in (("cpu", "step_cpu", "generate_cpu"), ("wall", "step_s", "generate_s")):
            rest = {s: [a - b for a, b in zip(sides[s][step_key], sides[s][gen_key], strict=False)]
                    for s in (num, den)}
            ratios[pair][clock] = {
                "step": C.ratio(sides[num][step_key], sides[den][step_key]),
                "generate": C.ratio(sides[num][gen_key], sides[den][gen_key]),
                "rest": C.ratio(rest[num], rest[den]),
            }
        r = ratios[pair]["cpu"]
        print(f"{num}/{den} time, CPU: step {r['step']['of_medians']:.2f}x (medians) "
              f"{r['step']['of_minima']:.2f}x (minima); generation {r['generate']['of_medians']:.2f}x; rest of "
              f"the step {r['rest']['of_medians']:.2f}x; wall: step {ratios[pair]['wall']['step']['of_medians']:.2f}x")
    overhead = ratios["trl_engine_over_trl"]["cpu"]["step"]["of_medians"] - 1
    print(f"TRL engine overhead over plain GRPOTrainer (CPU step medians): {overhead:+.1%}   (aim: < +10%)")
    same = {pair: same_distribution(sides, num, den) for pair, (num, den) in pairs.items() if den == "trl"}
    payload = {"settings": vars(args), "trl_version": trl.__version__, "sides": rows, "same_distribution": same}
    C.save(args.name, {**payload, "ratios": ratios, "raw": sides})


if __name__ == "__main__":
    main()
