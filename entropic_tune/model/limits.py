"""Upper bounds of the size keys that follow from the model and the machine, checked before a run.

A config can be valid key by key and still impossible: ``rollout.max_new_tokens=100000000`` passes
``> 0``, but the sampler allocates ``(N, max_new_tokens)`` tensors and the model has a fixed number of
positions, so the run hangs or dies long after it started. :func:`check_limits` refuses such configs
in one line naming the key and the largest allowed value:

- **context**: the longest prompt (in tokens) plus ``rollout.max_new_tokens`` must fit the model's
  positions: 256 for the built-in model (``policy.build_tiny_model``), ``max_position_embeddings``
  from a local Hugging Face model's ``config.json`` (read as JSON; no weights are loaded, only the
  tokenizer, to count prompt tokens exactly as the policy will);
- **batch**: ``optim.mini_batches_per_rollout`` cannot exceed the ``N = B * G`` sequences of a step;
- **memory**: a *lower bound* of a step's peak memory (weights, plus gradients and AdamW state unless
  LoRA trains adapters only, plus the largest of: the KV cache while sampling, the logits of one
  update mini-batch or one ``model.logits_chunk`` of them, the evaluation's) must fit the memory the
  run uses: the GPU's on CUDA (``torch.cuda.mem_get_info``), else this machine's RAM. Only sizes that
  can never fit are refused; on a cluster whose workers have more memory than the driver's machine
  the bound is the driver's.

Not an error but a one-line warning on stderr (once per process): a ``rollout.max_new_tokens`` shorter
than the task's worked solutions (counted with the run's tokenizer), or left at the default 40 with a
local model (:func:`length_warning`).

Plain Python for the built-in model (the task is built to find its longest prompt); transformers is
imported only to count a local model's prompt tokens.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ..config import Config, RolloutConfig, TaskConfig
from ..errors import UserError
from ..tasks import Task, build_task

BUILTIN_POSITIONS = 256
"""Positions of the built-in model (``policy.build_tiny_model``'s default; a test keeps them equal)."""
BUILTIN_SPECIALS = 3  # <pad>, <eos>, <bos>
FLOAT_BYTES = 4  # training runs in fp32 (bf16 autocast only for the forward on CUDA)
_POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


@dataclass(frozen=True)
class ModelFacts:
    """What the bounds need to know about a model, without building it."""

    positions: int
    vocab: int
    hidden: int
    layers: int
    weight_bytes: int
    """Bytes of the parameters: fp32 for the built-in model, the weight files' size for a local one."""
    source: str  # "the built-in model" or the config.json path
    kv_width: int = 0
    """Keys (or values) per token and layer, ``head_dim * kv_heads`` (grouped-query attention keeps
    fewer than ``hidden``); 0 = ``hidden``."""


def check_limits(cfg: Config) -> None:
    """Refuse a config whose sizes cannot fit the model or this machine (see the module docstring)."""
    task = build_task(cfg.task)
    facts = model_facts(cfg, len(task.alphabet()))
    if facts is None:  # a config.json without a number of positions: nothing to check against
        return
    prompt = prompt_tokens(cfg, task.longest_prompt())
    room = facts.positions - prompt
    if cfg.rollout.max_new_tokens > room:
        raise UserError(
            f"rollout.max_new_tokens: {cfg.rollout.max_new_tokens} + the longest prompt ({prompt} tokens) "
            f"exceeds the {facts.positions} positions of {facts.source}; allowed: <= {max(room, 0)}"
        )
    n = cfg.rollout.prompts_per_step * cfg.rollout.group_size
    if cfg.optim.mini_batches_per_rollout > n:
        raise UserError(
            f"optim.mini_batches_per_rollout: {cfg.optim.mini_batches_per_rollout} mini-batches of "
            f"{n} sequences (rollout.prompts_per_step x rollout.group_size); allowed: <= {n}"
        )
    _check_memory(cfg, facts, prompt + cfg.rollout.max_new_tokens)
    warning = length_warning(cfg, task)
    if warning is not None and warning not in _WARNED:  # once per process (a sweep checks each trial)
        _WARNED.add(warning)
        print(f"entropic-tune: warning: {warning}", file=sys.stderr, flush=True)


_WARNED: set[str] = set()
DEFAULT_MAX_NEW_TOKENS = RolloutConfig.max_new_tokens
"""40: sized for the built-in task's worked solutions; real GSM8K/MATH solutions are far longer."""


def length_warning(cfg: Config, task: Task) -> str | None:
    """A one-line warning when ``rollout.max_new_tokens`` cuts the task's worked solutions (counted
    with the run's tokenizer, EOS included), or when a local model runs with the default 40 and the
    task has no worked solutions to count; None when the responses have room."""
    limit = cfg.rollout.max_new_tokens
    solutions = [p.solution for p in getattr(task, "problems", list)() if p.solution]
    if solutions:
        lengths = sorted(n + 1 for n in solution_tokens(cfg, solutions))
        cut = sum(n > limit for n in lengths)
        if not cut:
            return None
        room = 64 * math.ceil(lengths[-1] / 64)
        return (f"rollout.max_new_tokens={limit} cuts {cut} of the task's {len(lengths)} worked solutions "
                f"({100 * cut / len(lengths):.0f}%; the longest is {lengths[-1]} tokens with EOS), so such "
                f"answers are never finished; set e.g. --set rollout.max_new_tokens={room}")
    if cfg.model.path and limit == DEFAULT_MAX_NEW_TOKENS:
        return (f"rollout.max_new_tokens is the default {limit}, sized for the built-in task; a real "
                "model's worked solutions take hundreds of tokens (GSM8K ~100-300, MATH up to ~1,000) "
                "and are cut at 40; set rollout.max_new_tokens")
    return None


def solution_tokens(cfg: Config, texts: list[str]) -> list[int]:
    """Tokens of each response text: one per character for the built-in model, the local model's
    tokenizer otherwise."""
    if not cfg.model.path:
        return [len(t) for t in texts]
    tokenizer = _hf_tokenizer(str(Path(cfg.model.path).expanduser()), cfg.model.trust_remote_code)
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def model_facts(cfg: Config, alphabet: int) -> ModelFacts | None:
    """Positions, vocabulary and sizes of the configured model (the built-in one is computed)."""
    m = cfg.model
    if not m.path:
        vocab, h, layers = alphabet + BUILTIN_SPECIALS, m.hidden_size, m.num_layers
        # tied embeddings + per layer: q, k, v, o (4 h^2) and the gated MLP of width 4h (12 h^2)
        params = vocab * h + layers * 16 * h * h
        return ModelFacts(
            BUILTIN_POSITIONS, vocab, h, layers, params * FLOAT_BYTES, "the built-in model"
        )
    check_model_folder(Path(m.path).expanduser())
    return _hf_facts(str(Path(m.path).expanduser()))


def check_model_folder(model_dir: Path) -> None:
    """Refuse a ``model.path`` that cannot be a local Hugging Face model: no folder, no config.json or
    no tokenizer files (plain file checks, so a wrong path is answered before torch is imported)."""
    if not model_dir.is_dir():
        raise UserError(f"model.path: '{model_dir}' is not a directory (expected a local Hugging Face model)")
    if not (model_dir / "config.json").is_file():
        raise UserError(f"model.path: '{model_dir}' has no config.json (not a Hugging Face model folder)")
    tok_files = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
    if not any((model_dir / name).is_file() for name in tok_files):
        raise UserError(f"model.path: '{model_dir}' has no tokenizer files (expected one of: {', '.join(tok_files)})")


@functools.lru_cache(maxsize=16)
def _hf_facts(folder: str) -> ModelFacts | None:
    path = Path(folder) / "config.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(
            f"model.path: {path}: not a readable config.json ({type(exc).__name__})"
        ) from None
    data = (
        {**data.get("text_config", {}), **data}
        if isinstance(data.get("text_config"), dict)
        else data
    )
    positions = next(
        (data[k] for k in _POSITION_KEYS if isinstance(data.get(k), int) and data[k] > 0), None
    )
    if positions is None:
        return None  # nothing to check against; the model's own code will complain if it must
    weights = sum(
        p.stat().st_size
        for p in Path(folder).iterdir()
        if p.suffix in (".safetensors", ".bin", ".pt") and p.is_file()
    )
    return ModelFacts(
        int(positions),
        int(data.get("vocab_size") or 0),
        int(data.get("hidden_size") or 0),
        int(data.get("num_hidden_layers") or 0),
        weights,
        str(path),
        _kv_width(data),
    )


