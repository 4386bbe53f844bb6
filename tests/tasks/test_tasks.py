"""Tasks: the arithmetic format and rewards, seeding, held-out sets, JSONL validation, verifiers."""

from __future__ import annotations

import json
import random
import re
import runpy
import statistics
from pathlib import Path
from types import SimpleNamespace

import pytest

from entropic_tune import config as config_module
from entropic_tune.config import TaskConfig
from entropic_tune.errors import UserError
from entropic_tune.tasks import SAMPLE_PATH, TASKS, Problem, Task, build_task, verify
from entropic_tune.tasks.arithmetic import final_answer, worked_solution
from entropic_tune.tasks.jsonl import load_problems
from entropic_tune.tasks.paths import direct_answer

ROOT = Path(__file__).resolve().parents[2]


def _hamming(x: str, y: str) -> int:
    return sum(a != b for a, b in zip(x, y, strict=False)) + abs(len(x) - len(y))


@pytest.fixture(scope="module")
def arithmetic() -> Task:
    return build_task(TaskConfig())


def _jsonl(tmp_path: Path, lines: list[str], name: str = "data.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines))
    return path


# --- arithmetic ----------------------------------------------------------------------------------


def test_worked_solution_format() -> None:
    assert worked_solution(47, 85) == "7+5=12,4+8+1=13,>132"
    assert worked_solution(3, 4) == "3+4=07,>07"
    assert worked_solution(5, 123) == "5+3=08,0+2+0=02,0+1+0=01,>0128"
    assert worked_solution(999, 999) == "9+9=18,9+9+1=19,9+9+1=19,>1998"


def test_response_lengths_and_rewards(arithmetic: Task) -> None:
    problems = arithmetic.sample_train(random.Random(0), 2000)
    lengths = [len(p.solution) for p in problems]
    assert min(lengths) >= 10 and max(lengths) <= 30
    assert 15 <= statistics.mean(lengths) <= 28
    assert all(arithmetic.reward(p, p.solution) == 1.0 for p in problems)
    assert all(re.fullmatch(r"\d{1,3}\+\d{1,3}=", p.prompt) for p in problems)


def test_warmstart_correct_and_corrupt(arithmetic: Task) -> None:
    rng = random.Random(1)
    diffs = []
    for seed in range(500):
        prompt, good = arithmetic.warmstart_example(random.Random(seed), corrupt=False)
        prompt2, bad = arithmetic.warmstart_example(random.Random(seed), corrupt=True)
        assert prompt == prompt2
        a, b = (int(x) for x in prompt[:-1].split("+"))
        problem = Problem(prompt, str(a + b), good)
        assert good == worked_solution(a, b)
        assert arithmetic.reward(problem, good) == 1.0
        assert arithmetic.reward(problem, bad) == 0.0
        assert len(bad) == len(good) and bad.count(",") == good.count(",")
        diffs.append(_hamming(good, bad))
    assert min(diffs) >= 2  # the wrong step and the answer digit it feeds
    assert statistics.median(diffs) <= 3 and max(diffs) <= 12
    # repeated draws from one rng give varied corrupted solutions
    assert len({arithmetic.warmstart_example(rng, True)[1] for _ in range(50)}) > 40


def test_reward_checks_only_the_answer(arithmetic: Task) -> None:
    problem = Problem("47+85=", "132", worked_solution(47, 85))
    assert arithmetic.reward(problem, ">132") == 1.0
    assert arithmetic.reward(problem, "garbage,>0132") == 1.0
    assert arithmetic.reward(problem, " >132 ") == 1.0
    assert arithmetic.reward(problem, "7+5=12,4+8+1=13,>133") == 0.0
    assert arithmetic.reward(problem, "7+5=12,4+8+1=13,132") == 0.0  # no marker
    assert arithmetic.reward(problem, ">13a2") == 0.0
    assert arithmetic.reward(problem, ">") == 0.0
    assert arithmetic.reward(problem, "") == 0.0
    assert final_answer(">000") == "0"


def test_same_seed_same_problems(arithmetic: Task) -> None:
    first = arithmetic.sample_train(random.Random(7), 50)
    assert first == arithmetic.sample_train(random.Random(7), 50)
    assert first != arithmetic.sample_train(random.Random(8), 50)
    assert build_task(TaskConfig()).sample_train(random.Random(7), 50) == first


def test_eval_set_fixed_and_disjoint(arithmetic: Task) -> None:
    held_out = arithmetic.eval_problems()
    assert len(held_out) == 64 and len({p.prompt for p in held_out}) == 64
    assert held_out == arithmetic.eval_problems() == build_task(TaskConfig()).eval_problems()
    assert held_out != build_task(TaskConfig(eval_seed=5)).eval_problems()
    assert len(build_task(TaskConfig(eval_size=10)).eval_problems()) == 10
    train = {p.prompt for p in arithmetic.sample_train(random.Random(0), 20000)}
    assert not train & {p.prompt for p in held_out}
    assert all(arithmetic.reward(p, p.solution) == 1.0 for p in held_out)


def test_alphabet_covers_everything(arithmetic: Task) -> None:
    alphabet = arithmetic.alphabet()
    assert alphabet == "".join(sorted(set(alphabet))) == "+,0123456789=>"
    rng = random.Random(0)
    texts = [p.prompt + p.solution for p in arithmetic.sample_train(rng, 500)]
    texts += ["".join(arithmetic.warmstart_example(rng, corrupt=True)) for _ in range(500)]
    assert set("".join(texts)) <= set(alphabet)


def test_digit_range_and_small_spaces() -> None:
    task = build_task(TaskConfig(min_digits=2, max_digits=2, eval_size=8))
    for p in task.sample_train(random.Random(0), 200):
        a, b = p.prompt[:-1].split("+")
        assert len(a) == len(b) == 2 and len(p.solution) == 20
    with pytest.raises(UserError, match="task.eval_size"):
        build_task(TaskConfig(min_digits=1, max_digits=1, eval_size=60))


# --- jsonl ---------------------------------------------------------------------------------------


def test_sample_file_loads_and_matches_generator(tmp_path: Path) -> None:
    task = build_task(TaskConfig(name="jsonl", path=str(SAMPLE_PATH)))
    assert len(task.eval_problems()) == 64
    train = task.sample_train(random.Random(0), 300)
    assert not {p.prompt for p in train} & {p.prompt for p in task.eval_problems()}
    assert all(len(p.prompt) < 80 and task.reward(p, p.solution) == 1.0 for p in train)
    script = runpy.run_path(str(ROOT / "scripts" / "make_sample_data.py"))
    assert SAMPLE_PATH.read_text() == script["render"](script["make_rows"]())
    rng = random.Random(0)
    alphabet = set(task.alphabet())
    for _ in range(200):
        prompt, good = task.warmstart_example(rng, corrupt=False)
        prompt2, bad = task.warmstart_example(rng, corrupt=True)
        assert set(prompt + good + prompt2 + bad) <= alphabet
        assert "####" in bad and good != bad


def test_jsonl_split_answers_and_warmstart_formats(tmp_path: Path) -> None:
    lines = [json.dumps({"prompt": f"q{i}", "answer": i}) for i in range(5)]
    lines.insert(2, "   ")  # blank lines are skipped
    path = _jsonl(tmp_path, lines)
    for verifier, prefix in (
        ("gsm8k", "#### "),
        ("boxed", "\\boxed{"),
        ("numeric", ""),
        ("exact", ""),
    ):
        task = build_task(TaskConfig(name="jsonl", path=str(path), eval_size=2, verifier=verifier))
        assert [p.prompt for p in task.eval_problems()] == ["q3", "q4"]
        # validation: the last eval_size training records, which stay in training; test never does
        assert [p.prompt for p in task.held_out("validation")] == ["q1", "q2"]
        assert {p.prompt for p in task.sample_train(random.Random(0), 50)} == {"q0", "q1", "q2"}
        rng = random.Random(0)
        for _ in range(20):
            prompt, good = task.warmstart_example(rng, corrupt=False)
            problem = Problem(prompt, prompt[1:])
            assert good.startswith(prefix) and task.reward(problem, good) == 1.0
            prompt, bad = task.warmstart_example(rng, corrupt=True)
            assert task.reward(Problem(prompt, prompt[1:]), bad) == 0.0
    words = _jsonl(
        tmp_path,
        [json.dumps({"prompt": f"say {w}", "answer": w}) for w in ("cat", "aa", "b")],
        "w.jsonl",
    )
    task = build_task(TaskConfig(name="jsonl", path=str(words), eval_size=1, verifier="exact"))
    for seed in range(20):
        prompt, bad = task.warmstart_example(random.Random(seed), corrupt=True)
        assert bad not in ("cat", "aa") and set(bad) <= set(task.alphabet())


def test_jsonl_eval_path_and_float_answers(tmp_path: Path) -> None:
    train = _jsonl(
        tmp_path,
        [json.dumps({"prompt": "a", "answer": 2.5}), json.dumps({"prompt": "b", "answer": 3.0})],
    )
    held = _jsonl(tmp_path, [json.dumps({"prompt": "b", "answer": "3"})], "eval.jsonl")
    task = build_task(TaskConfig(name="jsonl", path=str(train), eval_path=str(held)))
    assert task.eval_problems() == [Problem("b", "3")]
    assert task.sample_train(random.Random(0), 3) == [Problem("a", "2.5")] * 3  # "b" is held out
    assert load_problems(train)[1].answer == "3"


@pytest.mark.parametrize(
    ("lines", "needle"),
    [
        (
            ['{"prompt": "a", "answer": 1}', '{"prompt": "b", "answer": 2}', "{not json"],
            ":3: invalid JSON",
        ),
        (['{"prompt": "a", "answer": 1}', '{"prompt": "b"}'], ":2: missing key 'answer'"),
        (['{"answer": 1}'], ":1: missing key 'prompt'"),
        (['{"prompt": "a", "answer": [1]}'], ":1: 'answer' must be"),
        (['{"prompt": "a", "answer": true}'], ":1: 'answer' must be"),
        (['{"prompt": 3, "answer": 1}'], ":1: 'prompt' must be"),
        (['{"prompt": "a", "answer": 1, "solution": 5}'], ":1: 'solution' must be"),
        (['{"prompt": "a", "answer": 1, "solution": "#### 2"}'], ":1: the solution does not pass"),
        (["", "[1, 2]"], ":2: got a JSON list"),
    ],
)
def test_jsonl_malformed_lines(tmp_path: Path, lines: list[str], needle: str) -> None:
    path = _jsonl(tmp_path, lines, "bad_data.jsonl")
    with pytest.raises(ValueError, match="bad_data.jsonl") as info:
        load_problems(path)
    assert needle in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(UserError, match="bad_data.jsonl"):
        build_task(TaskConfig(name="jsonl", path=str(path), eval_size=1))


def test_jsonl_empty_missing_and_too_small(tmp_path: Path) -> None:
    empty = _jsonl(tmp_path, ["", "  "], "empty.jsonl")
    with pytest.raises(ValueError, match=r"empty\.jsonl.*empty file"):
        load_problems(empty)
    with pytest.raises(ValueError, match=r"nope\.jsonl.*does not exist"):
        build_task(TaskConfig(name="jsonl", path=str(tmp_path / "nope.jsonl")))
    with pytest.raises(ValueError, match=r"task\.eval_path.*does not exist"):
        build_task(
            TaskConfig(name="jsonl", path=str(SAMPLE_PATH), eval_path=str(tmp_path / "x.jsonl"))
        )
    two = _jsonl(
        tmp_path, ['{"prompt": "a", "answer": 1}', '{"prompt": "b", "answer": 2}'], "two.jsonl"
    )
    with pytest.raises(UserError, match=r"two\.jsonl.*task\.eval_size=2"):
        build_task(TaskConfig(name="jsonl", path=str(two), eval_size=2))
    words = _jsonl(tmp_path, ['{"prompt": "a", "answer": "x"}'], "words.jsonl")
    with pytest.raises(UserError, match=r"words\.jsonl:1: .*not a number"):
        load_problems(words, verifier="numeric")


# --- verifiers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "answer", "kind", "expected"),
    [
        (" 42\n", "42", "exact", True),
        ("42.0", "42", "exact", False),
        ("Cat", "cat", "exact", False),
        ("so the total is 1,234", "1234", "numeric", True),
        ("12-7 gives -3", "-3", "numeric", True),
        ("12-7=5", "-5", "numeric", False),
        ("it costs 2.50", "2.5", "numeric", True),
        ("2.5000001", "2.5", "numeric", True),
        ("2.51", "2.5", "numeric", False),
        ("3 then 4", "3", "numeric", False),
        ("no number", "3", "numeric", False),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}", "boxed", True),
        ("\\boxed{1} then \\boxed{{2}}", "{2}", "boxed", True),
        ("\\boxed{1} then \\boxed{2}", "1", "boxed", False),
        ("\\boxed{ 1,000 }", "1000", "boxed", True),
        ("\\boxed{2", "2", "boxed", False),
        ("42", "42", "boxed", False),
        ("12+7=19 #### 19", "19", "gsm8k", True),
        ("#### 18 #### 19", "19", "gsm8k", True),
        ("#### 19 apples", "19", "gsm8k", True),
        ("19 #### 20", "19", "gsm8k", False),
        ("19", "19", "gsm8k", False),
        ("\\boxed{7} 8", "7", "auto", True),
        ("#### 7", "7", "auto", True),
        ("it is 7", "7", "auto", True),
        ("it is 8", "7", "auto", False),
        (" cat ", "cat", "auto", True),
        ("a cat", "cat", "auto", False),
    ],
)
def test_verifiers(response: str, answer: str, kind: str, expected: bool) -> None:
    assert verify(response, answer, kind) is expected


