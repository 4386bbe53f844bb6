"""model.compile (issue 15): the static-cache decoder gives transformers' logits and the eager sampler's
tokens; compiled, it samples the same distribution as ``model.generate``; a short trainer run with
everything compiled has the eager run's metrics within float tolerance; ``auto`` resolves as
documented. The eager checks run the decoder's step without compiling it (seconds); the three
compiled tests share one process's compiled graphs (the FAST batch of 16 rows)."""

from __future__ import annotations

import math
import random
import statistics

import pytest
import torch
import transformers

from entropic_tune.config import load_config
from entropic_tune.engines.native import rollout
from entropic_tune.engines.native.rollout import generate, left_pad
from entropic_tune.engines.native.trainer import Trainer
from entropic_tune.errors import UserError
from entropic_tune.model import compiling, decoding
from entropic_tune.model.loading import load_policy
from entropic_tune.model.policy import Policy, model_call_kwargs, output_cache, positions
from entropic_tune.tasks import build_task


def tiny(arch: str, kv_heads: int) -> torch.nn.Module:
    """A random-init decoder with grouped-query attention (4 query heads, ``kv_heads`` KV heads)."""
    common = dict(vocab_size=23, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=kv_heads, max_position_embeddings=128, pad_token_id=0, eos_token_id=1)
    torch.manual_seed(0)
    if arch == "llama":
        return transformers.LlamaForCausalLM(transformers.LlamaConfig(**common, rope_theta=500.0)).eval()
    return transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**common)).eval()  # q/k/v biases


@pytest.mark.parametrize(("arch", "kv_heads"), [("qwen2", 2), ("llama", 4), ("llama", 1)])
@torch.inference_mode()
def test_decode_step_gives_transformers_logits_over_a_padded_batch(arch, kv_heads):
    model = tiny(arch, kv_heads)
    rows = [[3, 4, 5, 6, 7], [8, 9], [10, 11, 12]]
    ids, attn = left_pad(rows, 0, torch.device("cpu"))  # (3, 5), rows 1 and 2 padded
    n, width, new = ids.shape[0], ids.shape[1], 6
    decoder = decoding.CompiledDecoder(decoding._spec(model), n, 0, 1, compiled=False)
    cache_kw = next(iter(model_call_kwargs(model, None)))
    out = model(input_ids=ids, attention_mask=attn, position_ids=positions(attn), use_cache=True)
    length = decoding.cache_length(width, new)
    kv = decoding._fill_caches(decoder, output_cache(out), [slice(0, n)], length, n)[0]
    key_valid = torch.ones(n, length, dtype=torch.bool)
    key_valid[:, :width] = attn.bool()
    weights, rope = decoder.weights(model), decoder.rope(model, length, ids.device)
    cache, full_attn, pos = output_cache(out), attn, positions(attn)[:, -1]
    token = torch.tensor([13, 14, 15])
    for t in range(new):
        full_attn = torch.cat([full_attn, torch.ones(n, 1, dtype=attn.dtype)], dim=1)
        pos = pos + 1
        ref = model(input_ids=token[:, None], attention_mask=full_attn, position_ids=pos[:, None], use_cache=True,
                    **{cache_kw: cache})
        cache = output_cache(ref)
        logits, new_kv = decoding.step_logits(weights, rope, kv, token, pos, torch.tensor(width + t), key_valid,
                                              spec=decoder.spec)
        kv[:, :, :, :, width + t] = new_kv
        torch.testing.assert_close(logits, ref.logits[:, -1].float(), atol=2e-5, rtol=1e-5)
        token = ref.logits[:, -1].argmax(-1)


def test_unsupported_models_are_named():
    model = tiny("llama", 4)
    assert decoding.unsupported_reason(model) is None
    model.config.hidden_act = "gelu"
    assert "gelu" in decoding.unsupported_reason(model)
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=10))
    assert "gpt2" in decoding.unsupported_reason(gpt2)


def _policy(config: dict) -> tuple[Policy, object]:
    cfg = load_config(config)
    task = build_task(cfg.task)
    return load_policy(cfg.model, cfg.task, task), task


