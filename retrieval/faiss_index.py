"""One user's vectors in FAISS: exact inner product for small users, HNSW above a threshold.

A memory may own several vectors (its text and its write-time expansions); all carry the
memory's id, and a search keeps each memory's best score. FAISS runs on the GPU when
``faiss.get_num_gpus() > 0`` (exact search only; the GPU copy is rebuilt after each change).

FAISS is made single-threaded on first use (unless ``OMP_NUM_THREADS`` is set): a user's index
is small and searched one query at a time, where OpenMP's thread wake-ups and spin-waits cost
more than they save (in the tail latency most) and steal the cores the embedding model needs.
``steer bench memory`` measures search; the figures are in docs/benchmarks.md.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

_GPU_RESOURCES: Any = None
_THREADS_SET = False


def _single_threaded() -> None:
    global _THREADS_SET
    if not _THREADS_SET:
        _THREADS_SET = True
        if "OMP_NUM_THREADS" not in os.environ:
            import faiss

            faiss.omp_set_num_threads(1)


def gpu_available() -> bool:
    import faiss

    return bool(getattr(faiss, "get_num_gpus", lambda: 0)() > 0)


class UserIndex:
    """The vectors of one (tenant, user) with the SQLite version they reflect."""

    def __init__(self, dim: int, *, approximate: bool = False, use_gpu: bool = False) -> None:
        import faiss

        _single_threaded()
        self.dim = dim
        self.approximate = approximate
        self.use_gpu = use_gpu and not approximate
        self.version = -1
        inner = (
            faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
            if approximate
            else faiss.IndexFlatIP(dim)
        )
        self._index = faiss.IndexIDMap(inner)
        self._gpu: Any = None

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    def add(self, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None:
        if len(ids):
            self._index.add_with_ids(vectors, ids)
            self._gpu = None

    def remove(self, memory_ids: list[int]) -> bool:
        """Drop every vector of these memories; False when the index cannot (HNSW): rebuild it."""
        import faiss
        import numpy as np

        if self.approximate:
            return False
        self._index.remove_ids(faiss.IDSelectorBatch(np.asarray(memory_ids, dtype=np.int64)))
        self._gpu = None
        return True

    def search(self, query: npt.NDArray[np.float32], k: int) -> list[tuple[int, float]]:
        """Up to ``k`` distinct memory ids, best first, each with its best vector's score."""
        n = self.ntotal
        if n == 0 or k <= 0:
            return []
        want = min(n, max(4 * k, 64))
        while True:
            scores, ids = self._searcher().search(query.reshape(1, -1), want)
            best: dict[int, float] = {}
            for i, s in zip(ids[0].tolist(), scores[0].tolist(), strict=True):
                if i >= 0 and i not in best:
                    best[i] = float(s)
            if len(best) >= k or want >= n:
                return list(best.items())[:k]
            want = min(n, want * 4)

    def _searcher(self) -> Any:
        if not self.use_gpu:
            return self._index
        if self._gpu is None:
            import faiss

            global _GPU_RESOURCES
            if _GPU_RESOURCES is None:
                _GPU_RESOURCES = faiss.StandardGpuResources()
            self._gpu = faiss.index_cpu_to_gpu(_GPU_RESOURCES, 0, self._index)
        return self._gpu
