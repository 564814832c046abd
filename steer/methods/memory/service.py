"""The preference memory of a running steer: store, writer and recaller, built on first use.

The embedding model loads once, in a worker thread, the first time a stage or an endpoint needs
memory (or at start-up when a policy turns recall or remember on), never at import. Every call
names the (tenant, user) it acts for; the store enforces the isolation.

What ``remember`` extracts is written by one background thread at lowered priority that serves
users round robin, one preference at a time (``steer.methods.memory.fair_writer``): a user's backlog delays
another user's statement by one preference's work at most. A caller that stops waiting (its stage
timed out) does not cancel its writes: they stay queued, are written, and are counted as late.
Every preference not stored is counted in ``steer_memory_dropped_total{reason}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sqlite3
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Protocol

from steer.errors import Unavailable
from steer.methods.memory.fair_writer import Dropped, FairWriter
from steer.storage import open_configured

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge

    from retrieval import Extracted, Ingested, MemoryWriter, Recaller, SqliteFaissStore
    from retrieval.embeddings import Embedder
    from steer.settings import Settings

log = logging.getLogger("steer.memory")
# store methods that change or remove a memory's text
_EDITS = frozenset({"update", "delete", "supersede", "delete_user"})


def unavailable(exc: BaseException) -> Unavailable:
    """The 503 for a memory backend that is down: model not loadable, database locked or full, or a
    database server unreachable (its own 503, ``store_unavailable``)."""
    if isinstance(exc, Unavailable):
        return exc
    if isinstance(exc, sqlite3.OperationalError):
        what = f"the memory database refused the operation ({exc})"
    else:
        what = f"the embedding model or memory store could not load ({type(exc).__name__}: {exc})"
    return Unavailable(
        f"preference memory is unavailable: {what}", code="memory_unavailable", headers={"Retry-After": "5"}
    )


def index_on_gpu(device: str) -> bool | None:
    """``memory.index_device`` as the store's ``use_gpu``: None (auto), False, or True when faiss has GPU
    support and sees a GPU; ``gpu`` without them is a ``ValueError`` saying what to install."""
    if device == "auto":
        return None
    if device == "cpu":
        return False
    from retrieval.faiss_index import gpu_available

    if not gpu_available():
        raise ValueError(
            "memory.index_device is gpu but faiss has no GPU support or sees no GPU "
            "(install faiss-gpu for this machine's CUDA, or set index_device: auto or cpu)"
        )
    return True


MEMORY_BUSY_TIMEOUT_S = 5.0  # how long a memory statement waits for another connection's write lock
BACKGROUND_NICE = 10  # added to the niceness of the background memory writer thread (Linux)


def _lower_priority() -> None:
    """Lower this thread's CPU priority (Linux: per-thread niceness; threads it starts inherit it)."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or not permitted: normal priority
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)


class MemoryMetrics(Protocol):
    """The metrics the memory keeps (``steer.server.metrics.Metrics`` has them)."""

    @property
    def memory_dropped(self) -> Counter: ...

    @property
    def memory_truncated_turns(self) -> Counter: ...

    @property
    def memory_late_writes(self) -> Counter: ...

    @property
    def memory_pending(self) -> Gauge: ...


