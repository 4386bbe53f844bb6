"""Compiled decoding (``model.compile``): a static KV cache and one compiled function per token.

The eager sampler (:func:`entropic_tune.engines.native.rollout.generate`) calls transformers' forward once per new
token; at the built-in model's size that forward is mostly per-op overhead (dozens of small kernels,
a ``torch.cat`` of the KV cache per layer, the CPU flash-attention kernel for a single query row).
Here the decoding step of a Qwen2/Llama-style decoder is written as one pure function of the weights
and a preallocated cache, and compiled once (inductor fuses the norms, rotary embedding, attention
and sampling into a few loops around the matmuls; on CUDA, ``mode="reduce-overhead"`` also replays
it as a CUDA graph). The prompt's prefill still runs through transformers' own forward (eager), so
the first token's logits are exactly today's.

Sampling is the exponential race ``argmax(softmax(logits / T) / E)``, ``E ~ Exp(1)`` per row and
vocabulary entry, which is exactly how ``torch.multinomial`` draws one sample: the draws come from
the run's generator outside the compiled region, one (N, V) block per token as the eager loop
consumes them, so ``model.compile: on`` samples the same distribution as ``off`` (and as
``model.generate``) and, for the same seed, the same tokens except where two candidates tie within
float rounding (the compiled logits differ from transformers' in the last bits). Greedy uses
``E = 1``.

Shapes: ``N`` rows, ``P`` padded prompt width, ``L`` cache length (``P + max_new`` rounded up to
:data:`CACHE_BUCKET`, so prompt widths share a compiled graph), ``V`` vocabulary, ``Hk`` KV heads,
``D`` head dim, ``n_layers`` decoder layers.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .policy import model_call_kwargs, output_cache

CACHE_BUCKET = 32  # cache lengths are rounded up to a multiple of this (fewer distinct graphs)
SUPPORTED_TYPES = ("qwen2", "llama")
STATIC_ROPE = ("default", "linear", "llama3", "yarn")  # inv_freq fixed after init (no dynamic update)


def unsupported_reason(model: torch.nn.Module) -> str | None:
    """Why this model cannot use the compiled decoder (None when it can)."""
    if hasattr(model, "peft_config"):  # the step reads the base weights only; the adapters would be lost
        return "LoRA adapters (model.lora_r)"
    cfg = model.config
    if cfg.model_type not in SUPPORTED_TYPES:
        return f"model type '{cfg.model_type}' (supported: {', '.join(SUPPORTED_TYPES)})"
    if getattr(cfg, "hidden_act", "silu") != "silu":
        return f"activation '{cfg.hidden_act}' (supported: silu)"
    if any(t != "full_attention" for t in getattr(cfg, "layer_types", None) or ()):
        return "sliding-window layers"
    rope = (getattr(cfg, "rope_parameters", None) or {}).get("rope_type", "default")
    if rope not in STATIC_ROPE:
        return f"rope type '{rope}' (supported: {', '.join(STATIC_ROPE)})"
    if getattr(cfg, "mlp_bias", False):
        return "MLP biases"
    return None


@dataclass(frozen=True)
class _Spec:
    """The architecture constants the step is specialised on (Python ints: part of the graph)."""

    n_layers: int
    heads: int
    kv_heads: int
    head_dim: int
    eps: float

    @property
    def groups(self) -> int:
        return self.heads // self.kv_heads


def _spec(model: torch.nn.Module) -> _Spec:
    cfg = model.config
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return _Spec(cfg.num_hidden_layers, heads, cfg.num_key_value_heads, head_dim, float(cfg.rms_norm_eps))


def _layer_parts(model: torch.nn.Module) -> list[dict[str, object]]:
    """Per layer, the tensors of :func:`step_logits`, with the q/k/v and gate/up projections still as
    the lists of weights that :meth:`CompiledDecoder.weights` concatenates."""
    parts = []
    for layer in model.model.layers:
        att, mlp = layer.self_attn, layer.mlp
        parts.append({
            "ln1": layer.input_layernorm.weight, "ln2": layer.post_attention_layernorm.weight,
            "w_qkv": [att.q_proj.weight, att.k_proj.weight, att.v_proj.weight],
            "b_qkv": None if att.q_proj.bias is None else [att.q_proj.bias, att.k_proj.bias, att.v_proj.bias],
            "wo": att.o_proj.weight, "bo": att.o_proj.bias,
            "w_gate_up": [mlp.gate_proj.weight, mlp.up_proj.weight], "wd": mlp.down_proj.weight,
        })
    return parts


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """transformers' RMSNorm: normalise in fp32, scale by the weight in the input dtype."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding ``x cos + rotate_half(x) sin``; x (N, h, D), cos/sin (N, 1, D)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def step_logits(weights: tuple, rope: torch.Tensor, kv: torch.Tensor, token: torch.Tensor, pos: torch.Tensor, cur: torch.Tensor,
                key_valid: torch.Tensor, *, spec: _Spec) -> tuple[torch.Tensor, torch.Tensor]:
    """The decoder's forward for one new token per row: ``(logits (N, V) fp32, new_kv)``.

    weights: :meth:`CompiledDecoder.weights`; rope (2, L, D): :func:`rope_table`;
    kv (n_layers, 2, N, Hk, L, D), read only: slots ``< cur`` hold the keys/values so far; token (N,) long, the token fed now; pos (N,) long, its position id; cur ()
    long, its cache slot; key_valid (N, L) bool, False at prompt padding.
    new_kv (n_layers, 2, N, Hk, D): this token's keys/values, for the caller to write at slot ``cur``.
    Attention ``softmax(q k^T / sqrt(D) + mask) v`` over the valid slots ``< cur`` and the token itself;
    the new key is a separate term rather than written into ``kv`` first, because writing into a
    view of a graph input makes inductor copy the whole cache every step.
    """
    embed, final_norm, lm_head, layers = weights
    n, scale = token.shape[0], spec.head_dim**-0.5
    slots = torch.arange(kv.shape[4], device=kv.device)
    allowed = key_valid & (slots < cur)  # (N, L)
    bias = torch.zeros(allowed.shape, dtype=torch.float32, device=kv.device).masked_fill(~allowed, -math.inf)
    h = embed[token]  # (N, E)
    cos, sin = rope[0][pos][:, None, :].to(h.dtype), rope[1][pos][:, None, :].to(h.dtype)  # (N, 1, D)
    new_kv = []
    q_width, kv_width = spec.heads * spec.head_dim, spec.kv_heads * spec.head_dim
    for i, (ln1, w_qkv, b_qkv, wo, bo, ln2, w_gate_up, wd) in enumerate(layers):
        qkv = F.linear(_rms_norm(h, ln1, spec.eps), w_qkv, b_qkv)  # (N, (H + 2 Hk) D)
        q, k, v = qkv.split((q_width, kv_width, kv_width), dim=-1)
        q = _rotate(q.reshape(n, spec.heads, spec.head_dim), cos, sin)  # (N, H, D)
        k = _rotate(k.reshape(n, spec.kv_heads, spec.head_dim), cos, sin)  # (N, Hk, D)
        v = v.reshape(n, spec.kv_heads, spec.head_dim)
        new_kv.append(torch.stack((k, v)).to(kv.dtype))
        qg = q.view(n, spec.kv_heads, spec.groups, spec.head_dim)  # GQA: query groups share a KV head
        past = torch.matmul(qg, kv[i, 0].transpose(-1, -2)).float() * scale + bias[:, None, None, :]  # (N, Hk, g, L)
        own = (qg * k[:, :, None, :]).sum(-1, keepdim=True).float() * scale  # (N, Hk, g, 1)
        probs = torch.softmax(torch.cat((past, own), dim=-1), dim=-1).to(v.dtype)  # (N, Hk, g, L + 1)
        att = torch.matmul(probs[..., :-1], kv[i, 1]) + probs[..., -1:] * v[:, :, None, :]  # (N, Hk, g, D)
        h = h + F.linear(att.reshape(n, spec.heads * spec.head_dim), wo, bo)
        gate, up = F.linear(_rms_norm(h, ln2, spec.eps), w_gate_up).chunk(2, dim=-1)  # (N, I) each
        h = h + F.linear(F.silu(gate) * up, wd)
    logits = F.linear(_rms_norm(h, final_norm, spec.eps), lm_head).float()  # (N, V)
    return logits, torch.stack(new_kv)


