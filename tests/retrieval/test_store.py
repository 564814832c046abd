from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from retrieval.sqlite_store import SqliteFaissStore
from retrieval.store import MemoryDraft, MemoryNotFound, MemoryStore
from steer.storage import open_database

T = "acme"


def drafts(*texts: str) -> list[MemoryDraft]:
    return [MemoryDraft(t, source_conversation=f"c{i}", source_turn=i) for i, t in enumerate(texts)]


def test_sqlite_faiss_store_satisfies_the_memory_store_protocol(store: SqliteFaissStore) -> None:
    assert isinstance(store, MemoryStore)


def test_add_then_search_ranks_the_related_memory_first_with_provenance(store: SqliteFaissStore) -> None:
    store.add(T, "ann", drafts("I am allergic to peanuts.", "I love jazz music.", "I hate flying."))
    hits = store.search(T, "ann", "Which concerts should I go to?", k=2)
    assert hits[0].memory.text == "I love jazz music."
    assert hits[0].memory.source_conversation == "c1" and hits[0].memory.source_turn == 1
    assert hits[0].score > hits[1].score


class TwoSituations:
    """A write-time expander: two extra texts per memory."""

    def expand(self, text: str) -> list[str]:
        return [f"{text} This matters at restaurants.", f"{text} This matters when travelling."]


def test_search_returns_each_memory_once_even_with_several_vectors(tmp_path: Path, embedder) -> None:
    s = SqliteFaissStore(open_database(tmp_path / "x.db"), embedder, expander=TwoSituations())
    s.add(T, "ann", drafts("I have a gluten intolerance.", "I hate horror movies."))
    assert s.index_size(T, "ann") > 2  # expansions add vectors
    ids = [h.memory.id for h in s.search(T, "ann", "restaurants in Rome", k=10)]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 2


def test_list_get_and_update_change_text_and_reembed(store: SqliteFaissStore) -> None:
    (m,) = store.add(T, "ann", drafts("I love jazz music."))
    store.add(T, "ann", drafts("I am allergic to cats."))
    assert [x.text for x in store.list(T, "ann")] == ["I love jazz music.", "I am allergic to cats."]
    before = store.vectors(T, "ann", m.id).copy()
    updated = store.update(T, "ann", m.id, text="I hate skiing and cold weather.", meta={"note": 1})
    assert updated.text == "I hate skiing and cold weather." and updated.meta == {"note": 1}
    assert store.get(T, "ann", m.id).text == updated.text
    assert not (store.vectors(T, "ann", m.id) == before).all()
    assert store.search(T, "ann", "a winter holiday in the snow", k=1)[0].memory.id == m.id


def test_delete_removes_the_row_and_its_vectors(store: SqliteFaissStore) -> None:
    a, b = store.add(T, "ann", drafts("I love jazz.", "I hate flying."))
    store.delete(T, "ann", a.id)
    assert [m.id for m in store.list(T, "ann")] == [b.id]
    assert [h.memory.id for h in store.search(T, "ann", "jazz", k=5)] == [b.id]
    assert store.index_size(T, "ann") == 1
    with pytest.raises(MemoryNotFound):
        store.get(T, "ann", a.id)


def test_supersede_hides_old_memory_from_search_but_keeps_it_in_history(store: SqliteFaissStore) -> None:
    old, new = store.add(T, "ann", drafts("I love spicy food.", "I no longer like spicy food."))
    store.supersede(T, "ann", old.id, new.id)
    assert [h.memory.id for h in store.search(T, "ann", "spicy food", k=5)] == [new.id]
    assert [m.id for m in store.list(T, "ann")] == [new.id]
    history = store.list(T, "ann", include_history=True)
    assert [(m.id, m.superseded_by) for m in history] == [(old.id, new.id), (new.id, None)]


def test_deleting_the_newer_memory_brings_back_the_one_it_superseded(store: SqliteFaissStore) -> None:
    old, new = store.add(T, "ann", drafts("I love spicy food.", "I no longer like spicy food."))
    store.supersede(T, "ann", old.id, new.id)
    store.delete(T, "ann", new.id)
    assert [h.memory.id for h in store.search(T, "ann", "spicy", k=5)] == [old.id]


def test_delete_user_leaves_no_rows_and_no_vectors(tmp_path: Path, store: SqliteFaissStore) -> None:
    store.add(T, "ann", drafts("I love jazz.", "I hate flying."))
    store.add(T, "bob", drafts("I love jazz too."))
    assert store.delete_user(T, "ann") == 2
    db = sqlite3.connect(tmp_path / "memory.db")
    assert db.execute("SELECT COUNT(*) FROM memories WHERE user = 'ann'").fetchone() == (0,)
    assert db.execute("SELECT COUNT(*) FROM user_state WHERE user = 'ann'").fetchone() == (0,)
    assert db.execute("SELECT COUNT(*) FROM memories WHERE user = 'bob'").fetchone() == (1,)
    db.close()
    assert store.index_size(T, "ann") == 0 and store.search(T, "ann", "jazz", k=5) == []
    assert store.index_size(T, "bob") == 1


