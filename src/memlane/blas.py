"""numpy's BLAS held to one thread while a short product runs: shared by the vector
scoring of the stores and the sparse encoder, so that both take turns with one lock (the
limit is process-wide: two locks could leave it at one thread for good)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_blas_lock = threading.Lock()
_blas: Any = None


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """numpy's BLAS on one thread for the duration: a short matrix product on OpenBLAS's
    pool of spinning threads costs several times as long when another runtime (ONNX
    Runtime) wants the cores too (bench/README.md). The limit is process-wide, so
    callers take turns setting it."""
    global _blas
    with _blas_lock:
        if _blas is None:
            from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]

            _blas = ThreadpoolController().select(user_api="blas")
        with _blas.limit(limits=1):
            yield
