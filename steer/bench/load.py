"""A closed-loop HTTP/1.1 load driver for the benchmarks, meant to run in its own process.

N clients, each with one keep-alive connection, send the same POST back to back for a warm-up
and then a measured window; every request completed inside the window is timed. The client is
a bare ``asyncio.Protocol`` over ``httptools`` (the parser uvicorn uses) on uvloop where present,
so it spends a few tens of microseconds per request: on a small machine the driver shares the
cores with the servers it measures, and aiohttp's client would cost several times as much.

Timestamps are taken in the protocol callbacks, when the bytes are handed over by the event loop:
``total`` when the response is complete, ``ttfc`` (streaming) when the first full ``data:`` line of
the body has arrived.

    python -m steer.bench.load --url http://127.0.0.1:8400/v1/chat/completions \\
        --body '{"model": "fast", "messages": [...]}' --clients 32 --duration 10 --warmup 2 [--stream]

prints one JSON object (see :func:`summarize`) on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httptools
import orjson

from steer.bench.report import percentile

MAX_ERROR_SAMPLES = 5


class RequestFailed(Exception):
    pass


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; one request in flight at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False
        self._reset(False)

    def _reset(self, stream: bool) -> None:
        self.stream = stream
        self.status = 0
        self.body: list[bytes] = []
        self.head = b""  # streaming: the body up to its first complete data: line
        self.tail = b""  # streaming: the body's last bytes, to find data: [DONE]
        self.first: float | None = None
        self.done: float | None = None
        self.keep_alive = True

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(RequestFailed("unexpected upgrade"))
        except httptools.HttpParserError as exc:
            self._fail(RequestFailed(f"bad HTTP response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(RequestFailed(f"connection closed: {exc}" if exc else "connection closed by the server"))

    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    # httptools callbacks
    def on_status(self, status: bytes) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        if not self.stream:
            self.body.append(body)
            return
        if self.first is None:
            self.head += body
            start = 0 if self.head.startswith(b"data:") else self.head.find(b"\ndata:")
            if start >= 0 and self.head.find(b"\n", start + 1) >= 0:
                self.first = time.perf_counter()
                self.head = b""
        self.tail = (self.tail + body)[-32:]

    def on_message_complete(self) -> None:
        self.done = time.perf_counter()
        self.keep_alive = self.parser.should_keep_alive()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def request(self, data: bytes, stream: bool, timeout: float) -> None:
        if self.closed or self.transport is None:
            raise RequestFailed("connection closed")
        self._reset(stream)
        self.waiter = self.loop.create_future()
        handle = self.loop.call_later(timeout, self._fail, RequestFailed(f"no complete answer within {timeout}s"))
        try:
            self.transport.write(data)
            await self.waiter
        finally:
            handle.cancel()
            self.waiter = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@dataclass
class Samples:
    total: list[float] = field(default_factory=list)  # seconds
    ttfc: list[float] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    sent: int = 0

    def error(self, message: str) -> None:
        self.errors += 1
        if len(self.error_samples) < MAX_ERROR_SAMPLES and message not in self.error_samples:
            self.error_samples.append(message)


def build_request(url: str, body: bytes, extra_headers: dict[str, str] | None = None) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"only http:// URLs are supported, not {url!r}")
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    headers = {
        "Host": f"{host}:{port}",
        "Content-Type": "application/json",
        "Accept": "*/*",
        "Content-Length": str(len(body)),
        **(extra_headers or {}),
    }
    head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return host, port, head.encode("latin-1") + body


async def drive(
    url: str,
    body: bytes,
    *,
    stream: bool,
    clients: int,
    duration: float,
    warmup: float,
    timeout: float = 30.0,
    headers: dict[str, str] | None = None,
    mark: bool = False,
) -> dict[str, Any]:
    """Run the load and return :func:`summarize` of what was measured in the window."""
    loop = asyncio.get_running_loop()
    host, port, request = build_request(url, body, headers)
    samples = Samples()
    t_begin = time.perf_counter()
    t_start = t_begin + warmup
    t_end = t_start + duration

    async def connect() -> _Connection:
        _, proto = await loop.create_connection(lambda: _Connection(loop), host, port)
        return proto

    async def client() -> None:
        conn: _Connection | None = None
        while True:
            t0 = time.perf_counter()
            if t0 >= t_end:
                break
            try:
                if conn is None or conn.closed:
                    conn = await connect()
                    t0 = time.perf_counter()
                await conn.request(request, stream, timeout)
            except (OSError, RequestFailed) as exc:
                samples.error(f"{type(exc).__name__}: {exc}")
                if conn is not None:
                    conn.close()
                conn = None
                await asyncio.sleep(0.01)  # a refused connection must not spin
                continue
            samples.sent += 1
            done = conn.done or time.perf_counter()
            if conn.status != 200:
                samples.error(f"HTTP {conn.status}: {b''.join(conn.body)[:200].decode('utf-8', 'replace')}")
            elif stream and (conn.first is None or b"[DONE]" not in conn.tail):
                samples.error("stream ended without data: [DONE]" if conn.first else "stream had no data: event")
            elif not stream and b'"choices"' not in b"".join(conn.body):
                samples.error(f"answer without choices: {b''.join(conn.body)[:200].decode('utf-8', 'replace')}")
            elif t_start <= done <= t_end:
                samples.total.append(done - t0)
                if stream and conn.first is not None:
                    samples.ttfc.append(conn.first - t0)
            if not conn.keep_alive:
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    if mark:  # for whoever watches the servers' CPU: the window opens and closes now
        loop.call_at(loop.time() + (t_start - time.perf_counter()), _mark, "window-start")
        loop.call_at(loop.time() + (t_end - time.perf_counter()), _mark, "window-end")
    await asyncio.gather(*(client() for _ in range(clients)))
    return summarize(
        samples,
        duration,
        stream=stream,
        clients=clients,
        warmup=warmup,
        elapsed=time.perf_counter() - t_begin,
    )


def _mark(what: str) -> None:
    sys.stderr.write(what + "\n")
    sys.stderr.flush()


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 3)


def summarize(samples: Samples, duration: float, **info: Any) -> dict[str, Any]:
    total = sorted(samples.total)
    ttfc = sorted(samples.ttfc)
    out: dict[str, Any] = {
        **info,
        "duration_s": duration,
        "requests": len(total),
        "requests_per_s": round(len(total) / duration, 2) if duration > 0 else None,
        "sent": samples.sent,
        "errors": samples.errors,
        "error_samples": samples.error_samples,
        "mean_ms": _ms(sum(total) / len(total)) if total else None,
        "p50_ms": _ms(percentile(total, 50)),
        "p90_ms": _ms(percentile(total, 90)),
        "p99_ms": _ms(percentile(total, 99)),
        "max_ms": _ms(total[-1] if total else None),
    }
    if info.get("stream"):
        out.update(
            ttfc_p50_ms=_ms(percentile(ttfc, 50)),
            ttfc_p90_ms=_ms(percentile(ttfc, 90)),
            ttfc_p99_ms=_ms(percentile(ttfc, 99)),
        )
    return out


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop where installed, else asyncio's (the drivers and the lean stub run on it)."""
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


def run_drive(**kwargs: Any) -> dict[str, Any]:
    """:func:`drive` on a fresh (uv)loop; for the driver process."""
    loop = new_event_loop()
    try:
        return loop.run_until_complete(drive(**kwargs))
    finally:
        loop.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="closed-loop HTTP load driver (one JSON summary on stdout)")
    p.add_argument("--url", required=True)
    p.add_argument("--body", required=True, help="the JSON request body")
    p.add_argument("--stream", action="store_true")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--mark", action="store_true", help="write window-start and window-end lines on stderr")
    a = p.parse_args(argv)
    result = run_drive(
        url=a.url,
        body=a.body.encode(),
        stream=a.stream,
        clients=a.clients,
        duration=a.duration,
        warmup=a.warmup,
        timeout=a.timeout,
        mark=a.mark,
    )
    sys.stdout.buffer.write(orjson.dumps(result) + b"\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
