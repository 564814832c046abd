"""PostgreSQL as steer's shared store: the ``Database`` protocol on a psycopg 3 connection pool.

Rules:
- The SQL is the same as on SQLite (``steer.storage.database``): ``?`` placeholders are rewritten to
  psycopg's ``%s`` (a ``?`` or ``%`` inside a '...' string or a "..." name is left alone), values are
  sent as bound parameters, a Python ``bool`` is sent as the integer the columns hold, and a NUL
  character in a string (which PostgreSQL text cannot hold; ids never contain one) as U+FFFD.
- Results come in binary (a vector blob is read as its bytes, not as hex text). ``execute``
  outside a transaction runs on a pooled connection in autocommit; ``transaction()``
  holds one connection for its block (READ COMMITTED: two writers of the same rows wait on each
  other's row locks, not on a database-wide lock as on SQLite).
- Failures to reach the server (refused, reset, restarting, a statement past
  ``statement_timeout_s``, no pooled connection free within ``pool_timeout_s``) raise
  :class:`steer.errors.StoreUnavailable` (503 ``store_unavailable``); nothing waits longer than
  those timeouts. A statement outside a transaction that finds its pooled connection broken (the
  server restarted since) is retried once on a fresh one; the pool reconnects by itself, so steer
  recovers without a restart when the server comes back.
- Migrations run under a session advisory lock: replicas starting together apply each once.
  A schema newer than this steer knows is refused (``SchemaTooNew``), as on SQLite.
- ``on_change(callback)``: a listener thread (its own connection, ``LISTEN``) calls
  ``callback(tenant, user)`` for every change announced by migration 8's triggers, and
  ``callback(None, None)`` after its connection was lost (announcements may have been missed).
  It drops caches early; it is not what makes a cache correct (each cache use checks a version).
- ``lock(key)``: a lock held across processes (an advisory lock): the memory store's per-user
  write lock uses it, so two replicas given the same statement at once store one memory.
- ``checkpoint()`` does nothing: a deleted row is gone from every table when its transaction
  commits; its bytes stay in the table's dead space until VACUUM reuses it, and in WAL segments
  until they are recycled (docs/security.md).
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from steer.errors import StoreUnavailable
from steer.storage.database import Rows, SchemaTooNew
from steer.storage.migrations import CHANGES_CHANNEL, MIGRATIONS, SCHEMA_VERSION, Migration, latest, statements

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

log = logging.getLogger("steer.storage")

SCHEMES = ("postgresql://", "postgres://")
MIGRATION_LOCK = 0x5_7EE2  # the advisory lock key migrations run under
ChangeCallback = Callable[[str | None, str | None], None]


@dataclass(frozen=True)
class PoolOptions:
    """How a process talks to PostgreSQL: its pool's size and its timeouts (``Settings`` sets them)."""

    min_size: int = 1
    max_size: int = 8
    connect_timeout_s: float = 5.0  # to open one connection
    pool_timeout_s: float = 3.0  # to get a pooled connection (all busy, or the server down)
    statement_timeout_s: float = 30.0  # the server cancels a statement running longer


def describe(url: str) -> str:
    """``host:port/dbname`` of a URL, without its user or password (for messages and logs)."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = conninfo_to_dict(url)
    except Exception:
        return "postgresql://(unparsable URL)"
    return f"postgresql://{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"


@functools.lru_cache(maxsize=2048)
def to_psycopg(sql: str) -> str:
    """``sql`` with each ``?`` placeholder as ``%s`` and each other ``%`` doubled, outside quotes."""
    out: list[str] = []
    quote = ""
    for ch in sql:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "?":
            out.append("%s")
            continue
        if ch == "%":
            out.append("%%")
            continue
        out.append(ch)
    return "".join(out)


def _param(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "\ufffd")  # PostgreSQL text cannot hold NUL
    return value


def _params(params: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(_param(p) for p in params)


def _unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the server cannot be used now (rather than that the statement is wrong)."""
    import psycopg
    from psycopg_pool import PoolTimeout, TooManyRequests

    if isinstance(exc, PoolTimeout | TooManyRequests | psycopg.OperationalError | psycopg.InterfaceError):
        return True
    return isinstance(exc, psycopg.errors.AdminShutdown | psycopg.errors.CannotConnectNow)


