"""The policy: a transformers causal LM, its tokenizer, the device, and the cached warm-start.

Two sources, one interface (:class:`Policy`):
- the built-in tiny model: a Qwen2 (or Llama) causal LM built from a config with random init and a
  character-level tokenizer over the task's alphabet, warm-started by supervised training on the task's
  worked solutions (some corrupted, so the base model is right only part of the time);
- any local Hugging Face model directory (``model.path``) with its own tokenizer and chat template.

The base weights of the shipped configurations are committed (``entropic_tune.warmstarts``), so they
are the same on every machine; any other warm-start is cached on disk under a hash of everything that
determines it and written atomically under a file lock, so a sweep trains it once even when trials
start together.
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import inspect
import json
import os
import random
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import transformers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from .config import ModelConfig, TaskConfig
from .errors import UserError
from .limits import check_model_folder
from .metrics import aggregate
from .tasks import Task
from .warmstarts import find_committed

PAD, EOS, BOS = "<pad>", "<eos>", "<bos>"
WARMSTART_SEED = 1234
WARMSTART_BATCH = 64
CACHE_VERSION = 1  # bump when the warm-start recipe changes


@dataclass
class Policy:
    """A causal LM with its tokenizer, placed on a device."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    use_chat_template: bool = False
    decoder: object | None = None
    """A :class:`~entropic_tune.decoding.CompiledDecoder` when ``model.compile`` compiles decoding."""
    logprob_forward: Callable | None = None
    """The compiled :func:`~entropic_tune.rollout.logprobs_and_entropy`, for the update's forward."""

    @property
    def eos_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad if pad is not None else self.tokenizer.eos_token_id)

    @property
    def amp(self) -> bool:
        """bf16 autocast: on CUDA for fp32 weights, never on the CPU."""
        return self.device.type == "cuda" and next(self.model.parameters()).dtype == torch.float32

    @property
    def autocast(self) -> torch.autocast:
        """bf16 autocast on CUDA for fp32 weights; a disabled context on the CPU."""
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def encode_prompt(self, prompt: str) -> list[int]:
        """Token ids of a prompt, through the chat template when the model has one."""
        if self.use_chat_template:
            messages = [{"role": "user", "content": prompt}]
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        ids = list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        bos = self.tokenizer.bos_token_id
        return [int(bos)] + ids if bos is not None else ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cuda' without a GPU is a user error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("model.device: 'cuda' requested but no CUDA GPU is visible; allowed here: auto, cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def model_call_kwargs(model: PreTrainedModel, cache: object) -> dict[str, object]:
    """The KV-cache keyword of this transformers version (`cache` in 5.x, `past_key_values` before)."""
    params = inspect.signature(model.forward).parameters
    return {"cache" if "cache" in params else "past_key_values": cache}


def output_cache(output: object) -> object:
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


