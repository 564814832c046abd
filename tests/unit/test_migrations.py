"""One migration list for every table: databases made by the previous steer open, migrate and keep their rows.

The fixtures (``fixtures/``, see its README) were made by steer at 97e7821: a main file at schema
version 6 whose memory tables the memory store had made itself, and a memory store's own file with
no ``schema_version`` at all. Real SQLite files, opened with the real storage and the real store.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from retrieval.sqlite_store import SqliteFaissStore
from retrieval.store import MemoryDraft
from steer.storage import open_database
from steer.storage.database import SchemaTooNew
from steer.storage.migrations import MIGRATIONS, latest
from steer.storage.profiles import ProfileStore
from steer.storage.request_log import RequestLog

FIXTURES = Path(__file__).parent / "fixtures"
NEWEST = latest(MIGRATIONS)


class FourD:
    """The 4-d embedder the fixtures were made with: a text's length modulo 4 picks its axis."""

    dim, name = 4, "fake-4d"

    def encode(self, texts):  # type: ignore[no-untyped-def]
        out = np.zeros((len(texts), 4), dtype=np.float32)
        for i, t in enumerate(texts):
            out[i, len(t) % 4] = 1.0
        return out


def copy(name: str, tmp_path: Path) -> Path:
    path = tmp_path / name
    shutil.copy(FIXTURES / name, path)
    return path


def versions(path: Path) -> list[int]:
    with sqlite3.connect(path) as conn:
        return [v for (v,) in conn.execute("SELECT version FROM schema_version ORDER BY version")]


def test_a_main_file_of_the_previous_steer_migrates_and_keeps_every_row(tmp_path: Path) -> None:
    path = copy("steer-97e7821.db", tmp_path)
    assert versions(path) == [1, 2, 3, 4, 5, 6]
    db = open_database(path)
    assert versions(path) == list(range(1, NEWEST + 1))  # the memory tables are in the list now
    assert RequestLog(db).export("t1", "alice")[0]["trace_id"] == "trace-1"
    profiles = ProfileStore(db)
    prior = profiles.prior("t1", "features")
    assert prior is not None and prior.support_users == ["alice"]
    row = profiles.user("t1", "alice", "features")
    assert row is not None and row[1].seeds == {"a": 1.0} and row[1].events == 2
    assert profiles.served("t1", "chatcmpl-x") is not None
    assert profiles.pairs("t1", "alice", "features", ("a", "b"), 0, 10) == [([0.1, 0.2], 1.0)]
    assert db.execute('SELECT rewrite FROM align_cache WHERE "user" = ?', ("alice",)) == [("a better question",)]
    store = SqliteFaissStore(db, FourD())  # takes the database over: closes it
    old = store.list("t1", "alice")
    assert [m.text for m in old] == ["I love jazz.", "I am vegan."]
    assert {h.memory.id for h in store.search("t1", "alice", "I am vegan.", k=5)} >= {old[1].id}
    (new,) = store.add("t1", "alice", [MemoryDraft("I read at night.")])
    assert new.id not in {m.id for m in old} and store.consistency("t1", "alice")["index"] == 3
    store.close()


def test_a_memory_file_of_its_own_gets_the_whole_schema_and_keeps_its_memories(tmp_path: Path) -> None:
    path = copy("memory-97e7821.db", tmp_path)
    with sqlite3.connect(path) as conn:
        assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'schema_version'").fetchall()
    store = SqliteFaissStore(open_database(path), FourD())
    assert [m.text for m in store.list("t1", "bob")] == ["I hate flying."]
    assert store.delete_user("t1", "bob", tombstone_at=0.0) == 1
    store.close()
    assert versions(path) == list(range(1, NEWEST + 1))


def test_the_memory_store_makes_no_table_of_its_own(tmp_path: Path) -> None:
    bare = tmp_path / "bare.db"
    sqlite3.connect(bare).close()

    class Unmigrated:  # a database nobody migrated: the store finds no table and says so
        def __init__(self) -> None:
            self.conn = sqlite3.connect(bare, isolation_level=None)

        def execute(self, sql, params=()):  # type: ignore[no-untyped-def]
            return self.conn.execute(sql, params).fetchall()

        def close(self) -> None:
            self.conn.close()

    with pytest.raises(sqlite3.OperationalError, match="no such table: store_info"):
        SqliteFaissStore(Unmigrated(), FourD())  # type: ignore[arg-type]
    with sqlite3.connect(bare) as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)


@pytest.mark.parametrize("name", ["steer-97e7821.db", "memory-97e7821.db"])
def test_a_database_from_a_newer_steer_is_refused_not_misread(tmp_path: Path, name: str) -> None:
    path = copy(name, tmp_path)
    open_database(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_version VALUES (?, 0)", (NEWEST + 1,))
    with pytest.raises(SchemaTooNew, match=f"schema version {NEWEST + 1}; this steer knows up to {NEWEST}"):
        open_database(path)


def test_every_migration_script_is_written_once_for_every_dialect_with_its_type_tokens() -> None:
    from steer.storage.migrations import TYPES, statements

    for _, script in MIGRATIONS:
        for dialect in TYPES:
            for statement in statements(script, dialect):
                # no type token left; "$$" only quotes a function body
                assert "$" not in statement.replace("$$", "") and "OR REPLACE" not in statement.upper()
                assert " user " not in f" {statement} ".replace("\n", " ").replace(",", " ")  # quoted: "user"


def test_a_url_of_an_unknown_scheme_is_refused_not_taken_for_a_file_name(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="unsupported scheme 'mysql'"):
        open_database("mysql://steer@db/steer")
    assert list(tmp_path.iterdir()) == []
