"""Data-parallel runs (issue 17, METHOD.md 7): N workers give the 1-worker history of the same global
batch, the controller sees the global entropy, and the config refuses what cannot work.

The workers here are local gloo processes (:mod:`entropic_tune.engines.native.local_workers`, rank 0 in the test
process); the Ray Train path (``--workers-per-trial``) is in test_sweep_workers.py.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import pytest
import torch

from entropic_tune import metrics as M
from entropic_tune.config import load_config
from entropic_tune.distributed import prompt_generators, shard
from entropic_tune.engines.native.local_workers import run_local
from entropic_tune.engines.native.trainer import Trainer
from entropic_tune.errors import UserError

COMPARED = [k for k in M.STEP_KEYS if not k.startswith("perf/")]


def one_worker(cfg) -> tuple[list[dict[str, float]], list[float]]:
    trainer = Trainer(cfg)
    seen = _record_controller(trainer)
    return [trainer.step() for _ in range(cfg.train.total_steps)], seen


def _record_controller(trainer: Trainer) -> list[float]:
    """The entropies the controller is given, in order."""
    seen: list[float] = []
    update = trainer.controller.update

    def recording(entropy: float) -> float:
        seen.append(entropy)
        return update(entropy)

    trainer.controller.update = recording
    return seen


def two_workers(cfg) -> tuple[list[dict[str, float]], list[float], list[float]]:
    """Rank 0's rows, the entropies its controller saw, and rank 0's shard-local token-mean entropy."""

    def lead(group):
        trainer = Trainer(cfg, group)
        seen = _record_controller(trainer)
        local: list[float] = []
        forward = trainer._forward

        def recording(gen):
            logp, ent = forward(gen)
            local.append(M.aggregate(ent.detach(), gen.response_mask).item())
            return logp, ent

        trainer._forward = recording
        rows = [trainer.step() for _ in range(cfg.train.total_steps)]
        return rows, seen, local

    return run_local(cfg, lead)


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-5)


# A warm-start strong enough that some groups get mixed rewards (non-zero gradients), as test_reliability.
LEARNS = {"model.warmstart_steps": 400, "model.warmstart_lr": 0.01, "rollout.group_size": 6}

CASES = {
    # on-policy EntroPIC (the PI controller moves alpha), an even split
    "entropic": {"method": "entropic", "controller.target_entropy": 0.65, "rollout.prompts_per_step": 8},
    # off-policy Clip-Cov: mini-batches drawn over the global batch, a global random token selection,
    # an uneven split (5 prompts on 2 workers)
    "clip_cov": {"method": "clip_cov", "optim.mini_batches_per_rollout": 2, "rollout.prompts_per_step": 5},
    # the forking-token top-k over the global batch
    "forking": {"method": "forking_tokens", "optim.mini_batches_per_rollout": 3, "rollout.prompts_per_step": 8},
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_two_workers_give_the_one_worker_history(fast_config, case):
    base = {**fast_config, **LEARNS, **CASES[case], "train.sampling_seed": "prompt", "model.compile": "off",
            "rollout.eval_every": 1}
    single, seen_single = one_worker(load_config(base))
    double, seen_double, local = two_workers(load_config({**base, "train.num_workers": 2}))
    assert len(single) == len(double) == base["train.total_steps"]
    for step, (a, b) in enumerate(zip(single, double, strict=True), 1):
        differ = {k: (a[k], b[k]) for k in COMPARED if not close(a[k], b[k])}
        assert not differ, f"step {step}: {differ}"
    # not vacuous: the weights moved and the rewards differ between prompts
    assert any(r[M.GRAD_NORM] > 0 for r in single)
    # The controller sees the global entropy (the 1-worker one), not rank 0's own shard's
    assert all(close(x, y) for x, y in zip(seen_single, seen_double, strict=True))
    if case == "entropic":  # on-policy: one forward per step, over rank 0's shard
        assert any(not close(x, y) for x, y in zip(local, seen_double, strict=False))


def test_per_prompt_streams_do_not_depend_on_the_split():
    whole = prompt_generators(3, 7, range(0, 6), torch.device("cpu"))
    parts = [prompt_generators(3, 7, shard(6, 4, r), torch.device("cpu")) for r in range(4)]
    draws = [torch.rand(3, generator=g) for g in whole]
    split = [torch.rand(3, generator=g) for part in parts for g in part]
    assert all(torch.equal(a, b) for a, b in zip(draws, split, strict=True))
    assert [list(shard(5, 2, r)) for r in range(2)] == [[0, 1, 2], [3, 4]]


# One KL-Cov loss on two gloo processes, each holding 2 x 5 response tokens of a 4 x 5 batch (ratio
# 0.15: the global budget is floor(0.15 * 20) = 3 tokens; per worker floor(0.15 * 10) = 1 each).
_KL_COV_WORKER = textwrap.dedent("""
    import json, sys
    import torch
    import torch.distributed as dist
    from entropic_tune.distributed import Collective
    from entropic_tune.losses import compute_policy_loss
    rank, init, selection = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    gen = torch.Generator().manual_seed(7)
    logp = -torch.rand(4, 5, generator=gen) * 3
    old = logp + 0.05 * torch.randn(4, 5, generator=gen)
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5])
    mask = torch.ones(4, 5)
    args = dict(kl_cov_ratio=0.15)
    if selection == "one":  # the whole batch in one process
        _, out = compute_policy_loss("kl_cov", logp, old, adv, mask, **args)
    else:
        dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
        rows = slice(2 * rank, 2 * rank + 2)
        _, out = compute_policy_loss("kl_cov", logp[rows], old[rows], adv[rows], mask[rows], dist=Collective(),
                                     worker_selection=selection == "worker", **args)
        dist.destroy_process_group()
    print(json.dumps(out))
