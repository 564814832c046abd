"""Prometheus metrics, one registry per app (no process-wide globals)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

M = TypeVar("M", Counter, Histogram)


class Children(Generic[M]):
    """A labelled metric's children, each looked up once: ``labels`` takes a lock and checks the label
    names on every call, which the per-request paths need not pay."""

    __slots__ = ("_by", "metric")

    def __init__(self, metric: M) -> None:
        self.metric: M = metric
        self._by: dict[tuple[str, ...], M] = {}

    def __call__(self, *labels: str) -> M:
        child = self._by.get(labels)
        if child is None:
            child = self._by[labels] = self.metric.labels(*labels)
        return child


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("steer_requests_total", "Requests served", ["route", "status"], registry=r)
        self.request_seconds = Histogram(
            "steer_request_seconds",
            "Time to the response (streams: to the start of the stream; see steer_first_chunk_seconds)",
            ["route"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.first_chunk_seconds = Histogram(
            "steer_first_chunk_seconds",
            "Streaming: time to the first chunk",
            ["model"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.stage_seconds = Histogram(
            "steer_stage_seconds",
            "Time spent in each stage",
            ["stage", "status"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.stage_failures = Counter(
            "steer_stage_failures_total",
            "Stages that failed or timed out and were skipped or failed the request",
            ["stage", "status"],
            registry=r,
        )
        self.upstream_seconds = Histogram(
            "steer_upstream_seconds",
            "Upstream call time (streams: to the first chunk)",
            ["model", "backend"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.upstream_errors = Counter(
            "steer_upstream_errors_total", "Upstream attempts that failed", ["model", "type"], registry=r
        )
        self.upstream_retries = Counter(
            "steer_upstream_retries_total", "Retries and fallbacks", ["model"], registry=r
        )
        self.errors = Counter(
            "steer_errors_total", "Errors returned to clients", ["type", "code"], registry=r
        )
        self.tokens = Counter(
            "steer_tokens_total", "Tokens reported by upstreams", ["model", "kind"], registry=r
        )
        self.policy_reloads = Counter("steer_policy_reloads_total", "Policy reloads", ["result"], registry=r)
        self.memory_dropped = Counter(
            "steer_memory_dropped_total",
            "Extracted preferences not stored: turn_cap (over memory.max_per_turn), user_cap (the user holds "
            "memory.max_per_user), queue_full (memory.max_pending_per_user queued), forgotten (the user was "
            "forgotten after the request began), shutdown (still queued after shutdown_grace_s), error",
            ["reason"],
            registry=r,
        )
        self.memory_truncated_turns = Counter(
            "steer_memory_truncated_turns_total",
            "Turns of which the extractor read only the first memory.max_turn_chars characters",
            registry=r,
        )
        self.memory_late_writes = Counter(
            "steer_memory_late_writes_total",
            "Preferences written after the remember stage that queued them had timed out (kept, not lost)",
            registry=r,
        )
        self.memory_pending = Gauge(
            "steer_memory_pending",
            "Preferences queued for, or being written by, the background memory writer",
            registry=r,
        )
        # the request log's background writes (``steer.storage.request_log``), set from its counts when scraped
        self.request_log_pending = Gauge(
            "steer_request_log_pending", "Request log rows waiting for the database (kept while it refuses writes)",
            registry=r,
        )
        self.request_log_failed_flushes = Gauge(
            "steer_request_log_failed_flushes", "Request log writes the database refused (rows kept, retried)",
            registry=r,
        )
        self.request_log_dropped = Gauge(
            "steer_request_log_dropped", "Request log rows shed, oldest first, past max_log_rows while writes failed",
            registry=r,
        )
        self.store_up = Gauge(
            "steer_store_up", "1 when the database answered the last readiness probe, else 0", registry=r
        )
        self._requests = Children(self.requests)
        self._request_seconds = Children(self.request_seconds)
        self.first_chunk = Children(self.first_chunk_seconds)  # (model)
        self.upstream_seconds_of = Children(self.upstream_seconds)  # (model, backend)
        self.tokens_of = Children(self.tokens)  # (model, kind)

    def on_stage(self, stage: str, status: str, seconds: float) -> None:
        self.stage_seconds.labels(stage, status).observe(seconds)
        if status != "ok":
            self.stage_failures.labels(stage, status).inc()

    def request_done(self, route: str, status: int, seconds: float) -> None:
        self._requests(route, str(status)).inc()
        self._request_seconds(route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def totals(self) -> dict[tuple[str, str], float]:
        """The counters the inspector's health page shows, summed over their other labels:
        (``requests`` | ``errors`` | ``seconds`` | ``count``, route) and (``stage_seconds`` | ``stage_count`` |
        ``stage_failures``, stage). Errors: answers with a status of 400 or more."""
        out: dict[tuple[str, str], float] = {}

        def add(key: tuple[str, str], value: float) -> None:
            out[key] = out.get(key, 0.0) + value

        for metric in self.registry.collect():
            for sample in metric.samples:
                labels = sample.labels
                if sample.name == "steer_requests_total":
                    add(("requests", labels["route"]), sample.value)
                    if int(labels["status"]) >= 400:
                        add(("errors", labels["route"]), sample.value)
                elif sample.name == "steer_request_seconds_sum":
                    add(("seconds", labels["route"]), sample.value)
                elif sample.name == "steer_stage_seconds_sum":
                    add(("stage_seconds", labels["stage"]), sample.value)
                elif sample.name == "steer_stage_seconds_count":
                    add(("stage_count", labels["stage"]), sample.value)
                elif sample.name == "steer_stage_failures_total":
                    add(("stage_failures", labels["stage"]), sample.value)
        return out


class MetricsHistory:
    """Snapshots of ``Metrics.totals`` every ``interval`` s over the last ``keep_s`` s, so the health page can
    show what happened in the last minutes (the difference between now and then)."""

    def __init__(self, metrics: Metrics, interval: float = 10.0, keep_s: float = 900.0) -> None:
        self.metrics = metrics
        self.interval = interval
        self.snapshots: deque[tuple[float, dict[tuple[str, str], float]]] = deque(maxlen=int(keep_s / interval) + 1)

    def sample(self, now: float | None = None) -> None:
        self.snapshots.append((time.time() if now is None else now, self.metrics.totals()))

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    def since(self, seconds: float) -> tuple[float, dict[tuple[str, str], float]]:
        """(the seconds actually covered, what the counters gained) over about the last ``seconds``: from the
        oldest snapshot within that window (or the oldest kept) to now."""
        now = time.time()
        current = self.metrics.totals()
        base_t, base = now, {}
        for t, snap in self.snapshots:
            if t >= now - seconds - self.interval / 2:
                base_t, base = t, snap
                break
        return now - base_t, {k: v - base.get(k, 0.0) for k, v in current.items()}