def _kv_width(data: dict) -> int:
    """``head_dim * num_key_value_heads`` from a config.json (0 when it does not say)."""
    heads, kv_heads, hidden = (data.get(k) for k in ("num_attention_heads", "num_key_value_heads", "hidden_size"))
    if not all(isinstance(v, int) and v > 0 for v in (heads, kv_heads, hidden)):
        return 0
    head_dim = data.get("head_dim") if isinstance(data.get("head_dim"), int) else hidden // heads
    return head_dim * kv_heads


def prompt_tokens(cfg: Config, prompt: str) -> int:
    """Tokens of ``prompt`` as the policy encodes it: BOS + one per character for the built-in
    model, the model's own tokenizer (and chat template) for a local one."""
    if not cfg.model.path:
        return 1 + len(prompt)
    return _hf_prompt_tokens(
        str(Path(cfg.model.path).expanduser()), cfg.model.trust_remote_code, prompt, cfg.task
    )


@functools.lru_cache(maxsize=4)
def _hf_tokenizer(folder: str, trust_remote_code: bool) -> object:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"model.path: cannot load the tokenizer of '{folder}': {first}") from None


@functools.lru_cache(maxsize=64)
def _hf_prompt_tokens(folder: str, trust_remote_code: bool, prompt: str, task_cfg: TaskConfig) -> int:
    import torch

    from .policy import Policy, use_chat_template

    tokenizer = _hf_tokenizer(folder, trust_remote_code)
    chat = use_chat_template(task_cfg, tokenizer, folder)
    # Policy.encode_prompt needs only the tokenizer: the same encoding as the run, no weights.
    cpu = torch.device("cpu")
    policy = Policy(model=None, tokenizer=tokenizer, device=cpu, use_chat_template=chat,  # type: ignore[arg-type]
                    system_prompt=task_cfg.system_prompt)
    return len(policy.encode_prompt(prompt))