@pytest.mark.parametrize("n_prompts", [4, 3, 9])  # one chunk of 16 rows, one padded chunk, three chunks
def test_static_cache_sampler_picks_the_eager_tokens_and_leaves_the_same_generator(fast_config, n_prompts):
    """Run uncompiled, the decoder's loop consumes the random stream as the eager loop does (one (N, V)
    exponential race per token is what torch.multinomial draws), so with the same seed it samples the
    same tokens, for any number of rows, greedy or sampled."""
    policy, task = _policy(fast_config)
    decoder = decoding.get_decoder(policy.model, 16, policy.pad_id, policy.eos_id, compiled=False)
    prompts = [policy.encode_prompt(p.prompt) for p in task.sample_train(random.Random(n_prompts), n_prompts)
               for _ in range(4)]
    for greedy, temperature in ((False, 1.0), (False, 0.6), (True, 1.0)):
        outs = []
        for dec in (None, decoder):
            policy.decoder = dec
            gen = torch.Generator().manual_seed(11)
            outs.append((generate(policy, prompts, 32, temperature, gen, greedy=greedy), gen.get_state()))
        (eager, eager_rng), (static, static_rng) = outs
        assert torch.equal(eager.input_ids, static.input_ids)
        assert torch.equal(eager.response_mask, static.response_mask)
        assert torch.equal(eager_rng, static_rng)


