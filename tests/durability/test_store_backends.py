"""The storage seam on both backends: the same contract on an embedded SQLite file and on a real
PostgreSQL server (tests/postgres_server.py), with real MiniLM embeddings and real FAISS indexes.

Also PostgreSQL's own parts: migrations (applied once by concurrent openers, a newer schema
refused), change announcements between two handles, ``steer db copy`` (idempotent, counts per
table) and clear start-up errors for a database steer cannot use.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import free_port, wait_for
from postgres_server import PostgresServer

from retrieval.sqlite_store import SqliteFaissStore
from retrieval.store import MemoryDraft, MemoryNotFound, OwnerForgotten
from steer.errors import StoreUnavailable
from steer.storage import align_cache, open_database
from steer.storage.copy import TABLES, copy_rows
from steer.storage.database import Database, SchemaTooNew
from steer.storage.migrations import MIGRATIONS, latest
from steer.storage.profiles import ProfileStore
from steer.storage.request_log import RequestLog

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "unit" / "fixtures" / "steer-97e7821.db"
NEWEST = latest(MIGRATIONS)


@pytest.fixture(scope="module")
def embedder() -> Any:
    from retrieval.embeddings import shared_embedder

    return shared_embedder(None)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "steer.db")
    return str(request.getfixturevalue("fresh_postgres_db"))


@pytest.fixture
def db(url: str) -> Iterator[Database]:
    handle = open_database(url)
    yield handle
    handle.close()


def rows_mentioning(db: Database, needle: str) -> dict[str, int]:
    """Per table, the rows any text column of which contains ``needle``."""
    found = {}
    for table in TABLES:
        text_cols = [c for c in db.columns(table) if c not in ("embedding",)]
        where = " OR ".join(f'CAST("{c}" AS TEXT) LIKE ?' for c in text_cols)
        n = int(db.execute(f"SELECT COUNT(*) FROM {table} WHERE {where}", [f"%{needle}%"] * len(text_cols))[0][0])
        if n:
            found[table] = n
    return found


def test_memories_round_trip_with_history_and_search_on_both_backends(url: str, embedder: Any) -> None:
    store = SqliteFaissStore(open_database(url), embedder)
    try:
        tea, jazz = store.add("t1", "alice", [MemoryDraft("I drink green tea every morning."),
                                               MemoryDraft("I love jazz records.")])  # fmt: skip
        store.add("t1", "bob", [MemoryDraft("I am allergic to peanuts.")])
        (hit,) = store.search("t1", "alice", "what should I drink in the morning?", k=1)
        assert hit.memory.id == tea.id and hit.score > 0.3
        assert {h.memory.user for h in store.search("t1", "alice", "peanuts allergy", k=5)} == {"alice"}
        with pytest.raises(MemoryNotFound):
            store.get("t1", "bob", tea.id)  # another user's id reads as not found
        coffee = store.update("t1", "alice", tea.id, text="I drink black coffee every morning.")
        assert coffee.text.startswith("I drink black coffee")
        (newer,) = store.add("t1", "alice", [MemoryDraft("I now prefer classical music.")])
        store.supersede("t1", "alice", jazz.id, newer.id)
        assert [m.id for m in store.list("t1", "alice")] == [tea.id, newer.id]
        history = store.list("t1", "alice", include_history=True)
        assert {m.id: m.superseded_by for m in history} == {tea.id: None, jazz.id: newer.id, newer.id: None}
        assert store.consistency("t1", "alice") == {"memories": 2, "table": 2, "recorded": 2, "index": 2}
        store.delete("t1", "alice", newer.id)  # the superseded memory is current again
        assert {m.id for m in store.list("t1", "alice")} == {tea.id, jazz.id}
        assert store.search("t1", "alice", "jazz", k=1)[0].memory.id == jazz.id
        exported = store.export("t1", "alice")
        assert {m["text"] for m in exported["memories"]} == {coffee.text, jazz.text}
        forgotten_at = time.time()
        assert store.delete_user("t1", "alice", tombstone_at=forgotten_at) == 2
        assert store.list("t1", "alice", include_history=True) == [] and store.search("t1", "alice", "jazz") == []
        with pytest.raises(OwnerForgotten):  # work that began before the forget writes nothing
            store.add("t1", "alice", [MemoryDraft("I like tea.")], began=forgotten_at - 1)
        assert store.count("t1", "bob") == 1
    finally:
        store.close()


def test_every_table_of_a_user_is_exported_and_forgotten_on_both_backends(db: Database) -> None:
    """The request log, the align cache, profiles: written, read back, deleted; tombstones refuse late writes."""
    began = time.time()
    log = RequestLog(db)
    log.add(("trace-1", began, "t1", "carol", "default", "m", 200, True, 1.5, 3, 4, "[]", "carol's secret prompt"))
    asyncio.run(log.flush())
    assert [r["prompt"] for r in log.export("t1", "carol")] == ["carol's secret prompt"]
    key = ("t1", "carol", "aligner", "digest")
    assert align_cache.put(db, key, "carol's secret rewrite", "parsed", began, persist=True)
    assert align_cache.get(db, key) == ("carol's secret rewrite", "parsed")
    profiles = ProfileStore(db)
    assert profiles.export("t1", "carol") is not None
    assert rows_mentioning(db, "carol's secret") == {"request_log": 1, "align_cache": 1}
    assert log.forget("t1", "carol") == 1 and align_cache.forget(db, "t1", "carol") == 1
    assert rows_mentioning(db, "carol's secret") == {}
    from steer.storage.forgotten import mark_forgotten

    mark_forgotten(db, "t1", "carol", time.time())
    assert not align_cache.put(db, key, "late rewrite", "parsed", began, persist=True)  # began before the forget
    log.add(("trace-2", began, "t1", "carol", "default", "m", 200, False, 1.0, 1, 1, "[]", "late prompt"), began)
    asyncio.run(log.flush())
    assert rows_mentioning(db, "late") == {}


def test_two_handles_on_one_database_serve_each_others_writes_at_once(url: str, embedder: Any) -> None:
    """Two stores on one database (two replicas): a write on A is recalled on B, a forget on B leaves A
    serving nothing of the user, with each one's index already loaded."""
    a = SqliteFaissStore(open_database(url), embedder)
    b = SqliteFaissStore(open_database(url), embedder)
    try:
        (tea,) = a.add("t1", "dana", [MemoryDraft("I drink green tea.")])
        assert b.search("t1", "dana", "tea", k=1)[0].memory.id == tea.id  # B loads its index now
        (vegan,) = a.add("t1", "dana", [MemoryDraft("I am vegan.")])
        assert vegan.id in {h.memory.id for h in b.search("t1", "dana", "diet", k=2)}
        b.delete_user("t1", "dana", tombstone_at=time.time())
        assert a.search("t1", "dana", "tea", k=2) == [] and a.list("t1", "dana") == []
    finally:
        a.close()
        b.close()


