"""The embedding seam: text in, unit-length vectors out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Vector = npt.NDArray[np.float32]
else:
    # Only annotations use the name; importing numpy here would make every command pay
    # ~0.1 s of CPU for it, `memlane list` included, which never touches a vector.
    Vector = "numpy.ndarray"


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalized float32 vectors of a fixed dimension.

    ``model_id`` names the model and its version: vectors made by different model ids are
    never compared, and the embedding cache is keyed by it. Constructing an embedder does
    no I/O; the model is loaded on first use.
    """

    model_id: str
    batch_size: int

    def embed(self, texts: Sequence[str]) -> list[Vector]:
        """Return one vector per text, in order. Raises EmbeddingError on failure."""
        ...

    async def aembed(self, texts: Sequence[str]) -> list[Vector]:
        """Async form of :meth:`embed`."""
        ...
