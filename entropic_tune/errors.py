"""User-input errors.

Everything a user can get wrong (a config key, a file, a dataset line, a CLI flag) raises
:class:`UserError`. The CLI catches it and prints its one-line message with exit code 2 and no
traceback. It subclasses ``ValueError`` so library users can catch the usual exception.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(ValueError):
    """A bad input; the message is one line naming the key, file or line and the allowed values."""


def closest(name: str, allowed: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest allowed name, or ``""``."""
    match = difflib.get_close_matches(name, list(allowed), n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


def unknown(kind: str, name: str, allowed: Iterable[str]) -> UserError:
    """Build the standard 'unknown X' error: names the value, the closest match and all choices."""
    allowed = sorted(allowed)
    return UserError(
        f"unknown {kind} '{name}'{closest(name, allowed)}; allowed: {', '.join(allowed)}"
    )
