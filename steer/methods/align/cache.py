"""The rewrite cache: aligner outputs by (tenant, user, aligner model, format, instruction), an LRU in
memory over the database's ``align_cache`` table (``steer.storage.align_cache``).

Greedy decoding makes the output a function of its input, so failures are cached too. Only a
SHA-256 of the instruction is stored, never the instruction; rows carry tenant and user so a user's
rows can be forgotten (``forget``). A rewrite made for a request that began before its user was
forgotten is stored nowhere: the insert checks the tombstone, and the in-memory layer takes an entry
only if no forget ran since the entry was read or made (``_generation``).

Several processes on one database (``steer serve --workers``, replicas): each keeps its own LRU, and a
forget answered by another process must empty it for that user with no window. So each entry is
tagged with the user's tombstone as read before the entry was read or made
(``steer.storage.forgotten.tombstone``), and every hit reads the tombstone again (one primary-key
read) and serves the entry only if it is unchanged; entries older than ``TOMBSTONE_TTL_S`` (past
which a tombstone may be purged) are read from the database again. Other processes' writes need no
check: a key's rewrite is a function of its input.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from retrieval.store import TOMBSTONE_TTL_S
from steer.storage import align_cache
from steer.storage.forgotten import tombstone

if TYPE_CHECKING:
    from steer.storage.database import Database


@dataclass(frozen=True, slots=True)
class Cached:
    rewrite: str | None  # None: the aligner's output did not parse
    outcome: str  # parsed | unparsed | truncated
    raw: str | None = field(default=None, compare=False)  # the aligner's whole output (fresh calls only)


class RewriteCache:
    """``db``: the database (None until the server has opened it: then the cache is in memory only)."""

    def __init__(self, db: Callable[[], Database | None], size: int = 4096) -> None:
        self._db = db
        self.size = size
        # key -> (entry, the user's tombstone when it was read or made, when it was cached)
        self._lru: OrderedDict[align_cache.Key, tuple[Cached, float | None, float]] = OrderedDict()
        self._lock = threading.Lock()
        self._generation = 0  # bumped by every forget

    @staticmethod
    def digest(fmt: str, instruction: str) -> str:
        return hashlib.sha256(f"{fmt}\x00{instruction}".encode()).hexdigest()

    def get(self, tenant: str, user: str, model: str, fmt: str, instruction: str) -> Cached | None:
        key = (tenant, user, model, self.digest(fmt, instruction))
        db = self._db()
        mark = None if db is None else tombstone(db, tenant, user)
        with self._lock:
            hit = self._lru.get(key)
            if hit is not None:
                if hit[1] == mark and time.time() - hit[2] < TOMBSTONE_TTL_S:
                    self._lru.move_to_end(key)
                    return hit[0]
                self._drop(tenant, user)  # forgotten meanwhile (here or by another process), or too old
            generation = self._generation
        row = None if db is None else align_cache.get(db, key)
        if row is None:
            return None
        found = Cached(*row)
        self._remember(key, found, generation, mark)
        return found

    def put(
        self,
        tenant: str,
        user: str,
        model: str,
        fmt: str,
        instruction: str,
        value: Cached,
        persist: bool,
        began: float | None = None,
    ) -> None:
        """Store a rewrite made for ``user``'s request, which began at ``began`` (``time.time()``; None: now)."""
        if not user:
            raise ValueError("rewrites are cached per user only")
        key = (tenant, user, model, self.digest(fmt, instruction))
        with self._lock:
            generation = self._generation
        db = self._db()
        mark = None if db is None else tombstone(db, tenant, user)
        began = time.time() if began is None else began
        if db is not None and not align_cache.put(db, key, value.rewrite, value.outcome, began, persist):
            return  # the user was forgotten after the request began
        self._remember(key, value, generation, mark)

    def _remember(self, key: align_cache.Key, value: Cached, generation: int, mark: float | None) -> None:
        """Keep an entry in memory, unless a forget ran here since it was read or made (``generation``);
        ``mark``: the user's tombstone read before that."""
        with self._lock:
            if generation != self._generation:
                return
            self._lru[key] = (value, mark, time.time())
            self._lru.move_to_end(key)
            while len(self._lru) > self.size:
                self._lru.popitem(last=False)

    def export(self, tenant: str, user: str) -> list[dict[str, Any]]:
        """The persisted rewrites of one user's requests (the instruction itself is kept only as a hash)."""
        db = self._db()
        return [] if db is None else align_cache.export(db, tenant, user)

    def drop_cached(self, tenant: str | None, user: str | None) -> None:
        """Drop one user's rewrites (None: everyone's) from memory only; the database keeps its rows."""
        with self._lock:
            self._drop(tenant, user)

    def _drop(self, tenant: str | None, user: str | None) -> None:
        """Under the lock: drop the user's entries (None: everyone's); entries read or made before now are
        not kept either."""
        self._generation += 1
        for key in [k for k in self._lru if tenant is None or user is None or k[:2] == (tenant, user)]:
            del self._lru[key]

    def forget(self, tenant: str, user: str) -> int:
        """Drop every cached rewrite of one user's requests; how many persisted rows went."""
        self.drop_cached(tenant, user)
        db = self._db()
        return 0 if db is None else align_cache.forget(db, tenant, user)
