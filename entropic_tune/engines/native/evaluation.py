"""The large evaluation of a run's base and final model: pass@k curves on the held-out set.

``Trainer.evaluate`` is the cheap evaluation during training (default 4 samples per problem); one
such point has a sampling noise (~0.03 on 64 problems) as large as most differences between
methods. This module is the evaluation a comparison is decided on: ``rollout.final_samples`` (n,
default 64) responses per held-out problem at the rollout temperature, generated in batches, scored
by the task, and summarised as the unbiased pass@k of Chen et al. (2021) averaged over problems for
k = 1, 2, 4, ..., n (:func:`metrics.pass_at_k`; pass@1 is mean@n), plus greedy accuracy and, for a
task with many correct answers (``Task.many_answers``), the mean number of distinct correct
responses per problem among the n (``<prefix>/distinct_correct``).

It runs twice per trial: on the base (warm-start) model before step 1 (keys ``base/...``) and after
the last step (keys ``final/...``). Both are summary values (``summary.csv``), never part of the
per-step dict. The generator is seeded by ``task.eval_seed`` and the step only, not by the trial
seed: every trial of an experiment draws the same random numbers, so the base curve is the same in
every trial (one curve per experiment, and a check that the trials share their base model) and the
final evaluations of different methods use common random numbers, which makes their paired
differences less noisy. It never touches the training RNG streams.
"""

from __future__ import annotations

import time

import torch

from ... import metrics as M
from ...config import Config
from ...model.policy import Policy
from ...tasks import Task
from ..records import FinalEvaluation
from .rollout import decode_responses, generate, score, sequence_logprobs

SEED_OFFSET = 50_021
"""Keeps the final evaluation's random stream apart from ``Trainer.evaluate``'s."""
CPU_ROWS = 256
"""Responses per ``generate`` call on the CPU. ``benchmarks/bench_final_eval.py``: 4096 responses took
6.6 s CPU in 256-row calls, 5.8 s in 1024-row and 8.1 s in one 4096-row call (BENCHMARKS.md). The
width is part of what fixes the sample (one generator feeds the calls in turn), so it is a constant
per device type: changing it changes every base/final number."""
ACCELERATOR_ROWS = 4096
"""Responses per call on an accelerator: one wide batch, assumed cheapest there (not measured: no GPU
was lent to this work)."""


def pass_at_k_curve(correct: list[int], n: int) -> dict[int, float]:
    """Mean over problems of :func:`metrics.pass_at_k` for each k of :func:`metrics.pass_at_k_ks`.

    ``correct[i]`` is the number of correct responses among the ``n`` drawn for problem i.
    """
    return {k: sum(M.pass_at_k(n, c, k) for c in correct) / len(correct) for k in M.pass_at_k_ks(n)}


@torch.inference_mode()  # only Python floats leave this function, so no tensor meets autograd later
def training_evaluation(policy: Policy, task: Task, config: Config, step: int) -> dict[str, float]:
    """The cheap evaluation during training (every ``rollout.eval_every`` steps, of any engine): greedy
    accuracy, mean@k (``eval/accuracy``) and pass@k at the rollout temperature with ``k =
    rollout.eval_samples``, and the entropy of those samples.

    Uses its own generator (seeded by the eval seed and ``step``) so evaluation never shifts the
    training RNG stream: a run with more frequent evals samples the same training data.
    """
    cfg = config.rollout
    problems = task.eval_problems()
    k = cfg.eval_samples
    policy.model.eval()
    prompts = [policy.encode_prompt(p.prompt) for p in problems]
    greedy = generate(policy, prompts, cfg.max_new_tokens, 1.0, None, greedy=True)
    greedy_acc = score(task, problems, decode_responses(policy, greedy), 1).mean().item()
    gen_rng = torch.Generator(device=policy.device)
    gen_rng.manual_seed(config.task.eval_seed * 100_003 + step)
    repeated = [ids for ids in prompts for _ in range(k)]
    sampled = generate(policy, repeated, cfg.max_new_tokens, cfg.temperature, gen_rng)
    rewards = score(task, problems, decode_responses(policy, sampled), k).view(-1, k)
    ent = sampled.sampler_entropy  # the compiled sampler's own (model.compile), else one forward
    if ent is None:
        _, ent = sequence_logprobs(policy, sampled, cfg.temperature)
    return {
        M.EVAL_ACCURACY: rewards.mean().item(),
        M.EVAL_PASS_AT_K: (rewards.max(dim=1).values > 0.5).float().mean().item(),
        M.EVAL_ENTROPY: M.aggregate(ent, sampled.response_mask).item(),
        M.EVAL_GREEDY_ACCURACY: greedy_acc,
    }


@torch.inference_mode()
def final_evaluation(
    policy: Policy, task: Task, config: Config, step: int, prefix: str = M.FINAL
) -> FinalEvaluation | None:
    """Evaluate ``policy`` on the held-out set with ``rollout.final_samples`` samples per problem.

    ``step`` (0 for the base model, the last step for the final one) seeds the generator together
    with ``task.eval_seed``. Returns None when ``rollout.final_samples`` is 0.
    """
    n = config.rollout.final_samples
    if n == 0:
        return None
    start = time.perf_counter()
    cfg = config.rollout
    problems = task.eval_problems()
    policy.model.eval()
    prompts = [policy.encode_prompt(p.prompt) for p in problems]
    greedy = generate(policy, prompts, cfg.max_new_tokens, 1.0, None, greedy=True)
    greedy_acc = score(task, problems, decode_responses(policy, greedy), 1).mean().item()
    generator = torch.Generator(device=policy.device)
    generator.manual_seed(config.task.eval_seed * 100_003 + SEED_OFFSET + step)
    rows = [
        (i, ids) for i, ids in enumerate(prompts) for _ in range(n)
    ]  # problem-major, n per problem
    width = CPU_ROWS if policy.device.type == "cpu" else ACCELERATOR_ROWS
    correct = [0] * len(problems)
    distinct: list[set[str]] = [set() for _ in problems]  # correct responses, stripped
    for begin in range(0, len(rows), width):
        chunk = rows[begin : begin + width]
        gen = generate(
            policy, [ids for _, ids in chunk], cfg.max_new_tokens, cfg.temperature, generator
        )
        for (i, _), text in zip(chunk, decode_responses(policy, gen), strict=True):
            right = task.reward(problems[i], text) > 0.5
            correct[i] += int(right)
            if right:
                distinct[i].add(text.strip())
    out = {f"{prefix}/accuracy": greedy_acc}
    out.update({f"{prefix}/pass@{k}": v for k, v in pass_at_k_curve(correct, n).items()})
    if task.many_answers:  # e.g. countdown: how many different solutions sampling finds
        out[f"{prefix}/{M.DISTINCT_CORRECT}"] = sum(len(d) for d in distinct) / len(problems)
    return FinalEvaluation(out, len(problems), n, time.perf_counter() - start, prefix)