""")


def _kl_cov(tmp_path, selection: str) -> list[dict[str, float]]:
    script = tmp_path / "kl_cov_worker.py"
    script.write_text(_KL_COV_WORKER)
    init = f"file://{tmp_path / f'rendezvous-{selection}'}"
    ranks = [0] if selection == "one" else [0, 1]
    procs = [subprocess.Popen([sys.executable, str(script), str(r), init, selection], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in ranks]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]


@pytest.mark.slow
def test_selections_are_global_or_per_worker_as_configured(tmp_path):
    (one,) = _kl_cov(tmp_path, "one")
    global_ = _kl_cov(tmp_path, "global")
    worker = _kl_cov(tmp_path, "worker")
    assert one[M.PENALISED_FRAC] == pytest.approx(3 / 20)  # floor(0.15 * 20) of 20 tokens
    for rank in global_:  # the one-process selection and metrics, on every worker
        assert all(close(rank[k], one[k]) for k in M.LOSS_KEYS), (rank, one)
    # per worker: floor(0.15 * 10) = 1 token each, 2 of 20 in all, so the loss differs from one process
    assert all(rank[M.PENALISED_FRAC] == pytest.approx(2 / 20) for rank in worker)
    assert not close(worker[0][M.PG_LOSS], one[M.PG_LOSS])


@pytest.mark.parametrize(("override", "message"), [
    ({"train.num_workers": 0}, "train.num_workers: must be >= 1"),
    ({"train.num_workers": 5}, "train.num_workers: (5) must be <= rollout.prompts_per_step (4)"),
    ({"train.strategy": "fsdp"}, "train.strategy: 'fsdp' is not supported"),
    ({"train.strategy": "zero"}, "train.strategy: 'zero' is not allowed"),
    ({"train.selection": "gpu"}, "train.selection: 'gpu' is not allowed"),
    ({"train.num_workers": 2, "train.sampling_seed": "batch"}, "train.sampling_seed: 'batch'"),
    ({"train.num_workers": 2, "model.compile": "on"}, "model.compile: 'on'"),
])
def test_bad_worker_settings_are_one_line_errors(fast_config, override, message):
    with pytest.raises(UserError) as info:
        load_config({**fast_config, **override})
    assert message in str(info.value) and "\n" not in str(info.value)