def test_the_sampler_gives_the_training_forwards_behaviour_logprobs_and_entropies(fast_config):
    """With the static-cache sampler the rollout takes log-probs and entropies from the sampling loop
    instead of a behaviour forward; they equal that forward's up to float rounding."""
    policy, task = _policy(fast_config)
    policy.decoder = decoding.get_decoder(policy.model, 16, policy.pad_id, policy.eos_id, compiled=False)
    problems = task.sample_train(random.Random(8), 4)
    batch = rollout.collect_rollout(policy, task, problems, 4, 0.7, 32, torch.Generator().manual_seed(2))
    assert batch.old_logprobs is batch.gen.sampler_logprobs
    with torch.no_grad():
        logp, ent = rollout.sequence_logprobs(policy, batch.gen, 0.7)
    mask = batch.mask.bool()
    torch.testing.assert_close(batch.old_logprobs[mask], logp[mask], atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(batch.entropy[mask], ent[mask], atol=2e-5, rtol=1e-5)


def test_deferred_stop_checks_rewind_the_generator_like_the_eager_loop(fast_config, monkeypatch):
    """The accelerator path (stop checks every 8 tokens, then a rewind) forced on the CPU."""
    policy, task = _policy(fast_config)
    policy.decoder = decoding.get_decoder(policy.model, 16, policy.pad_id, policy.eos_id, compiled=False)
    prompts = [policy.encode_prompt(p.prompt) for p in task.sample_train(random.Random(5), 4) for _ in range(4)]
    gen = torch.Generator().manual_seed(3)
    every_token = generate(policy, prompts, 32, 1.0, gen)
    expected_rng = gen.get_state()
    real_sample = decoding.sample
    monkeypatch.setattr(decoding, "sample", lambda *a: real_sample(*a[:-1], 8))
    gen = torch.Generator().manual_seed(3)
    deferred = generate(policy, prompts, 32, 1.0, gen)
    assert torch.equal(deferred.input_ids, every_token.input_ids)
    assert torch.equal(gen.get_state(), expected_rng)


def test_auto_compiles_decoding_only_for_long_runs_and_on_rejects_unsupported_models(fast_config):
    policy, _ = _policy(fast_config)
    short = compiling.plan(load_config({**fast_config, "model.compile": "auto"}), policy)
    long = compiling.plan(load_config({**fast_config, "model.compile": "auto",
                                       "train.total_steps": compiling.AUTO_DECODE_MIN_STEPS}), policy)
    off = compiling.plan(load_config({**fast_config, "train.total_steps": 10_000, "model.compile": "off"}), policy)
    assert (short.decode, short.update, long.decode, long.update, off.decode) == (False, False, True, False, False)
    policy.model.config.hidden_act = "gelu"
    assert not compiling.plan(load_config({**fast_config, "model.compile": "auto", "train.total_steps": 10_000}),
                              policy).decode
    with pytest.raises(UserError, match="model.compile: 'on' needs a Qwen2/Llama-style decoder"):
        compiling.plan(load_config({**fast_config, "model.compile": "on"}), policy)


def test_on_and_off_spelled_in_yaml_are_the_choices_not_booleans(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  compile: off\n")
    assert load_config(files=[path]).model.compile == "off"
    assert load_config(overrides=["model.compile=on"]).model.compile == "on"
    assert load_config().model.compile == "auto"
    with pytest.raises(UserError, match="model.compile: 'fast' is not allowed.*allowed: auto, on, off"):
        load_config({"model.compile": "fast"})


def test_off_and_short_auto_runs_use_no_compiled_code(fast_config):
    trainer = Trainer(load_config({**fast_config, "model.compile": "auto"}))
    assert trainer.policy.decoder is None and trainer.policy.logprob_forward is None


# --- compiled (inductor): one graph per test process ------------------------------------------------


def _z(a: list[float], b: list[float]) -> float:
    se = math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
    return (statistics.mean(a) - statistics.mean(b)) / se if se > 0 else 0.0


@pytest.mark.slow
def test_compiled_decoding_samples_generates_distribution_and_the_eager_tokens(fast_config):
    """The bench_generate check, small: 512 responses from the compiled sampler and from
    ``model.generate`` with independent seeds have the same mean length and reward (|z| < 4), and with
    the same seed the compiled sampler picks the eager sampler's tokens."""
    policy, task = _policy(fast_config)
    compiled = decoding.get_decoder(policy.model, 16, policy.pad_id, policy.eos_id)
    stats: dict[str, dict[str, list[float]]] = {"compiled": {"length": [], "reward": []},
                                                 "generate": {"length": [], "reward": []}}
    for call in range(32):
        problems = task.sample_train(random.Random(100 + call), 4)
        prompts = [policy.encode_prompt(p.prompt) for p in problems for _ in range(4)]
        policy.decoder = compiled
        ours = generate(policy, prompts, 32, 1.0, torch.Generator().manual_seed(call))
        lengths = ours.response_mask.sum(1).tolist()
        rewards = rollout.score(task, problems, rollout.decode_responses(policy, ours), 4).tolist()
        stats["compiled"]["length"] += lengths
        stats["compiled"]["reward"] += rewards
        ids, attn = left_pad(prompts, policy.pad_id, policy.device)
        torch.manual_seed(10_000 + call)
        with torch.no_grad():
            out = policy.model.generate(input_ids=ids, attention_mask=attn, do_sample=True, temperature=1.0, top_k=0,
                                        top_p=1.0, max_new_tokens=32, eos_token_id=policy.eos_id,
                                        pad_token_id=policy.pad_id)
        texts, hf_lengths = [], []
        for row in out[:, ids.shape[1]:].tolist():
            kept = row[: row.index(policy.eos_id) + 1] if policy.eos_id in row else row
            hf_lengths.append(len(kept))
            texts.append(policy.decode([t for t in kept if t != policy.eos_id]))
        stats["generate"]["length"] += hf_lengths
        stats["generate"]["reward"] += rollout.score(task, problems, texts, 4).tolist()
        if call < 4:
            policy.decoder = None
            eager = generate(policy, prompts, 32, 1.0, torch.Generator().manual_seed(call))
            assert torch.equal(eager.input_ids, ours.input_ids)
    for key in ("length", "reward"):
        z = _z(stats["compiled"][key], stats["generate"][key])
        assert abs(z) < 4, f"{key}: z = {z:.2f}"


@pytest.mark.slow
def test_a_short_run_with_everything_compiled_has_the_eager_metrics(fast_config):
    """model.compile=on (compiled decoding and compiled update forward/backward, inductor) vs off:
    every metric of every step equal within float tolerance (same tokens, log-probs to ~1e-6)."""
    config = {**fast_config, "train.total_steps": 2}
    histories = {}
    for mode in ("off", "on"):
        trainer = Trainer(load_config({**config, "model.compile": mode}))
        assert (trainer.policy.decoder is not None) == (mode == "on")
        histories[mode] = [trainer.step() for _ in range(2)]
    assert compiling.update_forward() is trainer.policy.logprob_forward
    for off, on in zip(histories["off"], histories["on"], strict=True):
        for key, value in off.items():
            if not key.startswith("perf/"):
                assert on[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key



@pytest.mark.slow
def test_one_compiled_decoder_serves_every_width_and_length_without_recompiling(fast_config, monkeypatch):
    """Issue 29 item 5: the step is compiled once, with the number of rows and the cache length
    dynamic; then batches of other widths (a training batch, a smaller evaluation batch, more rows
    than one chunk) and another cache length run on the same graph (a recompile would raise) and
    sample the eager sampler's tokens."""
    policy, task = _policy(fast_config)
    decoder = decoding.CompiledDecoder(decoding._spec(policy.model), 16, policy.pad_id, policy.eos_id)
    cases = [(4, 4, 32), (3, 2, 32), (5, 4, 32), (2, 3, 60)]  # (prompts, samples each, max_new_tokens)
    for i, (n_prompts, k, max_new) in enumerate(cases):
        prompts = [policy.encode_prompt(p.prompt) for p in task.sample_train(random.Random(i), n_prompts)
                   for _ in range(k)]
        outs = []
        for dec in (None, decoder):
            policy.decoder = dec
            outs.append(generate(policy, prompts, max_new, 1.0, torch.Generator().manual_seed(i)))
        assert torch.equal(outs[0].input_ids, outs[1].input_ids), (n_prompts, k, max_new)
        assert torch.equal(outs[0].response_mask, outs[1].response_mask)
        if i == 0:  # compiled once for 16 rows and one cache length; from here on a recompile is an error
            monkeypatch.setattr(torch._dynamo.config, "error_on_recompile", True)
