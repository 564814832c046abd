"""The fast path: any OpenAI-compatible server (vLLM, OpenAI, llama.cpp server, SGLang...).

One pooled aiohttp session per upstream; the body goes out as the client sent it (model name
swapped for the upstream's), and the answer comes back parsed once (non-streaming) or as SSE
events forwarded as they arrive (streaming), all the events of one network read in one write.
No litellm on this path: its per-call cost is what ``steer bench overhead`` measures as the
``via-litellm`` target against ``fast`` (docs/benchmarks.md).

A stream is trusted only as far as it is well formed: an answer that is not ``text/event-stream``,
a ``data:`` line that is not a JSON object, or an end before ``data: [DONE]`` is an
:class:`UpstreamError` (before the first event, a 502 the router may retry; after it, the error
event that ends the client's stream). Connection errors name the steer model, not the upstream's
address: that is the error's ``detail``, for the log.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import aiohttp
import orjson

from steer.errors import UpstreamError, UpstreamTimeout, from_upstream_status
from steer.settings import ModelConfig, Settings
from steer.upstreams import backends
from steer.upstreams.sse_framing import EventFramer, error_message


@backends.register("openai")
class OpenAICompatible:
    def __init__(self, config: ModelConfig, settings: Settings) -> None:
        self.config = config
        assert config.api_base
        self.url = config.api_base.rstrip("/") + "/chat/completions"
        self.headers = {"Content-Type": "application/json"}
        key = config.key
        if key:
            self.headers["Authorization"] = f"Bearer {key}"
        self.timeout = aiohttp.ClientTimeout(total=config.timeout, sock_connect=config.connect_timeout)
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=True)
        return self._session

    def _payload(self, body: dict[str, Any]) -> bytes:
        out = {**self.config.extra_body, **body, "model": self.config.upstream_model}
        return orjson.dumps(out)

    def _connection_error(self, exc: aiohttp.ClientError) -> UpstreamError:
        return UpstreamError(
            f"{self.config.name}: the connection to the upstream failed ({type(exc).__name__})", detail=str(exc)
        )

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            async with self.session.post(
                self.url, data=self._payload(body), headers=self.headers, timeout=self.timeout
            ) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    raise from_upstream_status(
                        resp.status, error_message(raw), resp.headers.get("Retry-After")
                    )
        except TimeoutError as exc:
            raise UpstreamTimeout(f"{self.config.name}: no answer within {self.config.timeout}s") from exc
        except aiohttp.ClientError as exc:
            raise self._connection_error(exc) from exc
        try:
            data: dict[str, Any] = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(f"{self.config.name}: the upstream answered with malformed JSON") from exc
        return data  # its shape is checked by the router, for every backend

    async def stream(self, body: dict[str, Any]) -> AsyncGenerator[bytes, None]:
        name = self.config.name
        try:
            async with self.session.post(
                self.url, data=self._payload(body), headers=self.headers, timeout=self.timeout
            ) as resp:
                if resp.status >= 400:
                    raw = await resp.read()
                    raise from_upstream_status(
                        resp.status, error_message(raw), resp.headers.get("Retry-After")
                    )
                ctype = resp.headers.get("Content-Type", "")
                if not ctype.lower().startswith("text/event-stream"):
                    raise UpstreamError(f"{name}: the upstream answered a stream with {ctype[:60]!r}, not events")
                framer = EventFramer(name)
                async for block in resp.content.iter_any():
                    framed = framer.feed(block)
                    if framed.events:
                        yield framed.events  # the deltas before an error event reach the client first
                    if framed.error is not None:
                        raise framed.error
                    if framed.done:
                        return
                framed = framer.finish()  # a last line without its newline
                if framed.events:
                    yield framed.events
                if framed.error is not None:
                    raise framed.error
                if not framed.done:
                    raise UpstreamError(f"{name}: the upstream's stream ended before data: [DONE]")
        except TimeoutError as exc:
            raise UpstreamTimeout(f"{name}: no answer within {self.config.timeout}s") from exc
        except aiohttp.ClientError as exc:
            raise self._connection_error(exc) from exc

    def supports(self, path: str) -> bool:
        return path in ("/embeddings", "/completions", "/responses")

    def _plain(self, body: dict[str, Any]) -> bytes:
        return orjson.dumps({**body, "model": self.config.upstream_model})  # extra_body is for chat only

    def _url(self, path: str) -> str:
        assert self.config.api_base
        return self.config.api_base.rstrip("/") + path

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Another endpoint's body (model name swapped; ``extra_body`` is for chat only), its JSON answer;
        errors as for chat."""
        try:
            async with self.session.post(
                self._url(path), data=self._plain(body), headers=self.headers, timeout=self.timeout
            ) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    raise from_upstream_status(resp.status, error_message(raw), resp.headers.get("Retry-After"))
        except TimeoutError as exc:
            raise UpstreamTimeout(f"{self.config.name}: no answer within {self.config.timeout}s") from exc
        except aiohttp.ClientError as exc:
            raise self._connection_error(exc) from exc
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(f"{self.config.name}: the upstream answered with malformed JSON") from exc
        if not isinstance(data, dict):
            raise UpstreamError(f"{self.config.name}: the upstream's answer is not a JSON object")
        return data

    async def post_stream(self, path: str, body: dict[str, Any]) -> AsyncGenerator[bytes, None]:
        """Another endpoint's event stream, its bytes forwarded as they come."""
        name = self.config.name
        try:
            async with self.session.post(
                self._url(path), data=self._plain(body), headers=self.headers, timeout=self.timeout
            ) as resp:
                if resp.status >= 400:
                    raw = await resp.read()
                    raise from_upstream_status(resp.status, error_message(raw), resp.headers.get("Retry-After"))
                ctype = resp.headers.get("Content-Type", "")
                if not ctype.lower().startswith("text/event-stream"):
                    raise UpstreamError(f"{name}: the upstream answered a stream with {ctype[:60]!r}, not events")
                async for block in resp.content.iter_any():
                    yield block
        except TimeoutError as exc:
            raise UpstreamTimeout(f"{name}: no answer within {self.config.timeout}s") from exc
        except aiohttp.ClientError as exc:
            raise self._connection_error(exc) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
