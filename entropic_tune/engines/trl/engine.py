"""The TRL engine (``train.engine: trl``): TRL's ``GRPOTrainer`` driven one rollout step at a time.

``TRLEngine`` has the native trainer's surface (``step() -> dict``, ``evaluate()``, ``state_dict()``,
``load_state_dict()``, ``set_learning_rate()``, ``policy``, ``task``, ``controller``, ``step_count``,
``last_eval``), so ``train``, the Ray Tune trial, ``--resume`` and the large evaluations run it
unchanged. One step (METHOD.md 8):

1. draw the step's ``B`` prompts from the seeded ``data_rng`` exactly as the native engine does
   (``task.sample_train``); with ``W`` workers (``dist``) each keeps its shard (``distributed.shard``:
   ``B / W`` prompts), each prompt ``G`` times, as TRL's generation batch of this process;
2. TRL samples (transformers' ``generate``, or vLLM; with ``train.per_prompt_sampling`` each prompt's
   group from its own stream, ``ControlledGRPOTrainer._generate_single_turn``), scores with the task's
   reward, computes the advantages and, off-policy, the behaviour log-probs (``_generate_and_score_completions``); the
   subclass measures the entropy there and updates the controller once;
3. ``ppo_epochs x mini_batches_per_rollout`` optimizer steps, the mini-batches drawn as the native
   engine draws them (``native.trainer.worker_minibatches``: a fresh permutation of the global batch's
   rows per epoch from the run's generator, this worker's rows of each), each ``compute_loss`` (the
   project's loss on TRL's tensors) -> accelerate's backward -> gradient clipping -> AdamW;
4. one flat dict with the keys of ``metrics.STEP_KEYS``.

Several workers (``train.num_workers``; ``train --workers N`` or ``--workers-per-trial N``): the caller
has set up the ``torch.distributed`` group (:class:`~entropic_tune.distributed.Collective`); accelerate
joins it (:func:`accelerate_joins`), wraps the model in DDP and averages the gradients, and every value
of the step dict is the global batch's, as on the native engine (METHOD.md 7, 8).

Model, tokenizer and warm-start are the project's (``policy.load_policy``); the held-out evaluations
(``evaluation.training_evaluation``, ``final_evaluation``) run the project's sampler on TRL's model.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from ... import metrics as M
from ...config import Config
from ...distributed import Collective, lead_first, shard
from ...extras import check_packages
from ...model.loading import load_policy
from ...model.policy import Policy
from ...tasks import Problem, build_task
from ..native.evaluation import final_evaluation, training_evaluation
from ..native.trainer import (
    SimulatedFailure,
    fails_now,
    restore_run_state,
    rollout_metrics,
    run_state,
    worker_minibatches,
)
from ..records import FinalEvaluation
from .control import ROWS, LossControl
from .settings import grpo_arguments


class TRLEngine:
    """Owns TRL's trainer, the model, optimizer, controller, RNG streams and step counter of one run."""

    def __init__(self, config: Config, dist: Collective | None = None) -> None:
        from ...config import to_flat

        if dist is not None and dist.world != config.train.num_workers:
            raise ValueError(f"train.num_workers is {config.train.num_workers} but the group has {dist.world}")
        check_packages(to_flat(config))
        from datasets import Dataset
        from transformers import PrinterCallback
        from trl import GRPOConfig

        from .trainer import ControlledGRPOTrainer

        self.config = config
        self.dist = dist
        world, rank = (dist.world, dist.rank) if dist is not None else (1, 0)
        self.prompts = shard(config.rollout.prompts_per_step, world, rank)  # this worker's prompts
        if config.train.threads:
            torch.set_num_threads(config.train.threads)
        self.task = build_task(config.task)
        with lead_first(dist):  # rank 0 builds (and caches) the warm-start a first run needs
            base = load_policy(config.model, config.task, self.task)
        self.output_dir = tempfile.gettempdir()  # TRL needs one; save_strategy 'no': nothing is written
        with accelerate_joins(dist):  # TRL's arguments and trainer, accelerate's state and DDP
            args = GRPOConfig(**grpo_arguments(config, self.output_dir, processes=world, cpu=base.device.type == "cpu"))
            self.generator = torch.Generator(device=base.device).manual_seed(config.train.seed)
            self.control = LossControl(config, self.generator)
            self.problems: list[Problem] = []  # this step's prompts, for the reward function
            # TRL requires a train_dataset; the engine hands it each step's batch itself and never iterates it.
            placeholder = Dataset.from_list([{"prompt": "", "problem": 0}])
            self.trl = ControlledGRPOTrainer(
                model=base.model, reward_funcs=[self._reward], args=args, processing_class=base.tokenizer,
                train_dataset=placeholder,
                control=self.control, scale_rewards=config.trl.scale_rewards,
            )
            self.trl.remove_callback(PrinterCallback)
            accelerator = self.trl.accelerator
            model = self.trl.model
            self.policy = Policy(model=model, tokenizer=base.tokenizer, device=accelerator.device,
                                 use_chat_template=base.use_chat_template)
            # transformers' Trainer seeded every global RNG with train.seed; the run's own streams start here
            torch.manual_seed(config.train.seed)
            if config.train.threads:
                torch.set_num_threads(config.train.threads)  # accelerate may have changed it
            optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                          lr=config.optim.lr, weight_decay=config.optim.weight_decay)
            self.model, self.optimizer = accelerator.prepare(model, optimizer)  # DDP with several processes
        if accelerator.num_processes != world:
            raise RuntimeError(f"accelerate sees {accelerator.num_processes} processes, the run has {world} workers")
        self.trl.model_wrapped = self.model
        self.data_rng = random.Random(config.train.seed)
        self.step_count = 0
        self.restored = False
        self.last_eval: dict[str, float] | None = None

    @property
    def controller(self) -> Any:
        return self.control.controller

    # --- the engine surface ----------------------------------------------------------------------

    def step(self) -> dict[str, float]:
        """One rollout step; returns exactly the keys of ``metrics.STEP_KEYS``."""
        cfg = self.config
        self.step_count += 1
        if fails_now(cfg, self.step_count, self.restored, self.dist):
            raise SimulatedFailure(f"debug.fail_at_step: simulated crash at step {self.step_count}")
        if self.last_eval is None:
            self.last_eval = self.evaluate()  # the base model's accuracy, before any update
        start = time.perf_counter()
        group = cfg.rollout.group_size
        problems = self.task.sample_train(self.data_rng, cfg.rollout.prompts_per_step)  # the global batch
        self.problems = problems[self.prompts.start : self.prompts.stop]  # this worker's part (all of it alone)
        self.trl.prompt_streams = (cfg.train.seed, self.step_count, self.prompts.start) \
            if cfg.train.per_prompt_sampling else None
        inputs = [{"prompt": self._prompt(p), "problem": i} for i, p in enumerate(self.problems) for _ in range(group)]
        self.trl.model.train()  # TRL reads the mode: training batch sizes and generation counts
        self.control.step_count = self.step_count - 1  # the generation begins step step_count
        self.trl._metrics["train"].clear()  # TRL's own log lists; its train() would empty them per log
        batch = self.trl._generate_and_score_completions(inputs)
        rollout_s = time.perf_counter() - start
        update_start = time.perf_counter()
        rows = batch["completion_ids"].shape[0]
        n = rows if self.dist is None else cfg.rollout.batch_size  # the global batch's rows
        lo = self.prompts.start * group
        local = range(lo, lo + rows) if self.dist is not None else None
        n_mb = min(cfg.optim.mini_batches_per_rollout, n)
        clip = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf")
        for _ in range(cfg.optim.ppo_epochs):
            for chunk in worker_minibatches(n, n_mb, self.generator, self.policy.device,
                                            cfg.train.per_prompt_sampling, local):
                loss = self.trl.compute_loss(self.model, _rows(batch, chunk, rows))
                self.optimizer.zero_grad(set_to_none=True)
                self.trl.accelerator.backward(loss)
                norm = self.trl.accelerator.clip_grad_norm_(self.model.parameters(), clip)
                loss_value, grad_norm = torch.stack([loss.detach().double(), norm.double()]).tolist()
                self.control.check_finite(loss_value, "loss")
                self.control.record_grad_norm(grad_norm)
                self.optimizer.step()
                self.trl.state.global_step += 1  # TRL re-syncs vLLM's weights when this moves
        self.trl.model.eval()
        update_s = time.perf_counter() - update_start
        eval_every = cfg.rollout.eval_every
        if self.step_count == cfg.train.total_steps or (eval_every and self.step_count % eval_every == 0):
            self.last_eval = self.evaluate()
        n_tokens = float(self._sum(batch["completion_mask"].sum().double()).item())  # the global batch's
        if self.dist is not None:  # the slowest worker's
            rollout_s = float(self.dist.max(torch.tensor(rollout_s, dtype=torch.float64, device=self.policy.device)))
        out: dict[str, float] = {M.STEP: float(self.step_count)}
        out.update(self.control.step_metrics())
        out.update(rollout_metrics(self.trl.last_rewards.float().cpu(), n_tokens, group))
        out.update({k: self.last_eval[k] for k in M.EVAL_KEYS})
        out[M.STEP_S] = time.perf_counter() - start
        out[M.ROLLOUT_TOKENS_PER_S] = n_tokens / max(rollout_s, 1e-9)
        out[M.UPDATE_TOKENS_PER_S] = n_tokens * cfg.optim.ppo_epochs / max(update_s, 1e-9)
        for key, value in out.items():
            self.control.check_finite(value, key)
        return {k: float(out[k]) for k in M.STEP_KEYS}

    def evaluate(self) -> dict[str, float]:
        """The held-out evaluation of the current model (``evaluation.training_evaluation``)."""
        return training_evaluation(self.policy, self.task, self.config, self.step_count)

    def large_evaluation(self, prefix: str) -> FinalEvaluation | None:
        """The large evaluation (``base`` before step 1, ``final`` after the last step) of TRL's model,
        by the project's sampler (``native.evaluation.final_evaluation``: the same seeds and sizes)."""
        return final_evaluation(self.policy, self.task, self.config, self.step_count, prefix)

    def set_learning_rate(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def state_dict(self) -> dict[str, object]:
        """Everything needed to continue exactly: model, optimizer, controller, RNG streams, step."""
        return run_state(self.trl.accelerator.unwrap_model(self.model), self.optimizer, self.controller,
                         self.data_rng, self.generator, self.step_count, self.last_eval)

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.step_count, self.last_eval = restore_run_state(
            state, self.trl.accelerator.unwrap_model(self.model), self.optimizer, self.controller, self.data_rng,
            self.generator)
        self.trl.state.global_step = self.step_count * self.config.optim.mini_batches_per_rollout \
            * self.config.optim.ppo_epochs
        self.restored = True

    # --- internals -------------------------------------------------------------------------------

    def _sum(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` summed over the workers (itself alone)."""
        return value if self.dist is None else self.dist.sum(value)

    def _prompt(self, problem: Problem) -> str | list[dict[str, str]]:
        """TRL's prompt for a problem, tokenised as ``Policy.encode_prompt`` does: a chat message for a
        model with a chat template (TRL applies it), else the text after the BOS token, spelled out."""
        if self.policy.use_chat_template:
            return [{"role": "user", "content": problem.prompt}]
        bos = self.policy.tokenizer.bos_token
        return f"{bos}{problem.prompt}" if bos is not None else problem.prompt

    def _reward(self, prompts: list, completions: list[str], problem: list[int], **_: object) -> list[float]:
        """TRL's reward function: the task's verifiable reward of each completion."""
        return [float(self.task.reward(self.problems[i], text)) for i, text in zip(problem, completions, strict=True)]


def _rows(batch: dict[str, Any], index: torch.Tensor, rows: int) -> dict[str, Any]:
    """The mini-batch ``index`` of TRL's generation batch: every per-row tensor indexed, the rest as is.
    An empty ``index`` (a worker none of whose rows the global mini-batch holds) gives one all-masked row
    marked as no row (``control.ROWS``), so the worker joins the collectives and DDP's gradient
    all-reduce, and adds nothing."""
    empty = index.numel() == 0
    if empty:
        index = torch.zeros(1, dtype=torch.long, device=index.device)
    part = {k: v[index] if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == rows else v
            for k, v in batch.items()}
    if empty:
        part["completion_mask"] = torch.zeros_like(part["completion_mask"])
        part[ROWS] = 0
    return part


GROUP_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "OMP_NUM_THREADS")
"""The variables accelerate reads (and writes) when it detects a process group."""


@contextmanager
def accelerate_joins(dist: Collective | None) -> Iterator[None]:
    """Let accelerate (``PartialState``, built by TRL's arguments and trainer inside the block) join the
    worker group the caller set up.

    accelerate detects a run of several CPU processes from torchrun's variables only (``LOCAL_RANK`` set
    or ``WORLD_SIZE > 1``; ``MULTI_CPU``) and then joins an already initialised ``torch.distributed``
    group rather than creating one; on GPUs ``LOCAL_RANK`` selects ``MULTI_GPU``. Ray Train sets these
    variables on its workers (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``,
    ``MASTER_ADDR``, ``MASTER_PORT``); ``train --workers N`` (a file rendezvous) does not, so the missing
    ones are set here from the group (one machine: local rank = rank). ``OMP_NUM_THREADS`` keeps
    torch's thread count (accelerate would set it to the cores over the local workers). Every variable
    is restored on exit, so a later one-process engine in the same process (rank 0 of ``train --workers``
    is the caller's process) sees none of them."""
    if dist is None:
        yield
        return
    saved = {key: os.environ.get(key) for key in GROUP_ENV}
    threads = torch.get_num_threads()
    for key, value in (("RANK", dist.rank), ("WORLD_SIZE", dist.world), ("LOCAL_RANK", dist.rank),
                       ("LOCAL_WORLD_SIZE", dist.world), ("OMP_NUM_THREADS", threads)):
        os.environ.setdefault(key, str(value))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        torch.set_num_threads(threads)
