"""numpy's BLAS held to one thread while short products run: shared by the vector
scoring of the stores and the sparse encoder. The limit is process-wide, so it is
counted: the first caller in sets it, the last one out restores what was there, and
callers never wait on each other (two independent set/restore pairs could leave it at
one thread for good, and a lock held throughout would make a search wait for a bulk
encode).

threadpoolctl lets one thread (the first to set a limit) change OpenBLAS's process-wide
pool and ignores the others; memlane's setting thread takes that control for the moment
it sets or restores. Code of the host application limiting OpenBLAS on another thread at
the same time is overridden while memlane holds the limit."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_log = logging.getLogger("memlane")
_lock = threading.Lock()
_blas: Any = None
_limiter: Any = None
"""The limit in force, holding the thread count from before it: kept after a restore that
failed, so that the next holder restores the true original, not its own limit."""
_holders = 0


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """numpy's BLAS on one thread for the duration: a short matrix product on OpenBLAS's
    pool of spinning threads costs several times as long when another runtime (ONNX
    Runtime) wants the cores too (bench/README.md)."""
    global _blas, _limiter, _holders
    with _lock:
        if _blas is None:
            from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]

            _blas = ThreadpoolController().select(user_api="blas")
        if _holders == 0:
            with _in_control():
                if _limiter is None:
                    _limiter = _blas.limit(limits=1)
                else:  # a restore failed: keep the limiter that knows the original
                    _blas.limit(limits=1)
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and _limiter is not None:
                try:
                    with _in_control():
                        _limiter.restore_original_limits()
                    _limiter = None
                except Exception:  # kept: the next holder out restores the original
                    _log.warning(
                        "restoring numpy's BLAS threads failed; retried later", exc_info=True
                    )


@contextmanager
def _in_control() -> Iterator[None]:
    """This thread allowed to set OpenBLAS's limit for the duration, and control given
    back after (see the module's docstring)."""
    try:
        from threadpoolctl import OpenBLASController
    except ImportError:  # an older threadpoolctl: any thread may set it
        yield
        return
    clear = getattr(OpenBLASController, "clear_controlling_thread", None)
    if clear is not None:
        clear(force=True)
    try:
        yield
    finally:
        if clear is not None:
            clear(force=True)


def _before_fork() -> None:
    _lock.acquire()  # no thread is half way through setting or restoring when it forks


def _after_fork_in_parent() -> None:
    _lock.release()


def _after_fork_in_child() -> None:
    """A forked child has only the forking thread, so no holder: a limit its parent's
    holders had set is restored here, and the count starts afresh."""
    global _lock, _holders, _limiter
    if _limiter is not None:
        try:
            with _in_control():
                _limiter.restore_original_limits()
        except Exception:  # the child's BLAS stays limited: slower, not wrong
            _log.warning("a forked child kept numpy's BLAS on one thread", exc_info=True)
    _lock = threading.Lock()
    _holders = 0
    _limiter = None


if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )
