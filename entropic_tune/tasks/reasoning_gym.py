"""Procedural tasks of the ``reasoning-gym`` package (``task.name=reasoning_gym``).

reasoning-gym (https://github.com/open-thought/reasoning-gym) generates problems from a seeded
config and scores answers with each dataset's own ``score_answer(answer, entry)``. This task uses
both as they are: the package's generator for every problem (held-out and training) and its scorer
for every reward, binarised (``score >= 1.0`` -> 1, else 0; countdown's partial credits 0.01 and
0.05 for a wrong or unparsable expression both become 0).

Supported datasets (``task.dataset``), each with a compact prompt that fits the built-in model's 256
positions (the package's own question text is ~300 characters of instructions, rendered here from
the entry's metadata instead) and a worked solution from the entry for the warm-start:

- ``countdown``: make ``target`` from all the given numbers, each once, with ``+ - * /`` and
  parentheses. Prompt ``"19,9,3>13:"`` (numbers, ``>``, target, ``:``); response an expression such
  as ``"19+3-9"``; many expressions are correct (``distinct_correct`` counts them). The warm-start
  solution is the generator's own expression (``metadata["expression"]``) without spaces.

``puzzle24`` is not offered: its ``score_answer`` (0.1.25) checks that four numbers in range make 24
but not that they are the problem's numbers, so ``"6*4*1*1"`` earns 1.0 on every problem (a test
keeps that fact). ``task.dataset_config`` holds the dataset config's own keys (e.g.
``{min_numbers: 3, max_numbers: 3, max_target: 100}``); ``seed`` and ``size`` are the task's.

**Answer extraction:** the whole response, stripped, is the answer given to ``score_answer``. Before
it, a response with a character outside the expression alphabet (digits, ``+-*/()``, space), with
``**`` (a power: the package evaluates with sympy, and ``9**9**9`` would not finish) or longer than
64 characters earns 0 without being scored (the package would give it at most 0.05, also 0 here).

**Problems:** one dataset object seeded by ``task.eval_seed``. Its entries 0, 1, 2, ... with distinct
prompts give the held-out sets: the first ``task.eval_size`` are the test split, the next
``task.eval_size`` the validation split. Training problems are entries at indices drawn by the
trainer's data RNG from ``[2**20, 2**30)`` (another part of the same seeded stream); any whose
prompt is held out (test or validation) is redrawn, so neither split is ever trained on.
"""

from __future__ import annotations

import dataclasses
import random
from typing import TYPE_CHECKING, Any

from ..errors import UserError, unknown
from .base import Problem, Task, sorted_chars

if TYPE_CHECKING:
    from ..config import TaskConfig

DATASETS = ("countdown",)
"""reasoning-gym datasets this task can render for the built-in model (see the module docstring)."""
EXTRA = "pip install 'entropic-tune[tasks]'"
EXPRESSION_CHARS = frozenset("0123456789+-*/() ")
MAX_ANSWER = 64
TRAIN_INDEX = (2**20, 2**30)
"""Training entries are drawn from these dataset indices; the held-out ones are 0, 1, 2, ..."""
HELD_OUT_TRIES = 20
"""The held-out pool may look at ``HELD_OUT_TRIES * 2 * eval_size`` entries for distinct prompts."""


def _package() -> Any:
    try:
        import reasoning_gym
    except ImportError:
        raise UserError(
            f"task.name: 'reasoning_gym' needs the reasoning-gym package; install it with {EXTRA}"
        ) from None
    return reasoning_gym


def _dataset_config_class(name: str) -> type:
    from reasoning_gym.factory import DATASETS as REGISTERED

    return REGISTERED[name][1]


def build_dataset(name: str, options: dict[str, Any] | None, seed: int, size: int) -> Any:
    """The package's dataset ``name`` with config ``options`` (checked key by key), seeded."""
    rg = _package()
    if name not in DATASETS:
        raise unknown("task.dataset", name, DATASETS)
    options = dict(options or {})
    fields = [f.name for f in dataclasses.fields(_dataset_config_class(name))]
    allowed = [f for f in fields if f not in ("seed", "size")]
    for key in options:
        if key not in allowed:
            raise UserError(
                f"task.dataset_config.{key}: not a key of {name}'s config (seed and size are set "
                f"by the task); allowed: {', '.join(allowed)}"
            )
    if "operators" in options and isinstance(options["operators"], list):
        options["operators"] = tuple(options["operators"])  # the package compares with a tuple
    try:
        return rg.create_dataset(name, seed=seed, size=size, **options)
    except (AssertionError, TypeError, ValueError) as exc:
        raise UserError(f"task.dataset_config: {name} refuses {options}: {exc}") from None


def safe_expression(response: str) -> bool:
    """True when ``response`` may be given to the package's sympy-based scorer (see the docstring)."""
    text = response.strip()
    return (
        0 < len(text) <= MAX_ANSWER
        and "**" not in text
        and all(ch in EXPRESSION_CHARS for ch in text)
    )


