"""Answer verifiers: does a response's final answer match the reference answer?

As in RLVR, only the final answer is checked, never the reasoning. Each kind first extracts a
candidate from the response, then compares it with the answer: numerically (exact decimal
arithmetic, absolute tolerance 1e-6) when both parse as numbers, else as stripped strings.

- ``exact``: the whole response, stripped, equals the answer.
- ``numeric``: the last number in the response ("1,234", "-3" and "2.50" parse; "5-3" is 5 and 3).
- ``boxed``: the content of the last ``\\boxed{...}`` (nested braces balanced; unclosed = none).
- ``gsm8k``: the text after the last ``####`` (its first number when the answer is a number).
- ``math``: math-verify's equivalence of the response's final answer and the answer (LaTeX, numbers,
  sets, intervals...; :mod:`entropic_tune.tasks.math_answers`, the optional ``math`` extra).
- ``auto``: math if the answer is written in LaTeX (a backslash command such as ``\\frac``,
  ``\\sqrt``, ``\\pi``, ``\\boxed``; a ``^`` or a brace), else boxed if the response has
  ``\\boxed``, gsm8k if it has ``####``, numeric if the answer is a number, else exact. Answers
  without LaTeX (every answer of the shipped data) are checked exactly as before ``math`` existed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation

from ..errors import unknown
from .math_answers import MAX_CHARS, equivalent, looks_like_latex

VERIFIERS = ("auto", "exact", "numeric", "boxed", "gsm8k", "math")
TOLERANCE = Decimal("1e-6")
BOXED = "\\boxed{"
GSM8K = "####"

# A minus sign belongs to the number only when it does not follow a word character or ")", so that
# "12-7" reads as 12 and 7 while "x=-3" reads as -3. Thousands separators need groups of three.
_NUMBER = re.compile(r"(?:(?<![\w)])-)?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?")


def _to_decimal(text: str) -> Decimal | None:
    try:
        return Decimal(text.replace(",", ""))
    except InvalidOperation:  # pragma: no cover - the regex only matches valid numbers
        return None


def parse_number(text: str) -> Decimal | None:
    """The number ``text`` spells (surrounding whitespace allowed), or None."""
    match = _NUMBER.fullmatch(str(text).strip())
    return _to_decimal(match.group()) if match else None


def find_numbers(text: str) -> Iterator[tuple[int, int, Decimal]]:
    """Every number in ``text`` as ``(start, end, value)``, left to right."""
    for match in _NUMBER.finditer(text):
        value = _to_decimal(match.group())
        if value is not None:
            yield match.start(), match.end(), value


def numbers_equal(x: Decimal, y: Decimal) -> bool:
    """Equal within the absolute tolerance (1e-6)."""
    return abs(x - y) <= TOLERANCE


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` with balanced braces; None if absent or unclosed."""
    start = text.rfind(BOXED)
    if start < 0:
        return None
    begin = start + len(BOXED)
    depth = 1
    for i in range(begin, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[begin:i]
    return None


def _same(candidate: str, answer: str) -> bool:
    x, y = parse_number(candidate), parse_number(answer)
    if x is not None and y is not None:
        return numbers_equal(x, y)
    return candidate.strip() == answer.strip()


def _numeric(response: str, answer: str) -> bool:
    target = parse_number(answer)
    numbers = list(find_numbers(response))
    return target is not None and bool(numbers) and numbers_equal(numbers[-1][2], target)


def _boxed(response: str, answer: str) -> bool:
    content = extract_boxed(response)
    return content is not None and _same(content, answer)


def _gsm8k(response: str, answer: str) -> bool:
    if GSM8K not in response:
        return False
    tail = response.rpartition(GSM8K)[2]
    target = parse_number(answer)
    if target is None:
        return tail.strip() == answer.strip()
    first = next(find_numbers(tail), None)
    return first is not None and numbers_equal(first[2], target)


def _math(response: str, answer: str) -> bool:
    """math-verify on the last ``\\boxed{}``, else the text after the last ``####``, else the
    response's last MAX_CHARS characters (searched for an expression)."""
    boxed = extract_boxed(response)
    if boxed is not None:
        return equivalent(boxed, True, answer)
    if GSM8K in response:
        return equivalent(response.rpartition(GSM8K)[2].strip(), True, answer)
    return equivalent(response[-MAX_CHARS:], False, answer)


def _auto(response: str, answer: str) -> bool:
    if looks_like_latex(answer):
        return _math(response, answer)
    if "\\boxed" in response:
        return _boxed(response, answer)
    if GSM8K in response:
        return _gsm8k(response, answer)
    if parse_number(answer) is not None:
        return _numeric(response, answer)
    return response.strip() == answer.strip()


_KINDS = {
    "auto": _auto,
    "exact": lambda response, answer: response.strip() == answer.strip(),
    "numeric": _numeric,
    "boxed": _boxed,
    "gsm8k": _gsm8k,
    "math": _math,
}


def needs_math_verify(kind: str, answers: list[str]) -> bool:
    """True when verifier ``kind`` will call math-verify for some of ``answers`` (checked at load)."""
    return kind == "math" or (kind == "auto" and any(looks_like_latex(a) for a in answers))


def check_kind(kind: str) -> None:
    """Raise a UserError listing the allowed kinds unless ``kind`` is one."""
    if kind not in _KINDS:
        raise unknown("verifier", kind, VERIFIERS)


def verify(response: str, answer: str | int | float, kind: str = "auto") -> bool:
    """True when the final answer in ``response`` matches ``answer`` under verifier ``kind``."""
    check_kind(kind)
    return bool(_KINDS[kind](str(response), str(answer)))


def format_answer(answer: str, kind: str) -> str:
    """The shortest response ``kind`` accepts for ``answer``: "#### 42", "\\boxed{42}" or "42"."""
    check_kind(kind)
    if kind == "gsm8k":
        return f"{GSM8K} {answer}"
    if kind in ("boxed", "math"):
        return f"{BOXED}{answer}}}"
    return answer


def format_chars(kind: str) -> str:
    """Characters a response formatted for ``kind`` may add around the answer."""
    return {"gsm8k": f"{GSM8K} ", "boxed": BOXED + "}", "math": BOXED + "}"}.get(kind, "")
