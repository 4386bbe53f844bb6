"""The TRL engine (``train.engine: trl``, METHOD.md 8): the same losses, controllers and results as the
native engine, through TRL's ``GRPOTrainer``. CPU, the built-in tiny model and char tokenizer, no network."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import torch
import yaml

pytest.importorskip("trl")

from trial_recorder import Recorder, deterministic  # noqa: E402  (tests/ is on sys.path: conftest.py)

from entropic_tune import metrics as M  # noqa: E402
from entropic_tune.config import load_config  # noqa: E402
from entropic_tune.engines.native.rollout import collect_rollout  # noqa: E402
from entropic_tune.engines.native.trainer import SimulatedFailure, Trainer  # noqa: E402
from entropic_tune.errors import UserError  # noqa: E402
from entropic_tune.methods import METHODS  # noqa: E402
from entropic_tune.tune.trainable import run_trial  # noqa: E402


def _trl_inputs(batch, old_logprobs: torch.Tensor) -> dict:
    """TRL's generation-batch dict of a native rollout batch (prompt left-padded, completion right)."""
    gen = batch.gen
    p = gen.prompt_len
    return {
        "prompt_ids": gen.input_ids[:, :p], "prompt_mask": gen.attention_mask[:, :p].long(),
        "completion_ids": gen.input_ids[:, p:], "completion_mask": gen.response_mask.long(),
        "advantages": batch.advantages, "old_per_token_logps": old_logprobs,
        "num_items_in_batch": gen.response_mask.sum(),
    }


@pytest.fixture(scope="module")
def engines(warmstart_cache):
    from entropic_tune.engines.trl.engine import TRLEngine

    base = {**_fast(), "method": "grpo"}
    native = Trainer(load_config(base))
    trl = TRLEngine(load_config({**base, "train.engine": "trl"}))
    trl.model.load_state_dict(native.policy.model.state_dict())
    return native, trl


def _fast() -> dict:
    """The fast test config on the default model, whose warm-start is committed (no warm-start to train,
    and a policy that solves some problems, so advantages and gradients are not all zero)."""
    from conftest import FAST

    keep = {k: v for k, v in FAST.items() if not k.startswith("model.") and k != "task.eval_size"}
    return {**keep, "rollout.max_new_tokens": 40}


CASES = [(m, "entropic") for m in METHODS] + [("entropic", a) for a in ("entropy_bonus", "clip_high",
                                                                         "positive_weight")]