def test_postgresql_announces_every_change_of_a_users_state_to_other_handles(
    fresh_postgres_db: str, embedder: Any
) -> None:
    listener = open_database(fresh_postgres_db)
    seen: list[tuple[str | None, str | None]] = []
    listener.on_change(lambda tenant, user: seen.append((tenant, user)))  # type: ignore[attr-defined]
    time.sleep(0.5)  # the listener thread connects
    store = SqliteFaissStore(open_database(fresh_postgres_db), embedder)
    try:
        (_m,) = store.add("t1", "erin", [MemoryDraft("I like hiking.")])
        assert wait_for(lambda: ("t1", "erin") in seen, timeout=10)
        seen.clear()
        store.delete_user("t1", "erin")
        assert wait_for(lambda: ("t1", "erin") in seen, timeout=10)
        assert all(s == ("t1", "erin") for s in seen)  # another user's change is not announced as erin's
    finally:
        store.close()
        listener.close()


def test_postgresql_migrations_apply_once_under_concurrent_openers_and_a_newer_schema_is_refused(
    fresh_postgres_db: str,
) -> None:
    errors: list[BaseException] = []

    def open_close() -> None:
        try:
            open_database(fresh_postgres_db).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_close) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with psycopg.connect(fresh_postgres_db) as conn:
        versions = [v for (v,) in conn.execute("SELECT version FROM schema_version ORDER BY version")]
        assert versions == sorted({v for v, _ in MIGRATIONS})
        conn.execute("INSERT INTO schema_version VALUES (%s, 0)", (NEWEST + 1,))
        conn.commit()
    with pytest.raises(SchemaTooNew, match=f"schema version {NEWEST + 1}; this steer knows up to {NEWEST}"):
        open_database(fresh_postgres_db)


