"""The request log: one row per request (ids, sizes, timings; the prompt only under ``log_prompts``),
written in batches off the response path."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from steer.storage.database import Database, upsert
from steer.storage.forgotten import NOT_FORGOTTEN, tombstone_args

log = logging.getLogger("steer")

COLUMNS = (
    "trace_id", "created_at", "tenant", '"user"', "policy", "model", "status", "stream", "latency_ms",
    "prompt_tokens", "completion_tokens", "stages", "prompt",
)  # fmt: skip
EXPORTED = ("trace_id", "created_at", "policy", "model", "status", "latency_ms", "prompt")
RECENT = (
    "trace_id", "created_at", "user", "policy", "model", "status", "stream", "latency_ms",
    "prompt_tokens", "completion_tokens", "stages",
)  # fmt: skip


class RequestLog:
    """Rows for ``request_log``, written in batches by a background task, off the response path.

    Each row comes with the time its request began; the batch insert drops, inside its transaction, the
    rows of a user forgotten since (``NOT_FORGOTTEN``): no database read on the request path.
    """

    INSERT = upsert(
        "request_log", COLUMNS, ("trace_id",), f"SELECT {', '.join('?' * len(COLUMNS))} WHERE {NOT_FORGOTTEN}"
    )

    def __init__(self, db: Database, max_rows: int = 100_000) -> None:
        self.db = db
        self.max_rows = max_rows
        self.dropped = 0  # rows dropped, oldest first, while the database refused writes
        self.failed_flushes = 0  # flushes the database refused (their rows kept for the next)
        self.writing = 0  # rows of the flush under way
        self.rows: list[tuple[tuple[Any, ...], float]] = []  # (row, when its request began)
        self._flushing = asyncio.Lock()  # a flush returns once every row added before it is written

    def add(self, row: tuple[Any, ...], began: float | None = None) -> None:
        """Queue a row (the values of ``COLUMNS``); ``began``: when its request began (None: now)."""
        self.rows.append((row, time.time() if began is None else began))

    @staticmethod
    def _params(rows: list[tuple[tuple[Any, ...], float]]) -> list[tuple[Any, ...]]:
        out = []
        for row, began in rows:
            args = tombstone_args(row[2], row[3], began)
            if args is not None:
                out.append((*row, *args))
        return out

    async def flush(self) -> None:
        async with self._flushing:  # else a flush finding no rows could return while another writes some
            rows, self.rows = self.rows, []
            if rows:
                self.writing = len(rows)
                try:
                    await asyncio.to_thread(lambda: self.db.executemany(self.INSERT, self._params(rows)))
                except BaseException:
                    self.failed_flushes += 1
                    self.rows[:0] = rows  # database locked, full or down: keep the rows for the next flush
                    excess = len(self.rows) - self.max_rows
                    if excess > 0:  # ... but not without bound: the oldest go first
                        del self.rows[:excess]
                        self.dropped += excess
                        log.warning("request log: %d rows dropped (oldest first) while writes fail", excess)
                    raise
                finally:
                    self.writing = 0

    @property
    def pending(self) -> int:
        """Rows not written yet: queued, or in the flush under way."""
        return len(self.rows) + self.writing

    async def run(self, interval: float = 0.5) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush()
            except Exception:
                log.exception("request log flush failed; its rows are kept for the next try")

    def export(self, tenant: str, user: str) -> list[dict[str, Any]]:
        """The user's logged requests, oldest first (blocking; flush first for the rows still queued)."""
        rows = self.db.execute(
            f'SELECT {", ".join(EXPORTED)} FROM request_log WHERE tenant = ? AND "user" = ? ORDER BY created_at',
            (tenant, user),
        )
        return [dict(zip(EXPORTED, r, strict=True)) for r in rows]

    def forget(self, tenant: str, user: str) -> int:
        """Delete the user's logged requests (blocking; flush first); how many."""
        sql = 'DELETE FROM request_log WHERE tenant = ? AND "user" = ? RETURNING 1'
        return len(self.db.execute(sql, (tenant, user)))

    def recent(self, tenant: str, user: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The tenant's (or one user's) latest logged requests, newest first, without prompts (blocking)."""
        cols = ", ".join('"user"' if c == "user" else c for c in RECENT)
        where, params = ("tenant = ?", (tenant,)) if user is None else ('tenant = ? AND "user" = ?', (tenant, user))
        rows = self.db.execute(
            f"SELECT {cols} FROM request_log WHERE {where} ORDER BY created_at DESC LIMIT ?", (*params, limit)
        )
        return [dict(zip(RECENT, r, strict=True)) for r in rows]

    def users(self, tenant: str, prefix: str = "", limit: int = 200) -> dict[str, tuple[int, float]]:
        """The tenant's users with logged requests, whose id starts with ``prefix``: user -> (requests, last
        request's time), the most recently active first (blocking)."""
        like = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = self.db.execute(
            'SELECT "user", count(*), max(created_at) FROM request_log WHERE tenant = ? AND "user" IS NOT NULL '
            "AND \"user\" LIKE ? ESCAPE '\\' GROUP BY \"user\" ORDER BY 3 DESC LIMIT ?",
            (tenant, like, limit),
        )
        return {r[0]: (int(r[1]), float(r[2])) for r in rows}
