"""The embedded memory store: the database is the source of truth, FAISS an index rebuilt from it.

The store runs on a database given to it (the ``Database`` protocol of ``retrieval.store``), whose
tables steer's storage has already made (``steer.storage.open_database`` migrates them): it creates
none itself. Its SQL is standard SQL with ``?`` placeholders and the column ``user`` quoted.

One table holds every memory with its embedding blob (a float32 matrix: the text's vector, then
one per write-time expansion). ``user_state`` holds, per (tenant, user), a version bumped by every
write and the number of searchable vectors, in the same transaction as the write; a user's FAISS
index is built from SQLite on first use (opening the store reads no memories; ``build_all`` builds
every index at once) and rebuilt whenever its version or its count disagrees with that row
(another process wrote, or the index was damaged). A write updates an index already in memory
only when that index reflected the version just before the write; a user whose index is not
loaded costs a write no index work. Versions of a (tenant, user) never repeat, even after
``delete_user`` removes its row: a new row starts above ``store_info.version_floor``, which
``delete_user`` raises to the version it removes, so another process's index of the forgotten
memories can never pass for current. Every write commits before it returns (SQLite: WAL,
``synchronous=FULL``).

Forgetting is final: ``delete_user(..., tombstone_at=T)`` files a tombstone (a SHA-256 of tenant and
user, and T) in ``forgotten`` in the same transaction as the delete, and every write given ``began``
(when the work asking for it began) checks it inside its own transaction: work that began at or
before T writes nothing (``OwnerForgotten``), so a request or job already under way cannot bring the
user back. Tombstones older than ``TOMBSTONE_TTL_S`` are purged, and work that began longer ago than
that is refused alike. A delete, a forget or a change of text checkpoints the database, so the old
text is gone from the WAL file as well as from the database (``secure_delete`` zeroes the freed cells).

Duplicates across processes: each current memory carries ``text_key`` (a SHA-256 of its normalised
text), unique per (tenant, user) in the database, so two processes storing the same statement at
once store it once (the second insert lands nowhere and returns the first's memory). A superseded
memory drops its key; a changed text takes the new key unless another current memory holds it.

Memory ids are random integers below 2**53 (exact in JavaScript), drawn again on a collision: an id
says nothing about how many memories anyone else holds. Files made by an older version (ids from an
AUTOINCREMENT sequence) keep their ids; new rows get random ones. A row maps to a :class:`Memory` in
one place (``_memory``), by the dataclass's own fields.

Isolation: each (tenant, user) has its own FAISS index, and every SQL statement also filters on
tenant and user, so an id of another user reads as "not found".
"""

from __future__ import annotations

import builtins
import dataclasses
import hashlib
import json
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from retrieval.embeddings import public_name
from retrieval.faiss_index import UserIndex, gpu_available
from retrieval.store import (
    TOMBSTONE_TTL_S,
    Database,
    Hit,
    Memory,
    MemoryDraft,
    MemoryLimitReached,
    MemoryNotFound,
    OwnerForgotten,
    Rows,
    owner_key,
)

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from retrieval.embeddings import Embedder

MAX_ID = 2**53 - 1  # the largest integer a JavaScript number holds exactly

# a Memory's fields are the columns it is read from, in order (the dataclass is the one list of them)
FIELDS = tuple(f.name for f in dataclasses.fields(Memory))
_SELECT = ", ".join(f'"{name}"' for name in FIELDS)  # every name quoted: "user" is a reserved word
_STORED = f"{_SELECT}, expansions, n_vectors, embedding"
# no conflict target: a colliding random id and a statement the user already holds both insert nothing
_INSERT = (
    f"INSERT INTO memories ({_STORED}, text_key) VALUES ({', '.join('?' * (len(FIELDS) + 4))}) ON CONFLICT DO NOTHING"
)
_OWNER = 'tenant = ? AND "user" = ?'


class Expander(Protocol):
    """Write-time expansion: extra texts whose vectors also point at the memory."""

    def expand(self, text: str) -> list[str]: ...


