"""Model names to upstreams, with retries (exponential backoff, Retry-After) and fallbacks.

Every backend's whole completion is checked for the shape of a ``chat.completion`` here (see
:func:`steer.protocol.check_completion`): a malformed answer is an upstream error like a 5xx.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

from steer.errors import InvalidRequest, ModelNotFound, RateLimited, SteerError, UpstreamError
from steer.protocol import check_completion, fill_required_nulls
from steer.settings import ModelConfig, Settings
from steer.upstreams import Forwarder, Upstream, backends

if TYPE_CHECKING:
    from prometheus_client import Counter, Histogram


class RouterMetrics(Protocol):
    """The metrics the router keeps (``steer.server.metrics.Metrics`` has them)."""

    @property
    def upstream_errors(self) -> Counter: ...

    @property
    def upstream_retries(self) -> Counter: ...

    def upstream_seconds_of(self, model: str, backend: str) -> Histogram: ...

    def tokens_of(self, model: str, kind: str) -> Counter: ...


@dataclass(slots=True)
class OpenStream:
    """A stream whose first bytes have come (None: it ended without any), the rest of it, and the model
    that serves it (the first one of the chain, or a fallback)."""

    first: bytes | None
    rest: AsyncGenerator[bytes, None]
    model: str


RETRYABLE = (UpstreamError, RateLimited)  # 5xx, timeouts, connection errors, 429
MAX_BACKOFF_S = 4.0
NO_RETRY = {"x-should-retry": "false"}  # read by the official OpenAI SDKs, which then do not retry


def spent(err: SteerError) -> SteerError:
    """``err`` marked as final: steer spent its own retries (and fallbacks) on it, so a client that
    retries would only multiply the upstream attempts."""
    err.headers = {**err.headers, **NO_RETRY}
    return err


def backoff_delay(attempt: int, err: SteerError, base: float = 0.05) -> float:
    retry_after = err.headers.get("Retry-After")
    if retry_after:
        try:
            return float(min(float(retry_after), MAX_BACKOFF_S))
        except ValueError:
            pass
    delay: float = min(base * (2**attempt), MAX_BACKOFF_S)
    return delay * (0.5 + random.random() / 2)


class Router:
    def __init__(self, settings: Settings, metrics: RouterMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._upstreams: dict[str, Upstream] = {}

    def config(self, name: str | None) -> ModelConfig:
        name = name or self.settings.default_model or self.settings.models[0].name
        cfg = self.settings.model(name)
        if cfg is None:
            raise ModelNotFound(f"the model {name!r} does not exist on this steer server", param="model")
        return cfg

    def upstream(self, name: str) -> Upstream:
        up = self._upstreams.get(name)
        if up is None:
            cfg = self.config(name)
            assert cfg.backend
            up = self._upstreams[name] = backends.get(cfg.backend)(cfg, self.settings)
        return up

    def chain(self, name: str) -> list[ModelConfig]:
        first = self.config(name)
        return [first, *(self.config(f) for f in first.fallbacks)]

    async def complete(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        async def completion(cfg: ModelConfig) -> dict[str, Any]:
            data = await self.upstream(cfg.name).complete(body)
            check_completion(cfg.name, data)
            fill_required_nulls(data)
            return data

        return await self._with_retries(name, completion)

    async def _with_retries(
        self, name: str, call: Callable[[ModelConfig], Awaitable[dict[str, Any]]]
    ) -> dict[str, Any]:
        """``call`` on the model's chain: each model's retries with backoff, then its fallbacks; the last
        error, marked as spent, when every attempt failed."""
        last: SteerError | None = None
        for cfg in self.chain(name):
            hist = self._upstream_seconds(cfg)
            for attempt in range(cfg.retries + 1):
                if last is not None:
                    self.metrics.upstream_retries.labels(cfg.name).inc()
                t0 = time.perf_counter()
                try:
                    data = await call(cfg)
                except RETRYABLE as exc:
                    self.metrics.upstream_errors.labels(cfg.name, exc.type).inc()
                    last = exc
                    if attempt < cfg.retries:
                        await asyncio.sleep(backoff_delay(attempt, exc))
                    continue
                hist.observe(time.perf_counter() - t0)
                self._count_tokens(cfg.name, data.get("usage"))
                return data
        assert last is not None
        raise spent(last)

    async def open_stream(self, name: str, body: dict[str, Any]) -> OpenStream:
        """The chat stream of model ``name`` once its first events have come (retries and fallbacks until
        then); the rest is read from the backend's own generator, with no generator of the router's in
        between (the fast path's forwarding pays no resumption per read for it)."""
        return await self._open(name, lambda cfg: self.upstream(cfg.name).stream(body))

    def failed(self, model: str, exc: SteerError) -> None:
        """An error of ``model``'s stream after its first events (counted as the retried ones are)."""
        if isinstance(exc, RETRYABLE):
            self.metrics.upstream_errors.labels(model, exc.type).inc()

    async def _open(self, name: str, open_stream: Callable[[ModelConfig], AsyncGenerator[bytes, None]]) -> OpenStream:
        """The stream ``open_stream`` opens, on the model's chain, once its first bytes have come: each
        model's retries with backoff, then its fallbacks, as ``_with_retries`` does. The time to those
        first bytes is the upstream's time."""
        last: SteerError | None = None
        for cfg in self.chain(name):
            for attempt in range(cfg.retries + 1):
                if last is not None:
                    self.metrics.upstream_retries.labels(cfg.name).inc()
                t0 = time.perf_counter()
                try:
                    events = open_stream(cfg)
                    first = await anext(events, None)  # a generator that raised is finished: nothing to close
                except RETRYABLE as exc:
                    self.metrics.upstream_errors.labels(cfg.name, exc.type).inc()
                    last = exc
                    if attempt < cfg.retries:
                        await asyncio.sleep(backoff_delay(attempt, exc))
                    continue
                if first is not None:
                    self._upstream_seconds(cfg).observe(time.perf_counter() - t0)
                return OpenStream(first, events, cfg.name)
        assert last is not None
        raise spent(last)

    async def post_stream(self, name: str, path: str, body: dict[str, Any]) -> AsyncGenerator[bytes, None]:
        """Another endpoint's event stream, as one generator: retries and fallbacks (:meth:`_open`) only
        until its first bytes have been passed on; after them an error ends the stream."""
        opened = await self._open(name, lambda cfg: self.forwarder(cfg.name, path).post_stream(path, body))
        # aclosing: a consumer that stops (client gone) closes the upstream's response now
        async with contextlib.aclosing(opened.rest) as rest:
            if opened.first is None:
                return
            yield opened.first
            try:
                async for block in rest:
                    yield block
            except SteerError as exc:
                self.failed(opened.model, exc)
                raise

    def forwarder(self, name: str, path: str) -> Forwarder:
        """The upstream of model ``name``, for an endpoint other than chat (``path``: ``/embeddings``...); a
        400 naming the model when its backend does not serve that endpoint."""
        cfg = self.config(name)
        up = self.upstream(cfg.name)
        supports = getattr(up, "supports", None)
        if supports is None or not supports(path):
            raise InvalidRequest(
                f"model {cfg.name!r} (backend {cfg.backend}) does not serve /v1{path}; "
                "use a model of backend openai or litellm",
                param="model",
                code="unsupported_endpoint",
            )
        return cast(Forwarder, up)

    async def post(self, name: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """``body`` to another endpoint of the model's upstream, with the chat path's retries and fallbacks."""

        async def forward(cfg: ModelConfig) -> dict[str, Any]:
            return await self.forwarder(cfg.name, path).post(path, body)

        return await self._with_retries(name, forward)

    def _upstream_seconds(self, cfg: ModelConfig) -> Histogram:
        return self.metrics.upstream_seconds_of(cfg.name, str(cfg.backend))  # the label prometheus would write

    def _count_tokens(self, model: str, usage: Any) -> None:
        if isinstance(usage, dict):
            for kind in ("prompt_tokens", "completion_tokens"):
                value = usage.get(kind)
                if isinstance(value, int) and value > 0:
                    self.metrics.tokens_of(model, kind.removesuffix("_tokens")).inc(value)

    async def aclose(self) -> None:
        for up in self._upstreams.values():
            await up.aclose()
        self._upstreams.clear()
