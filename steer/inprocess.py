"""``steer.InProcessClient``: the same pipeline as the server, in-process, for apps that want no server.

    async with steer.InProcessClient() as pipe:
        answer = await pipe.chat([{"role": "user", "content": "hi"}], user="alice")

It runs exactly what the server runs for a request (identity, policy, stages, upstream), with
the caller trusted as an admin of ``tenant``. ``steer.Pipeline`` is the same class under its
earlier name.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson

from steer.identity import Identity
from steer.server.chat import chat_completion
from steer.server.services import Services
from steer.settings import Settings, load_settings


class InProcessClient:
    def __init__(
        self, settings: Settings | None = None, *, tenant: str = "default", **overrides: Any
    ) -> None:
        self.settings = settings or load_settings(**overrides)
        self.services = Services(self.settings)
        self.caller = Identity(tenant=tenant, user=None, admin=True)

    async def __aenter__(self) -> InProcessClient:
        await self.services.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.services.close()

    async def chat(
        self,
        messages: list[dict[str, Any]],
        *,
        user: str | None = None,
        model: str | None = None,
        debug: bool = False,
        **params: Any,
    ) -> dict[str, Any]:
        """One chat completion (``stream`` is not allowed here: use ``stream()``)."""
        body = {"messages": messages, "model": model, **params, "stream": False}
        if user:
            body["user"] = user
        result = await chat_completion(self.services, body, self.caller, {}, uuid.uuid4().hex, debug)
        assert result.body is not None
        return result.body

    async def stream(
        self,
        messages: list[dict[str, Any]],
        *,
        user: str | None = None,
        model: str | None = None,
        debug: bool = False,
        **params: Any,
    ) -> AsyncIterator[dict[str, Any]]:
        """The chunks of a streamed completion, as dicts."""
        body = {"messages": messages, "model": model, **params, "stream": True}
        if user:
            body["user"] = user
        result = await chat_completion(self.services, body, self.caller, {}, uuid.uuid4().hex, debug)
        assert result.stream is not None
        async with contextlib.aclosing(result.stream) as batches:  # a caller that stops early ends the upstream call
            async for batch in batches:
                for event in batch.split(b"\n\n"):
                    data = event[6:].strip()
                    if data and data != b"[DONE]":
                        yield orjson.loads(data)


Pipeline = InProcessClient  # its earlier name, kept for the apps that use it
