"""The TRL engine's settings: TRL's ``GRPOConfig`` for a config (which optional packages a config
needs is :mod:`entropic_tune.extras`, checked with the config, below the engines).

Torch-free and TRL-free at import. ``grpo_arguments`` is the one place that maps the project's config
to TRL's arguments (METHOD.md 8); ``benchmarks/bench_trl.py`` uses it too, so both drive TRL on the
same work.
"""

from __future__ import annotations

from typing import Any


def optimizer_steps_per_rollout(flat: dict[str, Any]) -> int:
    """``optim.mini_batches_per_rollout x optim.ppo_epochs``."""
    return int(flat["optim.mini_batches_per_rollout"]) * int(flat["optim.ppo_epochs"])


def grpo_arguments(config: Any, output_dir: str, processes: int = 1, cpu: bool = True) -> dict[str, Any]:
    """Keyword arguments of TRL's ``GRPOConfig`` for a project :class:`~entropic_tune.config.Config`.

    The mapping (METHOD.md 8): one rollout step = one TRL generation of ``B G`` completions over
    ``processes`` processes; ``optim.mini_batches_per_rollout`` = ``steps_per_generation`` (each
    optimizer step one micro-batch of ``B G / (processes M)`` completions, no gradient accumulation),
    ``optim.ppo_epochs`` = ``num_iterations``; no reference model (``beta`` 0), TRL's ``loss_type``
    'dapo' (replaced by the project's loss anyway), the rollout temperature for sampling and for the
    log-probs, no top-k/top-p, truncated completions kept, AdamW's rate, decay and clip as configured
    with a constant rate.
    """
    rollout, optim, trl = config.rollout, config.optim, config.trl
    rows = rollout.batch_size // processes
    kwargs: dict[str, Any] = dict(
        output_dir=output_dir,
        per_device_train_batch_size=rows // optim.mini_batches_per_rollout,
        gradient_accumulation_steps=1,
        steps_per_generation=optim.mini_batches_per_rollout,
        num_iterations=optim.ppo_epochs,
        num_generations=rollout.group_size,
        max_completion_length=rollout.max_new_tokens,
        temperature=rollout.temperature,
        top_k=0,
        top_p=1.0,
        beta=0.0,
        epsilon=config.loss.clip_eps_low,
        epsilon_high=config.loss.clip_eps_high,
        loss_type=trl.loss_type,
        scale_rewards="group" if trl.scale_rewards == "native" else trl.scale_rewards,
        mask_truncated_completions=False,
        learning_rate=optim.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=optim.weight_decay,
        max_grad_norm=optim.grad_clip if optim.grad_clip > 0 else float("inf"),
        max_steps=config.train.total_steps * optim.mini_batches_per_rollout * optim.ppo_epochs,
        use_cpu=cpu,
        bf16=trl.bf16,
        fp16=False,
        use_vllm=trl.use_vllm,
        vllm_mode=trl.vllm_mode,
        vllm_gpu_memory_utilization=trl.vllm_gpu_memory_utilization,
        vllm_importance_sampling_correction=trl.vllm_importance_sampling_correction,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
        shuffle_dataset=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        seed=config.train.seed,
        log_completions=False,
    )
    if config.model.gradient_checkpointing:  # only when on: transformers 5 renamed gradient_checkpointing
        kwargs["activation_checkpointing"] = True
    if trl.vllm_server_base_url:
        kwargs["vllm_server_base_url"] = trl.vllm_server_base_url
    if trl.deepspeed:
        kwargs["deepspeed"] = trl.deepspeed
    return kwargs
