"""The stored-responses table on a real SQLite file: read only by its owner, tombstones, export, forget and
retention."""

from __future__ import annotations

import time
from pathlib import Path

from steer.storage import open_database
from steer.storage import responses as store
from steer.storage.forgotten import mark_forgotten
from steer.storage.retention import purge_expired


def stored(rid: str, text: str = "hello", at: float | None = None) -> store.StoredResponse:
    items = [{"type": "message", "role": "user", "content": text}]
    return store.StoredResponse(rid, time.time() if at is None else at, "stub", items, {"id": rid, "output": []})


def test_a_response_is_read_only_by_its_tenant_and_user(tmp_path: Path) -> None:
    db = open_database(tmp_path / "s.db")
    began = time.time()
    assert store.save(db, "t1", "alice", stored("resp_a"), began)
    assert store.save(db, "t1", None, stored("resp_anon"), began)
    found = store.load(db, "t1", "alice", "resp_a")
    assert found is not None and found.input[0]["content"] == "hello" and found.response["id"] == "resp_a"
    assert store.load(db, "t1", "bob", "resp_a") is None
    assert store.load(db, "t2", "alice", "resp_a") is None
    assert store.load(db, "t1", None, "resp_a") is None  # anonymous is nobody's alias
    assert store.load(db, "t1", None, "resp_anon") is not None
    assert not store.delete(db, "t1", "bob", "resp_a")
    assert store.delete(db, "t1", "alice", "resp_a") and store.load(db, "t1", "alice", "resp_a") is None
    db.close()


def test_export_forget_and_the_tombstone(tmp_path: Path) -> None:
    db = open_database(tmp_path / "s.db")
    began = time.time()
    store.save(db, "t1", "carol", stored("resp_1", "first"), began)
    store.save(db, "t1", "carol", stored("resp_2", "second"), began)
    store.save(db, "t1", "dave", stored("resp_3"), began)
    assert [r["input"][0]["content"] for r in store.export(db, "t1", "carol")] == ["first", "second"]
    assert store.forget(db, "t1", "carol") == 2
    assert store.export(db, "t1", "carol") == [] and len(store.export(db, "t1", "dave")) == 1
    mark_forgotten(db, "t1", "carol", time.time())
    assert not store.save(db, "t1", "carol", stored("resp_4"), began)  # work begun before the forget
    assert store.save(db, "t1", "carol", stored("resp_5"), time.time() + 1)
    db.close()


def test_retention_removes_old_stored_responses(tmp_path: Path) -> None:
    db = open_database(tmp_path / "s.db")
    now = time.time()
    store.save(db, "t1", "erin", stored("resp_old", at=now - 10 * 86400), now)
    store.save(db, "t1", "erin", stored("resp_new", at=now), now)
    removed = purge_expired(db, now - 86400)
    assert removed["stored_responses"] == 1
    assert [r["id"] for r in store.export(db, "t1", "erin")] == ["resp_new"]
    db.close()
