"""Trainer: documented keys, every parameter moves, exact save/restore, determinism, regimes."""

from __future__ import annotations

import math
import random

import pytest
import torch

from entropic_tune import metrics as M
from entropic_tune.config import load_config
from entropic_tune.engines.native.rollout import collect_rollout, sequence_logprobs
from entropic_tune.engines.native.trainer import NonFiniteError, SimulatedFailure, Trainer


def _no_perf(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith("perf/")}


def test_three_steps_change_every_parameter_and_emit_documented_keys(fast_config):
    # entropy_bonus: its entropy gradient reaches every parameter even in a step where all
    # groups have equal rewards (zero GRPO advantage).
    trainer = Trainer(load_config({**fast_config, "method": "entropy_bonus", "loss.beta": 0.05}))
    before = {n: p.detach().clone() for n, p in trainer.policy.model.named_parameters()}
    rows = [trainer.step() for _ in range(3)]
    for row in rows:
        assert list(row) == list(M.STEP_KEYS)
        assert all(isinstance(v, float) and math.isfinite(v) for v in row.values())
    unchanged = [n for n, p in trainer.policy.model.named_parameters() if torch.equal(p, before[n])]
    assert unchanged == []
    assert [r[M.STEP] for r in rows] == [1.0, 2.0, 3.0]


def test_save_restore_gives_identical_metrics(fast_config):
    cfg = load_config({**fast_config, "method": "entropic", "train.total_steps": 4,
                       "optim.mini_batches_per_rollout": 2})
    straight = Trainer(cfg)
    for _ in range(2):
        straight.step()
    state = straight.state_dict()
    expected = [_no_perf(straight.step()) for _ in range(2)]

    resumed = Trainer(cfg)
    resumed.load_state_dict(state)
    got = [_no_perf(resumed.step()) for _ in range(2)]
    assert got == expected


def test_same_seed_same_history_different_seed_differs(fast_config):
    cfg = load_config({**fast_config, "method": "grpo", "train.total_steps": 2})
    a = [_no_perf(Trainer(cfg).step())]
    b = [_no_perf(Trainer(cfg).step())]
    c = [_no_perf(Trainer(load_config({**fast_config, "train.seed": 7})).step())]
    assert a == b
    assert a != c


def test_on_policy_ratio_is_one_and_off_policy_clips(fast_config):
    on = Trainer(load_config({**fast_config, "method": "grpo"})).step()
    assert on[M.PPO_KL] == 0.0 and on[M.PG_CLIPFRAC] == 0.0
    # entropy_bonus moves the weights even when every group has equal rewards (zero advantage)
    off_cfg = load_config({**fast_config, "method": "entropy_bonus", "loss.beta": 0.5,
                           "optim.mini_batches_per_rollout": 2, "optim.ppo_epochs": 2, "optim.lr": 0.05})
    off = Trainer(off_cfg)
    rows = [off.step() for _ in range(2)]
    assert any(r[M.PPO_KL] != 0.0 for r in rows)


def test_pi_controller_is_fed_the_logged_entropy(fast_config):
    cfg = load_config({**fast_config, "method": "entropic", "controller.kp": 1.5, "controller.ki": 0.0,
                       "controller.target_entropy": 0.1})
    row = Trainer(cfg).step()
    error = row[M.ENTROPY] - 0.1
    assert row[M.ERROR] == pytest.approx(error)
    assert row[M.ALPHA] == pytest.approx(max(-1.0, min(1.0, 1.5 * error)))


def test_minibatch_controller_updates_per_minibatch(fast_config):
    cfg = load_config({**fast_config, "method": "entropic", "controller.update": "minibatch",
                       "optim.mini_batches_per_rollout": 2, "controller.ki": 0.5})
    trainer = Trainer(cfg)
    seen: list[float] = []
    update = trainer.controller.update
    trainer.controller.update = lambda h: seen.append(h) or update(h)
    row = trainer.step()
    assert len(seen) == 2  # one controller update per mini-batch, none per step
    assert seen[0] != seen[1]  # each from its own mini-batch's entropy
    assert row[M.ERROR] == pytest.approx(seen[-1] - cfg.controller.target_entropy)


