"""Everything a running steer holds, assembled once by ``Services.start``: the one service locator.

The HTTP app keeps one ``Services`` on ``app.state``; ``steer.InProcessClient`` uses the same object
in-process. Only the server (and those in-process edges) build it. Stages and scorers never see it:
they are built from the ports it satisfies (``steer.pipeline.ports.StageDeps``). Nothing here runs
at import time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson

from steer.identity import Identity, UserIds
from steer.methods.memory.service import MemoryService
from steer.methods.profiles.service import ProfileService
from steer.pipeline.policy import Policy, PolicyStore, policy_dir
from steer.pipeline.runner import Plan, Planner
from steer.pipeline.stage import Stage, stages
from steer.server.auth import KeyRing
from steer.server.gc import freeze_heap, tune_collector
from steer.server.metrics import Metrics, MetricsHistory
from steer.settings import Settings, resolve_secret
from steer.storage import open_configured
from steer.storage.database import Database
from steer.storage.request_log import RequestLog
from steer.storage.retention import purge_expired
from steer.storage.secrets import IDENTITY, server_secret
from steer.storage.traces import TraceLog
from steer.upstreams.router import Router

log = logging.getLogger("steer")


async def retain(db: Database, retention_days: float, interval: float = 3600.0) -> None:
    """Apply the retention setting (``steer.storage.retention.purge_expired``) at start-up, then every
    ``interval`` s."""
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
        self.history = MetricsHistory(self.metrics)  # the inspector's health page: the last minutes
        self.keys = KeyRing(settings)
        configured = resolve_secret(settings.identity.secret)
        # the key user ids are mapped under: the configured secret, else the database's (read at start)
        self.user_ids = UserIds(configured.encode() if configured else None)
        self.policies = PolicyStore(policy_dir(settings.policies), multi_tenant=settings.auth_required)
        self.router = Router(settings, self.metrics)
        self.memory = MemoryService(settings, self.metrics)
        # scorers, the shared embedder, user profiles (built on use)
        self.profiles = ProfileService(lambda: self.db, self.memory, self.router, settings.memory.embedding_model)
        self.db: Database | None = None
        self.request_log: RequestLog | None = None
        self.traces: TraceLog | None = None  # settings.traces.keep: the inspector's per-request traces
        self.planner = Planner(lambda name: stages.get(name)(self))
        self.background: set[asyncio.Task[Any]] = set()
        self.forgetting = asyncio.Lock()  # one forget at a time (each moves a tombstone twice)
        self._loops: list[asyncio.Task[Any]] = []
        self.started_at = time.time()
        self.ready = False
        self.warm = False  # the start-up warm-up is done: models loaded, litellm imported

    async def start(self) -> None:
        if self.owns_process:
            tune_collector(self.settings.gc_threshold)
        self.db = await asyncio.to_thread(open_configured, self.settings)
        on_change = getattr(self.db, "on_change", None)  # a shared server announces other processes' writes
        if on_change is not None:
            on_change(self.drop_cached)
        if self.user_ids.secret is None:
            self.user_ids.secret = (await asyncio.to_thread(server_secret, self.db, IDENTITY)).encode()
        self.request_log = RequestLog(self.db, self.settings.max_log_rows)
        log_rows = self.request_log
        self.metrics.request_log_pending.set_function(lambda: log_rows.pending)
        self.metrics.request_log_failed_flushes.set_function(lambda: log_rows.failed_flushes)
        self.metrics.request_log_dropped.set_function(lambda: log_rows.dropped)
        self._loops.append(asyncio.create_task(self.request_log.run()))
        self._loops.append(asyncio.create_task(self.history.run()))
        kept = self.settings.traces
        if kept.keep:
            self.traces = TraceLog(self.db, kept.max_rows, kept.max_days)
            self._loops.append(asyncio.create_task(self.traces.run(purge_every=kept.purge_interval_s)))
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
        if self.traces is not None:
            await self.traces.flush()
        await self.router.aclose()
        self.memory.close()
        if self.db is not None:
            self.db.close()

    async def down(self, timeout_s: float = 2.0) -> list[str]:
        """The dependencies of steer's own that do not answer now: ``database`` when a database server
        (PostgreSQL) does not answer a ping within ``timeout_s`` (an embedded file has nothing to ping)."""
        ping = getattr(self.db, "ping", None)
        if ping is None:
            self.metrics.store_up.set(1)
            return []
        try:
            await asyncio.wait_for(asyncio.to_thread(ping), timeout_s)
        except Exception:
            self.metrics.store_up.set(0)
            return ["database"]
        self.metrics.store_up.set(1)
        return []

    def drop_cached(self, tenant: str | None, user: str | None) -> None:
        """Drop what the built stages hold in memory of one user (None: of everyone), on another process's
        announced change (a listener thread calls it)."""
        for stage in self.planner.built():
            drop = getattr(stage, "drop_cached", None)
            if drop is not None:
                drop(tenant, user)

    def stage(self, name: str) -> Stage:
        """The stage ``name``, built from these services' ports on first use."""
        return self.planner.stage(name)

    def plan(self, policy: Policy, identity: Identity) -> Plan:
        """The stages to run for this policy, in order (``steer.pipeline.runner.Planner.plan``)."""
        return self.planner.plan(policy, identity)

    def log_request(
        self,
        trace: dict[str, Any],
        status: int,
        stream: bool,
        usage: Any,
        prompt: str | None,
        log_prompts: bool = False,
    ) -> None:
        """One request's row in the request log, and its trace when traces are kept (requests that ran
        no stage, the fast path, leave no trace)."""
        if self.request_log is None:
            return
        usage = usage if isinstance(usage, dict) else {}
        if self.traces is not None and trace["stages"]:
            kept = self._kept_trace(trace, stream, usage, prompt, log_prompts)
            self.traces.add(kept, status, time.time() - trace["total_ms"] / 1000)
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

    def _kept_trace(
        self, trace: dict[str, Any], stream: bool, usage: dict[str, Any], prompt: str | None, log_prompts: bool
    ) -> dict[str, Any]:
        """The trace as the inspector keeps it: the debug trace without any memory's text (ids and scores
        stay; a deleted memory leaves nothing behind) and, unless ``log_prompts``, without the user's
        words (the align stage's original and rewrite)."""
        kept_stages = []
        for stage in trace["stages"]:
            stage = dict(stage)
            if isinstance(stage.get("injected"), list):
                # text: the memory as stored; line: its rendering in the block: both are the memory's words
                words = ("text", "line")
                stage["injected"] = [{k: v for k, v in m.items() if k not in words} for m in stage["injected"]]
            if not log_prompts:
                for key in ("original", "rewrite"):
                    stage.pop(key, None)
            kept_stages.append(stage)
        cfg = self.settings.model(trace["model"])
        return {
            **trace,
            "stages": kept_stages,
            "upstream": {
                "model": trace["model"],
                "backend": cfg.backend if cfg is not None else None,
                "upstream_model": cfg.upstream_model if cfg is not None else None,
            },
            "stream": stream,
            "usage": {k: v for k, v in usage.items() if isinstance(v, int | float)},
            "prompt": prompt if log_prompts else None,
        }
