"""A dataset task read from JSONL: one ``{"prompt": ..., "answer": ..., "solution": ...}`` per line.

The file is validated completely at load time, so that a bad line stops a sweep before any trial
starts, with a one-line error naming the file and the 1-based line. The reward is the configured
verifier (:mod:`entropic_tune.tasks.verifiers`). The held-out set is ``task.eval_path`` when given,
else the last ``task.eval_size`` records (the test split), whose prompts never enter the training
stream; the validation split is the last ``task.eval_size`` training records (distinct prompts),
which stay in the training stream (as before splits existed).
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from .base import Problem, Task, sorted_chars
from .math_answers import require as require_math_verify
from .verifiers import (
    VERIFIERS,
    find_numbers,
    format_answer,
    format_chars,
    needs_math_verify,
    numbers_equal,
    parse_number,
    verify,
)

if TYPE_CHECKING:
    from ..config import TaskConfig

SAMPLE_PATH = Path(__file__).resolve().parent.parent / "data" / "sample_gsm8k_style.jsonl"
"""The packaged GSM8K-style sample (``scripts/make_sample_data.py`` writes it)."""

EXPECTED = 'expected {"prompt": str, "answer": str or number} with optional "solution": str'


def _answer_text(value: Any) -> str | None:
    """The canonical answer string of a JSON value, or None when it is not a string or number."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def _problem(record: Any, where: str, verifier: str) -> Problem:
    if not isinstance(record, dict):
        raise UserError(f"{where}: got a JSON {type(record).__name__}; {EXPECTED}")
    for key in ("prompt", "answer"):
        if key not in record:
            raise UserError(f"{where}: missing key '{key}'; {EXPECTED}")
    prompt, answer, solution = (
        record["prompt"],
        _answer_text(record["answer"]),
        record.get("solution"),
    )
    if not isinstance(prompt, str) or not prompt:
        raise UserError(f"{where}: 'prompt' must be a non-empty string, got {prompt!r}")
    if not answer:
        raise UserError(
            f"{where}: 'answer' must be a non-empty string or a finite number, "
            f"got {record['answer']!r}"
        )
    if solution is not None and not isinstance(solution, str):
        raise UserError(f"{where}: 'solution' must be a string or null, got {solution!r}")
    if verifier == "numeric" and parse_number(answer) is None:
        raise UserError(
            f"{where}: answer {answer!r} is not a number but task.verifier is 'numeric'"
        )
    if solution is not None and not verify(solution, answer, verifier):
        raise UserError(
            f"{where}: the solution does not pass task.verifier '{verifier}' "
            f"for answer {answer!r}; "
            f"fix the line or choose another task.verifier ({', '.join(VERIFIERS)})"
        )
    return Problem(prompt=prompt, answer=answer, solution=solution)


