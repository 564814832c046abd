"""Tombstones of forgotten users, and the clause every write of a user's data checks them with.

``forgotten`` holds one row per forgotten (tenant, user): a SHA-256 of the two (the forgotten id
itself is not kept) and a time. Every write of a user's data made for a request or job appends
``NOT_FORGOTTEN`` to its statement, with (``owner_key``, when that work began) as parameters, so a
write of work that began at or before the user was forgotten lands nowhere, checked by the write's
own statement. Tombstones older than ``TOMBSTONE_TTL_S`` go, and work that began longer ago than
that is refused alike.
"""

from __future__ import annotations

import time

from retrieval.store import TOMBSTONE_TTL_S, owner_key
from steer.storage.database import Database

# appended to a write's WHERE clause, with (owner_key(tenant, user), began) as its parameters
NOT_FORGOTTEN = "NOT EXISTS (SELECT 1 FROM forgotten WHERE owner = ? AND at >= ?)"


def tombstone_args(tenant: str, user: str | None, began: float) -> tuple[str, float] | None:
    """The parameters of ``NOT_FORGOTTEN`` for a write of work begun at ``began``; None when that work began
    longer ago than tombstones are kept (``TOMBSTONE_TTL_S``): such a write is dropped, as if forgotten."""
    if began < time.time() - TOMBSTONE_TTL_S:
        return None
    return ("" if user is None else owner_key(tenant, user)), began


def tombstone(db: Database, tenant: str, user: str) -> float | None:
    """The time of the user's tombstone, None when they have none (one primary-key read). A forget
    always moves it, so a process's cache of the user's data tagged with the value it read when
    filling the entry knows, comparing, whether any process forgot the user since."""
    rows = db.execute("SELECT at FROM forgotten WHERE owner = ?", (owner_key(tenant, user),))
    return float(rows[0][0]) if rows else None


def mark_forgotten(db: Database, tenant: str, user: str, at: float) -> None:
    """Set the user's tombstone to ``at`` (writes of work that began at or before it are dropped);
    tombstones older than ``TOMBSTONE_TTL_S`` go."""
    with db.transaction() as tx:
        tx.execute("DELETE FROM forgotten WHERE at < ?", (time.time() - TOMBSTONE_TTL_S,))
        tx.execute(
            "INSERT INTO forgotten (owner, at) VALUES (?, ?) ON CONFLICT (owner) DO UPDATE SET at = excluded.at",
            (owner_key(tenant, user), at),
        )