def test_nan_injection_stops_the_trial(fast_config):
    trainer = Trainer(load_config({**fast_config, "debug.nan_at_step": 2}))
    trainer.step()
    with pytest.raises(NonFiniteError, match=r"non-finite loss \(nan\) at step 2"):
        trainer.step()


def test_fail_at_step_raises(fast_config):
    trainer = Trainer(load_config({**fast_config, "debug.fail_at_step": 1}))
    with pytest.raises(SimulatedFailure):
        trainer.step()


@pytest.mark.parametrize("key, error", [("debug.fail_at_step", SimulatedFailure),
                                        ("debug.nan_at_step", NonFiniteError)])
def test_injected_faults_fire_once_per_run_not_again_after_a_restore(fast_config, key, error):
    cfg = load_config({**fast_config, key: 2})
    first = Trainer(cfg)
    first.step()
    state = first.state_dict()
    with pytest.raises(error):
        first.step()
    retried = Trainer(cfg)
    retried.load_state_dict(state)
    row = retried.step()  # the retry from the step-1 checkpoint gets past step 2
    assert row[M.STEP] == 2.0 and math.isfinite(row[M.PG_LOSS])


def test_evaluate_keys_and_ranges(fast_config):
    out = Trainer(load_config(fast_config)).evaluate()
    for key in (*M.EVAL_KEYS, "eval/greedy_accuracy"):
        assert key in out
    assert 0.0 <= out[M.EVAL_ACCURACY] <= out[M.EVAL_PASS_AT_K] <= 1.0


# --- actuators (METHOD.md 3.4) ----------------------------------------------------------------------
# A warm-start that solves about half of the one-digit problems, so every group has mixed rewards and
# every actuator has something to act on (the fast config's model never gets a reward).
LEARNED = {"model.warmstart_steps": 400, "model.warmstart_lr": 0.01, "task.max_digits": 1,
           "rollout.prompts_per_step": 8, "rollout.group_size": 8, "rollout.eval_every": 0,
           "optim.lr": 1e-3, "train.total_steps": 5}
# (method, extra keys): a fixed controller output u = +-0.5 moves the knob to (u > 0 first)
ACTUATED = {
    "entropic": ("entropic", {}),  # alpha = +-0.5
    "entropy_bonus": ("grpo", {"controller.actuator_scale": 0.4}),  # beta = -+0.2
    "clip_high": ("clip_higher", {"optim.mini_batches_per_rollout": 4, "optim.ppo_epochs": 2}),  # 0.2, 0.78
    "positive_weight": ("grpo", {"controller.actuator_scale": 2.0}),  # lambda = 2, 0
}


def _probe_entropy(trainer: Trainer, probe) -> float:
    with torch.no_grad():
        _, ent = sequence_logprobs(trainer.policy, probe.gen, 1.0)
    return M.aggregate(ent, probe.mask).item()


@pytest.mark.parametrize("actuator", list(ACTUATED))
def test_each_actuator_sets_its_knob_through_the_trainer(fast_config, actuator):
    # The knob a fixed output u = +-0.5 sets, as the trainer logs it. The direction of each knob's
    # effect on entropy is tested exactly on a tabular policy (tests/test_actuators.py): through this
    # tiny model, 5 steps move entropy by less than the run-to-run noise for three of the four.
    method, extra = ACTUATED[actuator]
    values = {}
    for u in (0.5, -0.5):
        cfg = load_config({**fast_config, **extra, "method": method, "train.total_steps": 1,
                           "controller.name": "constant", "controller.value": u,
                           "controller.actuator": actuator})
        values[u] = Trainer(cfg).step()[M.ACTUATOR_VALUE]
    expected = {"entropic": (0.5, -0.5), "entropy_bonus": (-0.2, 0.2), "clip_high": (0.2, 0.78),
                "positive_weight": (2.0, 0.0)}[actuator]
    assert (values[0.5], values[-0.5]) == pytest.approx(expected)