def _memory(row: Sequence[Any]) -> Memory:
    """The Memory of a row of ``FIELDS`` (its ``meta`` stored as JSON)."""
    values = dict(zip(FIELDS, row, strict=True))
    values["meta"] = json.loads(values["meta"])
    return Memory(**values)


def _values(memory: Memory) -> list[Any]:
    """The column values of ``FIELDS`` for a memory (its ``meta`` as JSON)."""
    return [json.dumps(memory.meta) if name == "meta" else getattr(memory, name) for name in FIELDS]


class _Stored(NamedTuple):
    """A memory's row: the memory, and what the store keeps beside it."""

    memory: Memory
    expansions: str  # JSON list of the write-time expansions
    n_vectors: int
    embedding: bytes


def _first(rows: list[tuple[Any, ...]]) -> tuple[Any, ...] | None:
    return rows[0] if rows else None


def text_key(text: str) -> str:
    """The key of a statement's normalised text (case, runs of white space and the end's punctuation
    ignored): a user's current memories hold each key once, a rule the database enforces."""
    normal = " ".join(text.casefold().split()).rstrip(" .!?;,")
    return hashlib.sha256(normal.encode()).hexdigest()


class SqliteFaissStore:
    """``MemoryStore`` on a database (one SQLite file, embedded) with per-user FAISS indexes beside it (in
    memory). The store takes the database over: ``close`` closes it."""

    def __init__(
        self,
        db: Database,
        embedder: Embedder,
        *,
        expander: Expander | None = None,
        approximate_above: int = 50_000,
        use_gpu: bool | None = None,
        max_loaded: int = 10_000,
    ) -> None:
        self._db = db
        self.embedder = embedder
        self.expander = expander
        self.approximate_above = approximate_above
        self._lock = threading.RLock()
        self._owner_locks = [threading.Lock() for _ in range(64)]  # striped: bounded whatever the users
        # the users' loaded indexes, least recently used first; past ``max_loaded`` the oldest is dropped
        # (rebuilt from the database on its next use, about a millisecond for a hundred memories)
        self.max_loaded = max_loaded
        self._indexes: OrderedDict[tuple[str, str], UserIndex] = OrderedDict()
        try:
            self.use_gpu = gpu_available() if use_gpu is None else use_gpu
            self._check_embedder()
        except BaseException:
            db.close()
            raise

    # -- plumbing -------------------------------------------------------------------------
    def _check_embedder(self) -> None:
        row = _first(self._db.execute("SELECT value FROM store_info WHERE key = 'dim'"))
        if row is None:
            with self._db.transaction() as tx:
                # ON CONFLICT: another process opening the same database may have just written them
                for key, value in (("dim", str(self.embedder.dim)), ("embedder", self.embedder.name)):
                    tx.execute(
                        "INSERT INTO store_info (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING", (key, value)
                    )
            row = _first(self._db.execute("SELECT value FROM store_info WHERE key = 'dim'"))
        if row is not None and int(row[0]) != self.embedder.dim:
            raise ValueError(
                f"the memory database holds {row[0]}-d vectors; the embedder makes {self.embedder.dim}-d"
            )

    @contextmanager
    def owner_lock(self, tenant: str, user: str) -> Iterator[None]:
        """Serialises a read-then-write of one user's memory (look for a duplicate, then add) against
        other such writers of that user; other users proceed, and plain reads never wait on it. On a
        database that offers ``lock(key)`` (PostgreSQL: an advisory lock), other processes' writers of
        that user wait too."""
        with self._owner_locks[hash((tenant, user)) % len(self._owner_locks)]:
            shared = getattr(self._db, "lock", None)
            if shared is None:
                yield
                return
            with shared(f"owner:{owner_key(tenant, user)}"):
                yield

    def _refuse_if_forgotten(self, tx: Rows, owner: tuple[str, str], began: float | None) -> None:
        """Inside a write transaction: refuse the write of work that began before the owner was forgotten
        (or longer ago than tombstones are kept)."""
        if began is None:
            return
        stale = began < time.time() - TOMBSTONE_TTL_S
        if stale or tx.execute("SELECT 1 FROM forgotten WHERE owner = ? AND at >= ?", (owner_key(*owner), began)):
            raise OwnerForgotten(owner[1])

    def _current(self, q: Rows, owner: tuple[str, str]) -> int:
        rows = q.execute(f"SELECT COUNT(*) FROM memories WHERE {_OWNER} AND superseded_by IS NULL", owner)
        return int(rows[0][0])

    def _insert(self, tx: Rows, memory: Memory, expansions: list[str], matrix: Any) -> tuple[Memory, bool]:
        """Insert one memory row under a fresh random id (drawn again on a collision): (the memory stored,
        True); or (the user's current memory of the same text, False), inserting nothing."""
        import numpy as np

        key = text_key(memory.text)
        stored = (json.dumps(expansions), len(matrix), matrix.astype(np.float32).tobytes(), key)
        for _ in range(8):
            memory = dataclasses.replace(memory, id=secrets.randbelow(MAX_ID) + 1)
            if tx.execute(_INSERT + " RETURNING id", (*_values(memory), *stored)):
                return memory, True
            same = _first(tx.execute(f"SELECT {_SELECT} FROM memories WHERE {_OWNER} AND text_key = ?",
                                     (memory.tenant, memory.user, key)))  # fmt: skip
            if same is not None:
                return _memory(same), False
        raise RuntimeError("no free memory id after 8 random draws")

    def _checkpoint(self) -> None:
        """Make the rows as they were before a delete leave the database's files (SQLite: the WAL)."""
        self._db.checkpoint()

    def _bump(self, tx: Rows, owner: tuple[str, str], delta_vectors: int) -> tuple[int, int]:
        """Record a write in ``user_state``; the user's version before and after it (read from the upsert
        itself: on a server, another process may write between a separate read and the upsert; a new row's
        "before" is the version floor, which no loaded index holds)."""
        (after,) = tx.execute(
            'INSERT INTO user_state (tenant, "user", version, n_vectors) VALUES (?, ?, COALESCE((SELECT '
            "CAST(value AS BIGINT) FROM store_info WHERE key = 'version_floor'), 0) + 1, ?) "
            'ON CONFLICT (tenant, "user") DO UPDATE SET version = user_state.version + 1, '
            "n_vectors = user_state.n_vectors + excluded.n_vectors RETURNING version",
            (*owner, delta_vectors),
        )[0]
        return int(after) - 1, int(after)

    def _state(self, q: Rows, owner: tuple[str, str]) -> tuple[int, int]:
        row = _first(q.execute(f"SELECT version, n_vectors FROM user_state WHERE {_OWNER}", owner))
        return (0, 0) if row is None else (int(row[0]), int(row[1]))

    def _index(self, owner: tuple[str, str]) -> UserIndex:
        """The user's index, rebuilt from the database if missing, stale or of the wrong size."""
        version, n_vectors = self._state(self._db, owner)
        index = self._indexes.get(owner)
        if index is None or index.version != version or index.ntotal != n_vectors:
            index = self._rebuild(owner, version)
        self._indexes.move_to_end(owner)
        return index

    def _rebuild(self, owner: tuple[str, str], version: int) -> UserIndex:
        import numpy as np

        rows = self._db.execute(
            f"SELECT id, n_vectors, embedding FROM memories WHERE {_OWNER} AND superseded_by IS NULL ORDER BY id",
            owner,
        )
        dim = self.embedder.dim
        total = sum(n for _, n, _ in rows)
        index = UserIndex(dim, approximate=total > self.approximate_above, use_gpu=self.use_gpu)
        if rows:
            vectors = np.frombuffer(b"".join(blob for _, _, blob in rows), dtype=np.float32).reshape(-1, dim)
            ids = np.repeat(np.array([i for i, _, _ in rows], dtype=np.int64), [n for _, n, _ in rows])
            index.add(ids, vectors)
        index.version = version
        self._indexes[owner] = index
        while len(self._indexes) > self.max_loaded:
            self._indexes.popitem(last=False)
        return index

    def _embed(self, texts: Sequence[str]) -> tuple[list[list[str]], list[npt.NDArray[np.float32]]]:
        expansions = [self.expander.expand(t) if self.expander else [] for t in texts]
        flat = [s for t, exp in zip(texts, expansions, strict=True) for s in (t, *exp)]
        matrix = self.embedder.encode(flat) if flat else None
        out, start = [], 0
        for exp in expansions:
            assert matrix is not None
            out.append(matrix[start : start + 1 + len(exp)])
            start += 1 + len(exp)
        return expansions, out

    def _row(self, owner: tuple[str, str], memory_id: int) -> _Stored:
        row = _first(self._db.execute(f"SELECT {_STORED} FROM memories WHERE id = ? AND {_OWNER}", (memory_id, *owner)))
        if row is None:
            raise MemoryNotFound(memory_id)
        n = len(FIELDS)
        return _Stored(_memory(row[:n]), row[n], int(row[n + 1]), row[n + 2])

    def _after_write(self, owner: tuple[str, str], versions: tuple[int, int], change: Any) -> None:
        """Apply ``change(index) -> bool`` to a loaded index that reflected the version just before this
        write (``versions``: before, after); otherwise drop it (rebuilt lazily)."""
        before, after = versions
        index = self._indexes.get(owner)
        if index is not None and index.version == before and change(index):
            index.version = after
        else:
            self._indexes.pop(owner, None)

    # -- MemoryStore ---------------------------------------------------------------------------
    def add(
        self,
        tenant: str,
        user: str,
        drafts: Sequence[MemoryDraft],
        *,
        began: float | None = None,
        limit: int | None = None,
    ) -> list[Memory]:
        """Store new memories, all or none. ``began``: see ``_refuse_if_forgotten``; ``limit``: the most
        current memories the user may hold after the add (``MemoryLimitReached`` beyond it). A draft whose
        text the user already holds as a current memory (``text_key``) stores nothing: that memory is
        returned in its place (``add_new`` says which)."""
        return [memory for memory, _ in self.add_new(tenant, user, drafts, began=began, limit=limit)]

    def add_new(
        self,
        tenant: str,
        user: str,
        drafts: Sequence[MemoryDraft],
        *,
        began: float | None = None,
        limit: int | None = None,
    ) -> list[tuple[Memory, bool]]:
        """``add``, saying of each draft whether it was stored (True) or already held (False). The check is
        the database's unique key, so it holds across processes writing the same user at once."""
        import numpy as np

        if not drafts:
            return []
        owner = (tenant, user)
        expansions, matrices = self._embed([d.text for d in drafts])
        now = time.time()
        stamps = [now + i * 1e-6 for i in range(len(drafts))]  # distinct and in order: lists sort on them
        with self._lock:
            new_user = owner not in self._indexes and self._state(self._db, owner) == (0, 0)
            with self._db.transaction() as tx:
                self._refuse_if_forgotten(tx, owner, began)
                if limit is not None and self._current(tx, owner) + len(drafts) > limit:
                    raise MemoryLimitReached(f"{user} already holds the most memories allowed ({limit})")
                stored = [
                    self._insert(
                        tx,
                        Memory(0, tenant, user, d.text, d.kind, d.source_conversation, d.source_turn, at, at, None,
                               dict(d.meta)),
                        exp,
                        mat,
                    )
                    for d, exp, mat, at in zip(drafts, expansions, matrices, stamps, strict=True)
                ]  # fmt: skip
                fresh = [(m, mat) for (m, new), mat in zip(stored, matrices, strict=True) if new]
                if not fresh:
                    return stored  # every statement already held: nothing written, nothing to bump
                versions = self._bump(tx, owner, sum(len(mat) for _, mat in fresh))
            if new_user:
                self._index(owner)  # a new user: built from the database now, kept current by later writes
            else:
                vec_ids = np.repeat(np.array([m.id for m, _ in fresh], dtype=np.int64), [len(x) for _, x in fresh])
                stacked = np.vstack([mat for _, mat in fresh]).astype(np.float32)
                self._after_write(owner, versions, lambda ix: ix.add(vec_ids, stacked) or True)
            return stored

    def search(self, tenant: str, user: str, query: str | npt.NDArray[np.float32], k: int = 10) -> list[Hit]:
        import numpy as np

        vector = self.embedder.encode([query])[0] if isinstance(query, str) else np.asarray(query, np.float32)
        owner = (tenant, user)
        with self._lock:
            if owner not in self._indexes and self._state(self._db, owner)[1] == 0:
                return []  # no memories: nothing to load (nor to keep loaded for an id that was only probed)
            found = self._index(owner).search(vector.reshape(-1), k)
            if not found:
                return []
            marks = ",".join("?" * len(found))
            rows = self._db.execute(
                f"SELECT {_SELECT} FROM memories WHERE id IN ({marks}) AND {_OWNER} AND superseded_by IS NULL",
                (*[i for i, _ in found], *owner),
            )
        by_id = {m.id: m for m in map(_memory, rows)}
        return [Hit(by_id[i], s) for i, s in found if i in by_id]

    def list(self, tenant: str, user: str, *, include_history: bool = False) -> list[Memory]:
        where = "" if include_history else " AND superseded_by IS NULL"
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_SELECT} FROM memories WHERE {_OWNER}{where} ORDER BY created_at, id", (tenant, user)
            )
        return [_memory(r) for r in rows]

    def count(self, tenant: str, user: str) -> int:
        """How many current (not superseded) memories the user has."""
        with self._lock:
            return self._current(self._db, (tenant, user))

    def version(self, tenant: str, user: str) -> int:
        """The user's write counter: it changes with every add, update, delete or supersede of their
        memories (for caches built from one user's memories, such as recall's lexical index)."""
        with self._lock:
            return self._state(self._db, (tenant, user))[0]

    def get(self, tenant: str, user: str, memory_id: int) -> Memory:
        with self._lock:
            return self._row((tenant, user), memory_id).memory

    def vectors(self, tenant: str, user: str, memory_id: int) -> npt.NDArray[np.float32]:
        """The stored vectors of one memory (row 0: its text)."""
        import numpy as np

        with self._lock:
            row = self._row((tenant, user), memory_id)
        return np.frombuffer(row.embedding, dtype=np.float32).reshape(row.n_vectors, -1)

    def text_vectors(self, tenant: str, user: str, memory_ids: Sequence[int]) -> dict[int, npt.NDArray[np.float32]]:
        """Memory id -> the vector of its text (row 0 of its stored vectors), for the user's memories among
        ``memory_ids`` (ids of other users are absent)."""
        import numpy as np

        if not memory_ids:
            return {}
        marks = ",".join("?" * len(memory_ids))
        dim = self.embedder.dim
        with self._lock:
            rows = self._db.execute(
                f"SELECT id, embedding FROM memories WHERE id IN ({marks}) AND {_OWNER}",
                (*memory_ids, tenant, user),
            )
        return {int(i): np.frombuffer(blob, dtype=np.float32, count=dim) for i, blob in rows}

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
    ) -> Memory:
        import numpy as np

        owner = (tenant, user)
        with self._lock:
            row = self._row(owner, memory_id)
            old = row.memory
            new_text = old.text if text is None else text
            reembed = text is not None and text != old.text
            blob, n_vec, exp_json = row.embedding, row.n_vectors, row.expansions
            mat = None
            if reembed:
                expansions, (mat,) = self._embed([new_text])
                blob, n_vec, exp_json = mat.astype(np.float32).tobytes(), len(mat), json.dumps(expansions[0])
            active = old.superseded_by is None
            with self._db.transaction() as tx:
                self._refuse_if_forgotten(tx, owner, began)
                if reembed and active:  # the new text's key, unless another current memory holds it
                    key = text_key(new_text)
                    tx.execute(
                        "UPDATE memories SET text_key = CASE WHEN EXISTS (SELECT 1 FROM memories WHERE "
                        f"{_OWNER} AND text_key = ? AND id <> ?) THEN NULL ELSE ? END WHERE id = ? AND {_OWNER}",
                        (*owner, key, memory_id, key, memory_id, *owner),
                    )
                tx.execute(
                    "UPDATE memories SET text = ?, kind = ?, meta = ?, updated_at = ?, expansions = ?, "
                    f"n_vectors = ?, embedding = ? WHERE id = ? AND {_OWNER}",
                    (
                        new_text,
                        kind or old.kind,
                        json.dumps(old.meta if meta is None else meta),
                        time.time(),
                        exp_json,
                        n_vec,
                        blob,
                        memory_id,
                        *owner,
                    ),
                )
                delta = (n_vec - row.n_vectors) if active else 0
                versions = self._bump(tx, owner, delta)

            def change(ix: UserIndex) -> bool:
                if not (reembed and active):
                    return True
                assert mat is not None
                if not ix.remove([memory_id]):
                    return False
                ix.add(np.full(len(mat), memory_id, dtype=np.int64), mat)
                return True

            self._after_write(owner, versions, change)
            if new_text != old.text:
                self._checkpoint()  # the old text leaves the WAL too
            return self._row(owner, memory_id).memory

    def delete(self, tenant: str, user: str, memory_id: int) -> None:
        """Delete one memory; the memories it had superseded become current again."""
        owner = (tenant, user)
        with self._lock:
            row = self._row(owner, memory_id)
            with self._db.transaction() as tx:
                revived = tx.execute(
                    f"SELECT COALESCE(SUM(n_vectors), 0) FROM memories WHERE superseded_by = ? AND {_OWNER}",
                    (memory_id, *owner),
                )[0][0]
                tx.execute(f"DELETE FROM memories WHERE id = ? AND {_OWNER}", (memory_id, *owner))
                tx.execute(
                    f"UPDATE memories SET superseded_by = NULL WHERE superseded_by = ? AND {_OWNER}",
                    (memory_id, *owner),
                )
                gone = row.n_vectors if row.memory.superseded_by is None else 0
                self._bump(tx, owner, int(revived) - gone)
            self._indexes.pop(owner, None)  # rebuilt from the database on next use
            self._checkpoint()  # the deleted text leaves the WAL too

    def delete_user(self, tenant: str, user: str, *, tombstone_at: float | None = None) -> int:
        """Delete every memory of the user; with ``tombstone_at``, also refuse from now on every write of
        work that began at or before it (``mark_forgotten``), in the same transaction."""
        owner = (tenant, user)
        with self._lock:
            with self._db.transaction() as tx:
                if tombstone_at is not None:
                    self._mark(tx, owner, tombstone_at)
                n = len(tx.execute(f"DELETE FROM memories WHERE {_OWNER} RETURNING 1", owner))
                tx.execute(
                    "INSERT INTO store_info (key, value) VALUES ('version_floor', ?) ON CONFLICT (key) DO UPDATE "
                    "SET value = CASE WHEN CAST(excluded.value AS BIGINT) > CAST(store_info.value AS BIGINT) "
                    "THEN excluded.value ELSE store_info.value END",
                    (str(self._state(tx, owner)[0]),),
                )
                tx.execute(f"DELETE FROM user_state WHERE {_OWNER}", owner)
            self._indexes.pop(owner, None)
            self._checkpoint()
        return n


    def mark_forgotten(self, tenant: str, user: str, at: float) -> None:
        """Set the user's tombstone to ``at``: writes of work that began at or before it are refused."""
        with self._lock, self._db.transaction() as tx:
            self._mark(tx, (tenant, user), at)

    def _mark(self, tx: Rows, owner: tuple[str, str], at: float) -> None:
        tx.execute("DELETE FROM forgotten WHERE at < ?", (time.time() - TOMBSTONE_TTL_S,))
        tx.execute(
            "INSERT INTO forgotten (owner, at) VALUES (?, ?) ON CONFLICT (owner) DO UPDATE SET at = excluded.at",
            (owner_key(*owner), at),
        )

    def supersede(self, tenant: str, user: str, old_id: int, new_id: int, *, began: float | None = None) -> Memory:
        owner = (tenant, user)
        if old_id == new_id:
            raise ValueError("a memory cannot supersede itself")
        with self._lock:
            old = self._row(owner, old_id)
            self._row(owner, new_id)
            active = old.memory.superseded_by is None
            with self._db.transaction() as tx:
                self._refuse_if_forgotten(tx, owner, began)
                tx.execute(
                    f"UPDATE memories SET superseded_by = ?, updated_at = ?, text_key = NULL WHERE id = ? AND {_OWNER}",
                    (new_id, time.time(), old_id, *owner),
                )
                versions = self._bump(tx, owner, -old.n_vectors if active else 0)
            self._after_write(owner, versions, lambda ix: ix.remove([old_id]) if active else True)
            return self._row(owner, old_id).memory

    def export(self, tenant: str, user: str) -> dict[str, Any]:
        return {
            "tenant": tenant,
            "user": user,
            "embedder": public_name(self.embedder.name),  # a model name, never a server path
            "memories": [m.to_dict() for m in self.list(tenant, user, include_history=True)],
        }

    def index_size(self, tenant: str, user: str) -> int:
        """How many vectors the user's FAISS index holds (built first if not loaded; 0 for an unknown user)."""
        owner = (tenant, user)
        with self._lock:
            index = self._indexes.get(owner)
            if index is None:
                if self._state(self._db, owner) == (0, 0):
                    return 0
                index = self._index(owner)
            return index.ntotal

    def consistency(self, tenant: str, user: str) -> dict[str, int]:
        """The user's searchable vectors three ways: counted in the table, recorded in ``user_state``,
        and held by the (current) FAISS index. All three agree in a healthy store."""
        owner = (tenant, user)
        with self._lock:
            rows = self._db.execute(
                f"SELECT COUNT(*), COALESCE(SUM(n_vectors), 0) FROM memories WHERE {_OWNER} AND superseded_by IS NULL",
                owner,
            )[0]
            _, recorded = self._state(self._db, owner)
            indexed = self._index(owner).ntotal if rows[0] or recorded else 0
        return {"memories": int(rows[0]), "table": int(rows[1]), "recorded": recorded, "index": indexed}

    def build_all(self) -> int:
        """Build every user's index now (else each is built at its first search); how many were built."""
        built = 0
        for owner in self.users():
            with self._lock:
                if owner not in self._indexes:
                    self._index(owner)
                    built += 1
        return built

    def user_counts(self, tenant: str) -> dict[str, int]:
        """The tenant's users holding current memories: user -> how many."""
        sql = 'SELECT "user", count(*) FROM memories WHERE tenant = ? AND superseded_by IS NULL GROUP BY "user"'
        with self._lock:
            return {r[0]: int(r[1]) for r in self._db.execute(sql, (tenant,))}

    def users(self) -> builtins.list[tuple[str, str]]:
        with self._lock:
            return [(r[0], r[1]) for r in self._db.execute('SELECT tenant, "user" FROM user_state ORDER BY 1, 2')]

    def drop_cached(self, tenant: str | None, user: str | None) -> None:
        """Forget the loaded index of one user (None: of every user): rebuilt from the database on next use.
        For early notice of another process's write; a stale index is never served either way."""
        with self._lock:
            if tenant is None or user is None:
                self._indexes.clear()
            else:
                self._indexes.pop((tenant, user), None)

    def close(self) -> None:
        with self._lock:
            self._indexes.clear()
            self._db.close()
