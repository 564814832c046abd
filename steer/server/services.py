"""Everything a running steer holds, assembled once by ``Services.start`` and handed down.

The HTTP app keeps one ``Services`` on ``app.state``; ``steer.Pipeline`` uses the same object
in-process. Nothing here runs at import time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson

from steer.methods.memory.service import MemoryService
from steer.methods.profiles.service import ProfileService
from steer.pipeline.policy import Policy, PolicyStore
from steer.pipeline.stage import Stage, StageConfig, stages
from steer.server.auth import Identity, KeyRing
from steer.server.gc import freeze_heap, tune_collector
from steer.server.metrics import Metrics
from steer.settings import Settings
from steer.storage.database import NOT_FORGOTTEN, Database, purge_expired, tombstone_args
from steer.upstreams.router import Router

log = logging.getLogger("steer")


class RequestLog:
    """Rows for ``request_log``, written in batches by a background task, off the response path.

    Each row comes with the time its request began; the batch insert drops, inside its transaction, the
    rows of a user forgotten since (``steer.storage.database.NOT_FORGOTTEN``): no database read on the request path.
    """

    INSERT = f"INSERT OR REPLACE INTO request_log SELECT ?,?,?,?,?,?,?,?,?,?,?,?,? WHERE {NOT_FORGOTTEN}"

    def __init__(self, db: Database, max_rows: int = 100_000) -> None:
        self.db = db
        self.max_rows = max_rows
        self.dropped = 0  # rows dropped, oldest first, while the database refused writes
        self.rows: list[tuple[tuple[Any, ...], float]] = []  # (row, when its request began)
        self._flushing = asyncio.Lock()  # a flush returns once every row added before it is written

    def add(self, row: tuple[Any, ...], began: float | None = None) -> None:
        """Queue a row; ``began``: when its request began (None: now)."""
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
                try:
                    await asyncio.to_thread(lambda: self.db.executemany(self.INSERT, self._params(rows)))
                except BaseException:
                    self.rows[:0] = rows  # database locked or full: keep the rows for the next flush
                    excess = len(self.rows) - self.max_rows
                    if excess > 0:  # ... but not without bound: the oldest go first
                        del self.rows[:excess]
                        self.dropped += excess
                        log.warning("request log: %d rows dropped (oldest first) while writes fail", excess)
                    raise

    async def run(self, interval: float = 0.5) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush()
            except Exception:
                log.exception("request log flush failed; its rows are kept for the next try")



async def retain(db: Database, retention_days: float, interval: float = 3600.0) -> None:
    """Apply the retention setting (``steer.storage.database.purge_expired``) at start-up, then every ``interval`` s."""
    while True:
        try:
            removed = await asyncio.to_thread(purge_expired, db, time.time() - retention_days * 86400)
            if any(removed.values()):
                log.info("retention: rows older than %s days removed or cleared: %s", retention_days, removed)
        except Exception:
            log.exception("retention purge failed; retried at the next interval")
        await asyncio.sleep(interval)


class Services:
    def __init__(self, settings: Settings, *, owns_process: bool = False) -> None:
        self.settings = settings
        self.owns_process = owns_process  # `steer serve`: process-wide settings (the collector) are ours
        self.metrics = Metrics()
        self.keys = KeyRing(settings)
        self.policies = PolicyStore(settings.policies, multi_tenant=settings.auth_required)
        self.router = Router(settings, self.metrics)
        self.memory = MemoryService(settings, self.metrics)
        self.profiles = ProfileService(self)  # scorers, shared embedder, user profiles (built on use)
        self.db: Database | None = None
        self.request_log: RequestLog | None = None
        self._stages: dict[str, Stage] = {}
        self._plans: dict[tuple[str, bool], tuple[Policy, list[tuple[Stage, StageConfig]]]] = {}
        self.background: set[asyncio.Task[Any]] = set()
        self.forgetting = asyncio.Lock()  # one forget at a time (each moves a tombstone twice)
        self._loops: list[asyncio.Task[Any]] = []
        self.started_at = time.time()
        self.ready = False
        self.warm = False  # the start-up warm-up is done: models loaded, litellm imported

    async def start(self) -> None:
        if self.owns_process:
            tune_collector(self.settings.gc_threshold)
        self.db = await asyncio.to_thread(Database, self.settings.database)
        self.request_log = RequestLog(self.db, self.settings.max_log_rows)
        self._loops.append(asyncio.create_task(self.request_log.run()))
        if self.settings.retention_days is not None:
            self._loops.append(asyncio.create_task(retain(self.db, self.settings.retention_days)))
        if self.settings.policy_reload:
            reloaded = self.metrics.policy_reloads.labels
            self._loops.append(asyncio.create_task(self.policies.watch(on_reload=lambda r: reloaded(r).inc())))
        self._loops.append(asyncio.create_task(self.warmup()))
        self.ready = True

    async def warmup(self) -> None:
        """Load, off the request path, the models that the policies and the default model need."""
        names = {n for p in self.policies.current.policies.values() for n, _ in p.stage_configs()}
        parts: list[Any] = [self.stage(n) for n in sorted(names)]
        # the default model, and litellm for every model that goes through it: its import takes
        # seconds of the interpreter, better spent now than stalling the requests of the first one
        models = [self.router.config(None).name]
        models += [m.name for m in self.settings.models if m.backend == "litellm" and m.name not in models]
        parts += [self.router.upstream(name) for name in models]
        for part in parts:
            warm = getattr(part, "warmup", None)
            if warm is not None:
                try:
                    await warm()
                except Exception:
                    log.exception(
                        "warm-up of %s failed; it will be retried on first use", type(part).__name__
                    )
        if self.owns_process:
            freeze_heap(self.settings.gc_freeze)
        self.warm = True

    async def close(self) -> None:
        """Shut down. Background work (remember runs and the memory writer's queue) gets
        ``shutdown_grace_s`` in all; what is still queued then is dropped, logged and counted, and only the
        write in progress is waited for."""
        self.ready = False
        deadline = time.monotonic() + self.settings.shutdown_grace_s
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        if self.background:
            await asyncio.wait(self.background, timeout=max(deadline - time.monotonic(), 0.0))
        await self.memory.drain(max(deadline - time.monotonic(), 0.0))
        for task in self.background:  # still extracting (a model) or waiting on writes just dropped
            task.cancel()
        if self.background:
            await asyncio.wait(self.background, timeout=1.0)
        if self.request_log is not None:
            await self.request_log.flush()
        await self.router.aclose()
        self.memory.close()
        if self.db is not None:
            self.db.close()

    def stage(self, name: str) -> Stage:
        inst = self._stages.get(name)
        if inst is None:
            inst = self._stages[name] = stages.get(name)(self)
        return inst

    def plan(self, policy: Policy, identity: Identity) -> list[tuple[Stage, StageConfig]]:
        """The stages to run for this policy, in order; cached for this very policy object.

        The cache is checked against the policy itself, not the current policy set: a reload (in a
        worker thread) may land between resolving a request's policy and planning it.
        """
        key = (policy.name, identity.user is None)
        cached = self._plans.get(key)
        if cached is not None and cached[0] is policy:
            return cached[1]
        plan = [
            (self.stage(name), cfg)
            for name, cfg in policy.stage_configs()
            if not (identity.user is None and stages.get(name).needs_user)
        ]
        self._plans[key] = (policy, plan)
        return plan

    def log_request(self, trace: dict[str, Any], status: int, stream: bool, usage: Any, prompt: str | None) -> None:
        if self.request_log is None:
            return
        usage = usage if isinstance(usage, dict) else {}
        stages_json = orjson.dumps([s["name"] + ":" + s["status"] for s in trace["stages"]]).decode()
        now = time.time()
        self.request_log.add(
            (
                trace["trace_id"],
                now,
                trace["tenant"],
                trace["user"],
                trace["policy"],
                trace["model"],
                status,
                int(stream),
                trace["total_ms"],
                usage.get("prompt_tokens"),
                usage.get("completion_tokens"),
                stages_json,
                prompt,
            ),
            now - trace["total_ms"] / 1000,  # when the request began
        )
