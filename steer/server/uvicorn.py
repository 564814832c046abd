"""How ``steer serve`` runs uvicorn; one function builds the server, so the tests run the real one.

uvicorn times out only idle keep-alive connections (after a response): a connection that opens
and never finishes its request head stays open for good, and a few thousand such slow clients
(slowloris) use up the process's file descriptors. Two rules close that hole:

* a request head (request line and headers) must be complete within ``header_timeout_s`` of the
  connection opening, or of its previous response ending; otherwise the connection is closed;
* above ``max_connections`` open connections, a new one is answered 503 and closed at once.
  At start the soft file-descriptor limit is raised to the hard one, and the cap is lowered to
  what that allows: every connection may hold a second descriptor, to its upstream.

A request whose head is complete is not timed here: its body and answer are the app's business.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import time
from typing import Any, ClassVar, cast

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from steer.errors import Unavailable
from steer.settings import Settings

log = logging.getLogger("steer")
FD_RESERVE = 64  # descriptors kept back for the database, the listening socket, logs and model files
_WARN_EVERY_S = 60.0


def busy_response() -> bytes:
    """The 503 a connection over the cap gets, in the OpenAI error shape."""
    body = Unavailable(
        "steer has too many open connections; retry shortly", code="too_many_connections"
    ).json()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nretry-after: 1\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class HeadDeadline(asyncio.Protocol):
    """Put before one of uvicorn's HTTP protocol classes: the two rules of this module.

    A timer is armed when the connection opens and when a response ends; it closes the connection
    if, when it fires, no new request head has been completed since and no response is under way.
    Both uvicorn protocols create a new ``cycle`` when a head is complete, which is what is
    compared; the timer is cancelled as soon as that is seen.
    """

    header_timeout: ClassVar[float] = 10.0
    max_connections: ClassVar[int] = 4096
    busy: ClassVar[bytes] = b""
    warned_at: ClassVar[float] = 0.0

    # uvicorn's own attributes, read here
    connections: set[Any]
    cycle: Any
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop

    _head_timer: asyncio.TimerHandle | None = None
    _head_cycle: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            cls = type(self)
            if time.monotonic() - cls.warned_at > _WARN_EVERY_S:
                cls.warned_at = time.monotonic()
                log.warning("over max_connections (%d): new connections get a 503", self.max_connections)
            self.transport.write(self.busy)
            self.transport.close()
            return
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._head_timer is not None and self.cycle is not self._head_cycle:  # a head is complete
            self._head_timer.cancel()
            self._head_timer = None

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_cycle = self.cycle
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        cycle = self.cycle
        if cycle is self._head_cycle and (cycle is None or cycle.response_complete):
            self.transport.close()


def raise_fd_limit() -> int | None:
    """Raise the soft limit on open files to the hard one; the limit now (None: unlimited or unknown)."""
    try:
        import resource
    except ImportError:  # not a Unix
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return None if soft == resource.RLIM_INFINITY else int(soft)


def connection_cap(max_connections: int, fd_limit: int | None) -> int:
    """``max_connections``, lowered to what ``fd_limit`` descriptors can hold (two per connection)."""
    if fd_limit is None:
        return max_connections
    fits = max(1, (fd_limit - FD_RESERVE) // 2)
    if fits < max_connections:
        log.warning("max_connections lowered from %d to %d: the open-file limit is %d", max_connections, fits, fd_limit)
    return min(max_connections, fits)


def protocol_class(settings: Settings, max_connections: int, http: str | None = None) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (httptools when installed, else h11) with :class:`HeadDeadline`."""
    base: type[asyncio.Protocol] = H11Protocol
    if http == "httptools" or (http is None and importlib.util.find_spec("httptools")):
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        base = HttpToolsProtocol
    attrs = {"header_timeout": settings.header_timeout_s, "max_connections": max_connections, "busy": busy_response()}
    return cast("type[asyncio.Protocol]", type(f"Steer{base.__name__}", (HeadDeadline, base), attrs))


def server_config(settings: Settings, app: Any, *, http: str | None = None) -> uvicorn.Config:
    """The uvicorn configuration of ``steer serve`` (``http``: force ``h11`` or ``httptools``)."""
    cap = connection_cap(settings.max_connections, raise_fd_limit())
    kwargs: dict[str, Any] = {"loop": "uvloop"} if importlib.util.find_spec("uvloop") else {}
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=protocol_class(settings, cap, http),
        ws="none",  # steer has no WebSocket route: an upgrade request is plain HTTP to it
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=30,
        proxy_headers=False,
        server_header=False,
        date_header=False,
        **kwargs,
    )