@pytest.mark.slow
@pytest.mark.parametrize("method, actuator", CASES)
def test_every_loss_and_gradient_equal_the_native_engine(engines, method, actuator, monkeypatch):
    """On one fixed off-policy batch (old log-probs perturbed so clipping, dual-clip and the KL-Cov
    penalty bind), the TRL engine's measured entropy, controller output, loss, loss metrics and gradient
    equal the native engine's to float tolerance, for each of the eleven methods (and EntroPIC's PI
    through each other actuator)."""
    from entropic_tune import losses
    from entropic_tune.engines.trl.control import LossControl

    native, trl = engines
    overrides = {**_fast(), "method": method, "controller.target_entropy": 0.05, "controller.actuator": actuator,
                 "optim.grad_clip": 0.0}  # the native step clips in place: compare the raw gradients
    if method == "adaptive_entropy":
        overrides["controller.coef_init"] = 2e-3  # a non-zero bonus weight in the loss
    if method == "entropy_bonus":
        overrides["loss.beta"] = 0.01
    if method == "clip_cov":  # candidates on this small batch, so both engines' random picks are compared
        overrides.update({"loss.clip_cov_lb": -5.0, "loss.clip_cov_ratio": 0.2})
    cfg = load_config(overrides)
    native.config = cfg
    native.loss_params = {k: v for k, v in dataclasses.asdict(cfg.loss).items() if k not in ("name", "kl_coef")}
    from entropic_tune.controllers import build_controller

    native.controller = build_controller(cfg.controller)
    native.generator = torch.Generator().manual_seed(7)
    trl.trl.control = trl.control = LossControl(load_config({**overrides, "train.engine": "trl"}),
                                                torch.Generator().manual_seed(7))
    torch.manual_seed(3)
    problems = native.task.sample_train(__import__("random").Random(5), 4)
    batch = collect_rollout(native.policy, native.task, problems, 4, 1.0, 40, torch.Generator().manual_seed(11))
    advantages = batch.advantages.clone()
    signs = torch.tensor([0.5, -0.5]).repeat(advantages.numel() // 2)
    advantages = torch.where(advantages == 0, signs, advantages)  # every row carries gradient, both signs
    batch = dataclasses.replace(batch, advantages=advantages)
    noise = 0.3 * torch.randn(batch.gen.response_mask.shape, generator=torch.Generator().manual_seed(2))
    logp, ent = native._forward(batch.gen)
    old = (logp.detach() + noise) * batch.gen.response_mask
    batch = dataclasses.replace(batch, old_logprobs=old)

    # native: H and the controller update as Trainer.step does, then one mini-batch step (no optimizer move)
    entropy = native._mean(ent.detach(), batch.gen.response_mask).item()
    alpha = native.controller.update(entropy)
    seen: list[torch.Tensor] = []
    real = losses.compute_policy_loss

    def recording(*a, **k):
        loss, values = real(*a, **k)
        seen.append(loss.detach())
        return loss, values

    monkeypatch.setattr("entropic_tune.engines.native.trainer.compute_policy_loss", recording)
    monkeypatch.setattr(native.optimizer, "step", lambda: None)
    rows = torch.arange(batch.gen.input_ids.shape[0])
    native_metrics = native._minibatch_step(batch, rows, alpha, fresh=False, precomputed=None)
    native_grads = [p.grad.clone() for p in native.policy.model.parameters()]

    # TRL: the whole batch's entropy before the update, then compute_loss on TRL's tensors
    control = trl.control
    control.begin_step(1)
    trl_model = trl.trl.model
    trl_model.train()
    with torch.no_grad():
        ids, attn, keep = trl.trl._model_inputs(_trl_inputs(batch, old))
        _, trl_ent, _ = trl.trl._get_per_token_logps_and_entropies(trl_model, ids, attn, keep, compute_entropy=True)
    trl_alpha = control.observe(trl_ent, batch.gen.response_mask, lambda x: x, lambda x: x)
    control.fresh = False
    trl.optimizer.zero_grad(set_to_none=True)
    loss = trl.trl.compute_loss(trl.model, _trl_inputs(batch, old))
    loss.backward()
    trl_grads = [p.grad.clone() for p in trl_model.parameters()]

    assert control.entropy == pytest.approx(entropy, rel=1e-5, abs=1e-7)
    assert trl_alpha == pytest.approx(alpha, rel=1e-4, abs=1e-7)
    assert loss.item() == pytest.approx(seen[-1].item(), rel=1e-4, abs=1e-6)
    trl_metrics = control.step_metrics()
    for key in M.LOSS_KEYS:
        assert trl_metrics[key] == pytest.approx(native_metrics[key], rel=1e-4, abs=1e-6), key
    assert len(trl_grads) == len(native_grads)
    norm = torch.sqrt(sum((g * g).sum() for g in native_grads))
    diff = torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(trl_grads, native_grads, strict=True)))
    assert norm > 0
    assert diff / norm < 1e-4
    # the batch exercises each method's mechanism (the perturbed old log-probs make the clip bind)
    active = {"clip_cov": M.DETACHED_FRAC, "kl_cov": M.PENALISED_FRAC}.get(method, M.PG_CLIPFRAC)
    assert native_metrics[active] > 0