def steer_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "steer", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def counts(output: str) -> dict[str, tuple[int, int]]:
    out = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] in TABLES:
            out[parts[0]] = (int(parts[1]), int(parts[2]))
    return out


def test_db_copy_moves_an_embedded_database_to_postgresql_once_with_counts_per_table(
    tmp_path: Path, fresh_postgres_db: str, embedder: Any
) -> None:
    import shutil

    source = tmp_path / "steer.db"
    shutil.copy(FIXTURE, source)
    first = steer_cli("db", "copy", "--from", str(source), "--to", fresh_postgres_db)
    assert first.returncode == 0, first.stderr
    copied = counts(first.stdout)
    assert set(copied) == set(TABLES) and all(src == added for src, added in copied.values())
    assert copied["memories"] == (2, 2) and sum(a for _, a in copied.values()) > 2
    assert "postgres@" not in first.stdout  # the URL's user (and any password) is not printed
    second = steer_cli("db", "copy", "--from", str(source), "--to", fresh_postgres_db)
    assert second.returncode == 0 and all(added == 0 for _, added in counts(second.stdout).values())
    # the copied store serves as the original did; new feedback ids continue past the copied ones
    store = SqliteFaissStore(open_database(fresh_postgres_db), _FourD())
    try:
        assert [m.text for m in store.list("t1", "alice")] == ["I love jazz.", "I am vegan."]
        store.add("t1", "alice", [MemoryDraft("I read at night.")])
        assert store.consistency("t1", "alice")["index"] == 3
    finally:
        store.close()
    pg = open_database(fresh_postgres_db)
    try:
        (max_id,) = pg.execute("SELECT max(id) FROM feedback")[0]
        (new_id,) = pg.execute(
            "INSERT INTO feedback (tenant, \"user\", completion_id, created_at, kind, scorer, attributes, pairs) "
            "VALUES ('t1', 'zed', 'c', 0, 'rating', 's', '[]', '[]') RETURNING id"
        )[0]
        assert new_id > max_id
    finally:
        pg.close()
    migrate = steer_cli("db", "migrate", "--database", fresh_postgres_db)
    assert migrate.returncode == 0 and f"schema version {NEWEST}" in migrate.stdout


class _FourD:
    """The 4-d embedder the fixture file was made with (tests/unit/fixtures/README)."""

    dim, name = 4, "fake-4d"

    def encode(self, texts: list[str]) -> Any:
        import numpy as np

        out = np.zeros((len(texts), 4), dtype=np.float32)
        for i, t in enumerate(texts):
            out[i, len(t) % 4] = 1.0
        return out


def test_copy_rows_between_two_sqlite_files_is_idempotent(tmp_path: Path) -> None:
    import shutil

    shutil.copy(FIXTURE, tmp_path / "a.db")
    a, b = open_database(tmp_path / "a.db"), open_database(tmp_path / "b.db")
    try:
        first = copy_rows(a, b)
        assert all(c.source == c.added for c in first) and sum(c.added for c in first) > 0
        assert all(c.added == 0 for c in copy_rows(a, b))
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize(
    ("database", "says"),
    [
        ("mysql://steer@127.0.0.1/steer", "unsupported scheme 'mysql'"),
        ("postgresql://steer@127.0.0.1:{port}/steer", "cannot use the database postgresql://127.0.0.1:{port}/steer"),
        ("os.environ/STEER_TEST_NO_SUCH_VARIABLE", "STEER_TEST_NO_SUCH_VARIABLE is not set"),
    ],
)
def test_a_database_steer_cannot_use_is_one_clear_line_at_start_up(tmp_path: Path, database: str, says: str) -> None:
    port = free_port()  # nothing listens there
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "steer", "serve", "--database", database.format(port=port), "--port", str(free_port())],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert done.returncode == 2 and says.format(port=port) in done.stderr
    assert len(done.stderr.strip().splitlines()) <= 2 and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []  # no SQLite file named after the URL
    assert time.monotonic() - started < 60