class MemoryService:
    def __init__(self, settings: Settings, metrics: MemoryMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._parts: tuple[SqliteFaissStore, MemoryWriter, Recaller] | None = None
        self._lock = asyncio.Lock()
        self.writer = FairWriter(
            max_pending=settings.memory.max_pending_per_user, on_drop=self.dropped, initializer=_lower_priority
        )
        self.metrics.memory_pending.set_function(self.writer.pending)

    def dropped(self, reason: str, n: int = 1) -> None:
        """Count ``n`` extracted preferences that were not stored, and why (thread-safe)."""
        self.metrics.memory_dropped.labels(reason).inc(n)

    def truncated_turn(self) -> None:
        """Count a turn of which the extractor read only the first ``memory.max_turn_chars`` characters."""
        self.metrics.memory_truncated_turns.inc()

    def loaded_embedder(self) -> Embedder | None:
        """The store's embedder when the memory is loaded (else None: nothing is loaded for asking)."""
        return None if self._parts is None else self._parts[0].embedder

    def _build(self) -> tuple[SqliteFaissStore, MemoryWriter, Recaller]:
        from retrieval.embeddings import import_heavy

        import_heavy()  # the embedder's libraries and faiss, once, on one thread: see import_heavy
        from retrieval import MemoryWriter, Recaller, RuleExtractor, SqliteFaissStore
        from retrieval.embeddings import shared_embedder

        cfg = self.settings.memory
        embedder = shared_embedder(cfg.embedding_model)
        # its own handle (connection) on the database: the store's transactions never wait on the request
        # log's; a write waits 5 s at most for another process's lock, then the memory is unavailable (503)
        db = open_configured(self.settings, cfg.database, busy_timeout_s=MEMORY_BUSY_TIMEOUT_S)
        on_change = getattr(db, "on_change", None)  # a shared server announces other processes' writes
        if on_change is not None:
            on_change(self.drop_cached)
        store = SqliteFaissStore(
            db,
            embedder,
            approximate_above=cfg.approximate_above,
            max_loaded=cfg.max_loaded_users,
            use_gpu=index_on_gpu(cfg.index_device),
        )
        writer = MemoryWriter(store, RuleExtractor(), max_per_user=cfg.max_per_user)
        return store, writer, Recaller(store, design=cfg.recall_design)

    async def parts(self) -> tuple[SqliteFaissStore, MemoryWriter, Recaller]:
        if self._parts is None:
            async with self._lock:
                if self._parts is None:
                    try:
                        self._parts = await asyncio.to_thread(self._build)
                    except Exception as exc:  # retried on next use; until then memory stages are skipped
                        log.warning("preference memory could not load: %s: %s", type(exc).__name__, exc)
                        raise unavailable(exc) from exc
        return self._parts


    async def store(self) -> SqliteFaissStore:
        return (await self.parts())[0]

    async def recaller(self) -> Recaller:
        return (await self.parts())[2]

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Run one store method in a worker thread. After an edit or a delete (``args``: tenant, user, ...)
        the recaller drops the user's rendered lines, so no removed text stays in this process."""
        store = await self.store()
        try:
            return await asyncio.to_thread(getattr(store, method), *args, **kwargs)
        except sqlite3.OperationalError as exc:
            raise unavailable(exc) from exc
        finally:
            if method in _EDITS and self._parts is not None and len(args) >= 2:
                self._parts[2].forget(args[0], args[1])

    async def remember(
        self, tenant: str, user: str, items: Sequence[Extracted], conversation: str | None, began: float
    ) -> Ingested:
        """Queue one write per item for the background writer (lowered CPU priority, users served round
        robin) and wait for them; ``began``: when the request that said them began (a user forgotten since
        gets none of them). Cancelling the wait leaves the writes queued (written later, counted late)."""
        from retrieval import Ingested

        _, writer, _ = await self.parts()
        jobs = [functools.partial(writer.write_one, tenant, user, item, conversation, began=began) for item in items]
        futures = self.writer.submit((tenant, user), jobs)
        late = threading.Event()
        for future in futures:
            future.add_done_callback(functools.partial(self._settled, late))
        try:  # shielded: a timed-out caller must not cancel the queued writes
            results = await asyncio.shield(
                asyncio.gather(*(asyncio.wrap_future(f) for f in futures), return_exceptions=True)
            )
        except asyncio.CancelledError:
            late.set()
            raise
        out = Ingested()
        for result in results:
            if isinstance(result, Dropped):
                out.dropped.append(result.reason)
            elif isinstance(result, sqlite3.OperationalError):
                raise unavailable(result) from result
            elif isinstance(result, BaseException):
                raise result
            else:
                out.extend(result)
        return out

    def _settled(self, late: threading.Event, future: Future[Any]) -> None:
        """Count what became of one queued write (in the writer thread)."""
        if future.cancelled():
            return
        exc = future.exception()
        if isinstance(exc, Dropped):
            return  # counted when dropped
        if exc is not None:
            self.dropped("error")
            log.warning("a background memory write failed: %s: %s", type(exc).__name__, exc)
            return
        for reason in future.result().dropped:
            self.dropped(reason)
        if late.is_set():
            self.metrics.memory_late_writes.inc()

    def drop_cached(self, tenant: str | None, user: str | None) -> None:
        """Drop what this process holds in memory of one user's memories (None: of everyone's): their loaded
        index and lexical index, rebuilt from the database on next use (another process changed them)."""
        if self._parts is None:
            return
        store, _, recaller = self._parts
        store.drop_cached(tenant, user)
        if tenant is not None and user is not None:
            recaller.forget(tenant, user)

    def forget(self, tenant: str, user: str) -> int:
        """Discard the user's queued writes (they are being forgotten); how many."""
        return self.writer.drop((tenant, user), "forgotten")

    async def drain(self, grace_s: float) -> int:
        """Shutting down: let queued writes run for up to ``grace_s`` seconds, then drop the rest (logged and
        counted, reason ``shutdown``); the number dropped."""
        dropped = await asyncio.to_thread(self.writer.close, grace_s)
        if dropped:
            log.warning("shutdown: %d queued memory writes dropped after the %.3gs grace", dropped, grace_s)
        return dropped

    def close(self) -> None:
        self.writer.close(0.0)
        if self._parts is not None:
            self._parts[0].close()