@pytest.mark.slow
def test_a_trl_train_run_moves_alpha(tmp_path):
    """``entropic-tune train --set train.engine=trl`` for EntroPIC: 3 steps, alpha moves, the results
    contract (history.csv, summary.csv with base/final evaluations) is written."""
    import csv

    sets = [f"{k}={v}" for k, v in _fast().items()] + ["train.engine=trl"]
    cmd = [sys.executable, "-m", "entropic_tune.commands.main", "train", "--method", "entropic", "--out", str(tmp_path), "--name", "run",
           "--quiet"] + [a for s in sets for a in ("--set", s)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = list(csv.DictReader(open(tmp_path / "run" / "history.csv")))
    assert [int(float(r["step"])) for r in rows] == [1, 2, 3]
    alphas = [float(r[M.ALPHA]) for r in rows]
    assert len(set(alphas)) == 3 and all(a != 0 for a in alphas)  # the PI controller acts every step
    assert all(-1 < a < 1 for a in alphas)  # inside the bounds: moved by the measured entropy, not saturated
    for key in M.STEP_KEYS:
        assert key in rows[0]
    summary = list(csv.DictReader(open(tmp_path / "run" / "summary.csv")))[0]
    assert summary["status"] == "TERMINATED"
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]["engine"] == "trl"
    assert float(summary["final/pass@1"]) >= 0 and float(summary["base/pass@1"]) >= 0


@pytest.mark.parametrize("sets, key", [
    (["trl.use_vllm=true"], "trl.use_vllm"),
    (["train.engine=trl", "trl.loss_type=grpo"], "trl.loss_type"),
    (["train.engine=trl", "trl.vllm_importance_sampling_correction=true"], "trl.vllm_importance_sampling_correction"),
    (["train.engine=trl", "model.compile=on"], "model.compile"),
    (["train.engine=trl", "train.num_workers=3"], "train.num_workers"),
    (["train.engine=trl", "optim.mini_batches_per_rollout=3"], "optim.mini_batches_per_rollout"),
    (["train.engine=pytorch"], "train.engine"),
    (["train.engine=trl", "loss.kl_coef=0.1"], "loss.kl_coef"),
    # LoRA is model.lora_r for either engine; the old TRL-only key points there
    (["train.engine=trl", "trl.lora_r=4"], "--set: unknown key 'trl.lora_r' (did you mean 'model.lora_r'?)"),
])
def test_bad_engine_options_are_refused_in_one_line(sets, key):
    with pytest.raises(UserError) as err:
        load_config({"rollout.prompts_per_step": 4, "rollout.group_size": 4}, overrides=sets)
    assert str(err.value).startswith(key) and "\n" not in str(err.value)


def test_a_missing_optional_package_names_its_extra(monkeypatch):
    import importlib.util

    from entropic_tune import extras

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "peft" else real(name, *a))
    with pytest.raises(UserError, match=r"^model.lora_r > 0 \(LoRA\) needs the 'peft' package.*entropic-tune\[lora\]"):
        extras.check_packages({"train.engine": "trl", "model.lora_r": 8})
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(UserError, match=r"entropic-tune\[trl\]"):
        load_config({"train.engine": "trl"})


@pytest.mark.slow
def test_a_crashed_trl_trial_resumes_exactly():
    """Off-policy (TRL's behaviour log-prob pass, the mini-batch permutation) EntroPIC on the TRL engine:
    a trial that crashes at step 3 and is restored from its step-2 checkpoint (model, optimizer,
    controller, data order, sampling and mini-batch RNG streams) reports exactly the steps 3 and 4 of
    a straight run."""

    config = {**_fast(), "method": "entropic", "train.engine": "trl", "train.total_steps": 4,
              "rollout.eval_every": 3, "optim.mini_batches_per_rollout": 2}
    straight = Recorder()
    run_trial(config, straight, checkpoint_every=2)
    crashed = Recorder()
    with pytest.raises(SimulatedFailure):
        run_trial({**config, "debug.fail_at_step": 3}, crashed, checkpoint_every=2)
    assert [int(m[M.STEP]) for m in crashed.metrics] == [1, 2]
    resumed = Recorder()
    run_trial({**config, "debug.fail_at_step": 3}, resumed, checkpoint=crashed.checkpoints[2], checkpoint_every=2)
    assert [int(m[M.STEP]) for m in resumed.metrics] == [3, 4]
    for ref, got in zip(straight.metrics[2:], resumed.metrics, strict=True):
        assert deterministic(got) == deterministic(ref)
    assert straight.metrics[2][M.ALPHA] != straight.metrics[1][M.ALPHA]  # the controller state mattered
    assert all(m[M.PPO_KL] != 0 and m[M.GRAD_NORM] > 0 for m in straight.metrics)  # off-policy updates ran


