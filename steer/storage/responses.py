"""Stored Responses API answers (``POST /v1/responses`` with ``store: true``), keyed by (tenant, id).

One row per stored response: its owner (tenant and user; ``''`` for an anonymous request), the model, the
input items it answered (those of the responses it continued included, so that a ``previous_response_id``
chain is read in one row, never walked) and the response object itself, both as JSON text. A row is read
only by its owner: another tenant's or user's id reads as absent. Writes made for a request check the
user's tombstone (``NOT_FORGOTTEN``) in their own statement: a response of a user forgotten while it was
generated is not stored. Export, forget and retention cover the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from steer.storage.database import Database
from steer.storage.forgotten import NOT_FORGOTTEN, tombstone_args

COLUMNS = ("tenant", "id", '"user"', "created_at", "model", "input", "response")
_INSERT = (
    f"INSERT INTO stored_responses ({', '.join(COLUMNS)}) SELECT {', '.join('?' * len(COLUMNS))} "
    f"WHERE {NOT_FORGOTTEN} RETURNING 1"
)


@dataclass(frozen=True, slots=True)
class StoredResponse:
    id: str
    created_at: float
    model: str
    input: list[dict[str, Any]]  # the input items, those of the previous responses first
    response: dict[str, Any]


def _owner(user: str | None) -> str:
    return user or ""


def save(
    db: Database, tenant: str, user: str | None, stored: StoredResponse, began: float
) -> bool:
    """Store ``stored`` for (tenant, user), unless the user was forgotten after the request began at
    ``began``; True when stored."""
    args = tombstone_args(tenant, user, began)
    if args is None:
        return False
    row = (
        tenant,
        stored.id,
        _owner(user),
        stored.created_at,
        stored.model,
        orjson.dumps(stored.input).decode(),
        orjson.dumps(stored.response).decode(),
    )
    return bool(db.execute(_INSERT, (*row, *args)))


def load(db: Database, tenant: str, user: str | None, response_id: str) -> StoredResponse | None:
    """The response ``response_id`` of (tenant, user), or None (unknown, or another owner's)."""
    rows = db.execute(
        'SELECT created_at, model, input, response FROM stored_responses WHERE tenant = ? AND id = ? AND "user" = ?',
        (tenant, response_id, _owner(user)),
    )
    if not rows:
        return None
    created_at, model, items, response = rows[0]
    return StoredResponse(response_id, created_at, model, orjson.loads(items), orjson.loads(response))


def delete(db: Database, tenant: str, user: str | None, response_id: str) -> bool:
    """Delete one of (tenant, user)'s responses; False when it had none by that id."""
    sql = 'DELETE FROM stored_responses WHERE tenant = ? AND id = ? AND "user" = ? RETURNING 1'
    return bool(db.execute(sql, (tenant, response_id, _owner(user))))


def export(db: Database, tenant: str, user: str) -> list[dict[str, Any]]:
    """The user's stored responses, oldest first: id, created_at, model, input items and response."""
    rows = db.execute(
        'SELECT id, created_at, model, input, response FROM stored_responses WHERE tenant = ? AND "user" = ? '
        "ORDER BY created_at",
        (tenant, user),
    )
    return [
        {"id": i, "created_at": c, "model": m, "input": orjson.loads(items), "response": orjson.loads(r)}
        for i, c, m, items, r in rows
    ]


def forget(db: Database, tenant: str, user: str) -> int:
    """Delete the user's stored responses; how many."""
    return len(db.execute('DELETE FROM stored_responses WHERE tenant = ? AND "user" = ? RETURNING 1', (tenant, user)))
