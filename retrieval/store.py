"""What a memory is, the ``MemoryStore`` protocol every store implements, and the ``Database`` a store
runs on.

A store keeps each user's memories apart: every call names ``(tenant, user)`` and can never read,
change or return a row of another user. Stores are synchronous; async callers wrap calls in
``asyncio.to_thread`` (the embedded store is thread-safe).

A store creates no tables: it is given a database whose schema is in place (steer's storage makes
the tables ``memories``, ``user_state``, ``store_info`` and ``forgotten`` in its one migration list:
``steer.storage.open_database(path)`` opens and migrates one). ``Database`` is declared here, as
the store uses it, so that this package imports nothing from steer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


class Rows(Protocol):
    """Runs one SQL statement (``?`` placeholders): its rows, as tuples."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...


class Database(Rows, Protocol):
    """A migrated database (``steer.storage.database.Database`` is one). ``execute`` outside a transaction
    commits by itself; ``transaction()`` yields the ``Rows`` of one write transaction (all or none);
    ``checkpoint()`` makes deleted rows leave every file the database keeps."""

    def transaction(self) -> AbstractContextManager[Rows]: ...

    def checkpoint(self) -> None: ...

    def close(self) -> None: ...


class MemoryNotFound(KeyError):
    """No memory with this id belongs to this (tenant, user)."""


class OwnerForgotten(Exception):
    """The (tenant, user) was forgotten after the work asking for this write began: the write is refused,
    so that nothing of a forgotten user comes back from a request or a job already under way."""


class MemoryLimitReached(Exception):
    """The user already holds the most current memories a store allows them (its ``limit``)."""


# how long a tombstone is kept; work that began longer ago than this is refused a write, whoever it is for
# (no request or queued job lives that long: requests are bounded by their upstream timeouts, and the
# background writer's queue by its caps)
TOMBSTONE_TTL_S = 86_400.0


def owner_key(tenant: str, user: str) -> str:
    """The key a tombstone is filed under: a SHA-256 of (tenant, user), so the forgotten id itself is not kept."""
    return hashlib.sha256(f"{tenant}\x00{user}".encode()).hexdigest()


@dataclass(frozen=True)
class Memory:
    id: int
    tenant: str
    user: str
    text: str
    kind: str  # "explicit" | "implicit" | "manual" | ...
    source_conversation: str | None
    source_turn: int | None
    created_at: float
    updated_at: float
    superseded_by: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def sources(self) -> list[tuple[str | None, int | None]]:
        """Every (conversation, turn) this memory was stated in: its own, then merged restatements."""
        merged = [(s.get("conversation"), s.get("turn")) for s in self.meta.get("merged_from", [])]
        return [(self.source_conversation, self.source_turn), *merged]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant": self.tenant,
            "user": self.user,
            "text": self.text,
            "kind": self.kind,
            "source_conversation": self.source_conversation,
            "source_turn": self.source_turn,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "superseded_by": self.superseded_by,
            "meta": self.meta,
        }


@dataclass(frozen=True)
class MemoryDraft:
    """A memory not stored yet: what ``add`` takes."""

    text: str
    kind: str = "explicit"
    source_conversation: str | None = None
    source_turn: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Hit:
    memory: Memory
    score: float  # cosine of the best-matching vector of the memory


@runtime_checkable
class MemoryStore(Protocol):
    """Writes take ``began``: when the work asking for the write began (``time.time()``); a store refuses
    it with ``OwnerForgotten`` when the owner was forgotten since (None: no check)."""

    def add(
        self,
        tenant: str,
        user: str,
        drafts: Sequence[MemoryDraft],
        *,
        began: float | None = None,
        limit: int | None = None,
    ) -> list[Memory]: ...

    def search(
        self, tenant: str, user: str, query: str | npt.NDArray[np.float32], k: int = 10
    ) -> list[Hit]: ...

    def list(self, tenant: str, user: str, *, include_history: bool = False) -> list[Memory]: ...

    def get(self, tenant: str, user: str, memory_id: int) -> Memory: ...

    def update(
        self,
        tenant: str,
        user: str,
        memory_id: int,
        *,
        text: str | None = None,
        kind: str | None = None,
        meta: dict[str, Any] | None = None,
        began: float | None = None,
    ) -> Memory: ...

    def delete(self, tenant: str, user: str, memory_id: int) -> None: ...

    def delete_user(self, tenant: str, user: str, *, tombstone_at: float | None = None) -> int: ...

    def supersede(
        self, tenant: str, user: str, old_id: int, new_id: int, *, began: float | None = None
    ) -> Memory: ...

    def export(self, tenant: str, user: str) -> dict[str, Any]: ...

    def close(self) -> None: ...