def countdown_prompt(entry: dict[str, Any]) -> str:
    meta = entry["metadata"]
    return ",".join(str(n) for n in meta["numbers"]) + f">{meta['target']}:"


def countdown_solution(entry: dict[str, Any]) -> str:
    return str(entry["metadata"]["expression"]).replace(" ", "")


class ReasoningGymTask(Task):
    """A reasoning-gym dataset: the package's generator, its ``score_answer`` binarised."""

    name = "reasoning_gym"
    many_answers = True

    def __init__(self, cfg: TaskConfig) -> None:
        self.dataset_name = cfg.dataset
        self.split = cfg.split
        self.data = build_dataset(cfg.dataset, cfg.dataset_config, cfg.eval_seed, TRAIN_INDEX[1])
        self.operators = "".join(getattr(self.data.config, "operators", ("+", "-", "*", "/")))
        self._scores: dict[tuple[str, str], float] = {}
        self._entries: dict[str, dict[str, Any]] = {}  # prompt -> entry, for scoring
        pool: list[Problem] = []
        seen: set[str] = set()
        wanted = 2 * cfg.eval_size
        for index in range(HELD_OUT_TRIES * wanted):
            if len(pool) == wanted:
                break
            entry = self._entry(index)
            if entry is None:
                continue
            problem = self._problem(entry)
            if problem.prompt not in seen:
                seen.add(problem.prompt)
                pool.append(problem)
        if len(pool) < wanted:
            raise UserError(
                f"task.eval_size: {cfg.eval_size} test + {cfg.eval_size} validation problems need "
                f"{wanted} distinct {cfg.dataset} problems, but its config gave only {len(pool)} in "
                f"{HELD_OUT_TRIES * wanted} draws; lower task.eval_size or widen "
                "task.dataset_config"
            )
        self._splits = {"test": pool[: cfg.eval_size], "validation": pool[cfg.eval_size :]}
        self._held_out = frozenset(seen)

    def _problem(self, entry: dict[str, Any]) -> Problem:
        prompt = countdown_prompt(entry)
        self._entries.setdefault(prompt, entry)
        return Problem(prompt=prompt, answer=countdown_solution(entry), solution=countdown_solution(entry))

    def _entry(self, index: int) -> dict[str, Any] | None:
        """Entry ``index`` of the dataset, or None where the package's generator gives up on it
        (countdown raises ValueError after 100 tries when the config's ranges are tight)."""
        try:
            return self.data[index]
        except ValueError:
            return None

    def _train_entry(self, rng: random.Random) -> dict[str, Any]:
        while True:
            entry = self._entry(rng.randrange(*TRAIN_INDEX))
            if entry is not None and countdown_prompt(entry) not in self._held_out:
                return entry

    def held_out(self, split: str) -> list[Problem]:
        return list(self._splits[split])

    def eval_problems(self) -> list[Problem]:
        return self.held_out(self.split)

    def sample_train(self, rng: random.Random, n: int) -> list[Problem]:
        return [self._problem(self._train_entry(rng)) for _ in range(n)]

    def score(self, problem: Problem, response: str) -> float:
        """The package's own score of ``response`` (0.0 for a response it is not given)."""
        text = response.strip()
        key = (problem.prompt, text)
        if key not in self._scores:
            entry = self._entries[problem.prompt]
            self._scores[key] = (
                float(self.data.score_answer(text, entry)) if safe_expression(text) else 0.0
            )
        return self._scores[key]

    def reward(self, problem: Problem, response: str) -> float:
        return 1.0 if self.score(problem, response) >= 1.0 else 0.0

    def warmstart_example(self, rng: random.Random, corrupt: bool) -> tuple[str, str]:
        entry = self._train_entry(rng)
        problem = self._problem(entry)
        response = problem.solution or ""
        if corrupt:
            response = self.corrupt(problem, response, rng)
        return problem.prompt, response

    def corrupt(self, problem: Problem, solution: str, rng: random.Random) -> str:
        """A plausible wrong expression: one operator changed (the numbers kept), else one number
        moved by one; checked wrong by the package's scorer."""
        places = [i for i, ch in enumerate(solution) if ch in "+-*/" and i > 0]
        rng.shuffle(places)
        for i in places:
            others = [op for op in self.operators if op != solution[i]]
            if not others:
                continue
            candidate = solution[:i] + rng.choice(others) + solution[i + 1 :]
            if self.reward(problem, candidate) == 0.0:
                return candidate
        digits = [i for i, ch in enumerate(solution) if ch.isdigit()]
        i = rng.choice(digits)
        moved = "1" if solution[i] == "0" else str(int(solution[i]) - 1)
        return solution[:i] + moved + solution[i + 1 :]  # the numbers no longer match: score 0.05

    def alphabet(self) -> str:
        return sorted_chars(["0123456789,>:", "+-*/()"])

    def longest_prompt(self) -> str:
        cfg = self.data.config
        widest = ",".join([str(cfg.max_value)] * cfg.max_numbers) + f">{cfg.max_target}:"
        return max([widest, *(p.prompt for p in self._splits["test"])], key=len)
