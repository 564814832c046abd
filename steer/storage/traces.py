"""Request traces for the inspector: one row per request that ran a stage, its trace as JSON, written in
batches off the response path, bounded in rows and days.

What a row holds is decided by the caller (``steer.server.services``): stage timings and decisions,
memory ids with their scores but never a memory's text, the prompt and the rewrite only under a policy
with ``log_prompts``. The batch insert drops, inside its transaction, the rows of a user forgotten since
the request began (``NOT_FORGOTTEN``), as the request log does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson

from steer.storage.database import Database, upsert
from steer.storage.forgotten import NOT_FORGOTTEN, tombstone_args

log = logging.getLogger("steer")

COLUMNS = ("trace_id", "created_at", "tenant", '"user"', "policy", "model", "status", "latency_ms", "trace")
LISTED = ("trace_id", "created_at", "user", "policy", "model", "status", "latency_ms")
# rows held in memory while the database refuses writes; more are dropped, oldest first
MAX_PENDING = 10_000


class TraceLog:
    """``request_traces``: ``add`` queues a row (no I/O), ``run`` writes the queue every ``interval`` s."""

    INSERT = upsert(
        "request_traces", COLUMNS, ("trace_id",), f"SELECT {', '.join('?' * len(COLUMNS))} WHERE {NOT_FORGOTTEN}"
    )

    def __init__(self, db: Database, max_rows: int, max_days: float) -> None:
        self.db = db
        self.max_rows = max_rows
        self.max_days = max_days
        self.rows: list[tuple[tuple[Any, ...], float]] = []
        self._flushing = asyncio.Lock()

    def add(self, trace: dict[str, Any], status: int, began: float) -> None:
        """Queue one trace (``Context.trace()`` plus what the caller adds); ``began``: when its request began."""
        row = (
            trace["trace_id"], time.time(), trace["tenant"], trace["user"], trace["policy"], trace["model"],
            status, trace["total_ms"], trace,
        )  # fmt: skip
        self.rows.append((row, began))  # the JSON is made by the flush, off the response path
        if len(self.rows) > MAX_PENDING:
            del self.rows[: len(self.rows) - MAX_PENDING]

    async def flush(self) -> None:
        async with self._flushing:
            rows, self.rows = self.rows, []
            params: list[tuple[Any, ...]] = []
            for row, began in rows:
                args = tombstone_args(row[2], row[3], began)
                if args is not None:
                    params.append((*row[:-1], orjson.dumps(row[-1], option=orjson.OPT_SERIALIZE_NUMPY).decode(), *args))
            if params:
                try:
                    await asyncio.to_thread(self.db.executemany, self.INSERT, params)
                except BaseException:
                    self.rows[:0] = rows
                    del self.rows[: max(0, len(self.rows) - MAX_PENDING)]
                    raise

    async def run(self, interval: float = 0.5, purge_every: float = 300.0) -> None:
        """Write the queue every ``interval`` s; apply the bounds at start and every ``purge_every`` s."""
        next_purge = 0.0
        while True:
            try:
                await self.flush()
                if time.monotonic() >= next_purge:
                    next_purge = time.monotonic() + purge_every
                    await asyncio.to_thread(self.purge)
            except Exception:
                log.exception("trace log write failed; its rows are kept for the next try")
            await asyncio.sleep(interval)

    def purge(self, now: float | None = None) -> int:
        """Delete the rows older than ``max_days`` and those beyond the newest ``max_rows``; how many."""
        cutoff = (time.time() if now is None else now) - self.max_days * 86400
        removed = len(self.db.execute("DELETE FROM request_traces WHERE created_at < ? RETURNING 1", (cutoff,)))
        over = self.db.execute("SELECT count(*) FROM request_traces")[0][0] - self.max_rows
        if over > 0:
            sql = (
                "DELETE FROM request_traces WHERE trace_id IN "
                "(SELECT trace_id FROM request_traces ORDER BY created_at LIMIT ?) RETURNING 1"
            )
            removed += len(self.db.execute(sql, (over,)))
        return removed

    def get(self, tenant: str, trace_id: str) -> dict[str, Any] | None:
        """One trace of ``tenant`` (blocking), with its row's ``status`` and ``created_at``; None when absent."""
        rows = self.db.execute(
            "SELECT trace, status, created_at FROM request_traces WHERE tenant = ? AND trace_id = ?",
            (tenant, trace_id),
        )
        if not rows:
            return None
        trace: dict[str, Any] = orjson.loads(rows[0][0])
        return {**trace, "status": rows[0][1], "created_at": rows[0][2]}

    def has(self, tenant: str, trace_ids: list[str]) -> set[str]:
        """Which of ``trace_ids`` have a trace kept (blocking)."""
        if not trace_ids:
            return set()
        marks = ", ".join("?" * len(trace_ids))
        sql = f"SELECT trace_id FROM request_traces WHERE tenant = ? AND trace_id IN ({marks})"
        return {r[0] for r in self.db.execute(sql, (tenant, *trace_ids))}

    def export(self, tenant: str, user: str) -> list[dict[str, Any]]:
        """The user's traces, oldest first (blocking; flush first for the rows still queued)."""
        rows = self.db.execute(
            'SELECT trace FROM request_traces WHERE tenant = ? AND "user" = ? ORDER BY created_at', (tenant, user)
        )
        return [orjson.loads(r[0]) for r in rows]

    def forget(self, tenant: str, user: str) -> int:
        """Delete the user's traces (blocking; flush first); how many."""
        sql = 'DELETE FROM request_traces WHERE tenant = ? AND "user" = ? RETURNING 1'
        return len(self.db.execute(sql, (tenant, user)))
