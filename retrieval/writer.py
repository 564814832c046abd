"""The write path: a conversation goes through the extractor, reconciliation, then the store."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from retrieval.reconcile import decide
from retrieval.store import MemoryDraft

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from retrieval.extract import Extracted, Extractor, Turn
    from retrieval.sqlite_store import SqliteFaissStore
    from retrieval.store import Memory


@dataclass
class Ingested:
    added: list[Memory] = field(default_factory=list)
    merged: list[Memory] = field(default_factory=list)  # existing memories restated
    superseded: list[Memory] = field(default_factory=list)  # older memories replaced


class MemoryWriter:
    """``ingest`` is synchronous; async callers use ``await asyncio.to_thread(writer.ingest, ...)``."""

    def __init__(self, store: SqliteFaissStore, extractor: Extractor, *, reconcile: bool = True) -> None:
        self.store = store
        self.extractor = extractor
        self.reconcile = reconcile

    def ingest(self, tenant: str, user: str, turns: Sequence[Turn], conversation_id: str | None) -> Ingested:
        return self.write(tenant, user, self.extractor.extract(turns), conversation_id)

    def write(
        self, tenant: str, user: str, items: Sequence[Extracted], conversation_id: str | None
    ) -> Ingested:
        """Reconcile and store items another extractor found (e.g. an async, model-backed one)."""
        out = Ingested()
        if not items:
            return out
        vectors = self.store.embedder.encode([i.text for i in items])
        for item, vector in zip(items, vectors, strict=True):
            with self.store.owner_lock(tenant, user):  # decide and write as one step against API writes
                self._write_one(tenant, user, item, vector, conversation_id, out)
        return out

    def _write_one(
        self,
        tenant: str,
        user: str,
        item: Extracted,
        vector: npt.NDArray[np.float32],
        conversation_id: str | None,
        out: Ingested,
    ) -> None:
        meta = {"polarity": item.polarity, "subject": item.subject}
        decision = decide(self.store, tenant, user, item, vector) if self.reconcile else None
        if decision is not None and decision.action == "merge" and decision.target is not None:
            target = decision.target
            merged = [
                *target.meta.get("merged_from", []),
                {"conversation": conversation_id, "turn": item.turn},
            ]
            out.merged.append(
                self.store.update(tenant, user, target.id, meta={**target.meta, "merged_from": merged})
            )
            return
        (memory,) = self.store.add(
            tenant, user, [MemoryDraft(item.text, item.kind, conversation_id, item.turn, meta)]
        )
        out.added.append(memory)
        if decision is not None and decision.action == "supersede":
            for old in decision.contradicts:
                out.superseded.append(self.store.supersede(tenant, user, old.id, memory.id))
