"""Lease owners that prove they are alive, so a dead owner's leases are taken back at once.

A delivery loop holds an exclusive ``flock`` on a small file named after its lease owner, beside
the buffer (``<buffer>.owners/<owner>.lock``), for the life of its run. The operating system
drops the lock when the process dies, ``kill -9`` included, so whoever can take the lock knows the
owner is dead and may put its rows back to pending without waiting for SDI_LEASE_TIMEOUT; a lock it
cannot take belongs to a live owner, whose rows it never touches. ``flock``, not POSIX ``fcntl``
locks: those belong to the process (SQLite's own are), and any ``close`` of the file would drop them.

An owner with no file (an older scrapy_sdi, a platform without ``flock``) cannot be checked: its
leases still expire after SDI_LEASE_TIMEOUT.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

try:
    import fcntl
except ImportError:  # Windows: no liveness, leases expire after SDI_LEASE_TIMEOUT
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from pathlib import Path

logger = logging.getLogger(__name__)

SUFFIX = ".lock"


class OwnerLocks:
    """The liveness locks of one buffer's owners: those this process holds, and checks of the others'."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._held: dict[str, int] = {}  # owner -> descriptor holding its lock

    def hold(self, owner: str) -> bool:
        """Hold ``owner``'s lock until ``close``; False when liveness cannot be proven here."""
        if owner in self._held:
            return True
        if fcntl is None:
            return False
        try:
            self.directory.mkdir(mode=0o700, exist_ok=True)
            self._held[owner] = self._lock_new(self.directory / f"{owner}{SUFFIX}")
        except OSError as exc:
            logger.warning(
                "SDI: cannot hold a liveness lock in %(dir)s (%(error)s); if this run dies, its batches in "
                "flight come back only after SDI_LEASE_TIMEOUT",
                {"dir": self.directory, "error": exc},
            )
            return False
        return True

    @staticmethod
    def _lock_new(path: Path) -> int:
        """Create and lock ``path``; again if a checker took the fresh file for a dead owner's and removed it."""
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)  # a checker holds a fresh file only for a moment
            if _names(fd, path):
                return fd
            os.close(fd)

    def reclaim_dead(self, take_back: Callable[[str], int]) -> int:
        """Call ``take_back(owner)`` for every owner proven dead, then remove its file; return the sum.

        The dead owner's lock is held meanwhile, so no other checker takes back the same rows, and
        the file is removed only once its rows are back (a checker that dies first leaves it for the next).
        """
        if fcntl is None:
            return 0
        total = 0
        for owner in self._others():
            path = self.directory / f"{owner}{SUFFIX}"
            fd = _lock_if_dead(path)
            if fd is None:
                continue
            try:
                total += take_back(owner)
                path.unlink(missing_ok=True)
            finally:
                os.close(fd)
        return total

    def _others(self) -> list[str]:
        try:
            names = os.listdir(self.directory)
        except OSError:  # no directory yet: no owner to check
            return []
        return [
            name[: -len(SUFFIX)]
            for name in names
            if name.endswith(SUFFIX) and name[: -len(SUFFIX)] not in self._held
        ]

    def close(self) -> None:
        """Give up every lock held; the files go first, so no checker mistakes this run for a dead one."""
        for owner, fd in self._held.items():
            try:
                (self.directory / f"{owner}{SUFFIX}").unlink(missing_ok=True)
            finally:
                os.close(fd)
        self._held.clear()


def _lock_if_dead(path: Path) -> int | None:
    """The descriptor of ``path`` locked, when its owner is dead; None when it lives or the file is gone."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    if not _names(fd, path):  # another checker removed it meanwhile: not a proof of anything
        os.close(fd)
        return None
    return fd


def _names(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open on ``fd``."""
    try:
        here, there = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)
