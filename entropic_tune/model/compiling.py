"""``model.compile``: which parts of a run are compiled, and where the compiled artefacts live.

Two parts can be compiled (both give the same tokens and metrics as eager up to float rounding):
- decoding (:mod:`entropic_tune.model.decoding`): a static KV cache and one compiled step per token,
  for Qwen2/Llama-style decoders; on CUDA as a CUDA graph (``mode="reduce-overhead"``);
- the update's forward (:func:`entropic_tune.model.policy.logprobs_and_entropy`: the model, the
  log-softmax and the full-vocabulary entropy at T, compiled whole with dynamic shapes, so inductor
  fuses the elementwise work and the (n, R, V) softmax temporaries; its backward is compiled too),
  for batches within one ``model.logits_chunk``; a larger batch runs the chunked forward eagerly
  (its per-chunk checkpoints and a chunk count that changes with the length would break the graph).

The compiled decoding step is one graph per architecture for the whole run: the number of rows and
the cache length are dynamic, so training batches, evaluation batches and the large final
evaluation, of any width and prompt length, reuse it (``tests/test_compile.py``).

``off`` runs everything eagerly (bit for bit the results of the eager code); ``on`` compiles both
(an unsupported model is a user error); ``auto`` compiles only what pays: decoding on CUDA, or on
the CPU for runs of at least :data:`AUTO_DECODE_MIN_STEPS` rollout steps (the break-even measured in
BENCHMARKS.md with a warm compile cache), and the update's forward on CUDA only (on the CPU it is
matmul-bound: compiling it gained nothing measurable and took minutes).

Compiled artefacts go to inductor's on-disk cache, by default ``<warm-start cache>/inductor`` (the
same folder for every trial, process and sweep on the machine), unless ``TORCHINDUCTOR_CACHE_DIR``
is set; in one process a compiled step is kept per architecture and reused by every later trial.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..config import Config
from ..errors import UserError
from . import decoding
from .policy import Policy, logprobs_and_entropy
from .warmstarts import cache_root

AUTO_DECODE_MIN_STEPS = 100
"""``auto`` on the CPU compiles decoding for runs of at least this many rollout steps (BENCHMARKS.md:
the break-even with a warm inductor cache is ~40-60 steps of the default task, ~600 with a cold one)."""

_UPDATE_FORWARDS: dict[str | None, object] = {}


@dataclass(frozen=True)
class CompilePlan:
    """What runs compiled in this trial, and why (``reason`` is for logs and benchmarks)."""

    decode: bool
    update: bool
    reason: str


def plan(config: Config, policy: Policy) -> CompilePlan:
    """Resolve ``model.compile`` for this run's model and device."""
    choice = config.model.compile
    if choice == "off":
        return CompilePlan(False, False, "model.compile=off")
    unsupported = decoding.unsupported_reason(policy.model)
    cuda = policy.device.type == "cuda"
    if choice == "on":
        if unsupported:
            raise UserError(f"model.compile: 'on' needs a Qwen2/Llama-style decoder; this model has {unsupported}; "
                            "use auto (compiles what it can) or off")
        return CompilePlan(True, True, "model.compile=on")
    long_run = config.train.total_steps >= AUTO_DECODE_MIN_STEPS
    per_prompt = config.train.per_prompt_sampling  # its sampler is the eager loop's (rollout.generate)
    decode = unsupported is None and (cuda or long_run) and not per_prompt
    why = (f"unsupported model ({unsupported})" if unsupported else "per-prompt sampling" if per_prompt
           else "CUDA" if cuda
           else f"train.total_steps {config.train.total_steps} {'>=' if long_run else '<'} {AUTO_DECODE_MIN_STEPS}")
    return CompilePlan(decode, cuda, f"model.compile=auto: decoding {'on' if decode else 'off'} ({why}), "
                                      f"update forward {'on (CUDA)' if cuda else 'off (CPU)'}")


def apply(config: Config, policy: Policy) -> CompilePlan:
    """Give ``policy`` its compiled decoder and update forward as :func:`plan` says (or none)."""
    chosen = plan(config, policy)
    if chosen.decode or chosen.update:
        use_shared_cache(config)
    cuda = policy.device.type == "cuda"
    policy.decoder = decoding.get_decoder(policy.model, config.rollout.batch_size, policy.pad_id, policy.eos_id,
                                          mode="reduce-overhead" if cuda else None) if chosen.decode else None
    policy.logprob_forward = update_forward() if chosen.update else None
    return chosen


def update_forward() -> object:
    """The process's compiled :func:`logprobs_and_entropy` (dynamic shapes: the sequence length changes
    every step; one compiled function for every trial in the process)."""
    if None not in _UPDATE_FORWARDS:
        _UPDATE_FORWARDS[None] = torch.compile(logprobs_and_entropy, dynamic=True)
    return _UPDATE_FORWARDS[None]


def use_shared_cache(config: Config) -> str:
    """Point inductor's on-disk cache at ``<warm-start cache>/inductor`` unless the user chose a folder
    (``TORCHINDUCTOR_CACHE_DIR``); read lazily by inductor, so setting it before the first compile is
    enough. Returns the folder."""
    default = cache_root(config.model) / "inductor"
    return os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(default))