def decode_step(weights: tuple, rope: torch.Tensor, kv: torch.Tensor, token: torch.Tensor, pos: torch.Tensor,
                cur: torch.Tensor, key_valid: torch.Tensor, noise: torch.Tensor, temp: torch.Tensor,
                finished: torch.Tensor, *, spec: _Spec, pad_id: int, eos_id: int) -> tuple[torch.Tensor, ...]:
    """:func:`step_logits` and the sampling of the next token, one compiled graph.

    noise (N, V): Exp(1) draws (ones for greedy); temp () fp32, T; finished (N,) bool, rows that
    produced EOS before this step. Returns ``(next_token (N,), finished_after (N,), new_kv, logp (N,),
    entropy (N,))``: rows already finished get ``pad_id``; ``logp`` is the sampled token's log-prob
    and ``entropy`` the full-vocabulary entropy, both at T (the behaviour statistics the training
    forward would compute, up to float rounding). ``argmax(softmax(logits / T) / noise)`` is how
    ``torch.multinomial`` draws one sample (an exponential race), so with the same draws the token is
    the eager sampler's unless two candidates tie within float rounding.
    """
    logits, new_kv = step_logits(weights, rope, kv, token, pos, cur, key_valid, spec=spec)
    z = logits / temp  # (N, V)
    nxt = (torch.softmax(z, dim=-1) / noise).argmax(-1)
    nxt = nxt.masked_fill(finished, pad_id)
    logp, ent = token_statistics(z, nxt)
    return nxt, finished | (nxt == eos_id), new_kv, logp, ent


