"""``ControlledGRPOTrainer``: TRL's ``GRPOTrainer`` with the project's losses and entropy controllers.

These methods of ``GRPOTrainer`` are overridden, nothing is copied from it:

- ``_generate_and_score_completions`` (once per rollout batch): TRL samples, scores and computes its
  advantages; then, with ``trl.scale_rewards: native``, the advantages are replaced by the project's
  ``rollout.compute_group_advantages`` of the same rewards, and the step's entropy is measured over the
  whole batch before any update (from TRL's own behaviour log-prob pass when off-policy, which is asked
  for the entropies too; on-policy from the first loss forward, which runs on the sampling weights) and
  the controller is updated once from that one global value (``LossControl.observe``: a sum over the
  processes through accelerate), so every rank holds the same alpha.
- ``compute_loss`` (per micro-batch): TRL's per-token log-probs and entropies
  (``_get_per_token_logps_and_entropies``), ``old_per_token_logps``, ``advantages`` and
  ``completion_mask`` go to ``losses.compute_policy_loss`` with alpha/bonus/knob from
  ``actuators.actuate`` (``LossControl.loss``).
- ``_generate_single_turn`` (transformers' ``generate``), with per-prompt sampling streams
  (``prompt_streams``: ``train.sampling_seed: prompt``, automatic with several workers): each prompt's
  ``G`` completions are sampled in a generate call of their own, with torch's RNG seeded by
  ``distributed.prompt_seed(seed, step, global prompt index)`` inside ``torch.random.fork_rng`` (the
  global streams are left as they were), so the samples depend neither on the number of processes
  nor on the other prompts of the batch (no padding between prompts either).
- with several processes, each process's batch is right-padded to the longest completion of the
  global batch (all-masked columns), so its rows are rows of the one-process batch and the
  selections over the gathered scores (Clip-Cov, KL-Cov, forking tokens) line up.
- ``_save_checkpoint`` / ``_load_optimizer_and_scheduler``: under TRL's own ``train()`` loop the
  controller's state is written into each checkpoint folder (``entropic_controller.json``) and read back
  on ``train(resume_from_checkpoint=...)``, as TRL does for its adaptive entropy coefficient.

The TRL engine (:mod:`entropic_tune.engines.trl.engine`) drives this class one rollout step at a time;
it is also usable on its own with ``trainer.train()`` (TRL's loop, data and logging).
"""

from __future__ import annotations

import json
import os

import torch
from trl import GRPOTrainer

from ... import metrics as M
from ...distributed import Collective, pad_columns, prompt_seed
from ..native.rollout import compute_group_advantages
from .control import ROWS, LossControl

CONTROLLER_FILE = "entropic_controller.json"
"""The controller's state in a TRL checkpoint folder (``checkpoint-<step>/``)."""

COMPLETION_COLUMNS = ("completion_ids", "completion_mask", "old_per_token_logps", "sampling_per_token_logps",
                      "ref_per_token_logps", "importance_sampling_ratio", "tool_mask")
"""The (rows, completion width) tensors of TRL's generation batch."""


class ControlledGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` whose loss is ``entropic_tune.losses.compute_policy_loss`` of ``control.config``
    and whose entropy controller is ``control.controller`` (module docstring). ``scale_rewards``:
    ``trl.scale_rewards`` ('native' replaces TRL's advantages by the project's)."""

    def __init__(self, *args: object, control: LossControl, scale_rewards: str = "native", **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.control = control
        self.native_advantages = scale_rewards == "native"
        self.last_rewards: torch.Tensor | None = None  # (N,) every process's rewards of the last batch
        self._capture = False
        self._captured: torch.Tensor | None = None
        self._collective: Collective | None = None
        self.prompt_streams: tuple[int, int, int] | None = None
        """``(seed, step, first global prompt index)`` of the next generation: per-prompt sampling
        streams (None: TRL's sampling, one stream for the batch)."""

    # --- helpers ---------------------------------------------------------------------------------

    def _reduce(self, value: torch.Tensor) -> torch.Tensor:
        return self.accelerator.reduce(value, reduction="sum") if self.accelerator.num_processes > 1 else value

    def _gather(self, value: torch.Tensor) -> torch.Tensor:
        return self.accelerator.gather(value) if self.accelerator.num_processes > 1 else value

    @property
    def dist(self) -> Collective | None:
        """The project's collective over accelerate's process group (None with one process)."""
        if self.accelerator.num_processes > 1 and self._collective is None:
            self._collective = Collective()
        return self._collective

    # --- overrides -------------------------------------------------------------------------------

    def _get_per_token_logps_and_entropies(self, model, *args, compute_entropy=False, **kwargs):  # noqa: ANN001
        # Inside _generate_and_score_completions the first call is TRL's behaviour (old) log-prob pass
        # over the whole batch; it is asked for the entropies too, so measuring H costs no forward.
        if self._capture and self._captured is None:
            logps, entropies, aux = super()._get_per_token_logps_and_entropies(
                model, *args, compute_entropy=True, **kwargs)
            self._captured = entropies
            return logps, (entropies if compute_entropy else None), aux
        return super()._get_per_token_logps_and_entropies(model, *args, compute_entropy=compute_entropy, **kwargs)

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):  # noqa: ANN001
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        weights = self.reward_weights.to(rewards_per_func.device).unsqueeze(0)
        self.last_rewards = (rewards_per_func * weights).nansum(dim=1)  # (N,) all processes, TRL's sum
        return rewards_per_func

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations,  # noqa: ANN001
                              has_tool_images=False):
        if self.prompt_streams is None or not self.model.training:
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations,
                                                 has_tool_images)
        if self.use_vllm or images is not None or multimodal_fields:  # refused by the config (vLLM)
            raise ValueError("per-prompt sampling streams map to transformers' generate of text prompts only")
        seed, step, first = self.prompt_streams
        group = self.num_generations
        device = self.accelerator.device
        forked = [device] if device.type == "cuda" else []
        completions: list = []
        for k, start in enumerate(range(0, len(prompt_ids), group)):
            with torch.random.fork_rng(devices=forked):
                torch.manual_seed(prompt_seed(seed, step, first + k))  # the CPU's and every CUDA device's
                ids, _ = super()._generate_single_turn(prompt_ids[start:start + group], None, {}, num_generations,
                                                       has_tool_images)
            completions.extend(ids)
        return completions, None

    def _generate_and_score_completions(self, inputs):  # noqa: ANN001
        if not self.model.training:  # TRL's own evaluation loop: nothing of the controller moves
            return super()._generate_and_score_completions(inputs)
        self._captured, self._capture = None, True
        try:
            out = super()._generate_and_score_completions(inputs)
        finally:
            self._capture = False
        if self.accelerator.num_processes > 1:
            out = self._pad_to_global_width(out)
            if self._captured is not None:
                self._captured = pad_columns(self._captured, out["completion_ids"].shape[1], 0.0)
        rows = out["completion_ids"].shape[0]
        if self.native_advantages:
            # The project's advantages of the same (gathered) rewards, then this process's rows
            # (TRL slices its own the same way).
            advantages = compute_group_advantages(self.last_rewards.float(), self.num_generations)
            start = self.accelerator.process_index * rows
            out["advantages"] = advantages[start:start + rows].to(out["advantages"])
        mask = self._loss_mask(out)
        entropies = self._captured
        if entropies is None and self.args.steps_per_generation > 1:
            # On-policy but the batch is split over several micro-batches (TRL's gradient accumulation
            # aligned with the generation): the first loss forward would see part of the batch only.
            ids, attn, keep = self._model_inputs(out)
            with torch.no_grad():
                _, entropies, _ = super()._get_per_token_logps_and_entropies(
                    self.model, ids, attn, keep, batch_size=self.args.per_device_train_batch_size,
                    compute_entropy=True)
        self.control.begin_step(self.control.step_count + 1)  # one generation = one rollout step
        if entropies is not None:
            self._observe(entropies, mask)
        return out

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001
        if return_outputs:
            raise ValueError("ControlledGRPOTrainer does not return outputs")
        if not self.model.training:
            return super().compute_loss(model, inputs)
        ids, attn, keep = self._model_inputs(inputs)
        logps, entropies, _ = self._get_per_token_logps_and_entropies(model, ids, attn, keep, compute_entropy=True)
        mask = self._loss_mask(inputs)
        if self.control.pending:  # on-policy, one micro-batch per generation: this forward is pre-update
            self._observe(entropies.detach(), mask)
        dist = self.dist
        rows = inputs.get(ROWS, ids.shape[0]) if dist is not None else None
        loss = self.control.loss(logps, inputs.get("old_per_token_logps"), inputs["advantages"], mask, entropies,
                                 self._reduce, dist=dist, rows=rows)
        # accelerate averages the gradients over the processes; the project's loss is each process's
        # share of the global token-mean (METHOD.md 7.2), whose gradients are to be summed.
        return loss * self.accelerator.num_processes if dist is not None else loss

    def _observe(self, entropies: torch.Tensor, mask: torch.Tensor) -> None:
        alpha = self.control.observe(entropies.detach(), mask, self._reduce, self._gather)
        metrics = self._metrics["train"]  # TRL's logs under its own train() loop
        metrics[M.ENTROPY].append(self.control.entropy)
        metrics[M.ALPHA].append(alpha)

    def _pad_to_global_width(self, batch: dict) -> dict:
        """Right-pad the per-token tensors of this process's batch (``COMPLETION_COLUMNS``) to the global
        batch's longest completion: all-masked columns (ids the pad token, the rest 0)."""
        ids = batch["completion_ids"]
        rows, width = ids.shape
        target = int(self._gather(torch.tensor([width], device=ids.device)).max().item())
        if target == width:
            return batch
        padded = dict(batch)
        for key in COMPLETION_COLUMNS:
            value = batch.get(key)
            if isinstance(value, torch.Tensor) and value.shape == (rows, width):
                padded[key] = pad_columns(value, target, self._tokenizer.pad_token_id if key == "completion_ids" else 0)
        return padded

    @staticmethod
    def _model_inputs(inputs: dict) -> tuple[torch.Tensor, torch.Tensor, int]:
        ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        attn = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        return ids, attn, inputs["completion_ids"].size(1)

    @staticmethod
    def _loss_mask(inputs: dict) -> torch.Tensor:
        mask = inputs["completion_mask"]
        return mask if "tool_mask" not in inputs else mask * inputs["tool_mask"]

    # --- the controller's state in TRL's checkpoints (TRL's own train() loop) ----------------------

    def _save_checkpoint(self, model, trial):  # noqa: ANN001
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = os.path.join(self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}")
            with open(os.path.join(folder, CONTROLLER_FILE), "w") as f:
                json.dump(self.control.controller.state_dict(), f)

    def _load_optimizer_and_scheduler(self, checkpoint):  # noqa: ANN001
        super()._load_optimizer_and_scheduler(checkpoint)
        path = os.path.join(checkpoint, CONTROLLER_FILE) if checkpoint is not None else None
        if path is not None and os.path.exists(path):
            with open(path) as f:
                self.control.controller.load_state_dict(json.load(f))
