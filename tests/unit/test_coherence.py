"""Two processes' handles on one database stay coherent (issue 17 item 4), checked without processes:
each "process" here is its own store or cache on its own connection to one SQLite file, as two
``steer serve`` processes would hold them. The end-to-end version is tests/durability/test_replicas.py.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from retrieval.embeddings import SentenceTransformerEmbedder
from retrieval.sqlite_store import SqliteFaissStore, text_key
from retrieval.store import MemoryDraft
from steer.methods.align.cache import Cached, RewriteCache
from steer.storage import open_database
from steer.storage.forgotten import mark_forgotten, tombstone

QUESTION = "Explain how tides work."


@pytest.fixture(scope="module")
def embedder() -> SentenceTransformerEmbedder:
    os.environ["HF_HUB_OFFLINE"] = "1"
    return SentenceTransformerEmbedder()


@pytest.fixture
def pair(tmp_path: Path, embedder: SentenceTransformerEmbedder) -> Iterator[tuple[SqliteFaissStore, SqliteFaissStore]]:
    a = SqliteFaissStore(open_database(tmp_path / "steer.db"), embedder)
    b = SqliteFaissStore(open_database(tmp_path / "steer.db"), embedder)
    yield a, b
    a.close()
    b.close()


def draft(text: str) -> MemoryDraft:
    return MemoryDraft(text, "manual", None, None, {})


def test_the_text_key_ignores_case_spacing_and_final_punctuation_only() -> None:
    assert text_key("I love  Jazz.") == text_key("i love jazz") == text_key(" I LOVE JAZZ!")
    assert text_key("I love jazz") != text_key("I love jazz records")


def test_the_same_statement_added_through_two_handles_at_once_is_stored_once(
    pair: tuple[SqliteFaissStore, SqliteFaissStore],
) -> None:
    a, b = pair
    results: list[list[tuple[object, bool]]] = []
    barrier = threading.Barrier(2)

    def add(store: SqliteFaissStore) -> None:
        barrier.wait()
        results.append(store.add_new("t", "u", [draft("I always order green tea.")]))  # type: ignore[arg-type]

    threads = [threading.Thread(target=add, args=(s,)) for s in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    (m1, new1), (m2, new2) = results[0][0], results[1][0]
    assert sorted([new1, new2]) == [False, True] and m1 == m2  # one stored it; the other got that memory
    assert [m.text for m in a.list("t", "u")] == ["I always order green tea."]
    c = a.consistency("t", "u")
    assert c["index"] == c["table"] == c["recorded"] == 1, c
    # a restatement differing in case and final punctuation is the same statement; another user's is theirs
    ((again, new),) = b.add_new("t", "u", [draft("i always order GREEN TEA")])
    assert not new and again.id == m1.id  # type: ignore[attr-defined]
    assert b.add_new("t", "other", [draft("I always order green tea.")])[0][1]


def test_a_superseded_statement_may_be_stated_again_and_an_edit_takes_a_free_key(
    pair: tuple[SqliteFaissStore, SqliteFaissStore],
) -> None:
    a, b = pair
    (old,) = a.add("t", "u", [draft("I love horror films.")])
    (new,) = a.add("t", "u", [draft("I can't stand horror films.")])
    a.supersede("t", "u", old.id, new.id)
    ((again, stored),) = b.add_new("t", "u", [draft("I love horror films.")])
    assert stored and again.id != old.id
    # an edit to the text another current memory holds keeps both (the user asked for it), and the key
    # stays with the first; an edit to a free text takes that text's key
    b.update("t", "u", new.id, text="I love horror films.")
    assert sorted(m.text for m in a.list("t", "u")) == ["I love horror films.", "I love horror films."]
    b.update("t", "u", new.id, text="I love silent films.")
    assert not a.add_new("t", "u", [draft("I love silent films.")])[0][1]


def test_a_write_through_one_handle_is_searched_through_the_other_whose_index_was_loaded(
    pair: tuple[SqliteFaissStore, SqliteFaissStore],
) -> None:
    a, b = pair
    a.add("t", "u", [draft("I am vegetarian.")])
    assert [h.memory.text for h in b.search("t", "u", "dinner ideas", k=5)] == ["I am vegetarian."]  # B loads
    a.add("t", "u", [draft("I am allergic to hazelnuts.")])
    assert {h.memory.text for h in b.search("t", "u", "dessert with nuts", k=5)} == {
        "I am vegetarian.",
        "I am allergic to hazelnuts.",
    }
    a.delete_user("t", "u", tombstone_at=time.time())
    assert b.search("t", "u", "dinner ideas", k=5) == [] and b.index_size("t", "u") == 0
    b.drop_cached("t", "u")  # the hook a change notification calls: harmless at any time
    assert b.search("t", "u", "dinner ideas", k=5) == []


def test_a_forget_by_another_process_empties_this_processes_rewrite_cache_at_once(tmp_path: Path) -> None:
    db_a, db_b = open_database(tmp_path / "steer.db"), open_database(tmp_path / "steer.db")
    here, there = RewriteCache(lambda: db_a), RewriteCache(lambda: db_b)
    for who in ("alice", "bob"):
        here.put("t", who, "m", "f", QUESTION, Cached("rewritten", "parsed"), persist=True)
        assert here.get("t", who, "m", "f", QUESTION) == Cached("rewritten", "parsed")  # in memory here
    assert tombstone(db_a, "t", "alice") is None
    # the other process forgets alice the way DELETE /v1/users/alice does: tombstone, rows, tombstone
    mark_forgotten(db_b, "t", "alice", time.time() + 30)
    assert there.forget("t", "alice") == 1
    mark_forgotten(db_b, "t", "alice", time.time())
    assert tombstone(db_a, "t", "alice") is not None
    assert here.get("t", "alice", "m", "f", QUESTION) is None  # not served from this process's memory
    assert here.get("t", "bob", "m", "f", QUESTION) == Cached("rewritten", "parsed")
    here.put("t", "alice", "m", "f", QUESTION, Cached("again", "parsed"), persist=True)  # alice is back
    assert here.get("t", "alice", "m", "f", QUESTION) == Cached("again", "parsed")
    here.drop_cached("t", "bob")
    assert here.get("t", "bob", "m", "f", QUESTION) == Cached("rewritten", "parsed")  # read from the database
    db_a.close()
    db_b.close()
