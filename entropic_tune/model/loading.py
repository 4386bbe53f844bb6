"""The policy of a run: a local Hugging Face model, or the warm-started built-in model.

A model folder is read from disk once per process (:func:`load_hf_cached`, at most
:data:`LOADED_MODELS_KEPT` pristine models kept); every policy gets its own deep copy, so trials
that share a worker process never share weights.
"""

from __future__ import annotations

import copy
import os
from collections import OrderedDict
from pathlib import Path

import torch
import transformers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from ..config import ModelConfig, TaskConfig
from ..errors import UserError
from ..tasks import Task
from .limits import check_model_folder
from .policy import Policy, has_lora, resolve_device, use_chat_template
from .warmstarts import warmstart_model


def load_policy(cfg: ModelConfig, task_cfg: TaskConfig, task: Task, seed: int = 0) -> Policy:
    """The policy for a run: a local HF model when ``cfg.path`` is set, else the warm-started tiny model.
    ``seed`` (``train.seed``) draws the LoRA adapters' initial weights, if any."""
    transformers.utils.logging.disable_progress_bar()  # one bar per shard is noise in a sweep log
    device = resolve_device(cfg.device)
    if cfg.path:
        model_dir = Path(cfg.path).expanduser()
        model, tokenizer = load_hf_cached(model_dir, cfg)
        chat = use_chat_template(task_cfg, tokenizer, model_dir)
    else:
        model_dir = warmstart_model(cfg, task_cfg, task)
        model, tokenizer = load_hf_cached(model_dir, cfg)
        chat = False
    dtype = torch.bfloat16 if cfg.dtype == "bfloat16" else torch.float32
    model.to(device=device, dtype=dtype)
    model.config.use_cache = True
    if cfg.gradient_checkpointing:  # active in train mode only: the update's forward, not sampling
        enable = getattr(model, "activation_checkpointing_enable", None)  # the name from transformers 5.x
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.lora_r:
        model = add_lora(model, cfg, seed)
    return Policy(model=model, tokenizer=tokenizer, device=device, use_chat_template=chat,
                  logits_chunk=cfg.chunk_tokens(model.config.vocab_size), system_prompt=task_cfg.system_prompt)


def add_lora(model: PreTrainedModel, cfg: ModelConfig, seed: int) -> PreTrainedModel:
    """``model`` wrapped by PEFT with LoRA adapters (``model.lora_*``): only the adapters train.

    Each targeted linear layer ``W`` becomes ``W x + (lora_alpha / lora_r) B A x`` with ``A`` (r, in)
    random and ``B`` (out, r) zero at the start, so the wrapped model computes the base model's
    outputs until the first update. ``model.disable_adapter()`` gives the base model back (the KL
    reference). Adapters of a bf16 model are kept in fp32 (PEFT's ``autocast_adapter_dtype``). ``A`` is
    drawn from its own stream seeded by ``seed``, so a run's adapters do not depend on what the process
    did before (the global RNG is left as it was).
    """
    try:
        import peft
    except ImportError:
        raise UserError("model.lora_r: LoRA needs the 'peft' package: pip install 'entropic-tune[lora]'") from None
    lora = peft.LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                           target_modules=cfg.lora_modules, task_type="CAUSAL_LM")
    devices = [model.device] if model.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            wrapped = peft.get_peft_model(model, lora)
    except ValueError as exc:  # e.g. no module of that name
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"model.lora_target_modules: {first}") from None
    return wrapped


def reference_model(model: torch.nn.Module) -> torch.nn.Module:
    """The KL reference (``loss.kl_coef``) for a policy about to train: the model itself under LoRA
    (its base weights never change; the caller disables the adapters), else a frozen copy of it."""
    if has_lora(model):
        return model
    ref = copy.deepcopy(model).eval()
    ref.requires_grad_(False)
    return ref


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
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # its load report of a mismatch is a table: one line below
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=cfg.trust_remote_code)
        model, info = AutoModelForCausalLM.from_pretrained(
            model_dir, trust_remote_code=cfg.trust_remote_code, dtype=torch.float32, output_loading_info=True,
            ignore_mismatched_sizes=True,  # reported in `info` (refused below) instead of a multi-line error
        )
    except (OSError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"model.path: cannot load '{model_dir}': {first}") from None
    finally:
        transformers.logging.set_verbosity(verbosity)
    # config.json and the weights disagree (another layer count, a renamed module): transformers would
    # start the missing weights at random and drop the unexpected ones, with a warning only.
    for kind, keys, hint in (
            ("missing from", info.get("missing_keys"), "num_hidden_layers"),
            ("not used by", info.get("unexpected_keys"), "num_hidden_layers"),
            ("of another shape in", info.get("mismatched_keys"), "hidden_size, intermediate_size, vocab_size")):
        if keys:
            names = sorted(str(k if isinstance(k, str) else k[0]) for k in keys)
            raise UserError(f"model.path: '{model_dir}': {len(names)} weight(s) {kind} the model its config.json "
                            f"describes (e.g. {names[0]}); config.json does not match the weights (check {hint})")
    if tokenizer.eos_token_id is None:
        raise UserError(f"model.path: the tokenizer in '{model_dir}' defines no eos_token")
    return model, tokenizer