def test_a_stopped_server_is_store_unavailable_at_once_and_the_same_handle_recovers(
    make_postgres: Any,
) -> None:
    server: PostgresServer = make_postgres()
    db = open_database(server.url)
    try:
        db.execute("CREATE TABLE IF NOT EXISTS probe (x INTEGER)")
        server.stop("fast")
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable) as refused:
            db.execute("SELECT 1")
        assert refused.value.status == 503 and refused.value.code == "store_unavailable"
        assert "postgres@" not in refused.value.message
        with pytest.raises(StoreUnavailable), db.transaction() as tx:
            tx.execute("INSERT INTO probe VALUES (1)")
        assert time.monotonic() - t0 < 15  # within the pool timeouts, not a hang
        server.start()
        assert wait_for(lambda: _answers(db), timeout=20)
        with db.transaction() as tx:
            tx.execute("INSERT INTO probe VALUES (2)")
        assert db.execute("SELECT x FROM probe") == [(2,)]
    finally:
        db.close()


def _answers(db: Database) -> bool:
    try:
        return db.execute("SELECT 1") == [(1,)]
    except StoreUnavailable:
        return False


def test_index_device_gpu_without_faiss_gpu_is_a_clear_start_up_error(tmp_path: Path) -> None:
    from retrieval.faiss_index import gpu_available

    cfg = tmp_path / "steer.yaml"
    cfg.write_text(f"database: {tmp_path / 'steer.db'}\nmemory:\n  index_device: gpu\n")
    if gpu_available():  # faiss-gpu with a GPU: the setting is honoured (the start-up check passes)
        from steer.cli import check_index_device
        from steer.settings import load_settings

        assert check_index_device(load_settings(cfg)) is None
        return
    done = subprocess.run(
        [sys.executable, "-m", "steer", "serve", "--config", str(cfg), "--port", str(free_port())],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert done.returncode == 2 and "install faiss-gpu" in done.stderr and "Traceback" not in done.stderr


def test_two_handles_on_postgresql_given_the_same_statement_at_once_store_one_memory(
    fresh_postgres_db: str, embedder: Any
) -> None:
    """The memory API's write (look for a duplicate under the owner lock, then add) on two stores of one
    database, as on two replicas: the owner lock is held across them, so the second finds the first."""
    stores = [SqliteFaissStore(open_database(fresh_postgres_db), embedder) for _ in range(2)]
    start = threading.Barrier(4)
    created: list[bool] = []

    def write(store: SqliteFaissStore) -> None:
        start.wait()
        with store.owner_lock("t1", "fay"):
            found = store.search("t1", "fay", "I am allergic to shellfish.", k=1)
            if found and found[0].score >= 0.97:
                created.append(False)
                return
            store.add("t1", "fay", [MemoryDraft("I am allergic to shellfish.")])
            created.append(True)

    try:
        threads = [threading.Thread(target=write, args=(stores[i % 2],)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert sorted(created) == [False, False, False, True]
        assert [m.text for m in stores[1].list("t1", "fay")] == ["I am allergic to shellfish."]
    finally:
        for s in stores:
            s.close()


def test_a_nul_character_in_stored_text_is_kept_as_a_replacement_character_on_postgresql(
    fresh_postgres_db: str, embedder: Any
) -> None:
    store = SqliteFaissStore(open_database(fresh_postgres_db), embedder)
    try:
        (m,) = store.add("t1", "gus", [MemoryDraft("I like tea\x00 with milk.")])
        assert store.get("t1", "gus", m.id).text == "I like tea\ufffd with milk."
    finally:
        store.close()
