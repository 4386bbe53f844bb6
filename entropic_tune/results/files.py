"""Writing files safely: atomically (temporary file, fsync, rename) and with the user's umask.

Torch-, Ray- and pandas-free, so every layer (results, report, the CLI) writes through it. A crash or a
Ctrl-C never leaves a half-written file, readers never see one, and a new file gets the mode any new file
of the user gets (``0o666 & ~umask``), readable by colleagues on shared storage where the umask allows.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

FAULT_ENV = "ENTROPIC_TUNE_FAULT"
"""Fault injection for tests: ``enospc:<file name>`` makes writing that file fail as on a full disk
(the sweeps read other points: :func:`entropic_tune.tune.sweep.fault`)."""


def umask() -> int:
    """This process's file-creation mask (read from /proc where it can be, so nothing changes it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary file beside ``path`` to write; on success it gets the mode a new file gets here
    (``0o666 & ~umask``: ``mkstemp`` alone makes it 0600, unreadable to colleagues on shared storage),
    is flushed to disk and renamed onto ``path`` (atomic: readers see the old file or the new one,
    never a part). On any error, or an interrupt, the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    if os.environ.get(FAULT_ENV) == f"enospc:{path.name}":  # fault injection for tests: a full disk
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~umask())
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno is not None and exc.filename in (tmp, None):
            raise OSError(exc.errno, exc.strerror, str(path)) from None  # name the file, not the temporary one
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and an atomic rename (:func:`atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        handle.write(text)