@pytest.mark.slow
def test_compare_runs_the_trl_engine_through_ray_tune(tmp_path, capsys, ray_local):
    """``compare --set train.engine=trl``: 2 trials (grpo, entropic) as Ray Tune trials on the TRL engine,
    with the same results contract as the native engine (summary.csv, history.csv, report)."""
    import csv

    from entropic_tune.commands import main as cli
    from entropic_tune.results.writers import history_columns

    code = cli.main(["compare", "--space", "smoke", "--set", "train.engine=trl", "--out", str(tmp_path),
                     "--name", "trl", "--quiet"])
    _, err = capsys.readouterr()
    assert code == 0, err
    exp = tmp_path / "trl"
    summary = list(csv.DictReader(open(exp / "summary.csv")))
    assert sorted(r["method"] for r in summary) == ["entropic", "grpo"]
    assert all(r["status"] == "TERMINATED" and r["steps"] == "3" for r in summary)
    assert all(r["final/pass@1"] != "" and r["base/pass@1"] != "" for r in summary)
    history = list(csv.DictReader(open(exp / "history.csv")))
    assert list(history[0]) == history_columns() and len(history) == 6
    alphas = {r["method"]: {float(h[M.ALPHA]) for h in history if h["trial_id"] == r["trial_id"]} for r in summary}
    # the smoke model is barely warm-started (entropy ~2.6 nats, far above the target): alpha saturates
    assert alphas["grpo"] == {0.0} and alphas["entropic"] == {1.0}
    meta = yaml.safe_load((exp / "experiment.yaml").read_text())
    assert meta["base"]["train.engine"] == "trl"
    assert (exp / "report.md").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("sets", [{"model.lora_r": 4}, {"model.gradient_checkpointing": True}])
def test_lora_and_gradient_checkpointing_pass_through(sets):
    """``model.lora_r`` (PEFT LoRA: only the adapters train) and ``model.gradient_checkpointing``, the
    same keys as the native engine's, run a step
    of EntroPIC on the CPU with every step key finite."""
    from entropic_tune.engines.trl.engine import TRLEngine

    engine = TRLEngine(load_config({**_fast(), "method": "entropic", "train.engine": "trl", **sets}))
    before = {n: p.detach().clone() for n, p in engine.trl.model.named_parameters()}
    row = engine.step()
    assert set(row) == set(M.STEP_KEYS) and row[M.GRAD_NORM] > 0
    moved = {n for n, p in engine.trl.model.named_parameters() if not torch.equal(p, before[n])}
    if "model.lora_r" in sets:  # the policy's own adapters (model.lora_*), as in the native engine
        assert moved and all("lora_" in n for n in moved)
        assert {n for n, p in engine.trl.model.named_parameters() if p.requires_grad} == {
            n for n in before if "lora_" in n}
    else:
        assert engine.trl.model.is_activation_checkpointing and len(moved) == len(before)


