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

try:  # the per-layer cache API of transformers >= 4.56; older versions use the model's default cache
    from transformers.cache_utils import DynamicCache, DynamicLayer
except ImportError:  # pragma: no cover
    DynamicCache = DynamicLayer = None

from ...model import decoding
from ...model.policy import Policy, logprobs_and_entropy, model_call_kwargs, output_cache, positions
from ...tasks import Problem, Task


@dataclass
class Generation:
    """Sampled sequences: ``input_ids`` (N, P+R), ``attention_mask`` (N, P+R), ``response_mask`` (N, R)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    prompt_len: int
    response_mask: torch.Tensor
    sampler_logprobs: torch.Tensor | None = None
    """(N, R) log-probs of the sampled tokens at T from the compiled sampler (None when eager)."""
    sampler_entropy: torch.Tensor | None = None
    """(N, R) full-vocabulary entropies at T from the compiled sampler (None when eager)."""

    @property
    def response_ids(self) -> torch.Tensor:
        return self.input_ids[:, self.prompt_len :]  # (N, R)


@dataclass
class RolloutBatch:
    """One rollout step's training data (all tensors on the policy device)."""

    gen: Generation
    old_logprobs: torch.Tensor | None  # (N, R) behaviour log-probs at T; None when not computed
    entropy: torch.Tensor | None  # (N, R) full-vocabulary entropy at T; None when not computed
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
    ids = torch.tensor([[pad_id] * (width - len(r)) + list(r) for r in rows], dtype=torch.long)
    attn = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
    return ids.to(device), attn.to(device)


STOP_CHECK_EVERY_CUDA = 8  # tokens between end-of-generation checks on an accelerator (each is a host sync)


def new_cache(model: torch.nn.Module) -> object | None:
    """The KV cache the model would build itself (``DynamicCache`` from its config), built up front so
    the loop can see its layer types; ``None`` when this transformers version has no per-layer API.

    A cache pre-allocated for the whole generation (views of one buffer instead of a ``torch.cat`` per
    token) was measured slower on the CPU: SDPA on the strided views costs more than the copy saves.
    """
    if DynamicCache is None:
        return None
    try:
        cache = DynamicCache(config=model.config)
    except (TypeError, ValueError, AttributeError):
        return None
    return cache if cache.layers else None


Generators = torch.Generator | list[torch.Generator] | None
"""One stream for every row, or one per prompt (``k`` consecutive rows each: per-prompt sampling), or none."""


def generate(policy: Policy, prompts: list[list[int]], max_new_tokens: int, temperature: float,
             generator: Generators, greedy: bool = False) -> Generation:
    """Sample (or greedily decode) one response per prompt row with a KV cache.

    The loop does one model call per new token and no per-sequence Python work: the outputs and the
    attention mask are allocated once and written in place, and the SDPA mask of the decoding steps
    is built once (:func:`_decode_mask`). It stops once every row has produced EOS. On an accelerator
    it checks that only every ``STOP_CHECK_EVERY_CUDA`` tokens (a host sync), then drops the extra
    tokens and rewinds ``generator``, so the result and the random stream are the same as stopping at
    once. Tokens after a row's EOS are padding and masked out.

    ``generator`` a list of ``P`` generators: rows ``[i k, (i + 1) k)`` (``k = N / P``) draw from the
    i-th only, so a prompt's samples do not depend on which other prompts share the batch (the eager
    loop; the streams are fresh per step, so they are not rewound).
    """
    device = policy.device
    ids, prompt_attn = left_pad(prompts, policy.pad_id, device)  # (N, P)
    n, width = ids.shape
    with torch.inference_mode():
        tokens, alive, steps, stats = _sample_loop(policy, ids, prompt_attn, max_new_tokens, temperature,
                                                   generator, greedy)
    # Built outside inference mode: these tensors meet autograd in the loss (as masks and indices).
    response = tokens[:, :steps].clone()  # (N, R)
    response_mask = alive[:, :steps].float()  # (N, R), EOS included
    full_attn = torch.cat([prompt_attn, response_mask.long()], dim=1)
    logps, ents = (None, None) if stats is None else (stats[0][:, :steps].clone(), stats[1][:, :steps].clone())
    return Generation(torch.cat([ids, response], dim=1), full_attn, width, response_mask, logps, ents)