@pytest.mark.slow
def test_the_entropy_bonus_actuator_moves_entropy_through_the_trainer(fast_config):
    # End to end: u > 0 (entropy too high) must give lower entropy than u < 0, measured on one fixed
    # batch sampled from the starting policy, so the comparison does not depend on what each run
    # samples later. Only the bonus is tested this way: its 5-step effect on this model (H(-0.5) -
    # H(+0.5) = +0.025..+0.049 over seeds 0-3, measured on an Intel Xeon) stands clear of the noise,
    # while alpha, eps_high and lambda move it by -0.02..+0.03 there, with signs that differ between
    # seeds and machines (they passed on seeds 0-1 on an AMD EPYC and failed on the Xeon).
    method, extra = ACTUATED["entropy_bonus"]
    entropies = {}
    for seed in (0, 1):
        for u in (0.5, -0.5):
            cfg = load_config({**fast_config, **LEARNED, **extra, "method": method, "train.seed": seed,
                               "controller.name": "constant", "controller.value": u,
                               "controller.actuator": "entropy_bonus"})
            trainer = Trainer(cfg)
            problems = trainer.task.sample_train(random.Random(99), 16)
            probe = collect_rollout(trainer.policy, trainer.task, problems, 8, 1.0, 32,
                                    torch.Generator().manual_seed(99))
            for _ in range(cfg.train.total_steps):
                trainer.step()
            entropies[seed, u] = _probe_entropy(trainer, probe)
    for seed in (0, 1):
        assert entropies[seed, 0.5] < entropies[seed, -0.5], (seed, entropies)


def test_default_actuator_and_bonus_actuator_agree_for_adaptive_entropy(fast_config):
    # AEC's output c_k g_k is a bonus weight: driving the bonus actuator with it (scale 1) is the
    # adaptive_entropy loss itself, bit for bit.
    base = {**fast_config, "method": "adaptive_entropy", "controller.coef_init": 2e-3,
            "controller.target_entropy": 5.0, "train.total_steps": 2}
    own = Trainer(load_config(base))
    bonus = Trainer(load_config({**base, "controller.actuator": "entropy_bonus"}))
    rows_own = [_no_perf(own.step()) for _ in range(2)]
    rows_bonus = [_no_perf(bonus.step()) for _ in range(2)]
    assert rows_own[0][M.ALPHA] == 2e-3  # the gate is open: the bonus is active
    assert rows_own == rows_bonus
    assert all(r[M.ACTUATOR_VALUE] == r[M.ALPHA] for r in rows_own)


def test_actuator_value_is_the_knob_of_the_step(fast_config):
    cfg = load_config({**fast_config, "method": "entropic", "controller.actuator": "clip_high",
                       "controller.actuator_scale": 0.5, "controller.target_entropy": 5.0})
    row = Trainer(cfg).step()  # entropy ~2.6 < 5: alpha < 0 opens the upper clip
    assert row[M.ALPHA] < 0
    assert row[M.ACTUATOR_VALUE] == pytest.approx(max(0.2 - 0.5 * row[M.ALPHA], 0.2))
    default = Trainer(load_config({**fast_config, "method": "entropic"})).step()
    assert default[M.ACTUATOR_VALUE] == default[M.ALPHA]


def test_the_loss_is_loss_name_not_the_method(fast_config, monkeypatch):
    # `method` is a preset that sets loss.name; an explicit loss.name wins and is what runs (config.yaml
    # records loss.name). entropic's preset is loss.name=entropic + controller.name=pi, so with
    # loss.name=grpo it is the same run as grpo under a PI controller, step for step.
    from entropic_tune import losses

    called: list[str] = []
    for name, fn in list(losses.LOSSES.items()):
        monkeypatch.setitem(losses.LOSSES, name, lambda inp, _n=name, _f=fn: called.append(_n) or _f(inp))
    mixed = load_config({**fast_config, "method": "entropic"}, overrides=["loss.name=grpo"])
    assert mixed.loss.name == "grpo"
    rows = [_no_perf(row) for row in _steps(Trainer(mixed), 2)]
    assert set(called) == {"grpo"}
    same = load_config({**fast_config, "method": "grpo", "controller.name": "pi"})
    assert rows == [_no_perf(row) for row in _steps(Trainer(same), 2)]


def _steps(trainer: Trainer, n: int) -> list[dict]:
    return [trainer.step() for _ in range(n)]
