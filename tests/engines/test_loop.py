"""The one run loop (engines/loop.py) over any engine: order of evaluations and steps, checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest

from entropic_tune import names as M
from entropic_tune.config import load_config
from entropic_tune.engines.base import Engine
from entropic_tune.engines.loop import RunLoop, load_checkpoint
from entropic_tune.engines.records import (
    CHECKPOINT_FILE,
    HISTORY_FILE,
    FinalEvaluation,
    NonFiniteError,
)


class CountingEngine:
    """A pure-Python engine that records what the loop asked of it, in order."""

    def __init__(self, config, fail_at: int = 0):
        self.config, self.step_count, self.controller, self.last_eval = config, 0, None, None
        self.calls: list[str] = []
        self.lr = config.optim.lr
        self.fail_at = fail_at

    def step(self):
        self.step_count += 1
        self.calls.append(f"step {self.step_count}")
        if self.step_count == self.fail_at:
            raise NonFiniteError(f"non-finite loss (nan) at step {self.step_count}")
        return {M.STEP: float(self.step_count), M.ENTROPY: 0.5 / self.step_count}

    def large_evaluation(self, prefix):
        self.calls.append(f"{prefix} evaluation at {self.step_count}")
        metrics = {f"{prefix}/accuracy": 0.25 + self.step_count, f"{prefix}/pass@1": 0.5}
        return FinalEvaluation(metrics, problems=2, samples=1, seconds=0.0, prefix=prefix)

    def state_dict(self):
        return {"step": self.step_count, "lr": self.lr}

    def load_state_dict(self, state):
        self.step_count, self.lr = int(state["step"]), float(state["lr"])

    def set_learning_rate(self, lr):
        self.calls.append(f"lr {lr}")
        self.lr = lr


def _config(steps: int = 3):
    return load_config({"train.total_steps": steps})


def test_a_fake_engine_satisfies_the_interface():
    assert isinstance(CountingEngine(_config()), Engine)
    assert not isinstance(object(), Engine)


def test_base_evaluation_then_steps_then_final_evaluation_after_the_last_step():
    engine = CountingEngine(_config())
    described: list[str] = []
    loop = RunLoop(engine, describe=described.append)
    seen_final = []
    for _row in loop.iter_steps():
        seen_final.append(dict(loop.final))
    assert engine.calls == ["base evaluation at 0", "step 1", "step 2", "step 3", "final evaluation at 3"]
    assert seen_final[:2] == [{}, {}] and seen_final[2] == {"final/accuracy": 3.25, "final/pass@1": 0.5}
    assert [row[M.STEP] for row in loop.history] == [1.0, 2.0, 3.0]
    assert loop.evaluations == {"base/accuracy": 0.25, "base/pass@1": 0.5, "final/accuracy": 3.25,
                                "final/pass@1": 0.5}
    assert len(described) == 2 and described[0].startswith("base evaluation: 2 held-out problems")


@pytest.mark.parametrize("kwargs", [{"lead": False}, {"large_evaluations": False}])
def test_no_large_evaluations_off_the_lead_worker_or_when_switched_off(kwargs):
    engine = CountingEngine(_config())
    loop = RunLoop(engine, describe=lambda line: None, **kwargs)
    assert len(list(loop.iter_steps())) == 3
    assert engine.calls == ["step 1", "step 2", "step 3"] and loop.evaluations == {}


def test_a_non_finite_step_stops_the_loop_and_keeps_the_rows_before_it():
    loop = RunLoop(CountingEngine(_config(), fail_at=2), describe=lambda line: None)
    with pytest.raises(NonFiniteError, match="at step 2"):
        list(loop.iter_steps())
    assert [row[M.STEP] for row in loop.history] == [1.0] and loop.final == {}


def test_a_checkpoint_restores_state_history_and_base_and_resets_the_learning_rate(tmp_path: Path):
    engine = CountingEngine(_config(4))
    loop = RunLoop(engine, describe=lambda line: None)
    steps = loop.iter_steps()
    next(steps), next(steps)
    engine.lr = 123.0  # as PBT may leave it; the restored run takes the config's rate
    loop.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CHECKPOINT_FILE, HISTORY_FILE])
    state = load_checkpoint(tmp_path)
    assert state["history"] == loop.history and state["base"] == loop.base

    again = CountingEngine(_config(4))
    resumed = RunLoop(again, describe=lambda line: None)
    resumed.restore(state)
    rows = list(resumed.iter_steps())
    assert again.calls == [f"lr {again.config.optim.lr}", "step 3", "step 4", "final evaluation at 4"]
    assert [row[M.STEP] for row in rows] == [3.0, 4.0]
    assert [row[M.STEP] for row in resumed.history] == [1.0, 2.0, 3.0, 4.0]
    assert resumed.base == loop.base and "final/accuracy" in resumed.evaluations


def test_a_finished_checkpoint_runs_no_step_and_no_evaluation(tmp_path: Path):
    engine = CountingEngine(_config(2))
    loop = RunLoop(engine, describe=lambda line: None)
    list(loop.iter_steps())
    loop.save(tmp_path)
    again = CountingEngine(_config(2))
    resumed = RunLoop(again, describe=lambda line: None)
    resumed.restore(load_checkpoint(tmp_path))
    assert list(resumed.iter_steps()) == [] and again.calls == [f"lr {again.config.optim.lr}"]
