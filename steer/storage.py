"""The one SQLite file where steer keeps what it persists (WAL mode, versioned migrations).

Each migration is a numbered SQL script applied once, in order, inside a transaction; the
applied version is kept in ``schema_version``. A newer file opened by an older steer is refused
rather than misread.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

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

    def close(self) -> None:
        with self._lock:
            self._conn.close()
