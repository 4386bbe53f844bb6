"""Policy loading (built-in and local Hugging Face folders) and rollout invariants."""

from __future__ import annotations

import random

import pytest
import torch
import transformers

from entropic_tune import metrics as M
from entropic_tune.config import load_config
from entropic_tune.engines.native.rollout import collect_rollout, compute_group_advantages, generate
from entropic_tune.engines.native.trainer import Trainer
from entropic_tune.errors import UserError
from entropic_tune.model.loading import load_policy
from entropic_tune.model.policy import Policy, build_char_tokenizer
from entropic_tune.tasks import build_task


def _save_tiny_hf(path, pad_is_eos: bool = False) -> None:
    """A local HF model folder written with save_pretrained: tiny Llama + char tokenizer, no download."""
    cfg = load_config({})
    task = build_task(cfg.task)
    tok = build_char_tokenizer(task.alphabet())
    if pad_is_eos:
        tok.pad_token = tok.eos_token
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id))
    model.save_pretrained(path)
    tok.save_pretrained(path)


def test_local_hf_model_directory_trains_two_steps(tmp_path, fast_config):
    _save_tiny_hf(tmp_path / "hf")
    cfg = load_config({**fast_config, "model.path": str(tmp_path / "hf"), "method": "entropic"})
    trainer = Trainer(cfg)
    assert isinstance(trainer.policy.model, transformers.LlamaForCausalLM)
    rows = [trainer.step() for _ in range(2)]
    assert list(rows[-1]) == list(M.STEP_KEYS)


def test_missing_model_path_and_folder_without_tokenizer(tmp_path):
    task_cfg = load_config({}).task
    task = build_task(task_cfg)
    with pytest.raises(UserError, match="model.path: .*is not a directory"):
        load_policy(load_config({"model.path": str(tmp_path / "nope")}).model, task_cfg, task)
    _save_tiny_hf(tmp_path / "hf")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "hf" / name).unlink(missing_ok=True)
    with pytest.raises(UserError, match="no tokenizer files"):
        load_policy(load_config({"model.path": str(tmp_path / "hf")}).model, task_cfg, task)


def test_eos_is_inside_the_mask_even_when_pad_equals_eos(tmp_path, fast_config):
    _save_tiny_hf(tmp_path / "hf", pad_is_eos=True)
    cfg = load_config({**fast_config, "model.path": str(tmp_path / "hf")})
    task = build_task(cfg.task)
    policy = load_policy(cfg.model, cfg.task, task)
    assert policy.pad_id == policy.eos_id
    # Force EOS at the third sampled token: a huge EOS logit from then on.
    original = policy.model.lm_head.weight.data.clone()
    policy.model.lm_head.weight.data.zero_()
    policy.model.lm_head.bias = None
    prompts = [policy.encode_prompt(p.prompt) for p in task.sample_train(random.Random(0), 3)]
    gen = generate(policy, prompts, 8, 1.0, torch.Generator().manual_seed(0))
    policy.model.lm_head.weight.data.copy_(original)
    ids, mask = gen.response_ids, gen.response_mask
    for row, m in zip(ids.tolist(), mask.tolist(), strict=True):
        if policy.eos_id in row:
            first = row.index(policy.eos_id)
            assert m[: first + 1] == [1.0] * (first + 1)  # EOS itself is trained on
            assert m[first + 1 :] == [0.0] * (len(m) - first - 1)


def test_mask_includes_eos_and_masks_the_tail(fast_config):
    cfg = load_config(fast_config)
    task = build_task(cfg.task)
    policy = load_policy(cfg.model, cfg.task, task)
    problems = task.sample_train(random.Random(1), 4)
    batch = collect_rollout(policy, task, problems, 4, 1.0, 32, torch.Generator().manual_seed(1))
    eos_seen = 0
    for row, m in zip(batch.gen.response_ids.tolist(), batch.mask.tolist(), strict=True):
        if policy.eos_id in row:
            first = row.index(policy.eos_id)
            eos_seen += 1
            assert sum(m) == first + 1 and m[first] == 1.0
    assert eos_seen > 0
    # behaviour log-probs and entropy are finite where the mask is on
    on = batch.mask.bool()
    assert torch.isfinite(batch.old_logprobs[on]).all() and torch.isfinite(batch.entropy[on]).all()
    assert batch.old_logprobs.shape == batch.entropy.shape == batch.mask.shape


def test_group_advantages_zero_mean_and_zero_for_equal_groups():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0])
    adv = compute_group_advantages(rewards, 4)
    grouped = adv.view(3, 4)
    torch.testing.assert_close(grouped.mean(-1), torch.zeros(3), atol=1e-6, rtol=0)
    assert torch.equal(grouped[1], torch.zeros(4))
    assert (grouped[0][[0, 3]] > 0).all() and (grouped[0][[1, 2]] < 0).all()


def test_policy_logprobs_match_sampling_distribution(fast_config):
    """The training forward over a sampled sequence gives the same log-probs as the sampling loop."""
    cfg = load_config(fast_config)
    task = build_task(cfg.task)
    policy: Policy = load_policy(cfg.model, cfg.task, task)
    problems = task.sample_train(random.Random(2), 2)
    batch = collect_rollout(policy, task, problems, 2, 0.7, 16, torch.Generator().manual_seed(3))
    greedy = generate(policy, [policy.encode_prompt(p.prompt) for p in problems], 16, 1.0, None, greedy=True)
    assert greedy.response_ids.shape[0] == 2
    assert (batch.old_logprobs <= 0).all()