def build_char_tokenizer(alphabet: str) -> PreTrainedTokenizerBase:
    """A character-level Hugging Face tokenizer: specials <pad>=0, <eos>=1, <bos>=2, then one id per char.

    pad != eos on purpose: the response mask must keep the EOS token (a pitfall of small GRPO repos).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    vocab = {PAD: 0, EOS: 1, BOS: 2}
    for ch in sorted(set(alphabet)):
        vocab.setdefault(ch, len(vocab))
    core = Tokenizer(models.WordLevel(vocab, unk_token=PAD))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token=PAD, eos_token=EOS, bos_token=BOS
    )


def build_tiny_model(cfg: ModelConfig, vocab_size: int, max_positions: int = 256) -> PreTrainedModel:
    """Random-init tiny causal LM of the configured architecture (seed the global RNG first)."""
    common = dict(
        vocab_size=vocab_size, hidden_size=cfg.hidden_size, intermediate_size=4 * cfg.hidden_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads, max_position_embeddings=max_positions,
        tie_word_embeddings=True, pad_token_id=0, eos_token_id=1, bos_token_id=2,
    )
    if cfg.arch == "llama":
        return transformers.LlamaForCausalLM(transformers.LlamaConfig(**common))
    return transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**common))


def load_policy(cfg: ModelConfig, task_cfg: TaskConfig, task: Task) -> Policy:
    """The policy for a run: a local HF model when ``cfg.path`` is set, else the warm-started tiny model."""
    transformers.utils.logging.disable_progress_bar()  # one bar per shard is noise in a sweep log
    device = resolve_device(cfg.device)
    if cfg.path:
        model_dir = Path(cfg.path).expanduser()
        model, tokenizer = load_hf_cached(model_dir, cfg)
        chat = getattr(tokenizer, "chat_template", None) is not None
    else:
        model_dir = warmstart_model(cfg, task_cfg, task)
        model, tokenizer = load_hf_cached(model_dir, cfg)
        chat = False
    dtype = torch.bfloat16 if cfg.dtype == "bfloat16" else torch.float32
    model.to(device=device, dtype=dtype)
    model.config.use_cache = True
    return Policy(model=model, tokenizer=tokenizer, device=device, use_chat_template=chat)


_LOADED: OrderedDict[tuple, tuple[PreTrainedModel, PreTrainedTokenizerBase]] = OrderedDict()
LOADED_MODELS_KEPT = 2  # pristine models kept per process (one per model folder in use)


def load_hf_cached(model_dir: Path, cfg: ModelConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """:func:`_load_hf`, read from disk once per process: later calls get a deep copy of the pristine
    model (never one another trainer holds, so trials sharing a worker process cannot see each other's
    weights) and the shared, read-only tokenizer. The key holds the folder's file sizes and
    modification times, so a folder rewritten in place is read again."""
    key = (_folder_key(model_dir), cfg.trust_remote_code)
    if key not in _LOADED:
        _LOADED[key] = _load_hf(model_dir, cfg)
        while len(_LOADED) > LOADED_MODELS_KEPT:
            _LOADED.popitem(last=False)
    _LOADED.move_to_end(key)
    model, tokenizer = _LOADED[key]
    return copy.deepcopy(model), tokenizer


def _folder_key(model_dir: Path) -> tuple:
    try:
        files = sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(model_dir) if e.is_file())
    except OSError:
        files = []  # _load_hf reports the missing folder
    return (str(model_dir.resolve()), tuple(files))


def _load_hf(model_dir: Path, cfg: ModelConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    check_model_folder(model_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=cfg.trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            model_dir, trust_remote_code=cfg.trust_remote_code, dtype=torch.float32
        )
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"model.path: cannot load '{model_dir}': {first}") from None
    if tokenizer.eos_token_id is None:
        raise UserError(f"model.path: the tokenizer in '{model_dir}' defines no eos_token")
    return model, tokenizer


# --- warm-start -----------------------------------------------------------------------------------


def cache_root(cfg: ModelConfig) -> Path:
    return cfg.cache_root


def warmstart_key(cfg: ModelConfig, task_cfg: TaskConfig, task: Task) -> str:
    """Hash of everything that determines the warm-started weights."""
    model_part = {k: v for k, v in asdict(cfg).items() if k not in ("path", "device", "dtype", "cache_dir",
                                                                     "trust_remote_code", "compile")}
    payload = {
        "version": CACHE_VERSION, "model": model_part, "task": asdict(task_cfg),
        "alphabet": task.alphabet(), "seed": WARMSTART_SEED, "batch": WARMSTART_BATCH,
        "torch": torch.__version__.split("+")[0], "transformers": transformers.__version__,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def warmstart_model(cfg: ModelConfig, task_cfg: TaskConfig, task: Task) -> Path:
    """Path of the warm-started model for (cfg, task): the committed one when its recipe matches
    (``entropic_tune.warmstarts``), else the cached one, trained and saved on first use.

    Safe under concurrency: an exclusive file lock serialises builders, and the folder appears by an
    atomic rename only once complete, so a reader never sees a partial model.
    """
    committed = find_committed(cfg, task_cfg, task.alphabet())
    if committed is not None:  # the shipped base weights, the same on every machine (warmstarts.py)
        return committed
    root = cache_root(cfg)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"model.cache_dir: cannot create '{root}': {exc.strerror}") from None
    final = root / f"warmstart-{warmstart_key(cfg, task_cfg, task)}"
    if (final / "config.json").is_file():
        return final
    with open(root / f"{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / "config.json").is_file():  # another process built it while we waited
            return final
        tmp = Path(tempfile.mkdtemp(prefix=final.name + ".tmp-", dir=root))
        try:
            model, tokenizer = train_warmstart(cfg, task)
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def train_warmstart(cfg: ModelConfig, task: Task) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Supervised training of a fresh tiny model on worked solutions (cross-entropy on response tokens).

    A share ``cfg.warmstart_corrupt_prob`` of examples carry one wrong step, so the model learns the
    format and most steps but stays uncertain at the few tokens that decide correctness.
    """
    torch.manual_seed(WARMSTART_SEED)
    rng = random.Random(WARMSTART_SEED)
    tokenizer = build_char_tokenizer(task.alphabet())
    model = build_tiny_model(cfg, len(tokenizer))
    policy = Policy(model=model, tokenizer=tokenizer, device=torch.device("cpu"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.warmstart_lr, weight_decay=0.0)
    total = max(cfg.warmstart_steps, 1)
    # OneCycleLR's warm-up phase ends at step pct_start * total - 1 and divides by that length, which
    # is 0 at exactly 10 steps with 10 %: move the boundary there (every other count is unchanged)
    pct_start = 0.1 if total != 10 else 0.15
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg.warmstart_lr, total_steps=total, pct_start=pct_start
    )
    model.train()
    for _ in range(cfg.warmstart_steps):
        pairs = [task.warmstart_example(rng, rng.random() < cfg.warmstart_corrupt_prob)
                 for _ in range(WARMSTART_BATCH)]
        ids, labels_mask = _sft_batch(policy, pairs)  # (N, L), (N, L)
        logits = model(input_ids=ids, attention_mask=(ids != policy.pad_id).long()).logits
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (N, L-1, V)
        nll = -logp.gather(-1, ids[:, 1:, None]).squeeze(-1)  # (N, L-1)
        loss = aggregate(nll, labels_mask[:, 1:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    model.eval()
    return model, tokenizer


def _sft_batch(policy: Policy, pairs: list[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``prompt + response + EOS`` ids and the mask of response tokens (EOS included)."""
    rows, masks = [], []
    for prompt, response in pairs:
        p_ids = policy.encode_prompt(prompt)
        r_ids = list(policy.tokenizer(response, add_special_tokens=False)["input_ids"]) + [policy.eos_id]
        rows.append(p_ids + r_ids)
        masks.append([0] * len(p_ids) + [1] * len(r_ids))
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), policy.pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (row, m) in enumerate(zip(rows, masks, strict=True)):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(m)] = torch.tensor(m, dtype=torch.bool)
    return ids, mask
