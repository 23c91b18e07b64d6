"""Lock files that processes sharing a folder take while they change what it holds
(``flock``: released by the kernel when a process dies)."""

from __future__ import annotations

import os
import time
from pathlib import Path


def try_lock(path: Path) -> int | None:
    """The descriptor of ``path`` (made if missing) locked, or None if another holds it."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def try_lock_here(path: Path) -> int | None:
    """:func:`try_lock`, and None as well if the file locked is no longer at ``path``
    (its owner removed it meanwhile: a new one there may be held by another)."""
    fd = try_lock(path)
    if fd is not None and not _at(fd, path):
        os.close(fd)
        return None
    return fd


def _at(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def take_lock(path: Path, timeout_s: float) -> int:
    """Lock ``path``, waiting up to ``timeout_s`` for another holder (then TimeoutError).
    A file removed while waited for (its owner removes it with what it guarded) is
    not held: the file at the path then is locked instead."""
    deadline = time.monotonic() + timeout_s
    while True:
        fd = try_lock(path)
        if fd is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path} stayed locked for {timeout_s:g} s")
            time.sleep(0.01)
            continue
        if _at(fd, path):
            return fd
        os.close(fd)
