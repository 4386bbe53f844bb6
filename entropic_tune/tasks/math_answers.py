"""Math answers checked by ``math-verify`` (Hugging Face's LaTeX/expression parser and equivalence
checker): the ``math`` verifier, and what ``auto`` uses for LaTeX reference answers.

``\\frac{1}{2}`` and ``0.5``, ``\\dfrac{\\sqrt{2}}{2}`` and ``\\frac{\\sqrt 2}{2}``, ``[1, 2)`` and
``[1,2)``, ``\\{1,2,3\\}`` and ``\\{3,2,1\\}`` are equal; ``\\frac{1}{3}`` and ``0.33`` are not (numbers
are compared after rounding to 6 decimals, math-verify's ``float_rounding``). The candidate is the
response's last ``\\boxed{...}``, else the text after its last ``####``, else the response's last
:data:`MAX_CHARS` characters (math-verify then takes the last expression it can parse); both sides are parsed as LaTeX in math mode
(``$...$``) with math-verify's plain-expression parser as the fallback.

Timeouts: math-verify bounds its parse and comparison with ``signal.alarm``, which works only in the
main thread, and a Ray Tune trial runs its steps in a worker thread. A timeout would also make a
reward depend on the machine's speed. So both of its timeouts are off (``parsing_timeout=None``,
``timeout_seconds=None``: thread-safe, the same reward everywhere), and what could run away is
refused before sympy sees it: candidates longer than :data:`MAX_CHARS` characters and expressions
whose evaluation explodes (a power of a power, an exponent or factorial argument over
:data:`MAX_EXPONENT_DIGITS` digits) score 0. A plain Python int power of a huge exponent cannot be
interrupted by any signal anyway: the alarm fires only between bytecodes.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from functools import lru_cache
from typing import Any

from ..errors import UserError

EXTRA = "math"
MISSING = (
    "the 'math' verifier needs the math-verify package: pip install 'entropic-tune[math]' "
    "(or pip install 'math-verify[antlr4_13_2]')"
)
MAX_CHARS = 400
"""Longest candidate answer parsed; MATH answers are at most ~100 characters."""
MAX_EXPONENT_DIGITS = 3
"""Longest integer (in digits) allowed as an exponent or a factorial's argument."""

# LaTeX markers of a reference answer that the decimal/string checks would misjudge
# (\frac, \sqrt, \pi, \boxed, ^, braces...): any backslash command, a caret or a brace.
_LATEX = re.compile(r"\\[A-Za-z]|\^|[{}]")
# Exponents: ^ followed by a braced group or one token; factorials: a number then !.
_BIG = "{" + str(MAX_EXPONENT_DIGITS + 1) + ",}"  # more digits than allowed
_BIG_EXPONENT = re.compile(r"\^\s*\{?\s*-?\d" + _BIG)
_POWER_TOWER = re.compile(r"\^\s*\{[^{}]*\^|\^\s*[^{\s]\s*\^|\*\*[^*]*\*\*")
_BIG_FACTORIAL = re.compile(r"\d" + _BIG + r"\s*!")


def looks_like_latex(answer: str) -> bool:
    """True when a reference answer is written in LaTeX (``auto`` then checks with math-verify)."""
    return bool(_LATEX.search(answer))


def available() -> bool:
    """True when math-verify (and its LaTeX parser) can be imported."""
    return importlib.util.find_spec("math_verify") is not None


def require() -> None:
    """Raise a one-line UserError naming the extra when math-verify is not installed."""
    if not available():
        raise UserError(MISSING)


def safe(candidate: str) -> bool:
    """False for candidates sympy could spend unbounded time on (see the module docstring)."""
    return not (
        len(candidate) > MAX_CHARS
        or _BIG_EXPONENT.search(candidate)
        or _POWER_TOWER.search(candidate)
        or _BIG_FACTORIAL.search(candidate)
    )


@lru_cache(maxsize=1)
def _library() -> Any:
    require()
    import math_verify

    # Without timeouts math-verify logs a warning once per process; the choice is deliberate (above).
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    return math_verify


@lru_cache(maxsize=4096)
def _parse(text: str, math_mode: bool) -> tuple[Any, ...]:
    """math-verify's parse of ``text`` (``$text$`` in math mode), no timeout; cached because a
    group's responses and every step's reference answers repeat."""
    mv = _library()
    source = f"${text}$" if math_mode else text
    return tuple(mv.parse(source, parsing_timeout=None))


def equivalent(candidate: str, bare: bool, answer: str) -> bool:
    """True when math-verify finds ``candidate`` (a response's final answer: bare math when ``bare``,
    else prose to search) equivalent to ``answer``.

    ``answer`` is the gold side (math-verify's comparison is not symmetric: an assignment ``x = 2``
    in the response is read as its value, as in the reference's use).
    """
    if not candidate.strip() or not safe(candidate) or not safe(answer):
        return False
    mv = _library()
    gold = _parse(answer.strip(), True) or _parse(answer.strip(), False)
    pred = _parse(candidate.strip(), True) if bare else ()
    pred = pred or _parse(candidate.strip(), False)
    if not gold or not pred:
        return False
    return bool(mv.verify(list(gold), list(pred), timeout_seconds=None))
