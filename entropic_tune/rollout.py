"""Rollout: sample G responses per prompt with a KV cache, score them, and build the GRPO batch.

GRPO ingredients kept as is: group-normalised advantages ``A_i = (r_i - mean_g r) / (std_g r + eps)``
broadcast to every response token, a response mask that includes the EOS token, and behaviour
log-probs plus full-vocabulary entropies from one forward pass over the sampled sequences at the
sampling temperature (the policy being optimised is ``softmax(logits / T)``).

Shapes: ``N = B * G`` sequences, ``P`` padded prompt width (prompts are left-padded), ``R`` response
width (responses are right-padded after EOS).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .metrics import token_entropy
from .policy import Policy, model_call_kwargs, output_cache
from .tasks import Problem, Task


@dataclass
class Generation:
    """Sampled sequences: ``input_ids`` (N, P+R), ``attention_mask`` (N, P+R), ``response_mask`` (N, R)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    prompt_len: int
    response_mask: torch.Tensor

    @property
    def response_ids(self) -> torch.Tensor:
        return self.input_ids[:, self.prompt_len :]  # (N, R)


@dataclass
class RolloutBatch:
    """One rollout step's training data (all tensors on the policy device)."""

    gen: Generation
    old_logprobs: torch.Tensor  # (N, R) behaviour log-probs at temperature T
    entropy: torch.Tensor  # (N, R) full-vocabulary entropy at T
    rewards: torch.Tensor  # (N,)
    advantages: torch.Tensor  # (N,)
    group_size: int
    rollout_seconds: float

    @property
    def mask(self) -> torch.Tensor:
        return self.gen.response_mask


def left_pad(rows: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token rows to one width: ``(ids, attention_mask)``, both (N, P)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        attn[i, width - len(row) :] = 1
    return ids.to(device), attn.to(device)


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that start at 0 at each row's first real token (left padding)."""
    return (attention_mask.cumsum(-1) - 1).clamp_min(0)


@torch.no_grad()
def generate(policy: Policy, prompts: list[list[int]], max_new_tokens: int, temperature: float,
             generator: torch.Generator | None, greedy: bool = False) -> Generation:
    """Sample (or greedily decode) one response per prompt row with a KV cache.

    The loop does one model call per new token and no per-sequence Python work; it stops early once
    every row has produced EOS. Tokens after a row's EOS are padding and masked out.
    """
    model, device = policy.model, policy.device
    ids, attn = left_pad(prompts, policy.pad_id, device)  # (N, P)
    n = ids.shape[0]
    finished = torch.zeros(n, dtype=torch.bool, device=device)
    new_tokens, alive = [], []
    cache = None
    step_ids, step_pos = ids, positions(attn)
    with policy.autocast:
        for _ in range(max_new_tokens):
            out = model(input_ids=step_ids, attention_mask=attn, position_ids=step_pos, use_cache=True,
                        logits_to_keep=1, **model_call_kwargs(model, cache))
            cache = output_cache(out)
            logits = out.logits[:, -1].float()  # (N, V)
            if greedy:
                token = logits.argmax(-1)
            else:
                probs = torch.softmax(logits / temperature, dim=-1)
                token = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
            token = torch.where(finished, torch.full_like(token, policy.pad_id), token)
            alive.append(~finished)
            new_tokens.append(token)
            finished = finished | (token == policy.eos_id)
            if bool(finished.all()):
                break
            step_ids = token[:, None]
            step_pos = step_pos[:, -1:] + 1
            attn = torch.cat([attn, torch.ones((n, 1), dtype=attn.dtype, device=device)], dim=1)
    response = torch.stack(new_tokens, dim=1)  # (N, R)
    response_mask = torch.stack(alive, dim=1).float()  # (N, R), EOS included
    prompt_attn = attn[:, : ids.shape[1]]
    full_attn = torch.cat([prompt_attn, response_mask.long()], dim=1)
    return Generation(torch.cat([ids, response], dim=1), full_attn, ids.shape[1], response_mask)


def sequence_logprobs(policy: Policy, gen: Generation, temperature: float,
                      micro_batch_size: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of the sampled response tokens and full-vocab entropies, both (N, R), at temperature T.

    Runs with or without grad depending on the caller's context; ``micro_batch_size`` bounds memory.
    """
    n = gen.input_ids.shape[0]
    step = micro_batch_size or n
    logps, ents = [], []
    for start in range(0, n, step):
        ids = gen.input_ids[start : start + step]
        attn = gen.attention_mask[start : start + step]
        with policy.autocast:
            logits = policy.model(input_ids=ids, attention_mask=attn, position_ids=positions(attn),
                                  use_cache=False).logits
        logits = logits[:, gen.prompt_len - 1 : -1].float() / temperature  # (n, R, V)
        target = ids[:, gen.prompt_len :]  # (n, R)
        logps.append(torch.log_softmax(logits, -1).gather(-1, target[..., None]).squeeze(-1))
        ents.append(token_entropy(logits))
    return torch.cat(logps), torch.cat(ents)


def compute_group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-6) -> torch.Tensor:
    """GRPO advantages ``(r - mean_g) / (std_g + eps)``; rows are grouped consecutively. (N,) -> (N,).

    Groups whose rewards are all equal get exactly 0 (their std is 0 and the numerator is 0).
    """
    grouped = rewards.view(-1, group_size)  # (B, G)
    mean = grouped.mean(-1, keepdim=True)
    std = grouped.std(-1, keepdim=True, unbiased=False) if group_size > 1 else torch.zeros_like(mean)
    return ((grouped - mean) / (std + eps)).view(-1)


def decode_responses(policy: Policy, gen: Generation) -> list[str]:
    """Response texts without EOS and padding."""
    rows = gen.response_ids.tolist()
    masks = gen.response_mask.tolist()
    texts = []
    for row, m in zip(rows, masks, strict=True):
        kept = [t for t, keep in zip(row, m, strict=True) if keep and t != policy.eos_id]
        texts.append(policy.decode(kept))
    return texts


def score(task: Task, problems: list[Problem], texts: list[str], repeats: int) -> torch.Tensor:
    """Rewards (N,) for ``repeats`` consecutive responses per problem."""
    values = [task.reward(problems[i // repeats], text) for i, text in enumerate(texts)]
    return torch.tensor(values, dtype=torch.float32)


def collect_rollout(policy: Policy, task: Task, problems: list[Problem], group_size: int,
                    temperature: float, max_new_tokens: int, generator: torch.Generator | None,
                    micro_batch_size: int = 0) -> RolloutBatch:
    """Sample a group per problem, score it, and compute advantages, behaviour log-probs and entropy."""
    start = time.perf_counter()
    prompts = [policy.encode_prompt(p.prompt) for p in problems for _ in range(group_size)]
    gen = generate(policy, prompts, max_new_tokens, temperature, generator)
    rewards = score(task, problems, decode_responses(policy, gen), group_size).to(policy.device)
    with torch.no_grad():  # not inference_mode: these tensors meet autograd in the loss
        old_logprobs, entropy = sequence_logprobs(policy, gen, temperature, micro_batch_size)
    return RolloutBatch(
        gen=gen, old_logprobs=old_logprobs, entropy=entropy, rewards=rewards,
        advantages=compute_group_advantages(rewards, group_size), group_size=group_size,
        rollout_seconds=time.perf_counter() - start,
    )
