"""The LM head and the two per-token statistics of the update, over chunks of tokens (``model.logits_chunk``).

For every response token ``t`` the trainer needs ``log p_T(y_t)`` (the log-prob of the sampled token
under ``softmax(logits / T)``) and the full-vocabulary entropy ``h_t`` of the same distribution
(METHOD.md 1: :func:`entropic_tune.metrics.token_entropy`, exact, never sampled). Computed at once,
the logits of a batch are an ``(n, R, V)`` fp32 tensor plus the log-softmax, ``p`` and ``z`` of the
same size and their gradients: with Qwen2.5's ``V = 151,936``, ``R = 1,024`` and ``n = 8`` each is
about 5 GB.

Here the flattened ``(n R, E)`` hidden states go through the head ``c`` tokens at a time: a chunk's
``(c, V)`` logits are upcast to fp32, reduced to ``(c,)`` log-probs and entropies, and freed. Under
autograd each chunk is an activation checkpoint (``torch.utils.checkpoint``, non-reentrant): only
its ``(c, E)`` input is kept, and the backward recomputes the chunk's logits before differentiating
them, so the peak holds the logits of one chunk, not of the batch (BENCHMARKS.md: "Memory of the
log-prob/entropy forward and backward"). The values equal the unchunked ones up to float rounding
(the same per-token formulas; the head's matmul over fewer rows may round differently, and its weight
gradient is summed over chunks).
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from ..metrics import token_entropy

LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier_scale", "logits_scaling")
"""Config attributes of architectures that change the logits after the head (Gemma's soft-capping,
Cohere's scale, ...): such models keep the unchunked path, which runs the model's own forward."""


def head_and_trunk(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """``(trunk, head)`` of a transformers causal LM whose logits are exactly ``head(trunk(...)[0])``
    (the last hidden state after the final norm, then the output projection), or None when the model
    does not say so: no ``get_decoder``/``get_output_embeddings``, or a logit transform in its config.
    Works through a PEFT wrapper (its attribute lookups reach the wrapped model)."""
    config = getattr(model, "config", None)
    if config is None or any(getattr(config, key, None) not in (None, 1, 1.0) for key in LOGIT_TRANSFORMS):
        return None
    try:
        trunk, head = model.get_decoder(), model.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    if trunk is None or head is None or trunk is model:
        return None
    return trunk, head


def token_stats(logits: torch.Tensor, target: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log softmax(z)[target], token_entropy(z))`` with ``z = logits.float() / T``: logits (..., V),
    target (...) long -> two (...) fp32 tensors. The one formula of both statistics, chunked or not."""
    z = logits.float() / temperature  # (..., V) fp32 even for bf16 logits
    return torch.log_softmax(z, -1).gather(-1, target[..., None]).squeeze(-1), token_entropy(z)


def chunked_stats(hidden: torch.Tensor, head: torch.nn.Module, target: torch.Tensor, temperature: float,
                  chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`token_stats` of ``head(hidden)`` computed ``chunk`` tokens at a time.

    hidden (n, R, E): the trunk's last hidden states at the positions that predict the response
    tokens; target (n, R) long: those tokens. Returns ``(logp, entropy)``, both (n, R) fp32. With grad
    enabled each chunk is recomputed in the backward (module docstring), so at most one chunk's
    ``(chunk, V)`` logits and softmax temporaries are alive at a time.
    """
    n, r, e = hidden.shape
    flat, flat_target = hidden.reshape(n * r, e), target.reshape(n * r)

    def one(h: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return token_stats(head(h), t, temperature)

    grad = torch.is_grad_enabled()
    logps, ents = [], []
    for start in range(0, n * r, chunk):
        h, t = flat[start : start + chunk], flat_target[start : start + chunk]
        logp, ent = checkpoint(one, h, t, use_reentrant=False) if grad else one(h, t)
        logps.append(logp)
        ents.append(ent)
    return torch.cat(logps).view(n, r), torch.cat(ents).view(n, r)