def _sample_loop(policy: Policy, ids: torch.Tensor, prompt_attn: torch.Tensor, max_new_tokens: int,
                 temperature: float, generator: Generators,
                 greedy: bool) -> tuple[torch.Tensor, torch.Tensor, int, tuple | None]:
    """The token loop of :func:`generate`: ``(tokens (N, max_new), alive (N, max_new), steps used,
    (logps, entropies) (N, max_new) each from the compiled sampler or None)``."""
    model, device = policy.model, policy.device
    n, width = ids.shape
    # Deferred checks need a generator to rewind (the global RNG is left alone) or no sampling at all.
    deferred = device.type != "cpu" and (greedy or generator is not None)
    check_every = STOP_CHECK_EVERY_CUDA if deferred else 1
    if policy.decoder is not None:  # model.compile: the static cache and the compiled step
        with policy.autocast:
            tokens, alive, steps, rng_states, *stats = decoding.sample(
                policy.decoder, model, ids, prompt_attn, positions(prompt_attn), max_new_tokens, temperature,
                generator, greedy, policy.pad_id, policy.eos_id, check_every)
    else:
        stats = None
        tokens, alive, steps, rng_states = _eager_loop(policy, ids, prompt_attn, max_new_tokens, temperature,
                                                       generator, greedy, check_every)
    if check_every > 1:
        steps = _first_all_finished(alive, tokens, policy.eos_id, steps)
        if isinstance(generator, torch.Generator) and steps < len(rng_states):
            generator.set_state(rng_states[steps])  # as if the loop had stopped right after `steps` tokens
    return tokens, alive, steps, stats


def _eager_loop(policy: Policy, ids: torch.Tensor, prompt_attn: torch.Tensor, max_new_tokens: int,
                temperature: float, generator: Generators, greedy: bool,
                check_every: int) -> tuple[torch.Tensor, torch.Tensor, int, list[torch.Tensor]]:
    """transformers' forward once per token (``model.compile: off``): ``(tokens, alive, steps run,
    generator states before each draw)``."""
    model, device = policy.model, policy.device
    n, width = ids.shape
    tokens = torch.full((n, max_new_tokens), policy.pad_id, dtype=torch.long, device=device)
    alive = torch.zeros((n, max_new_tokens), dtype=torch.bool, device=device)
    # Pad tokens fed after a row's EOS stay visible to later steps (only the response mask drops them).
    attn = torch.ones((n, width + max_new_tokens), dtype=prompt_attn.dtype, device=device)
    attn[:, :width] = prompt_attn
    finished = torch.zeros(n, dtype=torch.bool, device=device)
    rng_states: list[torch.Tensor] = []
    cache_kw = next(iter(model_call_kwargs(model, None)))
    cache = new_cache(model)
    own_mask, decode_mask = _decode_mask(model, cache, attn)  # decode_mask: (N, 1, 1, P + max_new) or None
    step_ids, step_pos = ids, positions(prompt_attn)
    steps = max_new_tokens
    with policy.autocast:
        for t in range(max_new_tokens):
            if t == 0 or not own_mask:
                mask = attn[:, : width + t]
            else:
                mask = decode_mask[..., : width + t] if decode_mask is not None else None
            out = model(input_ids=step_ids, attention_mask=mask, position_ids=step_pos, use_cache=True,
                        logits_to_keep=1, **{cache_kw: cache})
            cache = output_cache(out)
            logits = out.logits[:, -1].float()  # (N, V)
            if greedy:
                token = logits.argmax(-1)
            else:
                if check_every > 1 and isinstance(generator, torch.Generator):
                    rng_states.append(generator.get_state())
                probs = torch.softmax(logits / temperature, dim=-1)
                token = _multinomial(probs, generator)
            token = token.masked_fill(finished, policy.pad_id)  # (N,)
            alive[:, t] = ~finished
            tokens[:, t] = token
            finished |= token == policy.eos_id
            if (t + 1) % check_every == 0 and bool(finished.all()):
                steps = t + 1
                break
            step_ids = token[:, None]
            step_pos = step_pos[:, -1:] + 1
    return tokens, alive, steps, rng_states


def _multinomial(probs: torch.Tensor, generator: Generators) -> torch.Tensor:
    """One token per row of ``probs`` (N, V) -> (N,): from one stream, or per prompt (rows in blocks)."""
    if not isinstance(generator, list):
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    rows = probs.shape[0] // len(generator)
    return torch.cat([torch.multinomial(block, 1, generator=g).squeeze(-1)
                      for block, g in zip(probs.split(rows), generator, strict=True)])


def _decode_mask(model: torch.nn.Module, cache: object | None,
                 attn: torch.Tensor) -> tuple[bool, torch.Tensor | None]:
    """``(own, mask)``: the SDPA mask of every one-token decoding step, built once before the loop.

    For one query token the causal part of the mask is all true, so transformers' per-step mask is just
    the padding mask, ``(N, 1, 1, P + max_new)`` bool, or no mask at all when nothing is padded; passing
    a slice of this one (or ``None``) avoids rebuilding it, and its host sync, at every token. Only for
    SDPA attention over full-attention layers; otherwise ``own`` is False and transformers builds it.
    """
    full_attention = cache is not None and all(type(layer) is DynamicLayer for layer in cache.layers)
    sdpa = getattr(model.config, "_attn_implementation", None) == "sdpa"
    if not (full_attention and sdpa and getattr(model.config, "is_causal", True)):
        return False, None
    return True, None if bool(attn.all()) else attn.bool()[:, None, None, :]


