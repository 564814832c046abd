"""steer's app served in process: its lifespan run, requests sent through httpx's ``ASGITransport``.

No socket and no subprocess: for the tests of the protocol and of policies, which need the app's
answers, not a network. Two forms:

- :func:`app_client` for async code: ``async with app_client(app) as client: await client.post(...)``.
- :class:`AppThread` for synchronous code (and the ``openai`` SDK's sync client): the app's event
  loop runs in a thread of this process, and :attr:`AppThread.transport` is an
  ``httpx.BaseTransport`` that hands each request to it.

``ASGITransport`` hands a response over once the app has sent all of it, so a stream arrives whole:
tests of streaming over a real connection (a client leaving mid-stream, back-pressure) and of
durability keep a real server.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import httpx

BASE_URL = "http://localhost"  # an address steer answers without API keys
START_TIMEOUT_S = 120.0


def _transport(app: Any) -> httpx.ASGITransport:
    # an exception the app did not handle is a 500, as a server would answer, not a raise in the test
    return httpx.ASGITransport(app=app, raise_app_exceptions=False)


@asynccontextmanager
async def app_client(app: Any, base_url: str = BASE_URL) -> AsyncIterator[httpx.AsyncClient]:
    """An ``httpx.AsyncClient`` speaking to ``app`` in process, inside the app's lifespan."""
    transport = _transport(app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url=base_url) as client:
        yield client


class AppThread:
    """``app`` with its lifespan entered, on an event loop in a thread; stop it with :meth:`stop`."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self._asgi = _transport(app)
        self._thread = threading.Thread(target=self.loop.run_forever, name="steer-app", daemon=True)
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._main: concurrent.futures.Future[None] | None = None
        self._error: BaseException | None = None

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        try:
            async with self.app.router.lifespan_context(self.app):  # one task, as a server runs it
                self._ready.set()
                await self._stopping.wait()
        except BaseException as exc:
            self._error = exc
            raise
        finally:
            self._ready.set()

    def start(self) -> AppThread:
        self._thread.start()
        self._main = asyncio.run_coroutine_threadsafe(self._serve(), self.loop)
        if not self._ready.wait(START_TIMEOUT_S):
            self.stop()
            raise RuntimeError("the app's lifespan did not start")
        if self._error is not None:
            self.stop()
            raise RuntimeError("the app's lifespan failed") from self._error
        return self

    def stop(self) -> None:
        """Run the lifespan's shutdown, then end the loop and its thread (safe to call twice)."""
        if not self._thread.is_alive():
            return
        if self._stopping is not None and self._main is not None and not self._main.done():
            self.loop.call_soon_threadsafe(self._stopping.set)
            with suppress(BaseException):  # a failed lifespan was reported by start
                self._main.result(timeout=60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)
        if not self._thread.is_alive():
            self.loop.close()

    def run(self, coro: Any, timeout: float | None = None) -> Any:
        """Run a coroutine on the app's loop and return its result (for a test's direct calls)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def transport(self) -> httpx.BaseTransport:
        return _ThreadTransport(self)

    def client(self, base_url: str = BASE_URL, **kwargs: Any) -> httpx.Client:
        return httpx.Client(transport=self.transport, base_url=base_url, **kwargs)


class _ThreadTransport(httpx.BaseTransport):
    def __init__(self, app: AppThread) -> None:
        self._app = app

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        forward = httpx.Request(request.method, request.url, headers=request.headers, content=body)

        async def send() -> tuple[int, httpx.Headers, bytes]:
            response = await self._app._asgi.handle_async_request(forward)
            raw = b"".join([chunk async for chunk in response.aiter_raw()])  # still encoded, as on a wire
            return response.status_code, response.headers, raw

        status, headers, raw = self._app.run(send())
        return httpx.Response(status, headers=headers, content=raw, request=request)
