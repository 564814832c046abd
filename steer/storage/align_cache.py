"""The align stage's rewrite cache table: one row per (tenant, user, aligner model, instruction hash).

Only a SHA-256 of the instruction is stored, never the instruction. ``origin`` is the requesting user
too (files from before steer cached per user only also held tenant-wide rows, user '', with the
requesting user in ``origin``: migration 6 deleted them, and a user's rows are matched on either).
"""

from __future__ import annotations

import time
from typing import Any

from steer.storage.database import Database, upsert
from steer.storage.forgotten import NOT_FORGOTTEN, tombstone_args

Key = tuple[str, str, str, str]  # tenant, user, model, digest

_COLUMNS = ("tenant", '"user"', "model", "key", "rewrite", "outcome", "created_at", "origin")
_PUT = (
    upsert(
        "align_cache",
        _COLUMNS,
        ("tenant", '"user"', "model", "key"),
        f"SELECT {', '.join('?' * len(_COLUMNS))} WHERE {NOT_FORGOTTEN}",
    )
    + " RETURNING 1"
)
_MINE = 'tenant = ? AND ("user" = ? OR origin = ?)'  # the rows of one user's requests
_EXPORTED = ("model", "rewrite", "outcome", "created_at")


def get(db: Database, key: Key) -> tuple[str | None, str] | None:
    """(rewrite, outcome) cached under ``key``, or None."""
    rows = db.execute(
        'SELECT rewrite, outcome FROM align_cache WHERE tenant = ? AND "user" = ? AND model = ? AND key = ?', key
    )
    return (rows[0][0], rows[0][1]) if rows else None


def put(db: Database, key: Key, rewrite: str | None, outcome: str, began: float, persist: bool) -> bool:
    """Store a rewrite made for the request of ``key``'s user that began at ``began`` (with ``persist``;
    else only check); False when the user was forgotten after it began (nothing stored)."""
    tenant, user = key[0], key[1]
    args = tombstone_args(tenant, user, began)
    if args is None:
        return False
    if persist:
        return bool(db.execute(_PUT, (*key, rewrite, outcome, time.time(), user, *args)))
    return bool(db.execute(f"SELECT 1 WHERE {NOT_FORGOTTEN}", args))


def export(db: Database, tenant: str, user: str) -> list[dict[str, Any]]:
    """The persisted rewrites of one user's requests (the instruction itself is kept only as a hash)."""
    rows = db.execute(
        f"SELECT {', '.join(_EXPORTED)} FROM align_cache WHERE {_MINE} ORDER BY created_at", (tenant, user, user)
    )
    return [dict(zip(_EXPORTED, r, strict=True)) for r in rows]


def forget(db: Database, tenant: str, user: str) -> int:
    """Delete every cached rewrite of one user's requests; how many rows went."""
    return len(db.execute(f"DELETE FROM align_cache WHERE {_MINE} RETURNING 1", (tenant, user, user)))
