"""The TRL engine on several workers (issue 30, METHOD.md 7-8): local gloo workers (``train --workers N``)
and Ray Train workers inside a Tune trial (``--workers-per-trial N``) give the one-worker history of the
same global batch with per-prompt sampling streams; a killed TRL trial resumes exactly; what cannot be
split is refused in one line. CPU, the default model (committed warm-start), no network."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("trl")

from entropic_tune import metrics as M  # noqa: E402
from entropic_tune.commands import main as cli  # noqa: E402
from entropic_tune.config import load_config  # noqa: E402
from entropic_tune.engines.native.local_workers import follow, run_local  # noqa: E402
from entropic_tune.tune.spaces import RESUME_FROM, trial_config  # noqa: E402

COMPARED = [k for k in M.STEP_KEYS if not k.startswith("perf/")]
RANK_ROWS = "ENTROPIC_TEST_RANK_ROWS"
"""Where a non-lead worker of the local 2-worker run writes its rows (inherited by the spawned worker)."""


def _fast() -> dict:
    """The TRL engine's fast test config (test_trl_engine._fast): the default model, whose warm-start
    is committed, and a policy that solves some problems (non-zero advantages and gradients)."""
    from conftest import FAST

    keep = {k: v for k, v in FAST.items() if not k.startswith("model.") and k != "task.eval_size"}
    return {**keep, "rollout.max_new_tokens": 40}


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-5)


def assert_same_rows(a: list[dict[str, float]], b: list[dict[str, float]]) -> None:
    assert len(a) == len(b)
    for step, (x, y) in enumerate(zip(a, b, strict=True), 1):
        differ = {k: (x[k], y[k]) for k in COMPARED if not close(x[k], y[k])}
        assert not differ, f"step {step}: {differ}"


def follow_and_record(config, group) -> None:
    """A non-lead worker (``local_workers.follow``) that also writes its rows to ``$ENTROPIC_TEST_RANK_ROWS``."""
    rows = follow(config, group)
    Path(os.environ[RANK_ROWS]).write_text(json.dumps(rows))


# --- local gloo workers: the one-worker history ----------------------------------------------------


CASES = {
    # EntroPIC off-policy: TRL's behaviour log-prob pass, two mini-batches drawn over the global rows
    "entropic": {"method": "entropic", "controller.target_entropy": 0.05, "optim.mini_batches_per_rollout": 2},
    # on-policy EntroPIC: the entropy from the first loss forward (under DDP), gathered there
    "entropic_on_policy": {"method": "entropic", "controller.target_entropy": 0.05},
    # KL-Cov's top-k over the gathered global scores; 8 mini-batches of 2 of the 16 rows, so some hold
    # none of a worker's rows (that worker runs one all-masked row)
    "kl_cov": {"method": "kl_cov", "optim.mini_batches_per_rollout": 8},
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_two_trl_workers_give_the_one_worker_history(case, tmp_path, monkeypatch):
    """2 gloo workers, ``sampling_seed: prompt``: every step's metrics equal one worker's (float
    tolerance), and both ranks hold the same global entropy and alpha (the entropy gathered over the
    processes before the controller update), which differ from what rank 0's shard alone measures."""
    import entropic_tune.engines.trl.engine as trl_engine
    from entropic_tune.engines.trl.engine import TRLEngine

    base = {**_fast(), **CASES[case], "train.engine": "trl", "train.sampling_seed": "prompt",
            "rollout.eval_every": 1}
    cfg = load_config(base)
    single = TRLEngine(cfg)
    one = [single.step() for _ in range(cfg.train.total_steps)]

    two_cfg = load_config({**base, "train.num_workers": 2})
    monkeypatch.setenv(RANK_ROWS, str(tmp_path / "rank1.json"))

    def lead(group):
        engine = TRLEngine(two_cfg, group)
        shard_entropy: list[float] = []
        observe = engine.control.observe

        def recording(entropy, mask, reduce, gather):  # rank 0's own rows, before the gather
            shard_entropy.append(float(M.aggregate(entropy, mask.to(entropy.dtype)).item()))
            return observe(entropy, mask, reduce, gather)

        engine.control.observe = recording
        shares = []
        rows = trl_engine._rows

        def counting(batch, index, n):  # rank 0's share of each mini-batch
            shares.append(index.numel())
            return rows(batch, index, n)

        monkeypatch.setattr(trl_engine, "_rows", counting)
        assert engine.trl.accelerator.num_processes == 2 and engine.prompts == range(0, 2)
        return [engine.step() for _ in range(two_cfg.train.total_steps)], shard_entropy, shares

    rank0, shard_entropy, shares = run_local(two_cfg, lead, target=follow_and_record)
    rank1 = json.loads((tmp_path / "rank1.json").read_text())
    assert_same_rows(one, rank0)
    assert [(r[M.ENTROPY], r[M.ALPHA]) for r in rank0] == [(r[M.ENTROPY], r[M.ALPHA]) for r in rank1]
    assert any(not close(x, r[M.ENTROPY]) for x, r in zip(shard_entropy, rank0, strict=True))
    assert all(r[M.GRAD_NORM] > 0 for r in one)
    if case != "entropic_on_policy":  # off-policy updates ran
        assert all(r[M.PPO_KL] != 0 for r in one)
    if case.startswith("entropic"):
        assert len({r[M.ALPHA] for r in rank0}) == len(rank0)  # the controller acted every step
    else:  # the global selection ran, and some mini-batches held no row of rank 0
        assert all(r[M.PENALISED_FRAC] > 0 for r in one) and 0 in shares and max(shares) > 0


