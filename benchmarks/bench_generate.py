"""The project's sampler (``rollout.generate``) vs ``transformers`` ``model.generate`` on the same model.

    python benchmarks/bench_generate.py                  # B*G = 128 sequences, T = 1, 40 new tokens
    python benchmarks/bench_generate.py --temperature 0.6 --samples 1024 --profile

Speed: both samplers get the same left-padded prompts, temperature and ``max_new_tokens`` (HF:
``do_sample=True, top_k=0, top_p=1.0`` and the tokenizer's EOS/pad), run alternately, and both stop
once every row has finished, so the figure is the time per call and per decoding step (a call's
length depends on what was sampled; with the same seed both pick the same tokens on the CPU, so each
call pair does exactly the same work). Times are this thread's CPU time (the work, robust to other
processes on a shared machine) and wall time. ``in forward`` / ``fwd share`` is the part of a call
spent inside the model's forward: what any sampling loop around the same forward must pay, so
``generate``'s time over it bounds the speed-up such a loop can reach. ``--against
DIR`` also times the sampler of an older checkout (before/after).

Distribution: ``--samples`` responses from each sampler over the same fresh prompts and independent
seeds; compares the mean response length, reward, sequence log-prob and token entropy (log-probs scored
by the training forward at T) with a two-sample z score: |z| < 3 everywhere = same distribution within
noise. On the CPU both draw from the same kind of generator, so with the *same* seed they should even
pick the same tokens: the share of identical responses is reported too.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import math
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402


def load(args: argparse.Namespace) -> tuple[object, object]:
    from entropic_tune.config import load_config
    from entropic_tune.model.loading import load_policy
    from entropic_tune.tasks import build_task

    cfg = load_config({"model.device": "auto"}, args.set)
    task = build_task(cfg.task)
    policy = load_policy(cfg.model, cfg.task, task)
    policy.model.eval()
    return policy, task


def samplers(policy: object, args: argparse.Namespace) -> dict[str, object]:
    """Two callables ``(prompt_rows, seed) -> Generation`` doing the same work."""
    import torch

    from entropic_tune.engines.native.rollout import Generation, generate, left_pad

    def ours(prompts: list[list[int]], seed: int) -> Generation:
        gen = torch.Generator(device=policy.device).manual_seed(seed)
        return generate(policy, prompts, args.max_new_tokens, args.temperature, gen)

    def hf(prompts: list[list[int]], seed: int) -> Generation:
        torch.manual_seed(seed)
        ids, attn = left_pad(prompts, policy.pad_id, policy.device)
        with torch.no_grad(), policy.autocast:
            out = policy.model.generate(
                input_ids=ids,
                attention_mask=attn,
                do_sample=True,
                temperature=args.temperature,
                top_k=0,
                top_p=1.0,
                max_new_tokens=args.max_new_tokens,
                eos_token_id=policy.eos_id,
                pad_token_id=policy.pad_id,
            )
        width = ids.shape[1]
        is_eos = (out[:, width:] == policy.eos_id).int()  # (N, R)
        mask = ((is_eos.cumsum(1) - is_eos) == 0).float()  # up to and including the first EOS
        return Generation(out, torch.cat([attn, mask.long()], 1), width, mask)

    fns = {"project": ours, "hf_generate": hf}
    if args.compiled:  # model.compile: the static-cache sampler with the compiled decoding step
        import tempfile

        from entropic_tune.config import load_config
        from entropic_tune.model import compiling, decoding

        if args.warm:
            compiling.use_shared_cache(load_config({}, args.set))
        else:  # a cold compile: an empty inductor cache
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-inductor-")
        decoder = decoding.get_decoder(policy.model, args.prompts * args.group, policy.pad_id, policy.eos_id)

        def compiled(prompts: list[list[int]], seed: int) -> Generation:
            policy.decoder = decoder
            try:
                return ours(prompts, seed)
            finally:
                policy.decoder = None

        fns["project_compiled"] = compiled
    if args.against:  # the sampler of an older checkout, same policy object
        old = importlib.import_module(f"{C.load_package(args.against)}.rollout")

        def old_project(prompts: list[list[int]], seed: int) -> Generation:
            gen = torch.Generator(device=policy.device).manual_seed(seed)
            return old.generate(policy, prompts, args.max_new_tokens, args.temperature, gen)

        fns["old_project"] = old_project
    return fns


def prompt_rows(
    policy: object, task: object, n_prompts: int, group: int, seed: int
) -> tuple[list, list]:
    problems = task.sample_train(random.Random(seed), n_prompts)
    encoded = [policy.encode_prompt(p.prompt) for p in problems]
    return problems, [ids for ids in encoded for _ in range(group)]


def speed(
    policy: object, task: object, fns: dict[str, object], args: argparse.Namespace
) -> dict[str, object]:
    """Alternating timed calls, with the model's forward timed inside them.

    CPU time (this thread) is the figure, wall time is kept too. Per call: the time inside
    ``model.forward`` (its share of the call, and the median decoding forward) and outside it.
    """
    _, prompts = prompt_rows(policy, task, args.prompts, args.group, seed=0)
    first: dict[str, float] = {}
    for name, fn in fns.items():  # warm-up; the first call of the compiled sampler compiles
        cpu = C.cpu_with_children()  # the C++ compiler included (TORCHINDUCTOR_COMPILE_THREADS=1)
        fn(prompts, 0)
        first[name] = C.cpu_with_children() - cpu
    model = policy.model
    original = model.forward
    spent: list[float] = []

    @functools.wraps(original)  # keeps the signature that selects the cache keyword
    def timed_forward(*a: object, **k: object) -> object:
        start = time.thread_time()
        try:
            return original(*a, **k)
        finally:
            spent.append(time.thread_time() - start)

    keys = (
        "cpu",
        "wall",
        "cpu_per_step",
        "steps",
        "forward_cpu",
        "outside_forward_cpu",
        "decode_forward_cpu",
    )
    samples: dict[str, dict[str, list[float]]] = {k: {key: [] for key in keys} for k in fns}
    model.forward = timed_forward
    try:
        for rep in range(args.reps):
            for name in list(fns) if rep % 2 == 0 else list(reversed(fns)):
                spent.clear()
                wall, cpu = C.clock()
                gen = fns[name](
                    prompts, 1000 + rep
                )  # same seed for all: on the CPU, the same tokens
                wall_end, cpu_end = C.clock()
                steps, total = gen.response_ids.shape[1], cpu_end - cpu
                row = samples[name]
                row["cpu"].append(total)
                row["wall"].append(wall_end - wall)
                row["cpu_per_step"].append(total / steps)
                row["steps"].append(steps)
                row["forward_cpu"].append(sum(spent))
                row["outside_forward_cpu"].append(total - sum(spent))
                # [0] is the prefill; the compiled sampler calls transformers' forward for it only
                row["decode_forward_cpu"].append(statistics.median(spent[1:]) if len(spent) > 1 else 0.0)
    finally:
        del model.forward
    out: dict[str, object] = {
        name: {key: C.summary(values) for key, values in row.items()}
        for name, row in samples.items()
    }
    for name, row in samples.items():
        out[name]["forward_share"] = statistics.median(
            f / c for f, c in zip(row["forward_cpu"], row["cpu"], strict=True)
        )
    out["first_call_cpu_s"] = first
    out["over_project"] = {
        name: {
            key: C.ratio(samples[name][key], samples["project"][key])
            for key in ("cpu", "wall", "forward_cpu", "outside_forward_cpu")
        }
        for name in fns
        if name != "project"
    }
    return out


def profile_top(
    policy: object, task: object, fns: dict[str, object], args: argparse.Namespace
) -> dict:
    from torch.profiler import ProfilerActivity, profile

    _, prompts = prompt_rows(policy, task, args.prompts, args.group, seed=0)
    tops = {}
    for name, fn in fns.items():
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for rep in range(3):
                fn(prompts, 3000 + rep)
        events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in events)
        tops[name] = [
            {"op": e.key, "self_share": e.self_cpu_time_total / total, "calls": e.count}
            for e in events[:10]
        ]
    return tops


def sequence_stats(
    policy: object, task: object, problems: list, gen: object, args: argparse.Namespace
) -> dict:
    import torch

    from entropic_tune.engines.native.rollout import decode_responses, score, sequence_logprobs

    with torch.no_grad():
        logp, ent = sequence_logprobs(policy, gen, args.temperature)
    mask = gen.response_mask
    length = mask.sum(1)
    rewards = score(task, problems, decode_responses(policy, gen), args.group)
    return {
        "length": length.tolist(),
        "reward": rewards.tolist(),
        "logprob_sum": (logp * mask).sum(1).tolist(),
        "entropy_per_token": ((ent * mask).sum(1) / length.clamp_min(1)).tolist(),
        "truncated": (
            gen.response_ids[:, -1:].ne(policy.eos_id).squeeze(1)
            & (length == gen.response_ids.shape[1])
        )
        .float()
        .tolist(),
    }


def distribution(
    policy: object, task: object, fns: dict[str, object], args: argparse.Namespace
) -> dict:
    """Each project sampler against ``model.generate``: independent seeds for the z scores, the same
    seed for the share of identical responses."""
    per_batch = args.prompts * args.group
    batches = max(1, math.ceil(args.samples / per_batch))
    values: dict[str, dict[str, list[float]]] = {k: {} for k in fns}
    same = {k: 0 for k in fns if k != "hf_generate"}
    total = 0
    for b in range(batches):
        problems, prompts = prompt_rows(policy, task, args.prompts, args.group, seed=10_000 + b)
        for offset, (name, fn) in enumerate(fns.items()):
            stats = sequence_stats(
                policy, task, problems, fn(prompts, 20_000 + b + 500_000 * offset), args
            )
            for key, vals in stats.items():
                values[name].setdefault(key, []).extend(vals)
        h = fns["hf_generate"](prompts, 30_000 + b)
        for name in same:
            a = fns[name](prompts, 30_000 + b)
            for ra, rh, ma, mh in zip(
                a.response_ids.tolist(),
                h.response_ids.tolist(),
                a.response_mask.tolist(),
                h.response_mask.tolist(),
                strict=True,
            ):
                same[name] += [t for t, m in zip(ra, ma, strict=False) if m] == [
                    t for t, m in zip(rh, mh, strict=False) if m
                ]
        total += per_batch
    out: dict[str, object] = {"same_seed_identical_share": same["project"] / total,
                              "same_seed_identical_share_by_sampler": {k: v / total for k, v in same.items()}}
    for name in same:
        rows = {}
        for key in values["project"]:
            a, b = values[name][key], values["hf_generate"][key]
            ma, mb = statistics.mean(a), statistics.mean(b)
            se = math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
            rows[key] = {"project": ma, "hf_generate": mb, "z": (ma - mb) / se if se > 0 else 0.0, "n": len(a)}
        if name == "project":
            out.update(rows)
        else:
            out[name] = rows
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=16, help="B: distinct prompts per call")
    parser.add_argument(
        "--group", type=int, default=8, help="G: copies of each prompt (B*G sequences)"
    )
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--reps", type=int, default=12, help="timed calls per sampler")
    parser.add_argument(
        "--samples", type=int, default=512, help="responses per sampler for the distribution check"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--set", action="append", default=[], help="config override key=value (model.*)"
    )
    parser.add_argument(
        "--profile", action="store_true", help="also record the top torch.profiler ops"
    )
    parser.add_argument(
        "--against", help="also time the sampler of the entropic_tune package in this folder"
    )
    parser.add_argument(
        "--name", default="generate", help="results file: benchmarks/results/<name>.json"
    )
    parser.add_argument(
        "--compiled", action="store_true",
        help="also time the compiled static-cache sampler (model.compile); its compile time is reported "
        "separately and amortised over --amortise-steps calls",
    )
    parser.add_argument("--amortise-steps", type=int, default=150, help="a trial's rollout steps")
    parser.add_argument("--warm", action="store_true", help="compile with the shared (warm) inductor cache")
    args = parser.parse_args()

    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")  # count the C++ compiler's CPU time
    C.set_threads(args.threads)
    policy, task = load(args)
    fns = samplers(policy, args)
    pair = {k: fns[k] for k in ("project", "hf_generate", "project_compiled") if k in fns}
    timing = speed(policy, task, fns, args)
    dist = distribution(policy, task, pair, args)
    tops = profile_top(policy, task, pair, args) if args.profile else None

    print(
        f"{args.prompts * args.group} sequences (B={args.prompts} x G={args.group}), T={args.temperature}, "
        f"max_new_tokens={args.max_new_tokens}, device {policy.device}, {args.reps} alternating calls each"
    )
    print(
        f"{'':<12} {'CPU/call':>10} {'wall/call':>10} {'steps':>6} {'in forward':>11} {'outside':>10} "
        f"{'fwd share':>9} {'decode fwd':>10}"
    )
    for name in fns:
        t = timing[name]
        print(
            f"{name:<12} {C.fmt_s(t['cpu']['median']):>10} {C.fmt_s(t['wall']['median']):>10} "
            f"{t['steps']['median']:>6.0f} {C.fmt_s(t['forward_cpu']['median']):>11} "
            f"{C.fmt_s(t['outside_forward_cpu']['median']):>10} {t['forward_share']:>9.0%} "
            f"{t['decode_forward_cpu']['median'] * 1e3:>8.2f}ms"
        )
    for name, r in timing["over_project"].items():
        label = "generate" if name == "hf_generate" else name
        aim = "   (aim: >= 2x)" if name == "hf_generate" else ""
        print(
            f"{label} / project time: CPU {r['cpu']['of_medians']:.2f}x (medians), "
            f"{r['cpu']['of_minima']:.2f}x (minima); wall {r['wall']['of_medians']:.2f}x; "
            f"in forward {r['forward_cpu']['of_medians']:.2f}x, outside {r['outside_forward_cpu']['of_medians']:.2f}x"
            f"{aim}"
        )
    if "project_compiled" in timing:
        compile_s = timing["first_call_cpu_s"]["project_compiled"] - timing["first_call_cpu_s"]["project"]
        call = timing["project_compiled"]["cpu"]["median"]
        amortised = call + compile_s / args.amortise_steps
        hf = timing["hf_generate"]["cpu"]["median"]
        timing["compiled_amortised"] = {"compile_cpu_s": compile_s, "call_cpu_s": call, "amortised_cpu_s": amortised,
                                        "generate_over_compiled": hf / call, "generate_over_amortised": hf / amortised}
        print(
            f"compiled sampler: compile {compile_s:.1f} s CPU (first call minus an eager call, C++ compiler "
            f"included; {'warm' if args.warm else 'cold'} inductor cache); per call "
            f"{C.fmt_s(call)} CPU, + compile / {args.amortise_steps} = {C.fmt_s(amortised)}; generate / compiled "
            f"{hf / call:.2f}x, with the compile amortised {hf / amortised:.2f}x   (aim: >= 2x)"
        )
    bound = timing["hf_generate"]["cpu"]["median"] / timing["project"]["forward_cpu"]["median"]
    print(
        f"bound: generate's call / the project's time in forward = {bound:.2f}x (a loop costing nothing)"
    )
    print(f"\ndistribution check, {dist['length']['n']} responses each (independent seeds):")
    rows = {k: v for k, v in dist.items() if isinstance(v, dict) and "z" in v}
    for key, row in rows.items():
        print(
            f"  {key:<18} project {row['project']:>9.4f}   generate {row['hf_generate']:>9.4f}   "
            f"z {row['z']:>6.2f}"
        )
    worst = max(abs(row["z"]) for row in rows.values())
    verdict = "same distribution within noise" if worst < 3 else "DIFFERENT"
    print(f"  max |z| = {worst:.2f} -> {verdict}")
    print(
        f"  same seed: {dist['same_seed_identical_share']:.1%} of responses identical token for token"
    )
    if "project_compiled" in dist:
        crows = dist["project_compiled"]
        for key, row in crows.items():
            print(f"  compiled {key:<18} {row['project']:>9.4f}   generate {row['hf_generate']:>9.4f}   z {row['z']:>6.2f}")
        cworst = max(abs(row["z"]) for row in crows.values())
        worst = max(worst, cworst)
        share = dist["same_seed_identical_share_by_sampler"]["project_compiled"]
        print(f"  compiled: max |z| = {cworst:.2f}; same seed: {share:.1%} identical to generate's tokens")
    if tops:
        for name, top in tops.items():
            print(
                f"\ntop ops, {name}: "
                + ", ".join(f"{t['op']} {t['self_share']:.0%}" for t in top[:6])
            )
    payload = {
        "settings": vars(args),
        "timing": timing,
        "bound_free_loop": bound,
        "distribution": dist,
    }
    C.save(args.name, {**payload, "max_abs_z": worst, "profile_top_ops": tops})


if __name__ == "__main__":
    main()
