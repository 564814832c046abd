"""The preference memory of a running steer: store, writer and recaller, built on first use.

The embedding model loads once, in a worker thread, the first time a stage or an endpoint needs
memory (or at start-up when a policy turns recall or remember on), never at import. Every call
names the (tenant, user) it acts for; the store enforces the isolation.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from retrieval import MemoryWriter, Recaller, SqliteFaissStore
    from steer.settings import Settings


class MemoryService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._parts: tuple[SqliteFaissStore, MemoryWriter, Recaller] | None = None
        self._lock = asyncio.Lock()

    def _build(self) -> tuple[SqliteFaissStore, MemoryWriter, Recaller]:
        from retrieval import LexiconExpander, MemoryWriter, Recaller, RuleExtractor, SqliteFaissStore
        from retrieval.embeddings import SentenceTransformerEmbedder

        cfg = self.settings.memory
        embedder = SentenceTransformerEmbedder(cfg.embedding_model)
        store = SqliteFaissStore(
            cfg.database or self.settings.database,
            embedder,
            expander=LexiconExpander() if cfg.expand else None,
            approximate_above=cfg.approximate_above,
        )
        return store, MemoryWriter(store, RuleExtractor()), Recaller(store)

    async def parts(self) -> tuple[SqliteFaissStore, MemoryWriter, Recaller]:
        if self._parts is None:
            async with self._lock:
                if self._parts is None:
                    self._parts = await asyncio.to_thread(self._build)
        return self._parts

    async def store(self) -> SqliteFaissStore:
        return (await self.parts())[0]

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Run one store method in a worker thread."""
        store = await self.store()
        return await asyncio.to_thread(getattr(store, method), *args, **kwargs)

    def close(self) -> None:
        if self._parts is not None:
            self._parts[0].close()
