"""The ``math`` verifier (math-verify) and ``auto``'s use of it: MATH-style answer pairs, equivalent
and not; the same rewards as before for answers without LaTeX; thread and Ray-worker safety; the
guard against expressions sympy cannot finish; the one-line error without the extra."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from entropic_tune.config import TaskConfig
from entropic_tune.errors import UserError
from entropic_tune.tasks import SAMPLE_PATH, JsonlTask, math_answers, verifiers
from entropic_tune.tasks.verifiers import verify

pytest.importorskip("math_verify")

# (response, reference answer): real MATH-style answers written two ways.
EQUIVALENT = [
    ("so \\boxed{0.5}", "\\frac{1}{2}"),
    ("\\boxed{\\frac{\\sqrt 2}{2}}", "\\dfrac{\\sqrt{2}}{2}"),
    ("\\boxed{3}", "3.0"),
    ("\\boxed{3.0}", "3"),
    ("\\boxed{[1,2)}", "[1, 2)"),
    ("\\boxed{(-\\infty, 3]}", "(-\\infty,3]"),
    ("\\boxed{\\{3,2,1\\}}", "\\{1,2,3\\}"),
    ("\\boxed{1+x^2}", "x^2+1"),
    ("\\boxed{\\pi \\cdot 2}", "2\\pi"),
    ("\\boxed{\\frac{1}{3}}", "0.333333"),
    ("work... #### \\frac{3}{4}", "0.75"),
    ("The answer is $\\frac{7}{2}$.", "3.5"),
]
NOT_EQUIVALENT = [
    ("\\boxed{0.33}", "\\frac{1}{3}"),
    ("\\boxed{x-1}", "x+1"),
    ("\\boxed{(1,2]}", "[1,2]"),
    ("\\boxed{(2,1)}", "(1,2)"),
    ("\\boxed{3.14159}", "\\pi"),
    ("\\boxed{\\frac{1}{2}} then nothing", "\\frac{1}{3}"),
    ("no answer here", "\\frac{1}{2}"),
    ("\\boxed{}", "0"),
]


@pytest.mark.parametrize(("response", "answer"), EQUIVALENT)
def test_math_verifier_accepts_equivalent_answers(response: str, answer: str) -> None:
    assert verify(response, answer, "math") is True


@pytest.mark.parametrize(("response", "answer"), NOT_EQUIVALENT)
def test_math_verifier_refuses_different_answers(response: str, answer: str) -> None:
    assert verify(response, answer, "math") is False


def test_auto_uses_math_verify_for_latex_answers_only() -> None:
    # LaTeX answers: judged by math-verify where the string check of 'boxed' was wrong
    assert verify("\\boxed{0.5}", "\\frac{1}{2}", "boxed") is False
    assert verify("\\boxed{0.5}", "\\frac{1}{2}", "auto") is True
    assert verify("\\boxed{\\frac{\\sqrt 2}{2}}", "\\dfrac{\\sqrt{2}}{2}", "auto") is True
    assert verify("\\boxed{x-1}", "x^2", "auto") is False
    assert math_answers.looks_like_latex("\\frac{1}{2}") and math_answers.looks_like_latex("x^2")
    assert not any(map(math_answers.looks_like_latex, ("42", "-3.5", "1,234", "cat", "(1,2)")))


def test_answers_without_latex_never_reach_math_verify(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bit for bit: 'auto' on the shipped data (and every non-LaTeX answer) takes the old paths."""

    def boom(*_: object) -> bool:
        raise AssertionError("math-verify called for an answer without LaTeX")

    monkeypatch.setitem(verifiers._KINDS, "math", boom)
    monkeypatch.setattr(verifiers, "_math", boom)
    monkeypatch.setattr(verifiers, "equivalent", boom)
    records = [json.loads(line) for line in SAMPLE_PATH.read_text().splitlines()]
    for record in records:
        answer = record["answer"]
        assert verify(record["solution"], answer, "auto") is verify(record["solution"], answer, "gsm8k")
        assert verify(f"\\boxed{{{answer}}}", answer, "auto") is True
        assert verify("#### 0.5", answer, "auto") is (answer == "0.5")
    task = JsonlTask(TaskConfig(name="jsonl", path=str(SAMPLE_PATH)))
    assert task.reward(task.eval_problems()[0], "\\boxed{\\frac{1}{2}}") == 0.0


def test_math_verify_runs_in_a_worker_thread() -> None:
    """Ray Tune runs a trial's steps in a thread; math-verify's signal timeouts would raise there."""
    results: list[bool] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.extend(verify(r, a, "math") for r, a in EQUIVALENT[:4] + NOT_EQUIVALENT[:3])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(60)
    assert not errors and results == [True] * 4 + [False] * 3


@pytest.mark.parametrize(
    "response",
    ["\\boxed{9^{9^{9^{9}}}}", "\\boxed{2^{100000000}}", "\\boxed{123456789!}", "\\boxed{" + "1+" * 300 + "1}"],
)
def test_runaway_expressions_score_zero_at_once(response: str) -> None:
    start = time.perf_counter()
    assert verify(response, "\\frac{1}{2}", "math") is False
    assert time.perf_counter() - start < 2.0


def test_missing_extra_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(math_answers, "available", lambda: False)
    with pytest.raises(UserError, match=r"entropic-tune\[math\]") as info:
        math_answers.require()
    assert "\n" not in str(info.value)
    data = tmp_path / "latex.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"q{i}", "answer": "\\frac{1}{2}"}) + "\n" for i in range(4)))
    with pytest.raises(UserError, match=r"entropic-tune\[math\]"):
        JsonlTask(TaskConfig(name="jsonl", path=str(data), eval_size=1))
    JsonlTask(TaskConfig(name="jsonl", path=str(SAMPLE_PATH)))  # integer answers: no extra needed


@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
def test_math_verify_inside_a_ray_worker_thread() -> None:
    import ray

    @ray.remote
    def check() -> list[bool]:
        out: list[bool] = []
        thread = threading.Thread(target=lambda: out.extend(verify(r, a, "math") for r, a in EQUIVALENT[:3]))
        thread.start()
        thread.join(60)
        return out + [verify(*NOT_EQUIVALENT[0], "math")]

    assert ray.get(check.remote(), timeout=120) == [True, True, True, False]
