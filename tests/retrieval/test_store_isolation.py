from __future__ import annotations

import pytest

from retrieval.sqlite_store import SqliteFaissStore
from retrieval.store import MemoryDraft, MemoryNotFound


@pytest.fixture
def two_users(store: SqliteFaissStore) -> tuple[int, int]:
    (a,) = store.add("t1", "ann", [MemoryDraft("I am allergic to peanuts.")])
    (b,) = store.add("t1", "bob", [MemoryDraft("I am allergic to peanuts!")])
    store.add("t2", "ann", [MemoryDraft("I am allergic to peanuts and tree nuts.")])
    return a.id, b.id


def test_search_never_returns_another_users_near_identical_memory(store, two_users) -> None:
    a, b = two_users
    for k in (1, 10, 10_000):
        assert [h.memory.id for h in store.search("t1", "ann", "I am allergic to peanuts!", k=k)] == [a]
        assert [h.memory.id for h in store.search("t1", "bob", "I am allergic to peanuts.", k=k)] == [b]


def test_same_user_name_in_another_tenant_is_another_user(store, two_users) -> None:
    a, _ = two_users
    hits = store.search("t2", "ann", "peanuts", k=100)
    assert len(hits) == 1 and hits[0].memory.id != a and hits[0].memory.tenant == "t2"
    assert [m.tenant for m in store.list("t2", "ann", include_history=True)] == ["t2"]


def test_ids_of_another_user_are_rejected_by_get_update_delete_supersede(store, two_users) -> None:
    a, b = two_users
    with pytest.raises(MemoryNotFound):
        store.get("t1", "ann", b)
    with pytest.raises(MemoryNotFound):
        store.update("t1", "ann", b, text="hijacked")
    with pytest.raises(MemoryNotFound):
        store.delete("t1", "ann", b)
    with pytest.raises(MemoryNotFound):
        store.supersede("t1", "ann", a, b)
    with pytest.raises(MemoryNotFound):
        store.get("t2", "ann", a)
    assert store.get("t1", "bob", b).text == "I am allergic to peanuts!"
    assert store.get("t1", "bob", b).superseded_by is None


def test_unknown_user_sees_nothing(store, two_users) -> None:
    assert store.search("t1", "eve", "peanuts", k=1000) == []
    assert store.list("t1", "eve", include_history=True) == []
    assert store.export("t1", "eve")["memories"] == []


def test_delete_user_only_removes_that_user(store, two_users) -> None:
    _, b = two_users
    store.delete_user("t1", "ann")
    assert [h.memory.id for h in store.search("t1", "bob", "peanuts", k=10)] == [b]
    assert len(store.list("t2", "ann")) == 1