def test_export_holds_every_memory_including_history_as_json(store: SqliteFaissStore) -> None:
    import json

    old, new = store.add(T, "ann", drafts("I love tea.", "I hate tea."))
    store.supersede(T, "ann", old.id, new.id)
    out = json.loads(json.dumps(store.export(T, "ann")))
    assert [m["text"] for m in out["memories"]] == ["I love tea.", "I hate tea."]
    assert out["user"] == "ann" and out["memories"][0]["superseded_by"] == new.id


def test_memories_survive_reopening_the_database(tmp_path: Path, embedder) -> None:
    s = SqliteFaissStore(open_database(tmp_path / "m.db"), embedder)
    (m,) = s.add(T, "ann", drafts("I love jazz."))
    s.close()
    s2 = SqliteFaissStore(open_database(tmp_path / "m.db"), embedder)
    assert s2.index_size(T, "ann") == 1  # rebuilt at open
    assert s2.search(T, "ann", "music", k=1)[0].memory.id == m.id
    s2.close()


def test_index_is_rebuilt_from_sqlite_when_its_vectors_are_lost(store: SqliteFaissStore) -> None:
    a, b = store.add(T, "ann", drafts("I love jazz.", "I hate flying."))
    store._indexes[(T, "ann")].remove([a.id, b.id])  # damage the index behind the store's back
    assert store.index_size(T, "ann") == 0
    assert {h.memory.id for h in store.search(T, "ann", "music", k=5)} == {a.id, b.id}
    assert store.index_size(T, "ann") == 2


def test_index_is_rebuilt_when_another_connection_writes_the_database(tmp_path: Path, embedder) -> None:
    s1 = SqliteFaissStore(open_database(tmp_path / "m.db"), embedder)
    s2 = SqliteFaissStore(open_database(tmp_path / "m.db"), embedder)
    s1.add(T, "ann", drafts("I love jazz."))
    (m,) = s2.add(T, "ann", drafts("I hate flying on planes."))
    assert s1.search(T, "ann", "a long flight", k=1)[0].memory.id == m.id
    s1.close()
    s2.close()


def test_an_index_of_a_forgotten_user_is_not_reused_when_the_user_writes_again(tmp_path: Path, embedder) -> None:
    s1 = SqliteFaissStore(open_database(tmp_path / "m.db"), embedder)
    s2 = SqliteFaissStore(open_database(tmp_path / "m.db"), embedder)
    (old,) = s1.add(T, "ann", drafts("I love jazz."))
    assert [h.memory.id for h in s1.search(T, "ann", "music", k=5)] == [old.id]  # s1 holds ann's index
    s2.delete_user(T, "ann")
    (new,) = s2.add(T, "ann", drafts("I hate flying on planes."))  # as many writes and vectors as before
    assert [h.memory.id for h in s1.search(T, "ann", "a long flight", k=5)] == [new.id]
    assert s1.consistency(T, "ann") == {"memories": 1, "table": 1, "recorded": 1, "index": 1}
    s1.close()
    s2.close()


def test_a_database_made_with_another_vector_width_is_refused(tmp_path: Path, embedder) -> None:
    SqliteFaissStore(open_database(tmp_path / "m.db"), embedder).close()

    class Wide:
        dim, name = 768, "wide"

        def encode(self, texts):  # pragma: no cover - never called
            raise AssertionError

    with pytest.raises(ValueError, match="768"):
        SqliteFaissStore(open_database(tmp_path / "m.db"), Wide())


async def test_store_calls_run_concurrently_through_to_thread(store: SqliteFaissStore) -> None:
    await asyncio.gather(
        *(asyncio.to_thread(store.add, T, f"u{i}", drafts(f"I love topic {i}.")) for i in range(8))
    )
    results = await asyncio.gather(
        *(asyncio.to_thread(store.search, T, f"u{i}", "topic", 5) for i in range(8))
    )
    assert [[h.memory.text for h in r] for r in results] == [[f"I love topic {i}."] for i in range(8)]


def test_loaded_indexes_are_capped_least_recently_used_first_and_evicted_users_still_answer(
    tmp_path: Path, embedder
) -> None:
    s = SqliteFaissStore(open_database(tmp_path / "lru.db"), embedder, max_loaded=2)
    for user, text in (("ann", "I love jazz music."), ("bob", "I hate flying."), ("cy", "I am vegan.")):
        s.add(T, user, drafts(text))
    assert list(s._indexes) == [(T, "bob"), (T, "cy")]
    assert [h.memory.text for h in s.search(T, "ann", "concerts", k=1)] == ["I love jazz music."]
    assert list(s._indexes) == [(T, "cy"), (T, "ann")]
    s.search(T, "nobody", "concerts", k=1)  # an id with no memories is answered without loading anything
    assert (T, "nobody") not in s._indexes
    s.close()
