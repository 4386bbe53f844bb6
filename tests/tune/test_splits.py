"""Tuning never sees the test set (issue 28): held-out splits and seeds, for every task and space."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from entropic_tune.config import TaskConfig, load_config
from entropic_tune.errors import UserError
from entropic_tune.tasks import SAMPLE_PATH, TASKS, build_task
from entropic_tune.tune import spaces

TASK_CONFIGS = {
    "arithmetic": {},
    "paths": {"direct_share": 0.5},
    "jsonl": {"path": str(SAMPLE_PATH)},
    # the shipped GSM8K-layout sample, read through `datasets` (a JsonlTask underneath: the same splits)
    "dataset": {"path": str(Path(__file__).resolve().parents[2] / "entropic_tune" / "data" / "samples"
                            / "gsm8k_sample.parquet")},
    "reasoning_gym": {"dataset_config": {"min_numbers": 3, "max_numbers": 3, "max_value": 20,
                                         "min_target": 1, "max_target": 100}},
}
SPACE_FILES = sorted(spaces.SPACES_DIR.glob("**/*.yaml"))
SPACE_PARAMS = [  # spaces on reasoning_gym build its problems (~5 s each): slow
    pytest.param(p, marks=pytest.mark.slow) if "countdown" in str(p) else p for p in SPACE_FILES
]


def _prompts(task, split: str) -> set[str]:
    return {p.prompt for p in task.held_out(split)}


def test_every_task_is_covered() -> None:
    assert set(TASK_CONFIGS) == set(TASKS)


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n == "reasoning_gym" else n for n in sorted(TASK_CONFIGS)],
)
@pytest.mark.parametrize("eval_size", [8, 64])
def test_test_and_validation_splits_are_disjoint_and_test_is_never_trained_on(
    name: str, eval_size: int
) -> None:
    if name == "reasoning_gym":
        pytest.importorskip("reasoning_gym")
    cfg = TaskConfig(name=name, eval_size=eval_size, **TASK_CONFIGS[name])
    task = build_task(cfg)
    test, validation = _prompts(task, "test"), _prompts(task, "validation")
    assert len(test) == len(task.held_out("test")) == eval_size  # distinct prompts
    assert validation and not test & validation
    assert [p.prompt for p in task.eval_problems()] == [p.prompt for p in task.held_out("test")]
    other = build_task(TaskConfig(name=name, eval_size=eval_size, split="validation",
                                  **TASK_CONFIGS[name]))
    assert other.eval_problems() == task.held_out("validation")
    draws = 300 if name == "reasoning_gym" else 3000  # its generator takes ~3 ms per problem
    trained = {p.prompt for p in task.sample_train(random.Random(0), draws)}
    assert not trained & test
    if name == "reasoning_gym":  # generated problems: validation is kept out of training too
        assert not trained & validation
    # the training stream does not depend on the split (same data, same warm-start)
    assert other.sample_train(random.Random(1), 50) == task.sample_train(random.Random(1), 50)


def test_default_test_split_is_the_held_out_set_of_before() -> None:
    """The test split of the default task is what the held-out set was before splits existed: the
    first eval_size distinct pairs of Random(eval_seed) (so the main job is unchanged)."""
    task = build_task(TaskConfig())
    rng, pairs = random.Random(1234), {}
    while len(pairs) < 64:
        pairs[task._pair(rng)] = None
    assert [p.prompt for p in task.held_out("test")] == [f"{a}+{b}=" for a, b in pairs]


def _trial_configs(space: spaces.SearchSpace) -> list[dict]:
    if space.kind == "search":
        return [spaces.search_base(space)]
    return [spaces.trial_config(t) for t in spaces.expand_trials(space)]


def _seeds(space: spaces.SearchSpace) -> set[int]:
    repeat = space.repeat if space.kind == "search" else 1
    return {s + r for s in space.seeds for r in range(repeat)}


@pytest.mark.parametrize("path", SPACE_PARAMS, ids=lambda p: str(p.relative_to(spaces.SPACES_DIR)))
def test_every_space_scores_on_its_kinds_split_with_disjoint_held_out_sets(path: Path) -> None:
    space = spaces.load_space(str(path))
    split = spaces.SPLIT_OF_KIND[space.kind]
    for data in _trial_configs(space):
        cfg = load_config(data)
        assert cfg.task.split == split
        if cfg.task.name == "reasoning_gym":
            pytest.importorskip("reasoning_gym")
        task = build_task(cfg.task)
        assert not _prompts(task, "test") & _prompts(task, "validation")


@pytest.mark.slow  # loads every space file, countdown's included
def test_tuning_seeds_are_disjoint_from_every_comparison_seed() -> None:
    loaded = [spaces.load_space(str(p)) for p in SPACE_FILES]
    tuning = set().union(*(_seeds(s) for s in loaded if s.kind == "search"))
    scored = set().union(*(_seeds(s) for s in loaded if s.kind != "search"))
    assert tuning and scored and not tuning & scored, sorted(tuning & scored)


@pytest.mark.parametrize(
    ("kind_file", "override", "needle"),
    [
        ("compare", "validation", "a compare space scores on the test split"),
        ("tune_grpo", "test", "a search space scores on the validation split"),
    ],
)
def test_a_space_refuses_the_other_split(kind_file: str, override: str, needle: str) -> None:
    with pytest.raises(UserError, match=needle) as bad:
        spaces.load_space(kind_file, {"task.split": override})
    assert f"--set task.split={override}" in str(bad.value) and "\n" not in str(bad.value)
