"""The one SQLite file where steer keeps what it persists (WAL mode, versioned migrations).

Each migration is a numbered SQL script applied once, in order, inside a transaction; the
applied version is kept in ``schema_version``. A newer file opened by an older steer is refused
rather than misread.

``forgotten`` holds the tombstones of forgotten users (a SHA-256 of tenant and user, and a time;
the same table the memory store keeps in its own file): every write of a user's data made for a
request or job appends ``NOT_FORGOTTEN`` with (``owner_key``, when that work began) to its statement,
so a write of work that began before the user was forgotten lands nowhere.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from retrieval.store import TOMBSTONE_TTL_S, owner_key

# appended to a write's WHERE clause, with (owner_key(tenant, user), began) as its parameters
NOT_FORGOTTEN = "NOT EXISTS (SELECT 1 FROM forgotten WHERE owner = ? AND at >= ?)"

MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE request_log (
            trace_id      TEXT PRIMARY KEY,
            created_at    REAL NOT NULL,
            tenant        TEXT NOT NULL,
            user          TEXT,
            policy        TEXT NOT NULL,
            model         TEXT NOT NULL,
            status        INTEGER NOT NULL,
            stream        INTEGER NOT NULL,
            latency_ms    REAL NOT NULL,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            stages        TEXT,
            prompt        TEXT
        );
        CREATE INDEX request_log_user ON request_log (tenant, user, created_at);
        """,
    ),
    (
        2,
        """
        CREATE TABLE align_cache (
            tenant     TEXT NOT NULL,
            user       TEXT NOT NULL,
            model      TEXT NOT NULL,
            key        TEXT NOT NULL,
            rewrite    TEXT,
            outcome    TEXT NOT NULL,
            created_at REAL NOT NULL,
            PRIMARY KEY (tenant, user, model, key)
        );
        """,
    ),
    (
        3,
        """
        CREATE TABLE profile_priors (
            tenant     TEXT NOT NULL,
            scorer     TEXT NOT NULL,
            attributes TEXT NOT NULL,
            prototypes TEXT NOT NULL,
            logits     TEXT NOT NULL,
            users      INTEGER NOT NULL,
            events     INTEGER NOT NULL,
            fitted_at  REAL NOT NULL,
            PRIMARY KEY (tenant, scorer)
        );
        CREATE TABLE user_profiles (
            tenant     TEXT NOT NULL,
            user       TEXT NOT NULL,
            scorer     TEXT NOT NULL,
            attributes TEXT NOT NULL,
            mixture    TEXT NOT NULL,
            offsets    TEXT NOT NULL,
            seeds      TEXT NOT NULL,
            pinned     TEXT NOT NULL,
            events     INTEGER NOT NULL,
            since      INTEGER NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (tenant, user, scorer)
        );
        CREATE TABLE served_completions (
            tenant        TEXT NOT NULL,
            completion_id TEXT NOT NULL,
            user          TEXT NOT NULL,
            created_at    REAL NOT NULL,
            scorer        TEXT NOT NULL,
            attributes    TEXT NOT NULL,
            scores        TEXT NOT NULL,
            returned      TEXT NOT NULL,
            chosen        INTEGER NOT NULL,
            context       TEXT,
            PRIMARY KEY (tenant, completion_id)
        );
        CREATE INDEX served_completions_user ON served_completions (tenant, user, created_at);
        CREATE TABLE feedback (
            id            INTEGER PRIMARY KEY AUTOINCREMENT,
            tenant        TEXT NOT NULL,
            user          TEXT NOT NULL,
            completion_id TEXT NOT NULL,
            created_at    REAL NOT NULL,
            kind          TEXT NOT NULL,
            rating        REAL,
            choice        INTEGER,
            edit          TEXT,
            scorer        TEXT NOT NULL,
            attributes    TEXT NOT NULL,
            pairs         TEXT NOT NULL
        );
        CREATE INDEX feedback_user ON feedback (tenant, user, scorer, id);
        """,
    ),
    (
        4,
        """
        ALTER TABLE profile_priors ADD COLUMN support TEXT;
        """,
    ),
    (
        5,
        """
        ALTER TABLE align_cache ADD COLUMN origin TEXT NOT NULL DEFAULT '';
        CREATE INDEX align_cache_origin ON align_cache (tenant, origin);
        """,
    ),
    (
        6,
        """
        CREATE TABLE IF NOT EXISTS forgotten (owner TEXT PRIMARY KEY, at REAL NOT NULL);
        DELETE FROM align_cache WHERE user = '';
        """,
    ),
)