def _first_all_finished(alive: torch.Tensor, tokens: torch.Tensor, eos_id: int, steps: int) -> int:
    """Tokens a per-token stop check would have produced: up to the first step where every row is done."""
    done = (~alive[:, :steps]) | (tokens[:, :steps] == eos_id)  # (N, steps): finished after step t
    all_done = done.all(dim=0)  # (steps,)
    return int(all_done.float().argmax().item()) + 1 if bool(all_done.any()) else steps


def sequence_logprobs(policy: Policy, gen: Generation, temperature: float,
                      micro_batch_size: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of the sampled response tokens and full-vocab entropies, both (N, R), at temperature T.

    Runs with or without grad depending on the caller's context; ``micro_batch_size`` bounds memory
    (rows per forward), ``policy.logits_chunk`` the logits held at once (:func:`logprobs_and_entropy`).
    With grad (the update) it uses the policy's compiled forward when ``model.compile`` provides one
    and the rows' tokens fit one chunk (a chunked forward runs eagerly: its per-chunk checkpoints and
    chunk count would make the compiled graph break or recompile as lengths change).
    """
    n = gen.input_ids.shape[0]
    step = micro_batch_size or n
    chunk = policy.logits_chunk
    logps, ents = [], []
    for start in range(0, n, step):
        ids = gen.input_ids[start : start + step]
        attn = gen.attention_mask[start : start + step]
        chunked = 0 < chunk < ids.shape[0] * (ids.shape[1] - gen.prompt_len)
        forward = policy.logprob_forward if policy.logprob_forward is not None and torch.is_grad_enabled() \
            and not chunked else logprobs_and_entropy
        logp, ent = forward(policy.model, ids, attn, gen.prompt_len, temperature, policy.device.type, policy.amp,
                            chunk)
        logps.append(logp)
        ents.append(ent)
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
    eos = policy.eos_id  # a tokenizer attribute lookup: once, not once per token
    rows = gen.response_ids.tolist()
    masks = gen.response_mask.bool().tolist()
    texts = []
    for row, m in zip(rows, masks, strict=True):
        kept = [t for t, keep in zip(row, m, strict=True) if keep and t != eos]
        texts.append(policy.decode(kept))
    return texts


def score(task: Task, problems: list[Problem], texts: list[str], repeats: int) -> torch.Tensor:
    """Rewards (N,) for ``repeats`` consecutive responses per problem."""
    values = [task.reward(problems[i // repeats], text) for i, text in enumerate(texts)]
    return torch.tensor(values, dtype=torch.float32)


def collect_rollout(policy: Policy, task: Task, problems: list[Problem], group_size: int,
                    temperature: float, max_new_tokens: int, generator: Generators,
                    micro_batch_size: int = 0, behaviour: bool = True) -> RolloutBatch:
    """Sample a group per problem, score it, and compute advantages, behaviour log-probs and entropy.

    ``behaviour=False`` skips the behaviour forward (``old_logprobs`` and ``entropy`` are then None): an
    on-policy trainer gets both, bit for bit, from its own first forward on the same weights. With the
    compiled sampler (``model.compile``) they come from the sampling loop itself, which computed the
    same softmax at every token (equal to the forward's up to float rounding), and no forward runs.
    """
    start = time.perf_counter()
    encoded = [policy.encode_prompt(p.prompt) for p in problems]  # once per problem, not per response
    prompts = [ids for ids in encoded for _ in range(group_size)]
    gen = generate(policy, prompts, max_new_tokens, temperature, generator)
    rewards = score(task, problems, decode_responses(policy, gen), group_size).to(policy.device)
    old_logprobs = entropy = None
    if behaviour and gen.sampler_logprobs is not None:
        old_logprobs, entropy = gen.sampler_logprobs, gen.sampler_entropy
    elif behaviour:
        with torch.no_grad():  # not inference_mode: these tensors meet autograd in the loss
            old_logprobs, entropy = sequence_logprobs(policy, gen, temperature, micro_batch_size)
    return RolloutBatch(
        gen=gen, old_logprobs=old_logprobs, entropy=entropy, rewards=rewards,
        advantages=compute_group_advantages(rewards, group_size), group_size=group_size,
        rollout_seconds=time.perf_counter() - start,
    )
