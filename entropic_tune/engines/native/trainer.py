"""The GRPO trainer: wires rollout, controller and loss; one flat metrics dict per step.

One rollout step (``Trainer.step``), top to bottom:
1. sample B prompts (data order from the seeded ``data_rng``) and G responses each;
2. measure the batch entropy ``H`` (token-mean over response tokens, before any update);
3. ask the controller for this step's coefficient (EntroPIC's alpha, or AEC's entropy weight);
4. run ``ppo_epochs x mini_batches_per_rollout`` optimizer steps on the batch (one = on-policy);
5. return one dict with exactly the keys of ``metrics.STEP_KEYS``, every value a finite float.

With ``dist`` (a :class:`~entropic_tune.distributed.Collective`, ``train.num_workers > 1``) each
worker runs this same step on its prompts of the global batch, and every value in the step dict is the
global batch's (METHOD.md 7). The trainer never imports Ray, Optuna or pandas; it runs the same on CPU
and CUDA.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Iterator
from typing import Any

import torch

from ... import metrics as M
from ...actuators import Actuation, actuate
from ...config import Config
from ...controllers import build_controller
from ...distributed import Collective, lead_first, pad_columns, prompt_generators, shard, token_mean
from ...losses import compute_policy_loss, resolve_loss
from ...model import compiling
from ...model.loading import load_policy, reference_model
from ...model.policy import Policy, trainable_parameters
from ...tasks import build_task
from ..records import FinalEvaluation, NonFiniteError
from .evaluation import final_evaluation, training_evaluation
from .rollout import Generation, RolloutBatch, collect_rollout, sequence_logprobs


class SimulatedFailure(RuntimeError):
    """Raised by ``debug.fail_at_step`` to test crash recovery."""


class Trainer:
    """Owns the model, optimizer, controller, RNG streams and step counter of one run: the native
    :class:`~entropic_tune.engines.base.Engine`."""

    def __init__(self, config: Config, dist: Collective | None = None) -> None:
        self.config = config
        self.dist = dist
        if dist is not None and dist.world != config.train.num_workers:
            raise ValueError(f"train.num_workers is {config.train.num_workers} but the group has {dist.world}")
        world, rank = (dist.world, dist.rank) if dist is not None else (1, 0)
        self.prompts = shard(config.rollout.prompts_per_step, world, rank)  # this worker's prompts
        if config.train.threads:
            torch.set_num_threads(config.train.threads)
        self.task = build_task(config.task)
        with lead_first(dist):  # rank 0 builds (and caches) the warm-start a first run needs
            self.policy: Policy = load_policy(config.model, config.task, self.task, config.train.seed)
        if dist is not None:  # replicas start equal (they are loaded alike; this makes sure)
            dist.broadcast_(list(self.policy.model.parameters()))
        self.compile_plan = compiling.apply(config, self.policy)  # model.compile: compiled decoding/update
        self.params = trainable_parameters(self.policy.model)  # every weight, or the LoRA adapters only
        # loss.kl_coef: the frozen initial model (with LoRA, the same model with its adapters disabled)
        self.reference = reference_model(self.policy.model) if config.loss.kl_coef > 0 else None
        torch.manual_seed(config.train.seed)
        self.optimizer = torch.optim.AdamW(self.params, lr=config.optim.lr, weight_decay=config.optim.weight_decay)
        self.controller = build_controller(config.controller)
        self.data_rng = random.Random(config.train.seed)
        self.generator = torch.Generator(device=self.policy.device).manual_seed(config.train.seed)
        self.loss_params = {k: v for k, v in dataclasses.asdict(config.loss).items() if k not in ("name", "kl_coef")}
        self.step_count = 0
        self.restored = False
        self.last_eval: dict[str, float] | None = None

    # --- public surface -----------------------------------------------------------------------

    def step(self) -> dict[str, float]:
        """One rollout step; returns exactly the keys of ``metrics.STEP_KEYS``."""
        cfg = self.config
        self.step_count += 1
        if fails_now(cfg, self.step_count, self.restored, self.dist):
            raise SimulatedFailure(f"debug.fail_at_step: simulated crash at step {self.step_count}")
        if self.last_eval is None:
            self.last_eval = self.evaluate()  # the base model's accuracy, before any update
        start = time.perf_counter()
        problems = self.task.sample_train(self.data_rng, cfg.rollout.prompts_per_step)  # the global batch
        problems = problems[self.prompts.start : self.prompts.stop]  # this worker's part (all of it alone)
        sampler = prompt_generators(cfg.train.seed, self.step_count, self.prompts, self.policy.device) \
            if cfg.train.per_prompt_sampling else self.generator
        self.policy.model.eval()
        # On-policy, the update's single forward runs on the sampling weights: its log-probs and
        # entropies are the behaviour ones bit for bit, so the rollout's no-grad pass is skipped.
        reuse = cfg.optim.on_policy
        batch = collect_rollout(self.policy, self.task, problems, cfg.rollout.group_size,
                                cfg.rollout.temperature, cfg.rollout.max_new_tokens, sampler,
                                behaviour=not reuse)
        if self.dist is not None:
            batch = self._pad_to_global_width(batch)
        ref_logp = self._reference_logprobs(batch.gen) if self.reference is not None else None
        update_start = time.perf_counter()
        first = self._forward(batch.gen) if reuse else None  # (N, R) log-probs and entropies, with grad
        step_entropy = first[1].detach() if first is not None else batch.entropy
        entropy = self._mean(step_entropy, batch.mask).item()  # H before any update (global batch)
        entropy_se = self._entropy_stderr(step_entropy, batch.mask).item()
        self._check_finite(entropy, "entropy")
        alpha = self.controller.update(entropy) if cfg.controller.update == "step" else 0.0
        update_metrics = self._update(batch, alpha, first, ref_logp)
        update_s = time.perf_counter() - update_start
        eval_every = cfg.rollout.eval_every
        if self.step_count == cfg.train.total_steps or (eval_every and self.step_count % eval_every == 0):
            self.last_eval = self.evaluate()
        n_tokens = float(self._sum(batch.mask.sum()).item())  # the global batch's response tokens
        out: dict[str, float] = {M.STEP: float(self.step_count), M.ENTROPY: entropy, M.ENTROPY_STDERR: entropy_se}
        out.update(update_metrics)
        control = self.controller.metrics()
        out.update(control)
        out[M.ACTUATOR_VALUE] = self._actuate(control[M.ALPHA]).value  # the last mini-batch's knob
        out.update(self._rollout_metrics(batch, n_tokens))
        out.update({k: self.last_eval[k] for k in M.EVAL_KEYS})
        out[M.STEP_S] = time.perf_counter() - start
        rollout_s = batch.rollout_seconds if self.dist is None else \
            float(self.dist.max(torch.tensor(batch.rollout_seconds, dtype=torch.float64,
                                             device=self.policy.device)).item())  # the slowest worker's
        out[M.ROLLOUT_TOKENS_PER_S] = n_tokens / max(rollout_s, 1e-9)
        out[M.UPDATE_TOKENS_PER_S] = n_tokens * cfg.optim.ppo_epochs / max(update_s, 1e-9)
        for key, value in out.items():
            self._check_finite(value, key)
        return {k: float(out[k]) for k in M.STEP_KEYS}

    def evaluate(self) -> dict[str, float]:
        """Held-out accuracy, pass@k and entropy of the current model (:func:`evaluation.training_evaluation`)."""
        return training_evaluation(self.policy, self.task, self.config, self.step_count)

    def large_evaluation(self, prefix: str) -> FinalEvaluation | None:
        """The large evaluation of the current model (``base`` before step 1, ``final`` after the last
        step; :func:`~entropic_tune.engines.native.evaluation.final_evaluation`)."""
        return final_evaluation(self.policy, self.task, self.config, self.step_count, prefix)

    def set_learning_rate(self, lr: float) -> None:
        """The optimizer's learning rate from now on (PBT changes it between checkpoints)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def state_dict(self) -> dict[str, object]:
        """Everything needed to continue exactly: model, optimizer, controller, RNG streams, step."""
        return run_state(self.policy.model, self.optimizer, self.controller, self.data_rng, self.generator,
                         self.step_count, self.last_eval)

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.step_count, self.last_eval = restore_run_state(state, self.policy.model, self.optimizer,
                                                            self.controller, self.data_rng, self.generator)
        self.restored = True

    # --- internals ----------------------------------------------------------------------------

    def _forward(self, gen: Generation) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probs and entropies ``(n, R)`` of ``gen`` at temperature T, with grad (train mode)."""
        self.policy.model.train()
        return sequence_logprobs(self.policy, gen, self.config.rollout.temperature)

    def _update(self, batch: RolloutBatch, alpha: float,
                first: tuple[torch.Tensor, torch.Tensor] | None = None,
                ref_logp: torch.Tensor | None = None) -> dict[str, float]:
        """``ppo_epochs x mini_batches_per_rollout`` optimizer steps; returns mean loss metrics.

        ``first``: the whole batch's forward, already run on the current weights (on-policy only);
        ``ref_logp`` (N, R): the reference policy's log-probs of the batch (``loss.kl_coef > 0``).
        """
        cfg = self.config
        model = self.policy.model
        model.train()
        n = batch.gen.input_ids.shape[0] if self.dist is None else cfg.rollout.batch_size
        lo = self.prompts.start * cfg.rollout.group_size
        local = range(lo, lo + batch.gen.input_ids.shape[0]) if self.dist is not None else None
        n_mb = min(cfg.optim.mini_batches_per_rollout, n)
        sums: dict[str, float] = {}
        count = 0
        for epoch in range(cfg.optim.ppo_epochs):
            for chunk in worker_minibatches(n, n_mb, self.generator, self.policy.device,
                                            cfg.train.per_prompt_sampling, local):
                fresh = epoch == 0 and count == 0  # weights still equal the behaviour policy's
                metrics = self._minibatch_step(batch, chunk, alpha, fresh, first if fresh else None, ref_logp)
                for key, value in metrics.items():
                    sums[key] = sums.get(key, 0.0) + value
                count += 1
        model.eval()
        return {k: v / count for k, v in sums.items()}

    def _minibatch_step(self, batch: RolloutBatch, idx: torch.Tensor, alpha: float, fresh: bool,
                        precomputed: tuple[torch.Tensor, torch.Tensor] | None,
                        ref_logp: torch.Tensor | None = None) -> dict[str, float]:
        cfg = self.config
        rows = idx.numel()  # this worker's rows of the (global) mini-batch; may be 0 with several workers
        if rows == 0:  # one all-masked row: it adds nothing, but this worker joins every collective
            idx = torch.zeros(1, dtype=torch.long, device=idx.device)
        if precomputed is not None:  # one mini-batch of the whole batch, in order: rows == idx
            logp, ent = precomputed
            mask = batch.gen.response_mask
        else:
            gen = Generation(batch.gen.input_ids[idx], batch.gen.attention_mask[idx], batch.gen.prompt_len,
                             batch.gen.response_mask[idx])
            logp, ent = self._forward(gen)  # (b, R) with grad
            mask = gen.response_mask if rows else torch.zeros_like(gen.response_mask)
        # On the first optimizer step the weights are the sampling weights: use the detached current
        # log-probs so rho == 1 exactly (a separate no-grad forward may differ in the last bits).
        old_logp = logp.detach() if fresh else batch.old_logprobs[idx]
        if cfg.controller.update == "minibatch":
            mb_entropy = self._mean(ent.detach(), mask).item()
            self._check_finite(mb_entropy, "minibatch entropy")
            alpha = self.controller.update(mb_entropy)
        act = self._actuate(alpha)
        # The loss is the configured `loss.name` (the method is a preset that sets it; an explicit
        # `--set loss.name=...` wins, as config.yaml records). Every hparam comes from the config.
        loss, loss_metrics = compute_policy_loss(
            cfg.loss.name, logp, old_logp, batch.advantages[idx], mask, entropy=ent, alpha=act.alpha,
            bonus=act.bonus, generator=self.generator, dist=self.dist, rows=rows,
            worker_selection=cfg.train.selection == "worker", kl_coef=cfg.loss.kl_coef,
            ref_logprobs=None if ref_logp is None else ref_logp[idx], **act.params,
        )
        if cfg.debug.nan_at_step and self.step_count == cfg.debug.nan_at_step and not self.restored:
            loss = loss * float("nan")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.dist is not None:  # sum of the workers' shares = the global token-mean loss's gradient
            self.dist.sum_grads(self.params)
            loss = self.dist.sum(loss)
        clip = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.params, clip)
        # One host sync for both checks; a non-finite loss still stops the step before the weights move.
        loss_value, grad_norm = torch.stack([loss.detach().double(), norm.double()]).tolist()
        self._check_finite(loss_value, "loss")
        self._check_finite(grad_norm, "gradient norm")
        self.optimizer.step()
        return {**loss_metrics, M.GRAD_NORM: grad_norm}

    @torch.no_grad()
    def _reference_logprobs(self, gen: Generation) -> torch.Tensor:
        """The reference policy's log-probs of ``gen``'s response tokens at T, (N, R), no grad: the
        frozen initial model, or with LoRA the policy with its adapters disabled."""
        temperature = self.config.rollout.temperature
        if self.reference is self.policy.model:  # LoRA: the base weights are the reference
            self.policy.model.eval()
            with self.policy.model.disable_adapter():
                return sequence_logprobs(self.policy, gen, temperature)[0]
        ref = dataclasses.replace(self.policy, model=self.reference, logprob_forward=None)
        return sequence_logprobs(ref, gen, temperature)[0]

    def _actuate(self, output: float) -> Actuation:
        """The loss inputs the controller ``output`` sets through ``controller.actuator``."""
        c = self.config.controller
        return actuate(c.actuator, output, controller=c.name, scale=c.actuator_scale,
                       params=self.loss_params, loss=resolve_loss(self.config.loss.name)[0])

    def _rollout_metrics(self, batch: RolloutBatch, n_tokens: float) -> dict[str, float]:
        solved = batch.rewards.view(-1, batch.group_size).mean(-1)  # (B,)
        if self.dist is not None:  # sums and counts of the global batch
            parts = [batch.rewards.sum().item(), batch.rewards.numel(), (solved == 0).sum().item(),
                     (solved == 1).sum().item(), solved.numel()]
            sums = self.dist.sum(torch.tensor(parts, dtype=torch.float64, device=self.policy.device))
            reward, responses, none, every, prompts = sums.tolist()
            return {M.REWARD_MEAN: reward / responses, M.RESPONSE_LENGTH_MEAN: n_tokens / responses,
                    M.SOLVE_NONE_FRAC: none / prompts, M.SOLVE_ALL_FRAC: every / prompts}
        return rollout_metrics(batch.rewards, n_tokens, batch.group_size)

    def _sum(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` summed over the workers (itself alone)."""
        return value if self.dist is None else self.dist.sum(value)

    def _mean(self, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Token-mean over the global batch: ``sum_r sum(m h) / sum_r sum(m)`` (``M.aggregate`` alone)."""
        return token_mean(values, mask, self.dist)

    def _entropy_stderr(self, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``M.entropy_stderr`` of the global batch (the per-group sums gathered from the workers)."""
        group = self.config.rollout.group_size
        if self.dist is None:
            return M.entropy_stderr(values, mask, group)
        mask = mask.to(values.dtype)
        sums = (values * mask).sum(-1).view(-1, group).sum(-1)  # (B_r,)
        counts = mask.sum(-1).view(-1, group).sum(-1)  # (B_r,)
        full, _ = self.dist.gather_rows(torch.stack([sums, counts], dim=-1))  # (B, 2) in prompt order
        return M.group_entropy_stderr(full[:, 0], full[:, 1])

    def _pad_to_global_width(self, batch: RolloutBatch) -> RolloutBatch:
        """Right-pad this worker's batch to the longest response of the global batch (all-masked
        columns), so its rows are rows of the one-worker batch and gathered scores line up."""
        width = batch.gen.response_mask.shape[1]
        target = int(self.dist.max(torch.tensor(width, device=self.policy.device)).item())
        if target == width:
            return batch
        gen = batch.gen
        full = gen.prompt_len + target
        padded = Generation(pad_columns(gen.input_ids, full, self.policy.pad_id),
                            pad_columns(gen.attention_mask, full, 0), gen.prompt_len,
                            pad_columns(gen.response_mask, target, 0.0))
        old, ent = (None if t is None else pad_columns(t, target, 0.0) for t in (batch.old_logprobs, batch.entropy))
        return dataclasses.replace(batch, gen=padded, old_logprobs=old, entropy=ent)

    def _check_finite(self, value: float, what: str) -> None:
        if not math.isfinite(value):
            raise NonFiniteError(
                f"non-finite {what} ({value}) at step {self.step_count} (method {self.config.method}); "
                "the trial is stopped so no NaN reaches the logs or the search"
            )


def rollout_metrics(rewards: torch.Tensor, n_tokens: float, group_size: int) -> dict[str, float]:
    """``rollout/*`` of a whole batch: mean reward, mean response length (``n_tokens`` response tokens
    over the responses) and the shares of prompts none / all of whose responses were solved.
    ``rewards`` (N,), the G responses of a prompt consecutive."""
    solved = rewards.view(-1, group_size).mean(-1)  # (B,)
    return {
        M.REWARD_MEAN: rewards.mean().item(),
        M.RESPONSE_LENGTH_MEAN: n_tokens / rewards.numel(),
        M.SOLVE_NONE_FRAC: (solved == 0).float().mean().item(),
        M.SOLVE_ALL_FRAC: (solved == 1).float().mean().item(),
    }


def minibatch_chunks(n: int, n_mb: int, generator: torch.Generator, device: torch.device) -> tuple[torch.Tensor, ...]:
    """The row indices of one epoch's ``n_mb`` mini-batches over ``n`` rollout rows: a fresh permutation
    from ``generator`` cut into ``n_mb`` chunks (rows in order, no draw, when ``n_mb == 1``)."""
    order = torch.randperm(n, generator=generator, device=device) if n_mb > 1 else torch.arange(n, device=device)
    return order.chunk(n_mb)


def worker_minibatches(n: int, n_mb: int, generator: torch.Generator, device: torch.device, ordered: bool,
                       local: range | None = None) -> Iterator[torch.Tensor]:
    """One epoch's mini-batches of this worker: :func:`minibatch_chunks` over the ``n`` rows of the
    global batch (the same draws on every worker); ``ordered`` (per-prompt sampling): each chunk's rows
    in global order, so a mini-batch's layout is the concatenation of the workers' parts whatever the
    split; ``local``: this worker's rows of the global batch, each chunk cut to them and indexed from
    ``local.start`` (possibly empty). The permutation is drawn at the first ``next``."""
    for chunk in minibatch_chunks(n, n_mb, generator, device):
        if ordered:
            chunk = chunk.sort().values
        if local is not None:
            chunk = chunk[(chunk >= local.start) & (chunk < local.stop)] - local.start
        yield chunk


def fails_now(config: Config, step: int, restored: bool, dist: Collective | None) -> bool:
    """``debug.fail_at_step``: crash at that step, once per run (a run restored from a checkpoint has
    survived it) and, with several workers, on the last one only (the others wait in a collective)."""
    last_worker = dist is None or dist.rank == dist.world - 1
    return bool(config.debug.fail_at_step) and step == config.debug.fail_at_step and not restored and last_worker


def run_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, controller: Any,
              data_rng: random.Random, generator: torch.Generator, step: int,
              last_eval: dict[str, float] | None) -> dict[str, object]:
    """What an engine's checkpoint holds to continue exactly (both engines): weights, optimizer,
    controller, the data and sampling streams, torch's RNG (and CUDA's where there is one), the step
    and the latest evaluation. Plain tensors, lists and dicts: it loads with ``weights_only=True``."""
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "controller": controller.state_dict(),
        "data_rng": rng_to_list(data_rng.getstate()),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "step": step,
        "last_eval": dict(last_eval) if last_eval is not None else None,
    }
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    return state


def restore_run_state(state: dict[str, object], model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                      controller: Any, data_rng: random.Random,
                      generator: torch.Generator) -> tuple[int, dict[str, float] | None]:
    """Load :func:`run_state`'s ``state`` into the objects; returns ``(step, last_eval)``."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    controller.load_state_dict(state["controller"])
    data_rng.setstate(rng_from_list(state["data_rng"]))
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return int(state["step"]), (dict(state["last_eval"]) if state["last_eval"] is not None else None)


def rng_to_list(state: tuple) -> list:
    """``random.Random.getstate()`` as lists (a checkpoint loads with ``weights_only=True``)."""
    version, internal, gauss = state
    return [version, list(internal), gauss]


def rng_from_list(state: list) -> tuple:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)