def test_verify_unknown_kind_and_number_answer() -> None:
    assert verify("#### 1,234", 1234, "gsm8k") is True
    with pytest.raises(UserError, match="allowed: auto, boxed, exact, gsm8k, math, numeric"):
        verify("1", "1", "fuzzy")


# --- paths: a direct and a worked solution path -------------------------------------------------


def test_paths_warmstart_mixes_the_two_paths_at_the_configured_share() -> None:
    assert direct_answer(worked_solution(47, 85)) == ">132"
    for share in (0.0, 0.6, 1.0):
        task = build_task(TaskConfig(name="paths", direct_share=share))
        rng = random.Random(3)
        direct = 0
        for _ in range(2000):
            prompt, response = task.warmstart_example(rng, corrupt=False)
            a, b = (int(x) for x in prompt[:-1].split("+"))
            problem = Problem(prompt, str(a + b), worked_solution(a, b))
            assert task.reward(problem, response) == 1.0  # both paths are valid solutions
            assert response in (worked_solution(a, b), direct_answer(worked_solution(a, b)))
            direct += response.startswith(">")
        assert direct / 2000 == pytest.approx(share, abs=0.035)


def test_paths_corrupted_examples_are_wrong_on_either_path() -> None:
    task = build_task(TaskConfig(name="paths", direct_share=0.5))
    rng = random.Random(4)
    seen = set()
    for _ in range(500):
        prompt, response = task.warmstart_example(rng, corrupt=True)
        a, b = (int(x) for x in prompt[:-1].split("+"))
        assert task.reward(Problem(prompt, str(a + b)), response) == 0.0
        seen.add(response.startswith(">"))
        # a corrupted direct answer is one slip away: off by one unit in a single column place
        if response.startswith(">"):
            gap = abs(int(response[1:]) - (a + b))
            assert len(response) == len(direct_answer(worked_solution(a, b)))
            assert gap in {10**i for i in range(4)}
    assert seen == {True, False}


def test_paths_shares_the_arithmetic_problems_and_rejects_a_bad_share() -> None:
    paths, arithmetic = build_task(TaskConfig(name="paths")), build_task(TaskConfig())
    assert paths.eval_problems() == arithmetic.eval_problems()
    assert paths.sample_train(random.Random(9), 30) == arithmetic.sample_train(random.Random(9), 30)
    assert paths.alphabet() == arithmetic.alphabet()
    with pytest.raises(UserError, match=r"task.direct_share: must be in \[0, 1\], got 1.5"):
        TaskConfig(name="paths", direct_share=1.5)


# --- registry ------------------------------------------------------------------------------------


def test_registry_and_unknown_task() -> None:
    assert set(TASKS) == set(config_module.TASKS)
    assert all(TASKS[name].name == name for name in TASKS)
    with pytest.raises(
        UserError,
        match=r"unknown task 'arithmetc' \(did you mean 'arithmetic'\?\); allowed: arithmetic, d",
    ):
        build_task(SimpleNamespace(name="arithmetc"))
    with pytest.raises(UserError, match="allowed: arithmetic, dataset, jsonl"):
        TaskConfig(name="nope")
