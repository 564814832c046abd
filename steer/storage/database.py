"""The database seam: the ``Database`` protocol every backend implements, and the embedded SQLite one.

Every table's SQL is written against :class:`Database`: standard SQL with ``?`` placeholders (a
backend whose driver spells them otherwise rewrites them), ``INSERT ... ON CONFLICT`` for upserts,
``RETURNING`` to learn what a statement touched, and the column ``user`` always quoted. Opening a
database applies the migrations (``steer.storage.migrations``) it lacks; one whose schema is newer
than this steer knows is refused (:class:`SchemaTooNew`).

:class:`SqliteDatabase` is one file in WAL mode, ``synchronous=FULL`` (every commit reaches the
disk before it returns) and ``secure_delete`` (a deleted row's bytes are zeroed, not left in free
pages), shared by threads: every call takes the handle's lock, so blocking calls belong in worker
threads.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

from steer.storage.migrations import MIGRATIONS, SCHEMA_VERSION, Migration, latest, statements


class Rows(Protocol):
    """Runs one statement: its rows (none for a statement that returns none)."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...


class Database(Rows, Protocol):
    """What steer's storage runs on. ``execute`` outside a transaction commits by itself."""

    @property
    def dialect(self) -> str:
        """The SQL dialect (a key of ``steer.storage.migrations.TYPES``)."""
        ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """One statement over many parameter rows, all or none."""
        ...

    def transaction(self) -> AbstractContextManager[Rows]:
        """A write transaction: statements run through what it yields commit together when the block
        ends, or none of them when it raises. Other writers wait for it."""
        ...

    def checkpoint(self) -> None:
        """Make deleted data leave every file the database keeps (SQLite: fold the WAL into the file
        and empty it), after deleting a user's text."""
        ...

    def columns(self, table: str) -> list[str]:
        """The column names of ``table``, in order."""
        ...

    def after_copy(self, table: str) -> None:
        """After rows were copied into ``table`` with their ids (``steer db copy``): make the ids it numbers
        itself continue past them."""
        ...

    def close(self) -> None: ...


class SchemaTooNew(RuntimeError):
    pass


def upsert(table: str, columns: Sequence[str], key: Sequence[str], source: str | None = None) -> str:
    """``INSERT INTO table (columns) <source> ON CONFLICT (key) DO UPDATE SET`` every other column: the row
    replaces the one with its key. ``source``: ``VALUES`` with one ``?`` per column by default, or a
    ``SELECT ... WHERE ...`` (the WHERE is needed: without it SQLite reads ``ON CONFLICT`` as a join's)."""
    cols = ", ".join(columns)
    rest = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
    source = source or f"VALUES ({', '.join('?' * len(columns))})"
    return f"INSERT INTO {table} ({cols}) {source} ON CONFLICT ({', '.join(key)}) DO UPDATE SET {rest}"


class _Connection:
    """``Rows`` on a raw connection, inside a transaction its owner holds."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, params).fetchall()


class SqliteDatabase:
    """A thread-safe handle on one SQLite file; blocking calls are for worker threads.

    ``synchronous``: SQLite's setting (FULL, steer's; NORMAL or OFF for throw-away evaluation stores);
    ``busy_timeout_s``: how long a statement waits for another connection's write lock.
    """

    dialect = "sqlite"

    def __init__(
        self,
        path: str | Path,
        migrations: Sequence[Migration] = MIGRATIONS,
        *,
        synchronous: str = "FULL",
        busy_timeout_s: float = 30.0,
    ) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=busy_timeout_s
        )
        self._lock = threading.RLock()
        self._rows = _Connection(self._conn)
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(f"PRAGMA synchronous={synchronous}")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.execute("PRAGMA secure_delete=ON")  # deleted rows are zeroed, not left in free pages
            self.migrate(migrations)
        except BaseException:
            self._conn.close()
            raise

    @property
    def version(self) -> int:
        with self._lock:
            return self._version()

    def _version(self) -> int:
        row = self._conn.execute("SELECT max(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    def migrate(self, migrations: Sequence[Migration]) -> None:
        """Apply, in order, each migration newer than the file's version, each in its own transaction
        (a process opening the same file at the same time applies none twice)."""
        newest = latest(migrations)
        with self._lock:
            self._conn.execute(statements(SCHEMA_VERSION, self.dialect)[0])
            current = self._version()
            if current > newest:
                raise SchemaTooNew(f"{self.path} has schema version {current}; this steer knows up to {newest}")
            for version, script in sorted(migrations, key=lambda m: m[0]):
                if version <= current:
                    continue
                with self.transaction() as tx:
                    current = self._version()  # under the write lock: another process may have applied it
                    if version <= current:
                        continue
                    for statement in statements(script, self.dialect):
                        tx.execute(statement)
                    tx.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (version, time.time()))
                current = version

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self.transaction():
            self._conn.executemany(sql, rows)

    @contextmanager
    def transaction(self) -> Iterator[Rows]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._rows
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:  # SQLITE_FULL and some I/O errors roll back by themselves
                    self._conn.execute("ROLLBACK")
                raise

    def checkpoint(self) -> None:
        self.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def columns(self, table: str) -> list[str]:
        return [r[1] for r in self.execute("SELECT * FROM pragma_table_info(?)", (table,))]

    def after_copy(self, table: str) -> None:
        """Nothing: AUTOINCREMENT continues past the largest id in the table by itself."""

    def close(self) -> None:
        with self._lock:
            self._conn.close()