def _check_memory(cfg: Config, facts: ModelFacts, length: int) -> None:
    """Refuse when a lower bound of the peak memory of a step exceeds the memory it will run in: the
    GPU's when the run will use CUDA (:func:`device_memory`), else this machine's RAM."""
    available, where = device_memory(cfg)
    if not available:
        return
    m, r = cfg.model, cfg.rollout
    n = r.prompts_per_step * r.group_size
    rows = math.ceil(n / cfg.optim.mini_batches_per_rollout)
    n_eval = cfg.task.eval_size * r.eval_samples  # sampled in one batch, scored in one forward
    vocab, layers = max(facts.vocab, 1), max(facts.layers, 1)
    hidden = facts.kv_width or max(facts.hidden, 1)  # keys or values per token and layer
    # The parameters, with their gradients and AdamW's two moments when all of them train (LoRA: the
    # frozen weights alone; the adapters are not counted); bf16 parameters take half the bytes.
    weights = facts.weight_bytes // 2 if m.dtype == "bfloat16" and not m.path else facts.weight_bytes
    fixed = weights if m.lora_r else 4 * weights
    if fixed > available:
        raise UserError(
            f"model.hidden_size/num_layers: the weights{'' if m.lora_r else ' with their gradients and optimizer state'} "
            f"need at least {_size(fixed)}; {where} has {_size(available)}"
        )
    kv_bytes = 2 if m.dtype == "bfloat16" else FLOAT_BYTES
    # logits held at once by the log-prob/entropy forward: the whole batch's, or one chunk of them
    def logits(seqs: int) -> int:
        tokens = seqs * r.max_new_tokens
        chunk = m.chunk_tokens(vocab)
        return (min(tokens, chunk) if chunk else tokens) * vocab * FLOAT_BYTES

    phases = [  # (keys to lower, what, bytes)
        (
            "rollout.prompts_per_step, rollout.group_size or rollout.max_new_tokens",
            f"the KV cache of {n} sequences of {length} tokens while sampling",
            2 * layers * n * length * hidden * kv_bytes,
        ),
        (
            "rollout.prompts_per_step, rollout.group_size or rollout.max_new_tokens "
            "(or raise optim.mini_batches_per_rollout, or lower model.logits_chunk)",
            f"the logits of an update mini-batch of {rows} sequences",
            logits(rows),
        ),
        (
            "task.eval_size, rollout.eval_samples or rollout.max_new_tokens",
            f"the KV cache and logits of the evaluation ({n_eval} sequences)",
            n_eval * 2 * layers * length * hidden * kv_bytes + logits(n_eval),
        ),
    ]
    keys, what, peak = max(phases, key=lambda phase: phase[2])
    if fixed + peak > available:
        raise UserError(
            f"{keys}: a step needs at least {_size(fixed + peak)} for {what}; "
            f"{where} has {_size(available)}"
        )


def device_memory(cfg: Config) -> tuple[int, str]:
    """``(bytes, where)`` the run's steps must fit: the total memory of the GPU it will use
    (``torch.cuda.mem_get_info``) when ``model.device`` is ``cuda``, or ``auto`` on a machine with an
    NVIDIA driver; else this machine's RAM (0 when unknown). torch is imported only on such a machine
    (the run imports it next anyway), so a CPU-only machine checks without it."""
    if cfg.model.device == "cpu" or (cfg.model.device == "auto" and not Path("/proc/driver/nvidia").exists()
                                     and "torch" not in sys.modules):
        return physical_memory(), "this machine"
    import torch

    if not torch.cuda.is_available():
        return physical_memory(), "this machine"
    index = torch.cuda.current_device()
    _, total = torch.cuda.mem_get_info(index)
    return int(total), f"this GPU ({torch.cuda.get_device_name(index)})"


def physical_memory() -> int:
    """Bytes of RAM of this machine (0 when unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 0


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} PiB"