def token_statistics(z: torch.Tensor, token: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log softmax(z)[token], entropy of softmax(z))`` for z = logits / T (N, V) fp32, as
    :func:`~entropic_tune.model.policy.logprobs_and_entropy` computes them (``logsumexp(z) - sum p z``)."""
    logp = torch.log_softmax(z, -1).gather(-1, token[:, None]).squeeze(-1)
    logz = torch.logsumexp(z, dim=-1, keepdim=True)
    return logp, logz.squeeze(-1) - (torch.exp(z - logz) * z).sum(dim=-1)


def rope_table(model: torch.nn.Module, length: int, device: torch.device) -> torch.Tensor:
    """``(cos, sin)`` of the rotary embedding at positions ``0..length-1``, (2, L, D) fp32: computed
    once per call as transformers does per token (``position * inv_freq`` in fp32), so the compiled
    step gathers them instead of evaluating cos/sin inside its fused loops (where inductor would
    recompute them for every attended slot)."""
    rotary = model.model.rotary_emb
    freqs = torch.arange(length, device=device).float()[:, None] * rotary.inv_freq.float().to(device)[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)  # (L, D)
    return torch.stack((emb.cos(), emb.sin())) * rotary.attention_scaling


def cache_length(width: int, max_new_tokens: int) -> int:
    return CACHE_BUCKET * math.ceil((width + max_new_tokens) / CACHE_BUCKET)


class CompiledDecoder:
    """The compiled decoding step of one architecture, for up to ``rows`` sequences at a time.

    The graph is specialised on the architecture, not on the weights (they are inputs) nor on the
    number of rows or the cache length: both are marked dynamic (:func:`_dynamic`), so one graph
    serves every batch width and prompt length of a run (rollout, evaluation, the large final
    evaluation) and every model object of that architecture in the process (:func:`get_decoder`
    keeps one per (architecture, rows, mode); a worker reused across trials keeps it). Calls with
    more than ``rows`` rows run in chunks of ``rows``, the last one as wide as what is left (padded
    by one row only when a single row would be left: a dimension of size 1 is specialised by
    torch.compile). ``mode`` is torch.compile's mode (``reduce-overhead`` on CUDA, which records one
    CUDA graph per shape from the one compiled graph).
    """

    def __init__(self, spec: _Spec, rows: int, pad_id: int, eos_id: int, mode: str | None = None,
                 compiled: bool = True) -> None:
        self.spec, self.rows = spec, rows
        step = functools.partial(decode_step, spec=spec, pad_id=pad_id, eos_id=eos_id)
        # compiled=False runs the same step eagerly (tests compare it with transformers' forward).
        self.step = torch.compile(step, fullgraph=True, mode=mode) if compiled else step
        self.compiled = compiled
        self._buffers: dict[tuple, list[torch.Tensor]] = {}
        self._fused: dict[tuple, torch.Tensor] = {}
        self._ropes: dict[tuple, torch.Tensor] = {}

    def weights(self, model: torch.nn.Module) -> tuple:
        """``(embed, final_norm, lm_head, layers)``, each layer ``(ln1, w_qkv, b_qkv, wo, bo, ln2, w_gate_up,
        w_down)``: the q/k/v and gate/up projections concatenated, so a step makes 4 matmul calls per
        layer instead of 7 (at this size each call costs more in overhead than in arithmetic). The
        concatenations are refreshed from the current weights at every sampling call (the optimizer
        changes them in between), into buffers kept across calls (fixed addresses for a CUDA graph)."""
        layers = []
        for i, p in enumerate(_layer_parts(model)):
            fused = {}
            for name in ("w_qkv", "b_qkv", "w_gate_up"):
                if p[name] is None:
                    fused[name] = None
                    continue
                buf = self._fused.get((i, name))
                if buf is None:
                    buf = self._fused[(i, name)] = _static(torch.cat(p[name]))
                else:
                    torch.cat(p[name], out=buf)
                fused[name] = buf
            layers.append((p["ln1"], fused["w_qkv"], fused["b_qkv"], p["wo"], p["bo"], p["ln2"], fused["w_gate_up"],
                           p["wd"]))
        core = model.model
        return core.embed_tokens.weight, core.norm.weight, model.lm_head.weight, tuple(layers)

    def rope(self, model: torch.nn.Module, length: int, device: torch.device) -> torch.Tensor:
        """:func:`rope_table`, built once per length (inv_freq is fixed for the supported rope types)."""
        rotary = model.model.rotary_emb
        key = (length, device, float(rotary.attention_scaling), tuple(rotary.inv_freq.tolist()))
        if key not in self._ropes:
            self._ropes[key] = _static(rope_table(model, length, device))
        return self._ropes[key]

    def caches(self, sizes: list[int], length: int, dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
        """One (n_layers, 2, rows_c, Hk, L, D) cache per chunk of ``sizes[c]`` rows, zero-initialised
        once per shape, then reused: stale slots are always masked out (exp(-inf) = 0 times a finite
        value), so reuse needs no clearing (and on CUDA the addresses stay fixed for the CUDA graph)."""
        s, out = self.spec, []
        for c, size in enumerate(sizes):
            have = self._buffers.setdefault((length, dtype, device, size), [])
            index = sum(1 for earlier in sizes[:c] if earlier == size)
            while len(have) <= index:
                have.append(_static(torch.zeros((s.n_layers, 2, size, s.kv_heads, length, s.head_dim), dtype=dtype,
                                                device=device)))
            out.append(have[index])
        return out


def _dynamic(weights: tuple, rope: torch.Tensor, kv: torch.Tensor, token: torch.Tensor, pos: torch.Tensor,
             cur: torch.Tensor, key_valid: torch.Tensor, noise: torch.Tensor, temp: torch.Tensor,
             finished: torch.Tensor) -> tuple:
    """:func:`decode_step`'s inputs with the number of rows and the cache length marked dynamic, so the
    first compile makes them symbolic and later calls of other widths or lengths reuse the graph
    (``maybe_mark_dynamic``: a hint, never an error if torch.compile must specialise one)."""
    mark = torch._dynamo.maybe_mark_dynamic
    for t, dims in ((kv, (2, 4)), (token, (0,)), (pos, (0,)), (key_valid, (0, 1)), (noise, (0,)),
                    (finished, (0,)), (rope, (1,))):
        for d in dims:
            mark(t, d)
    return weights, rope, kv, token, pos, cur, key_valid, noise, temp, finished


def _static(t: torch.Tensor) -> torch.Tensor:
    """Tell torch.compile the tensor keeps its address across calls (a CUDA graph then reads it in place
    instead of copying it into the graph's own input buffer at every replay)."""
    if t.device.type == "cuda":
        torch._dynamo.mark_static_address(t)
    return t


_DECODERS: dict[tuple, CompiledDecoder] = {}


def get_decoder(model: torch.nn.Module, rows: int, pad_id: int, eos_id: int, mode: str | None = None,
                compiled: bool = True) -> CompiledDecoder:
    """The process's decoder for this architecture and row count (built on first use)."""
    spec = _spec(model)
    key = (spec, rows, pad_id, eos_id, mode, compiled)
    if key not in _DECODERS:
        _DECODERS[key] = CompiledDecoder(spec, rows, pad_id, eos_id, mode, compiled)
    return _DECODERS[key]


def sample(decoder: CompiledDecoder, model: torch.nn.Module, ids: torch.Tensor, prompt_attn: torch.Tensor,
           pos0: torch.Tensor, max_new_tokens: int, temperature: float, generator: torch.Generator | None,
           greedy: bool, pad_id: int, eos_id: int, check_every: int) -> tuple:
    """The token loop with the compiled step: ``(tokens (N, max_new), alive (N, max_new), steps run,
    generator states before each draw, logps (N, max_new), entropies (N, max_new))`` (the caller trims
    and rewinds as for the eager loop; logps/entropies: :func:`token_statistics` of each token).

    ids/prompt_attn (N, P) left-padded prompts, pos0 (N, P) their position ids. The prefill is
    transformers' forward (eager, exactly the eager sampler's), its keys/values go into the static
    caches, then each further token is one compiled :func:`decode_step` per chunk of ``rows``. The
    random stream is consumed as by the eager loop: one (N, V) draw per token.
    """
    n, width = ids.shape
    rng_states: list[torch.Tensor] = []

    def draw(like: torch.Tensor) -> torch.Tensor | None:  # (N, V) Exp(1), as torch.multinomial draws them
        if greedy:
            return None
        if check_every > 1 and generator is not None:
            rng_states.append(generator.get_state())
        return torch.empty_like(like).exponential_(generator=generator)

    run = _prefill(decoder, model, ids, prompt_attn, pos0, max_new_tokens, temperature, draw, eos_id, pad_id)
    steps = max_new_tokens
    chunk = run.chunks
    for t in range(1, max_new_tokens):
        if t % check_every == 0 and bool(run.finished.all()):
            steps = t
            break
        run.pos += 1
        run.cur += 1
        drawn = draw(run.noise[:n])
        if drawn is not None:
            run.noise[:n] = drawn
        before = run.finished
        run.alive[:, t] = ~before
        if run.cuda:  # a new CUDA-graph iteration: the previous replay's outputs were all consumed
            torch.compiler.cudagraph_mark_step_begin()
        parts = [decoder.step(*_dynamic(run.weights, run.rope, run.kv[c], run.token[r], run.pos[r], run.cur,
                                        run.key_valid[r], run.noise[r], run.temp, before[r]))
                 for c, r in enumerate(chunk)]
        for c, part in enumerate(parts):
            run.kv[c][:, :, :, :, width + t - 1] = part[2]  # (n_layers, 2, rows, Hk, D) into slot cur
        run.token, run.finished, logp, ent = (torch.cat([p[i] for p in parts]) for i in (0, 1, 3, 4))
        run.stats[0, :, t], run.stats[1, :, t] = logp, ent
        run.tokens[:, t] = run.token
    return run.tokens[:n], run.alive[:n], steps, rng_states, run.stats[0, :n], run.stats[1, :n]


@dataclass
class _Run:
    """The state of one :func:`sample` call; a row past N pads the last chunk (finished from the start)."""

    tokens: torch.Tensor  # (N', max_new) long
    alive: torch.Tensor  # (N', max_new) bool
    stats: torch.Tensor  # (2, N', max_new) fp32: logp, entropy
    token: torch.Tensor  # (N',) the token fed next
    finished: torch.Tensor  # (N',) bool
    noise: torch.Tensor  # (N', V); ones for greedy and padding rows
    pos: torch.Tensor  # (N',) position id of the token fed next
    cur: torch.Tensor  # () its cache slot
    kv: list[torch.Tensor]  # per chunk (n_layers, 2, rows_c, Hk, L, D)
    chunks: list[slice]  # the rows of each chunk
    key_valid: torch.Tensor  # (N', L) bool
    weights: tuple
    rope: torch.Tensor
    temp: torch.Tensor
    cuda: bool


def _prefill(decoder: CompiledDecoder, model: torch.nn.Module, ids: torch.Tensor, prompt_attn: torch.Tensor,
             pos0: torch.Tensor, max_new_tokens: int, temperature: float, draw: Callable, eos_id: int,
             pad_id: int) -> _Run:
    """transformers' forward over the prompts, the first token exactly as the eager loop picks it, and
    the static caches and loop state for the compiled steps."""
    n, width = ids.shape
    device, rows = ids.device, decoder.rows
    padded = max(n + (n % rows == 1), 2)  # no chunk of one row (the last one gets a padding row)
    slices = [slice(lo, min(lo + rows, padded)) for lo in range(0, padded, rows)]
    length = cache_length(width, max_new_tokens)
    cache_kw = next(iter(model_call_kwargs(model, None)))
    out = model(input_ids=ids, attention_mask=prompt_attn, position_ids=pos0, use_cache=True, logits_to_keep=1,
                **{cache_kw: None})
    logits = out.logits[:, -1].float()  # (N, V)
    first = draw(logits)
    token = logits.argmax(-1) if first is None else (torch.softmax(logits / temperature, dim=-1) / first).argmax(-1)
    tokens = torch.full((padded, max_new_tokens), pad_id, dtype=torch.long, device=device)
    alive = torch.zeros((padded, max_new_tokens), dtype=torch.bool, device=device)
    stats = torch.zeros((2, padded, max_new_tokens), dtype=torch.float32, device=device)
    stats[0, :n, 0], stats[1, :n, 0] = token_statistics(logits / temperature, token)
    tokens[:n, 0], alive[:n, 0] = token, True
    finished = torch.ones(padded, dtype=torch.bool, device=device)
    finished[:n] = token == eos_id
    key_valid = torch.ones((padded, length), dtype=torch.bool, device=device)
    key_valid[:n, :width] = prompt_attn.bool()
    key_valid[n:, :width] = prompt_attn[:1].bool()  # padding rows: any finite attention will do
    pos = torch.zeros(padded, dtype=torch.long, device=device)
    pos[:n] = pos0[:, -1]
    return _Run(tokens, alive, stats, tokens[:, 0].clone(), finished,
                torch.ones_like(logits[:1]).expand(padded, -1).contiguous(), pos,
                torch.tensor(width - 1, dtype=torch.long, device=device),
                _fill_caches(decoder, output_cache(out), slices, length, n), slices, key_valid, decoder.weights(model),
                decoder.rope(model, length, device), torch.tensor(temperature, dtype=torch.float32, device=device),
                device.type == "cuda")


def _fill_caches(decoder: CompiledDecoder, prefill: object, slices: list[slice], length: int,
                 n: int) -> list[torch.Tensor]:
    """Copy the prefill's keys/values (transformers' cache, (N, Hk, P, D) per layer) into the chunks'
    static caches; a padding row gets zeros."""
    first = prefill.layers[0].keys
    width = first.shape[2]
    kv = decoder.caches([r.stop - r.start for r in slices], length, first.dtype, first.device)
    for c, cache in enumerate(kv):
        lo, hi = slices[c].start, min(slices[c].stop, n)
        cache[:, :, hi - lo:, :, :width] = 0
        for i, layer in enumerate(prefill.layers):
            cache[i, 0, : hi - lo, :, :width] = layer.keys[lo:hi]
            cache[i, 1, : hi - lo, :, :width] = layer.values[lo:hi]
    return kv
