"""The policy: a transformers causal LM, its tokenizer and the device, and the eager forward.

Two sources, one interface (:class:`Policy`):
- the built-in tiny model: a Qwen2 (or Llama) causal LM built from a config with random init and a
  character-level tokenizer over the task's alphabet (:func:`build_tiny_model`,
  :func:`build_char_tokenizer`), warm-started by :mod:`entropic_tune.model.warmstarts`;
- any local Hugging Face model directory (``model.path``) with its own tokenizer and chat template,
  read by :mod:`entropic_tune.model.loading`.

:func:`logprobs_and_entropy` is the one eager forward of the update (compiled whole by
:mod:`entropic_tune.model.compiling`, chunked over the vocabulary's logits by
:mod:`entropic_tune.model.lm_head`); with ``lm_head`` the lowest modules of the model room.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..config import ModelConfig, TaskConfig
from ..errors import UserError
from .lm_head import chunked_stats, head_and_trunk, token_stats

PAD, EOS, BOS = "<pad>", "<eos>", "<bos>"


@dataclass
class Policy:
    """A causal LM with its tokenizer, placed on a device."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    use_chat_template: bool = False
    system_prompt: str | None = None
    """``task.system_prompt``: a system message (chat template) or text before the prompt."""
    decoder: object | None = None
    """A :class:`~entropic_tune.model.decoding.CompiledDecoder` when ``model.compile`` compiles decoding."""
    logprob_forward: Callable | None = None
    """The compiled :func:`logprobs_and_entropy`, for the update's forward."""
    logits_chunk: int = 0
    """Response tokens whose logits are held at once by the log-prob/entropy forward (``model.logits_chunk``;
    0 = all of them)."""

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
            system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
            messages = [*system, {"role": "user", "content": prompt}]
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        if self.system_prompt:  # no template: the system text, a blank line, then the prompt
            prompt = f"{self.system_prompt}\n\n{prompt}"
        ids = list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        bos = self.tokenizer.bos_token_id
        return [int(bos)] + ids if bos is not None else ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def has_lora(model: torch.nn.Module) -> bool:
    """True for a PEFT-wrapped model (``model.lora_r > 0``)."""
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters the optimizer updates: every one, or only the LoRA adapters' under PEFT."""
    return [p for p in model.parameters() if p.requires_grad]


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
    # one piece per character, newlines included ("." alone left "\n\n" as one unknown piece)
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
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


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that start at 0 at each row's first real token (left padding)."""
    return (attention_mask.cumsum(-1) - 1).clamp_min(0)


def logprobs_and_entropy(model: torch.nn.Module, ids: torch.Tensor, attn: torch.Tensor, prompt_len: int,
                         temperature: float, device_type: str, amp: bool,
                         chunk: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward over ``ids`` (n, P + R): the response tokens' log-probs and entropies (n, R) at T.

    ``amp``: bf16 autocast around the model call (as :attr:`Policy.autocast`); the log-softmax and the
    entropy run in fp32 (also for bf16 parameters). ``chunk`` (``model.logits_chunk``): when the batch
    has more than ``chunk`` response tokens, the trunk runs alone and the LM head, log-softmax and
    entropy run ``chunk`` tokens at a time, recomputed in the backward
    (:func:`entropic_tune.model.lm_head.chunked_stats`), so the (n, R, V) logits never exist; otherwise
    (and for ``chunk = 0`` or a model whose logits are not ``head(last hidden state)``) the model's own
    forward gives the logits, as before chunking existed, bit for bit. Both paths give the same values
    up to float rounding (``tests/test_lm_head.py``). A pure function of its inputs, so
    ``model.compile`` can compile it whole.
    """
    target = ids[:, prompt_len:]  # (n, R)
    parts = head_and_trunk(model) if 0 < chunk < target.numel() else None
    with torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=amp):
        if parts is not None:
            trunk, head = parts
            hidden = trunk(input_ids=ids, attention_mask=attn, position_ids=positions(attn),
                           use_cache=False).last_hidden_state  # (n, P + R, E)
            return chunked_stats(hidden[:, prompt_len - 1 : -1], head, target, temperature, chunk)
        logits = model(input_ids=ids, attention_mask=attn, position_ids=positions(attn), use_cache=False).logits
    return token_stats(logits[:, prompt_len - 1 : -1], target, temperature)


def use_chat_template(task_cfg: TaskConfig, tokenizer: PreTrainedTokenizerBase, where: Path | str) -> bool:
    """Whether prompts go through the tokenizer's chat template (``task.chat_template``): unset = when
    it has one; true with none is a one-line error."""
    has = getattr(tokenizer, "chat_template", None) is not None
    if task_cfg.chat_template is None:
        return has
    if task_cfg.chat_template and not has:
        raise UserError(f"task.chat_template: true, but the tokenizer in '{where}' has no chat template; "
                        "allowed for this model: false, or leave it unset")
    return bool(task_cfg.chat_template)