class SchemaTooNew(RuntimeError):
    pass


class Database:
    """A thread-safe handle on the SQLite file; blocking calls are for worker threads."""

    def __init__(self, path: str | Path, migrations: Sequence[tuple[int, str]] = MIGRATIONS) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._lock = threading.Lock()
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.execute("PRAGMA secure_delete=ON")  # deleted rows are zeroed, not left in free pages
        self.migrate(migrations)

    @property
    def version(self) -> int:
        row = self._conn.execute("SELECT max(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    def migrate(self, migrations: Sequence[tuple[int, str]]) -> None:
        with self._lock:
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at REAL)"
            )
            current = self.version
            latest = max((v for v, _ in migrations), default=0)
            if current > latest:
                raise SchemaTooNew(
                    f"{self.path} has schema version {current}; this steer knows up to {latest}"
                )
            for version, script in sorted(migrations):
                if version <= current:
                    continue
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    for statement in script.split(";"):
                        if statement.strip():
                            self._conn.execute(statement)
                    self._conn.execute(
                        "INSERT INTO schema_version VALUES (?, strftime('%s','now'))", (version,)
                    )
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                self._conn.executemany(sql, rows)
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:  # SQLITE_FULL rolls back by itself
                    self._conn.execute("ROLLBACK")
                raise

    def mark_forgotten(self, tenant: str, user: str, at: float) -> None:
        """Set the user's tombstone to ``at`` (writes of work that began at or before it are dropped);
        tombstones older than ``TOMBSTONE_TTL_S`` go."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute("DELETE FROM forgotten WHERE at < ?", (time.time() - TOMBSTONE_TTL_S,))
                self._conn.execute("INSERT OR REPLACE INTO forgotten VALUES (?, ?)", (owner_key(tenant, user), at))
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()


# every table holding prompts or user text with a timestamp, and what retention does to its old rows:
# deleted, or (feedback: its learned pairs stay) the user's text cleared
RETENTION = {
    "request_log": "DELETE FROM request_log WHERE created_at < ? RETURNING 1",
    "served_completions": "DELETE FROM served_completions WHERE created_at < ? RETURNING 1",
    "align_cache": "DELETE FROM align_cache WHERE created_at < ? RETURNING 1",
    "feedback_edits": "UPDATE feedback SET edit = NULL WHERE edit IS NOT NULL AND created_at < ? RETURNING 1",
}


def purge_expired(db: Database, cutoff: float) -> dict[str, int]:
    """Apply ``RETENTION`` to rows older than ``cutoff`` (a ``time.time()``); rows touched per table. When any
    were, the WAL is checkpointed and emptied, so their text leaves the WAL as well as the file."""
    removed = {name: len(db.execute(sql, (cutoff,))) for name, sql in RETENTION.items()}
    if any(removed.values()):
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return removed


def tombstone_args(tenant: str, user: str | None, began: float) -> tuple[str, float] | None:
    """The parameters of ``NOT_FORGOTTEN`` for a write of work begun at ``began``; None when that work began
    longer ago than tombstones are kept (``TOMBSTONE_TTL_S``): such a write is dropped, as if forgotten."""
    if began < time.time() - TOMBSTONE_TTL_S:
        return None
    return ("" if user is None else owner_key(tenant, user)), began
