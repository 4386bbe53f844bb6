"""The reasoning_gym task source: the package's generator (seeded) and its scorer, binarised."""

from __future__ import annotations

import builtins
import random

import pytest

from entropic_tune.config import TaskConfig, load_config
from entropic_tune.errors import UserError
from entropic_tune.tasks import build_task
from entropic_tune.tasks.base import Problem

pytest.importorskip("reasoning_gym")

SMALL = {"min_numbers": 3, "max_numbers": 3, "min_value": 1, "max_value": 20, "min_target": 1,
         "max_target": 100}


def _task(**keys):
    keys = {"name": "reasoning_gym", "dataset": "countdown", "dataset_config": dict(SMALL),
            "eval_size": 16, **keys}
    return build_task(TaskConfig(**keys))


def test_generation_is_deterministic_per_seed() -> None:
    a, b, other = _task(), _task(), _task(eval_seed=99)
    for split in ("test", "validation"):
        assert a.held_out(split) == b.held_out(split)
    assert a.held_out("test") != other.held_out("test")
    assert a.sample_train(random.Random(3), 12) == b.sample_train(random.Random(3), 12)
    assert a.sample_train(random.Random(3), 12) != a.sample_train(random.Random(4), 12)
    rng_a, rng_b = random.Random(5), random.Random(5)
    pairs_a = [a.warmstart_example(rng_a, corrupt=i % 2 == 1) for i in range(10)]
    assert pairs_a == [b.warmstart_example(rng_b, corrupt=i % 2 == 1) for i in range(10)]


def test_reward_is_the_packages_score_binarised() -> None:
    task = _task()
    problem = task.held_out("test")[0]
    numbers = [int(n) for n in problem.prompt.split(">")[0].split(",")]
    target = int(problem.prompt.split(">")[1].rstrip(":"))
    assert task.reward(problem, problem.solution) == 1.0
    assert task.reward(problem, f" {problem.solution} ") == 1.0  # stripped
    # A different correct expression also earns 1 (many answers): brute force one over + - *
    found = [
        f"{x}{o1}{y}{o2}{z}"
        for x, y, z in ((numbers[0], numbers[1], numbers[2]), (numbers[2], numbers[1], numbers[0]))
        for o1 in "+-*" for o2 in "+-*"
        if eval(f"{x}{o1}{y}{o2}{z}") == target  # noqa: S307 - digits and operators only
    ]
    for expression in found:
        assert task.reward(problem, expression) == 1.0
    # wrong value (partial credit 0.05 in the package), wrong numbers, junk: all 0
    wrong = "+".join(str(n) for n in numbers)
    if sum(numbers) != target:
        assert task.score(problem, wrong) == 0.05 and task.reward(problem, wrong) == 0.0
    assert task.reward(problem, f"{target}") == 0.0  # not the problem's numbers
    assert task.reward(problem, "") == 0.0 and task.reward(problem, "1+") == 0.0
    assert task.reward(problem, "9**9**9**9") == 0.0  # never given to sympy
    assert task.reward(problem, "x" * 10) == 0.0


def test_warmstart_examples_are_right_or_wrong_as_asked_and_fit_the_alphabet() -> None:
    task = _task()
    rng = random.Random(0)
    alphabet = set(task.alphabet())
    held = {p.prompt for s in ("test", "validation") for p in task.held_out(s)}
    for i in range(40):
        corrupt = i % 2 == 0
        prompt, response = task.warmstart_example(rng, corrupt)
        assert prompt not in held
        assert set(prompt + response) <= alphabet
        assert task.reward(Problem(prompt, ""), response) == (0.0 if corrupt else 1.0)


def test_bad_dataset_name_and_config_key_are_one_line_errors() -> None:
    with pytest.raises(UserError, match=r"task.dataset 'countdwn'.*allowed: countdown") as bad:
        _task(dataset="countdwn")
    assert "\n" not in str(bad.value)
    with pytest.raises(UserError, match=r"task.dataset_config.max_nums: .*allowed: .*max_numbers"):
        _task(dataset_config={"max_nums": 3})
    with pytest.raises(UserError, match=r"task.dataset_config: countdown refuses"):
        _task(dataset_config={"min_numbers": 1})
    with pytest.raises(UserError, match=r"task.dataset_config: expected dict, got 3"):
        load_config(overrides=["task.name=reasoning_gym", "task.dataset_config=3"])


def test_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = builtins.__import__

    def refuse(name, *args, **kwargs):
        if name.startswith("reasoning_gym"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", refuse)
    with pytest.raises(UserError, match=r"entropic-tune\[tasks\]"):
        _task()


def test_puzzle24_is_not_offered_because_its_scorer_ignores_the_numbers() -> None:
    """reasoning-gym 0.1.25's puzzle24 accepts any four in-range numbers that make 24: the reason
    the task does not offer it (tasks/reasoning_gym.py). Fails when a new version fixes it."""
    import reasoning_gym

    data = reasoning_gym.create_dataset("puzzle24", seed=1, size=3)
    entry = data[0]
    assert sorted(entry["metadata"]["numbers"]) != [1, 1, 4, 6]
    assert data.score_answer("6*4*1*1", entry) == 1.0
    with pytest.raises(UserError, match="task.dataset 'puzzle24'; allowed: countdown"):
        _task(dataset="puzzle24")
