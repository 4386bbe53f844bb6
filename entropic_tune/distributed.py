"""Data-parallel helpers of one run on several workers (``train.num_workers``; METHOD.md 7).

Every worker holds a full replica of the model, optimizer, controller and RNG streams, and draws the
same global batch of ``B`` prompts from its (replicated) data stream; worker ``r`` of ``W`` keeps the
prompts of :func:`shard`, a contiguous range, and samples each prompt's group from the prompt's own
stream (:func:`prompt_generators`), so the samples do not depend on ``W``. What the trainer needs
of the other workers goes through :class:`Collective`:

- token means of the global batch: ``sum`` of ``(sum_t m_t x_t, sum_t m_t)`` over workers;
- the global token-mean loss: worker ``r`` back-propagates ``L_r = sum_{t in r} m_t l_t / N`` with the
  all-reduced token count ``N = sum_r N_r``, and the gradients are summed (:meth:`Collective.sum_grads`),
  so ``sum_r grad L_r = grad (sum_t m_t l_t / N)``, the one-worker gradient;
- top-k selections over the global batch (Clip-Cov, KL-Cov, forking tokens): the per-token scores are
  gathered in global row order (:meth:`Collective.gather_rows`) and every worker selects from the same
  tensor.

No global state: a :class:`Collective` wraps a ``torch.distributed`` process group set up by the caller
(Ray Train's ``TorchTrainer`` in a sweep, :func:`entropic_tune.engines.native.local_workers.run_local` for
``entropic-tune train --workers N``). No Ray here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist

from . import metrics as M

PROMPT_SEED_STRIDE = 1_000_003
"""Seeds of the per-prompt streams: ``seed * STRIDE^2 + step * STRIDE + prompt index`` (distinct for
prompt indices and steps below the stride)."""


def shard(num_prompts: int, world: int, rank: int) -> range:
    """The prompts of worker ``rank`` of ``world``: a contiguous range; the first ``B % W`` workers get
    one prompt more (``B >= W``, checked by the config)."""
    base, extra = divmod(num_prompts, world)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def prompt_seed(seed: int, step: int, prompt: int) -> int:
    """The seed of prompt ``prompt``'s (global index) sampling stream at rollout step ``step``:
    ``(seed * STRIDE + step) * STRIDE + prompt``."""
    return (seed * PROMPT_SEED_STRIDE + step) * PROMPT_SEED_STRIDE + prompt


def prompt_generators(seed: int, step: int, prompts: range, device: torch.device) -> list[torch.Generator]:
    """One fresh generator per prompt of ``prompts`` (global indices) for rollout step ``step``; the
    stream of prompt ``i`` depends on ``(seed, step, i)`` only, never on the worker or the split."""
    gens = []
    for i in prompts:
        g = torch.Generator(device=device)
        g.manual_seed(prompt_seed(seed, step, i))
        gens.append(g)
    return gens


@contextmanager
def lead_first(group: Collective | None) -> Iterator[None]:
    """Run the block on rank 0 alone first, then on the other workers (nothing without a group): rank 0
    builds and caches what the others then load (the warm-start), and transformers saves a model from
    the main process of a ``torch.distributed`` group only."""
    if group is not None and group.rank != 0:
        group.barrier()
    yield
    if group is not None and group.rank == 0:
        group.barrier()


class Collective:
    """The reductions one data-parallel run needs, over a ``torch.distributed`` group.

    Tensors stay on their device (gloo: CPU, NCCL: CUDA); every method is a collective, so every
    worker must call it, in the same order.
    """

    def __init__(self, group: object | None = None) -> None:
        self.group = group
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """``sum_r tensor_r`` (a detached copy; the input is left alone)."""
        out = tensor.detach().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=self.group)
        return out

    def max(self, tensor: torch.Tensor) -> torch.Tensor:
        """``max_r tensor_r`` (a detached copy)."""
        out = tensor.detach().clone()
        dist.all_reduce(out, op=dist.ReduceOp.MAX, group=self.group)
        return out

    def sizes(self, rows: int, device: torch.device) -> list[int]:
        """Every worker's ``rows``, in rank order."""
        counts = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(self.world)]
        dist.all_gather(counts, torch.tensor([rows], dtype=torch.long, device=device), group=self.group)
        return [int(c.item()) for c in counts]

    def gather_rows(self, tensor: torch.Tensor, rows: int | None = None) -> tuple[torch.Tensor, int]:
        """Concatenate the first ``rows`` rows (default all) of every worker's ``tensor`` in rank order:
        ``(global tensor (sum_r rows_r, ...), this worker's first row in it)``. The trailing dims must
        agree across workers; detached."""
        rows = tensor.shape[0] if rows is None else rows
        counts = self.sizes(rows, tensor.device)
        padded = tensor.new_zeros((max(counts), *tensor.shape[1:]))
        padded[:rows] = tensor[:rows].detach()
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded, group=self.group)
        full = torch.cat([part[:count] for part, count in zip(parts, counts, strict=True)])
        return full, sum(counts[: self.rank])

    def sum_grads(self, params: list[torch.nn.Parameter]) -> None:
        """Sum every parameter's gradient over the workers, in place, in one flat bucket (a parameter
        without a gradient contributes zeros and gets the sum)."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.group)
        offset = 0
        for p, g in zip(params, grads, strict=True):
            n = g.numel()
            p.grad = flat[offset : offset + n].view_as(p).clone()
            offset += n

    def broadcast_(self, tensors: list[torch.Tensor]) -> None:
        """Overwrite ``tensors`` with rank 0's, in place (one flat bucket)."""
        with torch.no_grad():
            flat = torch.cat([t.detach().reshape(-1) for t in tensors])
            dist.broadcast(flat, src=0, group=self.group)
            offset = 0
            for t in tensors:
                t.copy_(flat[offset : offset + t.numel()].view_as(t))
                offset += t.numel()

    def barrier(self) -> None:
        dist.barrier(group=self.group)


def token_mean(values: torch.Tensor, mask: torch.Tensor, group: Collective | None) -> torch.Tensor:
    """Token-mean over the global batch, ``sum_r sum_t m x / sum_r sum_t m`` (one all-reduce of the
    pair; detached), on every worker; ``metrics.aggregate`` of this batch when ``group`` is None.
    ``values``, ``mask`` (B, T) -> 0-dim."""
    if group is None:
        return M.aggregate(values, mask)
    mask = mask.to(values.dtype)
    sums = group.sum(torch.stack([(values * mask).sum(), mask.sum()]))
    return sums[0] / sums[1].clamp_min(1.0)


def pad_columns(tensor: torch.Tensor, width: int, value: float) -> torch.Tensor:
    """Right-pad ``tensor`` (n, R) to (n, width) with ``value`` (``width >= R``)."""
    extra = width - tensor.shape[1]
    if extra <= 0:
        return tensor
    return torch.cat([tensor, tensor.new_full((tensor.shape[0], extra), value)], dim=1)