def load_problems(
    path: str | Path, verifier: str = "auto", key: str = "task.path"
) -> list[Problem]:
    """Read and validate a JSONL file; every error is a UserError naming ``path`` (and the line)."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise UserError(f"{path}: {key} {what}; expected a JSONL file ({EXPECTED} per line)")
    problems: list[Problem] = []
    first: dict[str, tuple[int, str]] = {}  # prompt -> (line, answer) where it first appeared
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8").strip()
            except UnicodeDecodeError:
                raise UserError(f"{where}: not valid UTF-8 text") from None
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(
                    f"{where}: invalid JSON ({exc.msg} at column {exc.colno}); {EXPECTED}"
                ) from None
            problem = _problem(record, where, verifier)
            line_before, answer_before = first.setdefault(problem.prompt, (number, problem.answer))
            if answer_before != problem.answer:
                raise UserError(f"{where}: the prompt of line {line_before} again, with another answer "
                                f"({answer_before!r} on line {line_before}, {problem.answer!r} here); a prompt "
                                "has one answer: fix or remove one of the lines")
            problems.append(problem)
    if not problems:
        raise UserError(f"{path}: {key} has no records (empty file); {EXPECTED} per line")
    return problems


def wrong_answer(answer: str, rng: random.Random) -> str:
    """A different answer: a number moved by one, else the characters shuffled (never equal)."""
    value = parse_number(answer)
    if value is not None:
        moved = value + (1 if value == 0 else rng.choice((-1, 1)))
        return str(int(moved)) if moved == moved.to_integral_value() else str(moved)
    chars = list(answer)
    for _ in range(8):
        rng.shuffle(chars)
        if "".join(chars).strip() != answer:
            return "".join(chars)
    return answer + answer[-1]  # every shuffle was the same string (e.g. "aa"): make it longer


def corrupt_response(response: str, answer: str, verifier: str, rng: random.Random) -> str:
    """``response`` with the answer replaced everywhere by a wrong one, so the slip propagates."""
    wrong = wrong_answer(answer, rng)
    target = parse_number(answer)
    if target is None:
        candidate = response.replace(answer, wrong)
    else:
        pieces, last = [], 0
        for start, end, value in find_numbers(response):
            if numbers_equal(value, target):
                pieces += [response[last:start], wrong]
                last = end
        candidate = "".join(pieces) + response[last:]
    if candidate != response and not verify(candidate, answer, verifier):
        return candidate
    return format_answer(wrong, verifier)


class JsonlTask(Task):
    """Problems from a JSONL file, rewarded by ``task.verifier``."""

    name = "jsonl"

    def __init__(self, cfg: TaskConfig) -> None:
        if not cfg.path:
            raise UserError(f"task.path: is required when task.name is '{self.name}'")
        self.verifier = cfg.verifier
        problems = self.load(cfg, cfg.path, "task.path")
        if cfg.eval_path:
            held_out, train = self.load(cfg, cfg.eval_path, "task.eval_path"), problems
        elif len(problems) - cfg.eval_size < 1:
            raise UserError(
                f"{cfg.path}: {len(problems)} records but task.eval_size={cfg.eval_size} "
                "are held out, "
                "leaving no training records; lower task.eval_size or set task.eval_path"
            )
        else:
            held_out, train = problems[-cfg.eval_size :], problems[: -cfg.eval_size]
        # a prompt repeated in the held-out set is one problem (counted once in eval/accuracy and pass@k)
        once: dict[str, Problem] = {}
        for problem in held_out:
            once.setdefault(problem.prompt, problem)
        held_out = list(once.values())
        prompts = {p.prompt for p in held_out}
        train = [p for p in train if p.prompt not in prompts]
        # The validation split: the last eval_size training records (distinct prompts). They stay
        # in the training stream, as before splits existed (a file of a few records keeps them
        # all): tuning on them is method-fair but optimistic; the test split is never trained on.
        validation: dict[str, Problem] = {}
        for problem in reversed(train):
            if len(validation) == cfg.eval_size:
                break
            validation.setdefault(problem.prompt, problem)
        self._splits = {"test": held_out, "validation": list(validation.values())[::-1]}
        self._train = train
        if not self._train:
            raise UserError(
                f"{cfg.path}: every training prompt is also in the held-out set; "
                "use a different task.eval_path or lower task.eval_size"
            )
        self.split = cfg.split
        if needs_math_verify(self.verifier, [p.answer for p in self._train + self._splits["test"]]):
            require_math_verify()  # at load, not at the first reward of a LaTeX answer

    def load(self, cfg: TaskConfig, path: str, key: str) -> list[Problem]:
        """The validated problems of one file (``key`` names it in errors)."""
        return load_problems(path, cfg.verifier, key)

    def _response(self, problem: Problem) -> str:
        return (
            problem.solution
            if problem.solution is not None
            else format_answer(problem.answer, self.verifier)
        )

    def problems(self) -> list[Problem]:
        """Every problem, training then held-out (for the response-length check before a run)."""
        return self._train + self._splits["test"]

    def sample_train(self, rng: random.Random, n: int) -> list[Problem]:
        return [self._train[rng.randrange(len(self._train))] for _ in range(n)]

    def held_out(self, split: str) -> list[Problem]:
        return list(self._splits[split])

    def eval_problems(self) -> list[Problem]:
        return self.held_out(self.split)

    def reward(self, problem: Problem, response: str) -> float:
        return 1.0 if verify(response, problem.answer, self.verifier) else 0.0

    def warmstart_example(self, rng: random.Random, corrupt: bool) -> tuple[str, str]:
        problem = self._train[rng.randrange(len(self._train))]
        response = self._response(problem)
        if corrupt:
            response = corrupt_response(response, problem.answer, self.verifier, rng)
        return problem.prompt, response

    def longest_prompt(self) -> str:
        return max((p.prompt for p in self._train + self._splits["test"]), key=len)

    def alphabet(self) -> str:
        texts = [p.prompt + self._response(p) for p in self._train + self._splits["test"]]
        return sorted_chars([*texts, "0123456789-.", format_chars(self.verifier)])
