"""The write path: a conversation goes through the extractor, reconciliation, then the store.

Each item is decided and written on its own (``write_one``), under the user's owner lock, so a
caller can interleave the items of many users (steer's writer serves users round robin). An item
is not stored, and says why in ``Ingested.dropped``, when the user was forgotten after the work
began (``forgotten``) or already holds ``max_per_user`` current memories (``user_cap``; a
restatement still merges and a contradiction still supersedes, since neither adds to the count).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from retrieval.reconcile import decide
from retrieval.store import MemoryDraft, MemoryLimitReached, MemoryNotFound, OwnerForgotten

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
    dropped: list[str] = field(default_factory=list)  # one reason per item not stored: forgotten | user_cap

    def extend(self, other: Ingested) -> None:
        self.added += other.added
        self.merged += other.merged
        self.superseded += other.superseded
        self.dropped += other.dropped


class MemoryWriter:
    """``ingest`` is synchronous; async callers use ``await asyncio.to_thread(writer.ingest, ...)``."""

    def __init__(
        self,
        store: SqliteFaissStore,
        extractor: Extractor,
        *,
        reconcile: bool = True,
        max_per_user: int | None = None,
    ) -> None:
        self.store = store
        self.extractor = extractor
        self.reconcile = reconcile
        self.max_per_user = max_per_user

    def ingest(self, tenant: str, user: str, turns: Sequence[Turn], conversation_id: str | None) -> Ingested:
        return self.write(tenant, user, self.extractor.extract(turns), conversation_id)

    def write(
        self,
        tenant: str,
        user: str,
        items: Sequence[Extracted],
        conversation_id: str | None,
        *,
        began: float | None = None,
    ) -> Ingested:
        """Reconcile and store items another extractor found (e.g. an async, model-backed one).
        ``began``: when the work that found them began (writes for a user forgotten since are refused)."""
        out = Ingested()
        if not items:
            return out
        vectors = self.store.embedder.encode([i.text for i in items])
        for item, vector in zip(items, vectors, strict=True):
            self._guarded(tenant, user, item, vector, conversation_id, began, out)
        return out

    def write_one(
        self, tenant: str, user: str, item: Extracted, conversation_id: str | None, *, began: float | None = None
    ) -> Ingested:
        """Reconcile and store one item (one unit of the background writer's work)."""
        out = Ingested()
        vector = self.store.embedder.encode([item.text])[0]
        self._guarded(tenant, user, item, vector, conversation_id, began, out)
        return out

    def _guarded(
        self,
        tenant: str,
        user: str,
        item: Extracted,
        vector: npt.NDArray[np.float32],
        conversation_id: str | None,
        began: float | None,
        out: Ingested,
    ) -> None:
        with self.store.owner_lock(tenant, user):  # decide and write as one step against API writes
            for attempt in range(2):
                try:
                    self._write_one(tenant, user, item, vector, conversation_id, out, began)
                    return
                except OwnerForgotten:
                    out.dropped.append("forgotten")
                    return
                except MemoryLimitReached:
                    out.dropped.append("user_cap")
                    return
                except MemoryNotFound:  # the memory it merged into was deleted meanwhile: decide again
                    if attempt:
                        raise

    def _write_one(
        self,
        tenant: str,
        user: str,
        item: Extracted,
        vector: npt.NDArray[np.float32],
        conversation_id: str | None,
        out: Ingested,
        began: float | None = None,
    ) -> None:
        meta = {"polarity": item.polarity, "subject": item.subject}
        decision = decide(self.store, tenant, user, item, vector) if self.reconcile else None
        if decision is not None and decision.action == "merge" and decision.target is not None:
            target = decision.target
            merged = [
                *target.meta.get("merged_from", []),
                {"conversation": conversation_id, "turn": item.turn},
            ]
            restated = [*target.meta.get("restated", [])]
            if item.text != target.text and item.text not in restated:
                restated.append(item.text)  # the new wording is kept beside the memory, not lost
            restatement: dict[str, Any] = {**target.meta, "merged_from": merged, "restated": restated}
            out.merged.append(self.store.update(tenant, user, target.id, meta=restatement, began=began))
            return
        supersedes = decision is not None and decision.action == "supersede"
        ((memory, created),) = self.store.add_new(
            tenant,
            user,
            [MemoryDraft(item.text, item.kind, conversation_id, item.turn, meta)],
            began=began,
            limit=None if supersedes else self.max_per_user,  # a supersede does not grow the count
        )
        if not created:  # another process stored the same statement meanwhile: a restatement
            out.merged.append(memory)
            return
        out.added.append(memory)
        if supersedes:
            assert decision is not None
            for old in decision.contradicts:
                try:
                    out.superseded.append(self.store.supersede(tenant, user, old.id, memory.id, began=began))
                except MemoryNotFound:  # deleted meanwhile: nothing left to supersede
                    continue