def test_per_prompt_streams_do_not_depend_on_the_other_prompts():
    """``sampling_seed: prompt`` on the TRL engine: a prompt's G completions come from its own stream
    (seed, step, global prompt index), the same whether it is sampled with other prompts or alone (as
    on another worker), and torch's global RNG is left as it was."""
    from entropic_tune.engines.trl.engine import TRLEngine

    engine = TRLEngine(load_config({**_fast(), "method": "grpo", "train.engine": "trl",
                                    "train.sampling_seed": "prompt"}))
    trl = engine.trl
    group = engine.config.rollout.group_size
    problems = engine.task.sample_train(__import__("random").Random(3), 3)
    ids = [trl.processing_class(engine._prompt(p), add_special_tokens=False)["input_ids"] for p in problems]
    rows = [i for i in ids for _ in range(group)]
    trl.model.train()
    before = torch.get_rng_state()
    trl.prompt_streams = (engine.config.train.seed, 5, 0)
    together, _ = trl._generate_single_turn(rows, None, {}, group)
    assert torch.equal(torch.get_rng_state(), before)
    trl.prompt_streams = (engine.config.train.seed, 5, 2)
    alone, _ = trl._generate_single_turn(rows[2 * group:], None, {}, group)
    assert alone == together[2 * group:]
    trl.prompt_streams = (engine.config.train.seed, 6, 2)  # another step: another stream
    assert trl._generate_single_turn(rows[2 * group:], None, {}, group)[0] != alone
    assert len({tuple(c) for c in together}) > 1  # sampled, not greedy


# --- Ray Train workers inside a Tune trial -----------------------------------------------------------


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def trial_dirs(exp: Path) -> list[Path]:
    return [p for p in (exp / "ray").iterdir() if p.is_dir() and (p / "params.json").is_file()]


def straight_run(params: dict, steps: int, **overrides: object) -> list[dict[str, float]]:
    """A trial's config (its params.json) stepped by a plain TRL engine in this process, uninterrupted."""
    from entropic_tune.engines.trl.engine import TRLEngine

    engine = TRLEngine(load_config({**trial_config(params), **overrides}))
    return [engine.step() for _ in range(steps)]


@pytest.mark.slow
def test_workers_per_trial_run_the_trl_engine_through_ray_train(tmp_path, capsys, ray_local, monkeypatch):
    """``compare --workers-per-trial 2 --set train.engine=trl``: one EntroPIC trial on 2 Ray Train workers
    completes, writes its history, and that history is the one-worker run's of the same config."""
    from entropic_tune.commands import sweep as sweep_cli

    monkeypatch.setattr(sweep_cli, "_write_report", lambda exp_dir, baseline="grpo": None)  # test_report.py
    steps = 2
    code = cli.main(["compare", "--space", "smoke", "--methods", "entropic", "--steps", str(steps),
                     "--workers-per-trial", "2", "--set", "train.engine=trl", "--set", "train.sampling_seed=prompt",
                     "--out", str(tmp_path), "--name", "w2", "--quiet"])
    assert code == 0, capsys.readouterr().err[-3000:]
    exp = tmp_path / "w2"
    (row,) = read_csv(exp / "summary.csv")
    assert row["status"] == "TERMINATED" and row["steps"] == str(steps) and row["final/pass@1"] != ""
    history = read_csv(exp / "history.csv")
    (trial,) = trial_dirs(exp)
    params = json.loads((trial / "params.json").read_text())
    assert trial_config(params)["train.num_workers"] == 2
    reference = straight_run(params, steps, **{"train.num_workers": 1})
    assert_same_rows(reference, [{k: float(h[k]) for k in COMPARED} for h in history])


