"""The store's side of "forget is final" and of the memory caps: tombstones checked inside each write's
transaction, a per-user limit, caches a forget cannot be raced into holding the user again."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from retrieval.extract import Extracted
from retrieval.sqlite_store import SqliteFaissStore
from retrieval.store import TOMBSTONE_TTL_S, MemoryDraft, MemoryLimitReached, OwnerForgotten
from retrieval.writer import MemoryWriter

T = "acme"


def item(text: str) -> Extracted:
    return Extracted(text=text, kind="explicit", turn=0, polarity="positive", subject=text)


def test_writes_of_work_begun_before_a_forget_are_refused_and_later_ones_land(store: SqliteFaissStore) -> None:
    began = time.time()
    store.add(T, "ann", [MemoryDraft("I love jazz.")], began=began)
    store.delete_user(T, "ann", tombstone_at=time.time())
    with pytest.raises(OwnerForgotten):
        store.add(T, "ann", [MemoryDraft("I hate flying.")], began=began)
    assert store.list(T, "ann", include_history=True) == [] and store.index_size(T, "ann") == 0
    store.add(T, "bob", [MemoryDraft("I hate flying.")], began=began)  # another user: untouched
    time.sleep(0.01)
    (back,) = store.add(T, "ann", [MemoryDraft("I enjoy chess.")], began=time.time())  # she starts clean
    with pytest.raises(OwnerForgotten):
        store.update(T, "ann", back.id, text="I enjoy go.", began=began)
    assert [m.text for m in store.list(T, "ann")] == ["I enjoy chess."]
    assert [h.memory.id for h in store.search(T, "ann", "board games", k=5)] == [back.id]


def test_the_tombstone_keeps_a_digest_not_the_user_and_expires_with_work_older_than_it(
    store: SqliteFaissStore, tmp_path: Path
) -> None:
    store.delete_user(T, "ann", tombstone_at=time.time())
    with sqlite3.connect(tmp_path / "memory.db") as conn:
        (owner, _), *rest = conn.execute("SELECT owner, at FROM forgotten").fetchall()
    assert not rest and "ann" not in owner and len(owner) == 64
    with pytest.raises(OwnerForgotten):  # work older than tombstones are kept writes nothing, for anyone
        store.add(T, "carl", [MemoryDraft("I love jazz.")], began=time.time() - TOMBSTONE_TTL_S - 1)


def test_the_writer_reports_forgotten_and_capped_items_instead_of_storing_them(store: SqliteFaissStore) -> None:
    writer = MemoryWriter(store, extractor=None, max_per_user=2)  # type: ignore[arg-type]
    began = time.time()
    out = writer.write(T, "ann", [item("I love jazz."), item("I enjoy chess."), item("I like sailing.")], "c1")
    assert len(out.added) == 2 and out.dropped == ["user_cap"]
    with pytest.raises(MemoryLimitReached):
        store.add(T, "ann", [MemoryDraft("I like tea.")], limit=2)
    store.delete_user(T, "ann", tombstone_at=time.time())
    late = writer.write_one(T, "ann", item("I enjoy opera."), "c1", began=began)
    assert late.added == [] and late.dropped == ["forgotten"]
    assert store.list(T, "ann", include_history=True) == []


def test_memory_ids_are_random_53_bit_integers(store: SqliteFaissStore) -> None:
    ids = [m.id for m in store.add(T, "ann", [MemoryDraft(f"I enjoy hobby number {i}.") for i in range(20)])]
    assert len(set(ids)) == 20 and all(0 < i < 2**53 for i in ids) and max(ids) > 2**40
    assert [m.id for m in store.list(T, "ann")] == ids  # listed in the order written, whatever the ids
