"""numpy's BLAS held to one thread while short products run: shared by the vector
scoring of the stores and the sparse encoder. The limit is process-wide, so it is
counted: the first caller in sets it, the last one out restores what was there, and
callers never wait on each other (two independent set/restore pairs could leave it at
one thread for good, and a lock would make a search wait for a bulk encode)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_lock = threading.Lock()
_blas: Any = None
_limiter: Any = None
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
                _limiter = _blas.limit(limits=1)
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0:
                with _in_control():
                    _limiter.restore_original_limits()
                _limiter = None


@contextmanager
def _in_control() -> Iterator[None]:
    """This thread allowed to set OpenBLAS's limit for the duration. threadpoolctl lets
    only one thread (the first to set it) change a process-wide OpenBLAS pool and makes
    every other thread's change a silent no-op; the last holder out may not be the first
    in, so the thread that sets or restores takes control, and gives it back after."""
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


def _after_fork_in_child() -> None:
    """A forked child has only the forking thread: no holder is left in it. (A limit set
    when it forked stays set in the child: its OpenBLAS keeps to one thread.)"""
    global _lock, _holders, _limiter
    _lock = threading.Lock()
    _holders = 0
    _limiter = None


if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(after_in_child=_after_fork_in_child)
