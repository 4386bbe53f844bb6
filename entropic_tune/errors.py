"""User-input errors.

Everything a user can get wrong (a config key, a file, a dataset line, a CLI flag) raises
:class:`UserError`. The CLI catches it and prints its one-line message with exit code 2 and no
traceback. It subclasses ``ValueError`` so library users can catch the usual exception.
"""

from __future__ import annotations

import difflib
import os
import signal
import sys
import threading
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


def _term_as_interrupt(signum: int, frame: object) -> None:
    """SIGTERM handler: stop the way Ctrl-C stops (Ray Tune saves its state and returns, the results
    so far are written, the resume command is printed). A second SIGTERM does the same again, which
    Ray Tune takes as "skip the last save"."""
    print("entropic-tune: SIGTERM received; stopping as for Ctrl-C (state saved, results so far written)",
          file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGINT)


def sigterm_as_interrupt() -> None:
    """Handle SIGTERM (a scheduler's or a ``kill``'s stop) like Ctrl-C in this driver. ``ray.init``
    installs its own handler (``sys.exit``: the driver then dies in Ray's native code with exit 134
    and no summary), so sweeps call this again once Ray is up. Main thread only (as Python requires)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _term_as_interrupt)
