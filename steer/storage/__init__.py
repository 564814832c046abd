"""Everything steer persists, behind one seam.

``open_database(url_or_path)`` opens (and migrates) the database; every table's SQL lives in a
module of this package named for it (``request_log``, ``profiles``, ``align_cache``, ``forgotten``,
``retention``, ``secrets``), written against the ``Database`` protocol (``steer.storage.database``), plus the
memory store's in ``retrieval.sqlite_store``, which runs on a database opened here. One versioned
migration list covers every table (``steer.storage.migrations``). Two backends: an embedded SQLite
file (``steer.storage.database``) and a shared PostgreSQL server (``steer.storage.postgres``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steer.settings import Settings
from steer.storage.database import Database, SqliteDatabase

SQLITE_SCHEME = "sqlite:///"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(url_or_path: str | Path) -> bool:
    return str(url_or_path).startswith(POSTGRES_SCHEMES)


def check_target(url_or_path: str | Path) -> None:
    """Refuse (``ValueError``, naming it) a URL of a scheme no backend takes, before opening anything."""
    target = str(url_or_path)
    if "://" in target and not target.startswith((SQLITE_SCHEME, *POSTGRES_SCHEMES)):
        scheme = target.split("://", 1)[0]
        raise ValueError(
            f"database {scheme}://...: unsupported scheme {scheme!r} "
            "(give a SQLite file's path, sqlite:///path or postgresql://...)"
        )


def open_database(url_or_path: str | Path, *, pool: Any = None, **options: Any) -> Database:
    """The database at ``url_or_path``, migrated: a SQLite file's path (or ``sqlite:///path``, or
    ``:memory:``), or a ``postgresql://`` URL. ``options`` go to SQLite (``synchronous``,
    ``busy_timeout_s``; a PostgreSQL database ignores them), ``pool`` (a
    ``steer.storage.postgres.PoolOptions``) to PostgreSQL. A URL of any other scheme is refused,
    naming it (not taken for a file name); an unreachable server raises ``StoreUnavailable``."""
    check_target(url_or_path)
    target = str(url_or_path)
    if is_postgres(target):
        from steer.storage.postgres import PoolOptions, PostgresDatabase

        return PostgresDatabase(target, options=pool or PoolOptions())
    return SqliteDatabase(target.removeprefix(SQLITE_SCHEME), **options)


def open_configured(settings: Settings, target: str | None = None, **options: Any) -> Database:
    """``open_database`` of ``target`` (default: ``settings.database``) with the settings' pool and timeouts."""
    from steer.storage.postgres import PoolOptions

    pool = PoolOptions(
        min_size=settings.database_pool_min,
        max_size=settings.database_pool_max,
        connect_timeout_s=settings.database_connect_timeout_s,
        pool_timeout_s=settings.database_pool_timeout_s,
        statement_timeout_s=settings.database_statement_timeout_s,
    )
    return open_database(target or settings.database, pool=pool, **options)
