"""The upstream of ``steer bench overhead``: chat completions at a fixed latency, for a few microseconds each.

``steer.testing.stub`` (Starlette on uvicorn) answers everything the tests need, faults included, and
spends a few hundred microseconds of CPU on each request, more on each stream: on a small machine the
stub, the proxies under test and the load driver share the cores, so what the stub spends is taken
from the proxies. This one answers only what the overhead benchmark sends, the way the load driver
(:mod:`steer.bench.load`) sends it: a bare ``asyncio.Protocol`` over ``httptools`` on uvloop where
present, keep-alive, one write per answer. Every target of the benchmark (``direct`` included) is served
by the same process, so what it saves is saved for all of them alike.

* ``POST .../chat/completions``: after ``--latency-ms``, a ``chat.completion`` of ``--tokens`` words
  (``"stream": true``: the same words as ``chat.completion.chunk`` events, a usage chunk when
  ``stream_options.include_usage`` asks for one, then ``data: [DONE]``), the request's ``model`` echoed.
* ``GET .../models``: one model, for readiness probes.
* Anything else: 404. A body that is not a JSON object: 400.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from typing import Any

import httptools
import orjson

from steer.bench.load import new_event_loop

HEAD = "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\n{length}\r\n"


def _head(status: str, ctype: str, length: int | None) -> bytes:
    framing = f"content-length: {length}\r\n" if length is not None else "transfer-encoding: chunked\r\n"
    return HEAD.format(status=status, ctype=ctype, length=framing).encode("latin-1")


def _whole(status: str, body: bytes, ctype: str = "application/json") -> bytes:
    return _head(status, ctype, len(body)) + body


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Answers:
    """The answers of one stub: built once per (model, stream, usage) and reused."""

    def __init__(self, tokens: int) -> None:
        self.words = [f"tok{i}" for i in range(tokens)]
        self.created = int(time.time())
        self._cache: dict[tuple[str, bool, bool], bytes] = {}

    def chat(self, body: dict[str, Any]) -> bytes:
        model = body.get("model")
        model = model if isinstance(model, str) else "stub"
        stream = body.get("stream") is True
        options = body.get("stream_options")
        usage = stream and isinstance(options, dict) and options.get("include_usage") is True
        key = (model, stream, usage)
        out = self._cache.get(key)
        if out is None:
            out = self._cache[key] = self._stream(model, usage) if stream else self._completion(model)
        return out

    def _usage(self) -> dict[str, int]:
        return {"prompt_tokens": 0, "completion_tokens": len(self.words), "total_tokens": len(self.words)}

    def _completion(self, model: str) -> bytes:
        message = {"role": "assistant", "content": " ".join(self.words), "refusal": None}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
        body = {
            "id": "chatcmpl-lean",
            "object": "chat.completion",
            "created": self.created,
            "model": model,
            "choices": [choice],
            "usage": self._usage(),
        }
        return _whole("200 OK", orjson.dumps(body))

    def _stream(self, model: str, usage: bool) -> bytes:
        head = {"id": "chatcmpl-lean", "object": "chat.completion.chunk", "created": self.created, "model": model}

        def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return b"data: " + orjson.dumps({**head, "choices": [choice]}) + b"\n\n"

        events = [event({"role": "assistant", "content": ""})]
        events += [event({"content": w if i == 0 else " " + w}) for i, w in enumerate(self.words)]
        events.append(event({}, "stop"))
        if usage:
            events.append(b"data: " + orjson.dumps({**head, "choices": [], "usage": self._usage()}) + b"\n\n")
        events.append(b"data: [DONE]\n\n")
        return _head("200 OK", "text/event-stream", None) + b"".join(_chunk(e) for e in events) + b"0\r\n\r\n"


MODELS = _whole("200 OK", orjson.dumps({"object": "list", "data": [{"id": "stub", "object": "model"}]}))
NOT_FOUND = _whole("404 Not Found", b'{"error":{"message":"no such route","type":"not_found"}}')
BAD_BODY = _whole("400 Bad Request", b'{"error":{"message":"the body must be a JSON object","type":"invalid_request"}}')


class StubProtocol(asyncio.Protocol):
    """One connection; requests answered in order (one at a time, as HTTP/1.1 clients send them)."""

    def __init__(self, answers: Answers, latency_s: float) -> None:
        self.answers = answers
        self.latency_s = latency_s
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        url, raw = self.url.split(b"?", 1)[0], b"".join(self.body)
        self.url, self.body = b"", []
        method = self.parser.get_method()
        if method == b"GET" and url.endswith(b"/models"):
            self._send(MODELS)
        elif method == b"POST" and url.endswith(b"/chat/completions"):
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                body = None
            if not isinstance(body, dict):
                self._send(BAD_BODY)
            else:
                asyncio.get_running_loop().call_later(self.latency_s, self._send, self.answers.chat(body))
        else:
            self._send(NOT_FOUND)

    def _send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(host: str, port: int, latency_s: float, tokens: int) -> None:
    answers = Answers(tokens)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: StubProtocol(answers, latency_s), host, port, backlog=2048)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="a lean chat-completions upstream for steer bench overhead")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--latency-ms", type=float, default=20.0)
    p.add_argument("--tokens", type=int, default=16)
    a = p.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(serve(a.host, a.port, a.latency_ms / 1000, a.tokens))


if __name__ == "__main__":
    main()
