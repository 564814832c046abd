"""The preference memory of a running steer: store, writer and recaller, built on first use.

The embedding model loads once, in a worker thread, the first time a stage or an endpoint needs
memory (or at start-up when a policy turns recall or remember on), never at import. Every call
names the (tenant, user) it acts for; the store enforces the isolation.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from steer.errors import Unavailable

if TYPE_CHECKING:
    from retrieval import MemoryWriter, Recaller, SqliteFaissStore
    from steer.settings import Settings

log = logging.getLogger("steer.memory")
T = TypeVar("T")


def unavailable(exc: BaseException) -> Unavailable:
    """The 503 for a memory backend that is down: model not loadable, database locked or full."""
    if isinstance(exc, sqlite3.OperationalError):
        what = f"the memory database refused the operation ({exc})"
    else:
        what = f"the embedding model or memory store could not load ({type(exc).__name__}: {exc})"
    return Unavailable(
        f"preference memory is unavailable: {what}", code="memory_unavailable", headers={"Retry-After": "5"}
    )


BACKGROUND_NICE = 10  # added to the niceness of the background memory writer thread (Linux)


def _lower_priority() -> None:
    """Lower this thread's CPU priority (Linux: per-thread niceness; threads it starts inherit it)."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or not permitted: normal priority
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)


class MemoryService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._parts: tuple[SqliteFaissStore, MemoryWriter, Recaller] | None = None
        self._lock = asyncio.Lock()
        self._writer: ThreadPoolExecutor | None = None

    def _build(self) -> tuple[SqliteFaissStore, MemoryWriter, Recaller]:
        from retrieval import LexiconExpander, MemoryWriter, Recaller, RuleExtractor, SqliteFaissStore
        from retrieval.embeddings import shared_embedder
        from retrieval.recall import LEXICAL_WEIGHT

        cfg = self.settings.memory
        embedder = shared_embedder(cfg.embedding_model)
        store = SqliteFaissStore(
            cfg.database or self.settings.database,
            embedder,
            expander=LexiconExpander() if cfg.expand else None,
            approximate_above=cfg.approximate_above,
            max_loaded=cfg.max_loaded_users,
        )
        # recall design "hybrid": dense (with lexicon expansions) + BM25 bonus (retrieval.recall)
        return store, MemoryWriter(store, RuleExtractor()), Recaller(store, lexical_weight=LEXICAL_WEIGHT)

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
        """Run one store method in a worker thread."""
        store = await self.store()
        try:
            return await asyncio.to_thread(getattr(store, method), *args, **kwargs)
        except sqlite3.OperationalError as exc:
            raise unavailable(exc) from exc

    async def background(self, fn: Callable[..., T], *args: Any) -> T:
        """Run write-path work (extraction, embedding, storing: what ``remember`` does after the response)
        on one dedicated worker thread at lowered CPU priority, so it never takes more than one core and
        yields to the request path when the cores are busy."""
        if self._writer is None:
            self._writer = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="steer-memory-write", initializer=_lower_priority
            )
        try:
            return await asyncio.get_running_loop().run_in_executor(self._writer, functools.partial(fn, *args))
        except sqlite3.OperationalError as exc:
            raise unavailable(exc) from exc

    def close(self) -> None:
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None
        if self._parts is not None:
            self._parts[0].close()
