"""Numbers and counts in the report's sentences, legends and setup table.

Configured values (targets, gains) are shown as they were set: ``exact(0.06007)`` is ``0.06007``,
not ``0.0601``, which would make it look further from ``0.06`` than it is. Measured values are shown
to the fewest significant digits at which different values still read differently (``distinct``).
Counts agree with their noun (``count(1, "run")`` is ``1 run``, ``count(2, "run")`` ``2 runs``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

MAX_DIGITS = 6
"""Significant digits a configured value keeps at most (what a YAML file or a search writes)."""


def exact(value: float, max_digits: int = MAX_DIGITS) -> str:
    """The shortest ``g`` form of ``value`` that keeps its first ``max_digits`` significant digits."""
    if not math.isfinite(value):
        return str(value)
    target = float(f"{value:.{max_digits}g}")
    for digits in range(1, max_digits + 1):
        text = f"{value:.{digits}g}"
        if float(text) == target:
            return text
    return f"{value:.{max_digits}g}"


def distinct(values: Sequence[float], digits: int = 3, max_digits: int = MAX_DIGITS) -> list[str]:
    """Each value with the fewest significant digits, at least ``digits``, at which values that
    differ (in their first ``max_digits`` digits) are written differently."""
    different = len({float(f"{v:.{max_digits}g}") for v in values})
    for d in range(digits, max_digits + 1):
        texts = [f"{v:.{d}g}" for v in values]
        if len(set(texts)) == different:
            return texts
    return [f"{v:.{max_digits}g}" for v in values]


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` with its noun in the right number: ``1 run``, ``2 runs``, ``0 runs``."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def pronoun(n: int) -> str:
    """The possessive that agrees with ``n`` things: ``its`` for one, ``their`` for more."""
    return "its" if n == 1 else "their"


def every(n: int, noun: str, plural: str | None = None) -> str:
    """All of ``n`` things: ``its one run``, ``both runs``, ``all 3 runs``."""
    many = plural or noun + "s"
    return f"its one {noun}" if n == 1 else (f"both {many}" if n == 2 else f"all {n} {many}")
