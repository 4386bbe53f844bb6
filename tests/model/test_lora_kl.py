"""LoRA through PEFT, gradient checkpointing, the KL penalty to a reference policy, and the GPU bound."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from entropic_tune.config import load_config
from entropic_tune.engines.native.trainer import Trainer
from entropic_tune.errors import UserError
from entropic_tune.losses import compute_policy_loss, k3_kl

peft = pytest.importorskip("peft")  # the test extra installs it; `pip install 'entropic-tune[lora]'`

LORA = {"model.lora_r": 4, "model.lora_alpha": 8.0, "model.compile": "off"}


def test_lora_trains_the_adapters_only(fast_config):
    trainer = Trainer(load_config({**fast_config, **LORA, "method": "entropy_bonus", "loss.beta": 0.05,
                                   "train.total_steps": 2}))
    model = trainer.policy.model
    named = dict(model.named_parameters())
    adapters = {n for n in named if "lora_" in n}
    assert adapters and {n for n, p in named.items() if p.requires_grad} == adapters
    assert {id(p) for p in trainer.params} == {id(named[n]) for n in adapters}
    assert {id(p) for g in trainer.optimizer.param_groups for p in g["params"]} == {id(p) for p in trainer.params}
    before = {n: p.detach().clone() for n, p in named.items()}
    seen_grads: set[str] = set()
    hooks = [p.register_hook(lambda g, n=n: seen_grads.add(n)) for n, p in named.items() if p.requires_grad]
    for _ in range(2):
        trainer.step()
    for h in hooks:
        h.remove()
    changed = {n for n, p in named.items() if not torch.equal(p, before[n])}
    assert seen_grads == adapters
    assert {n for n in changed if "lora_B" in n} == {n for n in adapters if "lora_B" in n}  # B starts at 0
    assert changed <= adapters and changed  # the base weights never move


def test_a_saved_adapter_reloads_and_a_checkpoint_round_trips(fast_config, tmp_path):
    cfg = load_config({**fast_config, **LORA, "method": "grpo", "train.total_steps": 4})
    trainer = Trainer(cfg)
    trainer.step()
    trainer.step()
    ids = torch.tensor([[2, 5, 6, 7, 8, 9]])
    with torch.no_grad():
        expected = trainer.policy.model(input_ids=ids).logits
    # the adapter alone, as PEFT saves it, onto a fresh copy of the base model
    trainer.policy.model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    base = Trainer(load_config({**fast_config, "model.compile": "off"})).policy.model  # no adapters
    reloaded = peft.PeftModel.from_pretrained(base, tmp_path / "adapter")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, expected)
    # the trainer's checkpoint: the same next steps as the run that never stopped
    state = trainer.state_dict()
    straight = [{k: v for k, v in trainer.step().items() if not k.startswith("perf/")} for _ in range(2)]
    resumed = Trainer(cfg)
    resumed.load_state_dict(state)
    again = [{k: v for k, v in resumed.step().items() if not k.startswith("perf/")} for _ in range(2)]
    assert again == straight


def test_lora_and_gradient_checkpointing_keep_the_update_forward(fast_config):
    """Gradient checkpointing changes memory, not values: the same log-probs and gradients."""
    from entropic_tune.engines.native.rollout import collect_rollout, sequence_logprobs

    outs = []
    for checkpointing in (False, True):
        trainer = Trainer(load_config({**fast_config, **LORA, "model.gradient_checkpointing": checkpointing}))
        torch.manual_seed(0)
        problems = trainer.task.sample_train(__import__("random").Random(0), 2)
        batch = collect_rollout(trainer.policy, trainer.task, problems, 2, 1.0, 16, torch.Generator().manual_seed(0))
        trainer.policy.model.train()
        logp, ent = sequence_logprobs(trainer.policy, batch.gen, 1.0)
        (logp.sum() + ent.sum()).backward()
        outs.append((logp.detach(), [p.grad.clone() for p in trainer.params]))
    torch.testing.assert_close(outs[0][0], outs[1][0])
    for a, b in zip(outs[0][1], outs[1][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_missing_peft_is_a_one_line_error_naming_the_extra(fast_config, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_peft(name, *args, **kwargs):
        if name == "peft" or name.startswith("peft."):
            raise ImportError("No module named 'peft'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_peft)
    with pytest.raises(UserError, match=r"entropic-tune\[lora\]") as info:
        Trainer(load_config({**fast_config, **LORA}))
    assert "\n" not in str(info.value)


def test_bad_lora_keys_are_user_errors():
    for key, value in (("model.lora_r", -1), ("model.lora_dropout", 1.0), ("model.lora_alpha", 0),
                       ("model.lora_target_modules", " , "), ("loss.kl_coef", -0.1)):
        with pytest.raises(UserError, match=key.replace(".", r"\.")):
            load_config({key: value})


# --- the KL penalty ------------------------------------------------------------------------------


def test_k3_is_nonnegative_and_zero_where_the_policies_agree():
    g = torch.Generator().manual_seed(0)
    logp = -torch.rand(6, 9, generator=g) * 5
    ref = -torch.rand(6, 9, generator=g) * 5
    mask = (torch.rand(6, 9, generator=g) > 0.2).float()
    k3 = k3_kl(logp, ref, mask)
    assert (k3 >= 0).all() and (k3[mask > 0] > 0).all()  # distinct log-probs: strictly positive
    assert torch.equal(k3[mask == 0], torch.zeros_like(k3[mask == 0]))
    assert torch.equal(k3_kl(logp, logp, mask), torch.zeros_like(logp))
    # unbiased for KL(p || q): the mean of k3 over samples from p equals the exact KL
    p, q = torch.tensor([0.7, 0.2, 0.1]), torch.tensor([0.3, 0.3, 0.4])
    exact = (p * (p / q).log()).sum()
    mean_k3 = (p * k3_kl(p.log(), q.log(), torch.ones(3))).sum()
    torch.testing.assert_close(mean_k3, exact)


def _loss_inputs():
    g = torch.Generator().manual_seed(1)
    logp = (-torch.rand(4, 7, generator=g) * 3).requires_grad_()
    old = logp.detach() + 0.05 * torch.randn(4, 7, generator=g)
    adv = torch.randn(4, generator=g)
    mask = torch.ones(4, 7)
    mask[1, 5:] = 0
    return logp, old, adv, mask


@pytest.mark.parametrize("method", ["grpo", "entropic", "kl_cov"])
def test_kl_coef_zero_is_todays_loss_and_a_positive_one_adds_the_mean_k3(method):
    logp, old, adv, mask = _loss_inputs()
    ref = logp.detach() - 0.3
    ent = torch.rand(4, 7)
    base, m0 = compute_policy_loss(method, logp, old, adv, mask, entropy=ent, alpha=0.5)
    zero, m1 = compute_policy_loss(method, logp, old, adv, mask, entropy=ent, alpha=0.5, ref_logprobs=ref,
                                   kl_coef=0.0)
    assert torch.equal(base, zero) and m0 == m1
    with_kl, _ = compute_policy_loss(method, logp, old, adv, mask, entropy=ent, alpha=0.5, ref_logprobs=ref,
                                     kl_coef=0.1)
    k3 = k3_kl(logp.detach(), ref, mask)
    torch.testing.assert_close(with_kl - base, 0.1 * (k3 * mask).sum() / mask.sum())
    assert with_kl > base
    # its gradient pulls log-probs towards the reference's: here ref < logp, so down
    grad = torch.autograd.grad(with_kl - base, logp)[0]
    assert (grad[mask > 0] > 0).all() and (grad[mask == 0] == 0).all()


def test_the_kl_term_is_zero_at_the_first_step_and_then_grows(fast_config):
    """The reference is the initial policy: at the first step policy == reference, so the penalty is 0
    and the first update equals the one without it; after updates the two differ."""
    cfg = {**fast_config, "method": "entropy_bonus", "loss.beta": 0.05, "train.total_steps": 3}
    plain = Trainer(load_config(cfg))
    with_kl = Trainer(load_config({**cfg, "loss.kl_coef": 0.5}))
    assert plain.reference is None and with_kl.reference is not with_kl.policy.model
    assert all(not p.requires_grad for p in with_kl.reference.parameters())
    a, b = plain.step(), with_kl.step()
    assert {k: v for k, v in a.items() if not k.startswith("perf/")} == \
        {k: v for k, v in b.items() if not k.startswith("perf/")}
    for _ in range(2):
        plain.step()
        with_kl.step()
    weights = lambda t: torch.cat([p.detach().flatten() for p in t.policy.model.parameters()])  # noqa: E731
    assert not torch.equal(weights(plain), weights(with_kl))


def test_with_lora_the_reference_is_the_adapter_disabled(fast_config):
    trainer = Trainer(load_config({**fast_config, **LORA, "method": "entropy_bonus", "loss.beta": 0.05,
                                   "loss.kl_coef": 0.5}))
    assert trainer.reference is trainer.policy.model  # no copy: the base weights are the reference
    for _ in range(2):
        trainer.step()
    from entropic_tune.engines.native.rollout import collect_rollout, sequence_logprobs

    problems = trainer.task.sample_train(__import__("random").Random(0), 2)
    batch = collect_rollout(trainer.policy, trainer.task, problems, 2, 1.0, 16, torch.Generator().manual_seed(0))
    ref = trainer._reference_logprobs(batch.gen)
    base = dataclasses.replace(trainer.policy, model=trainer.policy.model.get_base_model())
    with trainer.policy.model.disable_adapter(), torch.no_grad():
        expected = sequence_logprobs(base, batch.gen, trainer.config.rollout.temperature)[0]
    with torch.no_grad():
        current = sequence_logprobs(trainer.policy, batch.gen, trainer.config.rollout.temperature)[0]
    torch.testing.assert_close(ref, expected)
    assert not torch.allclose(ref, current)  # the adapters moved the policy away from its reference


# --- the GPU memory bound ------------------------------------------------------------------------


def test_the_memory_bound_uses_the_gpu_and_the_logits_chunk(monkeypatch):
    """Qwen2.5-1.5B's published sizes on an 80 GB GPU: 256 responses of 1,024 tokens need 159 GB of
    logits unchunked (refused in one line naming the GPU), one 4,096-token chunk of them 2.5 GB."""
    from entropic_tune.model import limits

    qwen = limits.ModelFacts(positions=32768, vocab=151936, hidden=1536, layers=28, weight_bytes=3_087_467_008,
                             source="config.json", kv_width=256)
    monkeypatch.setattr(limits, "device_memory", lambda _cfg: (80 * 10**9, "this GPU (NVIDIA H100 80GB HBM3)"))
    sizes = {"rollout.prompts_per_step": 32, "rollout.group_size": 8, "rollout.max_new_tokens": 1024,
             "rollout.eval_samples": 4, "task.eval_size": 8}
    with pytest.raises(UserError, match=r"model\.logits_chunk.*this GPU \(NVIDIA H100 80GB HBM3\) has 74\.5 GiB") as info:
        limits._check_memory(load_config({**sizes, "model.logits_chunk": 0}), qwen, 1100)
    assert "\n" not in str(info.value)
    limits._check_memory(load_config({**sizes, "model.logits_chunk": 4096}), qwen, 1100)
    with pytest.raises(UserError, match="weights with their gradients"):  # 4 x 3 GB of full training on 8 GB
        monkeypatch.setattr(limits, "device_memory", lambda _cfg: (8 * 10**9, "this GPU (small)"))
        limits._check_memory(load_config(sizes), qwen, 1100)
    limits._check_memory(load_config({**sizes, "model.lora_r": 8, "rollout.prompts_per_step": 2,
                                      "rollout.eval_samples": 1}), qwen, 1100)  # LoRA: the frozen weights only


def test_device_memory_is_the_ram_on_a_cpu_run():
    from entropic_tune.model import limits

    assert limits.device_memory(load_config({"model.device": "cpu"})) == (limits.physical_memory(), "this machine")