class _Connection:
    """``Rows`` on one connection, inside a transaction its owner holds."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = self._conn.execute(to_psycopg(sql), _params(params), binary=True)  # bytea as bytes, not hex
        return cur.fetchall() if cur.description is not None else []


class PostgresDatabase:
    """A pooled, thread-safe handle on one PostgreSQL database (``postgresql://`` URL)."""

    dialect = "postgresql"

    def __init__(
        self, url: str, migrations: Sequence[Migration] = MIGRATIONS, *, options: PoolOptions = PoolOptions()
    ) -> None:
        import psycopg
        from psycopg_pool import ConnectionPool

        self.url = url
        self.where = describe(url)
        self.options = options
        self._kwargs: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": max(1, round(options.connect_timeout_s)),
            "options": f"-c statement_timeout={int(options.statement_timeout_s * 1000)}",
        }
        try:  # one direct connection first: an unreachable server is a clear error now, not a pool timeout
            with psycopg.connect(url, **self._kwargs) as conn:
                self._migrate(conn, migrations)
        except psycopg.Error as exc:
            raise StoreUnavailable(f"cannot use the database {self.where}: {_first_line(exc)}") from exc
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            url,
            min_size=options.min_size,
            max_size=max(options.max_size, options.min_size),
            kwargs=self._kwargs,
            timeout=options.pool_timeout_s,
            reconnect_timeout=0,  # keep trying while the server is down (0: never give up)
            open=False,
            name="steer",
        )
        self._pool.open(wait=False)
        self._callbacks: list[ChangeCallback] = []
        self._listener: threading.Thread | None = None
        self._closed = threading.Event()

    # -- schema -------------------------------------------------------------------------------
    def _migrate(self, conn: psycopg.Connection[Any], migrations: Sequence[Migration]) -> None:
        newest = latest(migrations)
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        try:
            conn.execute(statements(SCHEMA_VERSION, self.dialect)[0])
            current = self._version(conn)
            if current > newest:
                raise SchemaTooNew(f"{self.where} has schema version {current}; this steer knows up to {newest}")
            for version, script in sorted(migrations, key=lambda m: m[0]):
                if version <= current:
                    continue
                with conn.transaction():
                    for statement in statements(script, self.dialect):
                        conn.execute(to_psycopg(statement))
                    conn.execute(
                        "INSERT INTO schema_version (version, applied_at) VALUES (%s, %s)", (version, time.time())
                    )
                current = version
        finally:
            if not conn.closed:
                conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))

    @staticmethod
    def _version(conn: psycopg.Connection[Any]) -> int:
        row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        return int(row[0] or 0) if row else 0

    @property
    def version(self) -> int:
        return int(self.execute("SELECT max(version) FROM schema_version")[0][0] or 0)

    # -- Database ---------------------------------------------------------------------------
    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            with self._pool.connection() as conn:
                yield conn
        except StoreUnavailable:
            raise
        except Exception as exc:
            if _unreachable(exc):
                raise StoreUnavailable(f"the database {self.where} is unavailable: {_first_line(exc)}") from exc
            raise

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        for attempt in (1, 2):
            try:
                with self._connection() as conn:
                    return _Connection(conn).execute(sql, params)
            except StoreUnavailable as exc:
                # a pooled connection the server closed (it restarted since): once more, on a fresh one
                if attempt == 2 or not _broken_connection(exc):
                    raise
        raise AssertionError("unreachable")

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self._connection() as conn, conn.transaction(), conn.cursor() as cur:
            cur.executemany(to_psycopg(sql), [_params(r) for r in rows])

    @contextmanager
    def transaction(self) -> Iterator[Rows]:
        with self._connection() as conn, conn.transaction():
            yield _Connection(conn)

    def checkpoint(self) -> None:
        """Nothing to do: see the module's rules (what stays in dead space and WAL until reused)."""

    def columns(self, table: str) -> list[str]:
        """The column names of ``table``, in order."""
        rows = self.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = ? ORDER BY ordinal_position",
            (table,),
        )
        return [r[0] for r in rows]

    def after_copy(self, table: str) -> None:
        """After rows were copied in with their ids: move an auto-numbered id past the largest one."""
        if table == "feedback":
            self.execute(
                "SELECT setval(pg_get_serial_sequence('feedback', 'id'), GREATEST((SELECT max(id) FROM feedback), 1))"
            )

    @contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """Hold a lock named ``key`` across every process on this database for the block (an advisory
        lock on a pooled connection; the server drops it if that connection dies)."""
        with self._connection() as conn:
            conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (key,))
            try:
                yield
            finally:
                if not conn.broken:
                    conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (key,))

    def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the server answers now."""
        self.execute("SELECT 1")

    # -- change announcements -----------------------------------------------------------------
    def on_change(self, callback: ChangeCallback) -> None:
        """Call ``callback(tenant, user)`` (in a listener thread) for each change any process commits to a
        user's cached state; ``(None, None)``: announcements may have been missed (drop everything)."""
        self._callbacks.append(callback)
        if self._listener is None:
            self._listener = threading.Thread(target=self._listen, name="steer-pg-listen", daemon=True)
            self._listener.start()

    def _listen(self) -> None:
        import psycopg

        lost = False
        while not self._closed.is_set():
            try:
                with psycopg.connect(self.url, **self._kwargs) as conn:
                    conn.execute(f"LISTEN {CHANGES_CHANNEL}")
                    if lost:  # reconnected: what was announced meanwhile is unknown
                        self._announce(None, None)
                        lost = False
                    while not self._closed.is_set():
                        for note in conn.notifies(timeout=0.5):
                            try:
                                tenant, user = json.loads(note.payload)
                            except (ValueError, TypeError):
                                continue
                            self._announce(str(tenant), str(user))
            except psycopg.Error as exc:
                if not self._closed.is_set():
                    if not lost:  # once per outage: everything held may be stale from now on
                        log.warning("change listener lost %s (%s); reconnecting", self.where, _first_line(exc))
                        self._announce(None, None)
                    lost = True
                    self._closed.wait(1.0)

    def _announce(self, tenant: str | None, user: str | None) -> None:
        for callback in list(self._callbacks):
            try:
                callback(tenant, user)
            except Exception:
                log.exception("a change callback failed")

    def close(self) -> None:
        self._closed.set()
        self._pool.close()
        if self._listener is not None:
            self._listener.join(timeout=2.0)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _broken_connection(exc: StoreUnavailable) -> bool:
    """Whether the cause was a pooled connection found closed (not the server refusing new ones)."""
    import psycopg
    from psycopg_pool import PoolTimeout

    cause = exc.__cause__
    return isinstance(cause, psycopg.OperationalError) and not isinstance(cause, PoolTimeout)
