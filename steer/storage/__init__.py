"""Everything steer persists, behind one seam.

``open_database(url_or_path)`` opens (and migrates) the database; every table's SQL lives in a
module of this package named for it (``request_log``, ``profiles``, ``align_cache``, ``forgotten``,
``retention``, ``secrets``), written against the ``Database`` protocol (``steer.storage.database``), plus the
memory store's in ``retrieval.sqlite_store``, which runs on a database opened here. One versioned
migration list covers every table (``steer.storage.migrations``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steer.storage.database import Database, SqliteDatabase

SQLITE_SCHEME = "sqlite:///"


def open_database(url_or_path: str | Path, **options: Any) -> Database:
    """The database at ``url_or_path``, migrated: a SQLite file's path (or ``sqlite:///path``, or
    ``:memory:``). ``options`` go to the backend (SQLite: ``synchronous``, ``busy_timeout_s``).
    A URL of any other scheme is refused, naming it (not taken for a file name)."""
    target = str(url_or_path)
    if target.startswith(SQLITE_SCHEME):
        target = target.removeprefix(SQLITE_SCHEME)
    elif "://" in target:
        scheme = target.split("://", 1)[0]
        raise ValueError(f"database {scheme}://...: unsupported scheme {scheme!r} (give a SQLite file's path)")
    return SqliteDatabase(target, **options)