# --- a killed TRL trial resumes exactly ----------------------------------------------------------------


def _wait_for_a_checkpoint(proc: subprocess.Popen, exp: Path, timeout: float = 240) -> None:
    """Until the trial has a checkpoint and Ray's saved experiment state lists the trial."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
        trials = [p for p in exp.glob("ray/*") if (p / "params.json").is_file()]
        states = list(exp.glob("ray/experiment_state*.json"))
        if (trials and states and all(list(t.glob("checkpoint_*/trainer.pt")) for t in trials)
                and all(t.name.split("-")[-1] in states[0].read_text() for t in trials)):
            return
        time.sleep(0.1)
    raise AssertionError("the trial wrote no checkpoint in time")


@pytest.mark.slow
def test_a_killed_trl_trial_resumes_exactly(tmp_path, capsys, ray_local, monkeypatch):
    """A TRL EntroPIC trial whose sweep driver (and with it the trial's process) is SIGKILLed after a
    checkpoint was written continues with ``compare --resume`` from that checkpoint, and its history
    equals an uninterrupted run's, step for step."""
    from entropic_tune.commands import sweep as sweep_cli

    steps = 6
    argv = ["compare", "--space", "smoke", "--methods", "entropic", "--steps", str(steps), "--checkpoint-every", "1",
            "--set", "train.engine=trl", "--set", "controller.target_entropy=2.6", "--out", str(tmp_path), "--name", "cut",
            "--quiet"]  # near the smoke model's entropy: alpha is not saturated
    env = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "entropic_tune.commands.main", *argv, "--address",
                             ray_local.get_runtime_context().gcs_address], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    exp = tmp_path / "cut"
    try:
        _wait_for_a_checkpoint(proc, exp)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (exp / "summary.csv").exists(), "the driver finished before it was killed"

    monkeypatch.setattr(sweep_cli, "_write_report", lambda exp_dir, baseline="grpo": None)
    code = cli.main(["compare", "--resume", "--name", "cut", "--out", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err
    assert code == 0, err[-3000:]
    assert "1 continue from a checkpoint" in err
    (row,) = read_csv(exp / "summary.csv")
    assert row["status"] == "TERMINATED" and row["steps"] == str(steps)
    params = [json.loads((t / "params.json").read_text()) for t in trial_dirs(exp)]
    assert any(p.get(RESUME_FROM) for p in params), "the trial was not continued from its checkpoint"
    history = read_csv(exp / "history.csv")
    assert [int(h["step"]) for h in history] == list(range(1, steps + 1))
    reference = straight_run(params[0], steps)
    for step, (ref, got) in enumerate(zip(reference, history, strict=True), 1):
        differ = {k: (ref[k], float(got[k])) for k in COMPARED if float(got[k]) != ref[k]}
        assert not differ, f"step {step}: {differ}"
    alphas = [float(h[M.ALPHA]) for h in history]
    assert len(set(alphas)) == steps and all(-1 < a < 1 for a in alphas), alphas  # the controller state mattered


# --- refusals ------------------------------------------------------------------------------------------


def _vllm_installed(monkeypatch) -> None:
    """vLLM is not installed here; the settings check is what is tested, so it is reported present."""
    import importlib.machinery
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: importlib.machinery.ModuleSpec(name, None)
                        if name == "vllm" else real(name, *a))


@pytest.mark.parametrize("argv, says", [
    (["--workers", "3"], "train.num_workers: (3) must divide rollout.prompts_per_step (4)"),
    (["--workers", "2", "--set", "optim.mini_batches_per_rollout=16"],
     "optim.mini_batches_per_rollout: (16) must divide rollout.prompts_per_step x rollout.group_size (16) / "
     "train.num_workers (2)"),
    (["--set", "train.sampling_seed=prompt", "--set", "trl.use_vllm=true"],
     "train.sampling_seed: per-prompt sampling streams"),
    (["--workers", "2", "--set", "trl.use_vllm=true"], "train.num_workers: per-prompt sampling streams"),
])
def test_what_trl_workers_cannot_split_is_refused_in_one_line(argv, says, tmp_path, capsys, monkeypatch):
    _vllm_installed(monkeypatch)
    code = cli.main(["train", "--set", "train.engine=trl", "--set", "rollout.prompts_per_step=4",
                     "--set", "rollout.group_size=4", *argv, "--out", str(tmp_path), "--name", "bad"])
    out, err = capsys.readouterr()
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, out + err
    assert lines[0].startswith("entropic-tune: error: ") and says in lines[0], lines[0]
    assert not (tmp_path / "bad").exists()
