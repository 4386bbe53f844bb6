"""One driver per experiment folder: an OS file lock held for the life of the driver.

Two drivers writing one folder (the same ``--out``/``--name`` started twice) would each run every
trial, and the results would hold every trial twice, which a report would then average as if the
copies were seeds. So each driver (``compare``/``search``/``ablate``, their ``--resume`` and
``train``) takes an exclusive :func:`fcntl.flock` on ``<folder>/driver.lock`` before it looks at the
folder and keeps it until it exits. The kernel releases the lock when the process dies, however it
dies, so a killed driver never leaves a folder stuck: the stale file is simply locked again by the
next driver. A second driver gets a one-line :class:`~entropic_tune.errors.UserError` naming the
holder's pid, and writes nothing.

The lock file holds the holder's pid (for that message only). It is removed when the holder is done
(while it still holds the lock); a driver that finds the file replaced after it locked it (another
driver removed it in between) simply locks the new one, so two drivers can never both hold a lock.

:func:`check_run_dir` is the other check of a folder before a driver writes to it (plain Python, so
``train`` refuses a folder before torch is imported).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import UserError

LOCK_FILE = "driver.lock"


class FolderLock:
    """The exclusive lock of one experiment folder (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None
        self._created_dirs: list[Path] = []

    def acquire(self) -> None:
        """Lock the folder (creating it if needed) or raise a one-line UserError naming the holder."""
        self._make_folder()
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                self._undo_folder()
                raise UserError(
                    f"'{self.folder}' is in use by another entropic-tune driver "
                    f"({holder(self.folder)}); wait for it to finish or choose another --name"
                ) from None
            if _same_file(fd, self.path):
                break
            os.close(fd)  # the holder removed the file after we opened it: lock the current one
        self._fd = fd
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())

    def release(self, keep_folder: bool = True) -> None:
        """Drop the lock; removes the lock file, and with ``keep_folder=False`` the folders this lock
        created if nothing else was written into them (a refused run leaves no trace)."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # still holding the lock: nobody can be using this file
        os.close(self._fd)
        self._fd = None
        if not keep_folder:
            self._undo_folder()

    def _make_folder(self) -> None:
        missing = []
        parent = self.folder
        while not parent.exists() and parent != parent.parent:
            missing.append(parent)
            parent = parent.parent
        for path in reversed(missing):
            try:
                path.mkdir()
                self._created_dirs.append(path)
            except FileExistsError:  # another driver made it at the same moment
                pass
            except OSError as exc:
                raise UserError(f"--out: cannot create '{path}': {exc.strerror or exc}") from None

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UserError(
                f"--out: cannot write to '{self.folder}': {exc.strerror or exc}"
            ) from None

    def _undo_folder(self) -> None:
        for path in reversed(self._created_dirs):
            with contextlib.suppress(OSError):  # not empty: another driver uses it
                path.rmdir()
        self._created_dirs = []


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def holder(folder: Path) -> str:
    """``pid N`` of the driver holding ``folder`` (as written in its lock file), for messages."""
    try:
        pid = (Path(folder) / LOCK_FILE).read_text().strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid.isdigit() else "pid unknown"


def is_locked(folder: Path) -> bool:
    """True when a live driver holds ``folder``'s lock (reads only; creates nothing)."""
    try:
        fd = os.open(Path(folder) / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing drops a shared lock we may have taken
    return False


@contextlib.contextmanager
def hold(folder: Path) -> Iterator[FolderLock]:
    """Hold ``folder``'s lock for the block. When the block raises before writing anything but the
    lock file, the lock file and the folders made for it are removed again."""
    lock = FolderLock(folder)
    lock.acquire()
    try:
        yield lock
    except BaseException:
        lock.release(keep_folder=_wrote_more(lock))
        raise
    lock.release()


def _wrote_more(lock: FolderLock) -> bool:
    try:
        return any(p.name != LOCK_FILE for p in lock.folder.iterdir())
    except OSError:
        return False


NAME_MAX = 255
"""Bytes of one file name on the usual file systems (ext4, xfs, btrfs, NFS, tmpfs)."""


def check_name(name: str) -> str:
    """An experiment or run folder name (``--name``), checked the same for every command: one plain path
    component (not blank, no ``/`` or ``\\``, not ``.`` or ``..``, no control characters) of at most
    255 bytes, so every file a run writes stays inside ``--out/NAME``."""
    shown = ascii(name)[1:-1] if len(name) <= 60 else f"{ascii(name[:57])[1:-1]}..."  # one line, always
    if not name.strip() or name in (".", "..") or "/" in name or "\\" in name or \
            any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise UserError(f"--name: '{shown}' must be a plain folder name (not blank, no '/', not '.' or '..')")
    if len(name.encode()) > NAME_MAX:
        raise UserError(f"--name: '{shown}' is {len(name.encode())} bytes long; a folder name can have at most "
                        f"{NAME_MAX}")
    return name


def check_run_dir(run_dir: Path) -> None:
    """Refuse a run folder that already holds results, or whose nearest existing parent is not writable.

    Writes nothing, so a refused run leaves no trace.
    """
    if (run_dir / "history.csv").exists() or (run_dir / "summary.csv").exists():
        raise UserError(f"--out/--name: '{run_dir}' already holds results; choose another --name or --out")
    check_writable(run_dir)


def check_writable(exp_dir: Path) -> None:
    """Refuse an ``--out`` that cannot be written: probe the nearest existing folder with a temporary
    folder that is removed at once (``os.access`` says yes to root even on /proc)."""
    parent = exp_dir
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"--out: cannot write to '{exp_dir}': '{parent}' is not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".entropic-tune-probe-", dir=parent))
    except OSError as exc:
        raise UserError(f"--out: cannot write to '{exp_dir}': '{parent}' is not writable "
                        f"({exc.strerror or type(exc).__name__})") from None