@pytest.mark.slow
def test_the_gpu_check_script_runs_its_tiny_cpu_smoke(tmp_path):
    """``benchmarks/gpu_check_trl.py --tiny``: both engines on a tiny random model on the CPU, JSON out
    (the script's real use is on a CUDA machine; no test depends on a GPU)."""
    import json
    from pathlib import Path

    script = Path(__file__).resolve().parents[3] / "benchmarks" / "gpu_check_trl.py"
    out = tmp_path / "tiny.json"
    done = subprocess.run([sys.executable, str(script), "--tiny", "--steps", "1", "--out", str(out), "--workdir",
                           str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    results = {r["case"]: r for r in json.loads(out.read_text())["results"]}
    assert set(results) == {"native", "trl"}  # no CUDA here, so no vLLM case
    for r in results.values():
        assert r["step_s"] > 0 and r["tokens_per_s"] > 0 and r["peak_gpu_memory_gb"] == 0.0


@pytest.mark.slow
def test_the_autotune_probe_drives_the_trl_engine():
    """``controller.autotune: probe`` on the TRL engine: alpha is the probe's square wave (+A, -A), and
    the controller's phase is the probe's."""
    from entropic_tune.engines.trl.engine import TRLEngine

    engine = TRLEngine(load_config({**_fast(), "method": "entropic", "train.engine": "trl", "train.total_steps": 4,
                                    "controller.autotune": "probe", "controller.probe_hold": 1,
                                    "controller.probe_steps": 2, "controller.probe_amplitude": 0.5}))
    rows = [engine.step() for _ in range(2)]
    assert [r[M.ALPHA] for r in rows] == [0.5, -0.5]
    assert all(r[M.PHASE] == 1 for r in rows)


@pytest.mark.slow
def test_under_trls_own_train_loop_the_controller_is_saved_and_resumed_with_its_checkpoints(tmp_path):
    """``ControlledGRPOTrainer`` used as a plain TRL trainer (``trainer.train()``, TRL's data loader and
    checkpoints): the controller's state is written into each ``checkpoint-<step>`` folder, and a run
    resumed from checkpoint-1 repeats step 2 exactly (entropy, alpha, loss) and ends in the same state."""
    import json
    import os
    import random

    from datasets import Dataset
    from trl import GRPOConfig

    from entropic_tune.engines.trl.control import LossControl
    from entropic_tune.engines.trl.settings import grpo_arguments
    from entropic_tune.engines.trl.trainer import CONTROLLER_FILE, ControlledGRPOTrainer
    from entropic_tune.model.loading import load_policy
    from entropic_tune.tasks import build_task

    cfg = load_config({**_fast(), "method": "entropic", "train.engine": "trl", "train.total_steps": 2})
    task = build_task(cfg.task)
    problems = task.sample_train(random.Random(0), 8)
    data = Dataset.from_list([{"prompt": f"<bos>{p.prompt}", "problem": i} for i, p in enumerate(problems)])

    def reward(prompts, completions, problem, **_):
        return [task.reward(problems[i], c) for i, c in zip(problem, completions, strict=True)]

    def trainer() -> ControlledGRPOTrainer:
        policy = load_policy(cfg.model, cfg.task, task)
        args = GRPOConfig(**{**grpo_arguments(cfg, str(tmp_path)), "save_strategy": "steps", "save_steps": 1})
        return ControlledGRPOTrainer(model=policy.model, reward_funcs=[reward], args=args, train_dataset=data,
                                     processing_class=policy.tokenizer,
                                     control=LossControl(cfg, torch.Generator().manual_seed(0)))

    straight = trainer()
    straight.train()
    saved = json.loads((tmp_path / "checkpoint-1" / CONTROLLER_FILE).read_text())
    logs = [h for h in straight.state.log_history if M.ALPHA in h]
    assert saved["alpha"] == pytest.approx(logs[0][M.ALPHA]) and saved["integral"] != 0
    resumed = trainer()
    resumed.train(resume_from_checkpoint=os.path.join(tmp_path, "checkpoint-1"))
    again = [h for h in resumed.state.log_history if M.ALPHA in h]  # step 1 (restored log), then step 2
    assert [(h[M.ENTROPY], h[M.ALPHA], h["loss"]) for h in again] == [
        (h[M.ENTROPY], h[M.ALPHA], h["loss"]) for h in logs]
    assert resumed.control.controller.state_dict() == straight.control.controller.state_dict()
