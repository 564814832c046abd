"""A fake upstream backend: ``backend: fake`` answers in process, with no network and no model.

A model configured as ``{"name": "stub", "backend": "fake"}`` answers like the stub server
(:mod:`steer.testing.stub`) with the same request knobs, so a test moves between the two by
changing the model's config: ``tokens`` words ``tok0 tok1 ...`` (8 unless the model's
``extra_body`` or the request sets ``stub_tokens``), the last user message instead with
``stub_echo``, a tool call to the first tool when ``tools`` are given, ``n`` choices, usage, and
streams framed as SSE events (``stream_options.include_usage`` adds the usage event).

Faults on demand, by the request's ``stub_fault`` field, raise what the HTTP backend raises for
the stub's answer: ``500``, ``429`` (Retry-After 0), ``timeout`` (no answer until the model's
``timeout``), ``malformed``, ``fail-once:<key>`` (a 500 the first time a key is seen), and the
well-formed-but-wrong ``bad-choices`` (a completion the router rejects); in a stream ``not-sse``
fails before the first event, ``cut``, ``not-json`` and ``reset`` halfway. ``stub_latency`` (seconds)
delays the answer, ``stub_token_interval`` each streamed word.

Every request body is kept in :attr:`FakeUpstream.calls` (:func:`calls_of` gathers them over the
fake models of a router, in order), and every stream's end in :attr:`FakeUpstream.streams`:
``complete``, or ``aborted`` when the consumer stopped early.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncGenerator, Iterable
from typing import Any

import orjson

from steer.errors import UpstreamError, UpstreamTimeout, from_upstream_status
from steer.settings import ModelConfig, Settings
from steer.testing.stub import tool_arguments
from steer.upstreams import backends

DEFAULT_TOKENS = 8
OPEN = {"logprobs": None, "finish_reason": None}  # what a chunk's choice carries before its last
_order = itertools.count()  # orders the calls of several fake models


def _last_user_text(body: dict[str, Any]) -> str:
    for m in reversed(body.get("messages") or []):
        if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str):
            return str(m["content"])
    return ""


@backends.register("fake")
class FakeUpstream:
    def __init__(self, config: ModelConfig, settings: Settings) -> None:
        self.config = config
        self.calls: list[dict[str, Any]] = []
        self.streams: list[str] = []
        self._order: list[int] = []
        self._seen: set[str] = set()

    # --- the request's knobs ------------------------------------------------------------------

    def _accept(self, body: dict[str, Any]) -> tuple[dict[str, Any], str]:
        body = {**self.config.extra_body, **body, "model": self.config.upstream_model}
        self.calls.append(body)
        self._order.append(next(_order))
        fault = str(body.get("stub_fault") or "")
        if fault.startswith("fail-once:"):
            first_time = fault not in self._seen
            self._seen.add(fault)
            fault = "500" if first_time else ""
        return body, fault

    async def _before_answer(self, body: dict[str, Any], fault: str) -> None:
        if fault == "timeout":
            await asyncio.sleep(self.config.timeout)
            raise UpstreamTimeout(f"{self.config.name}: no answer within {self.config.timeout}s")
        await asyncio.sleep(float(body.get("stub_latency", 0.0)))
        if fault == "500":
            raise from_upstream_status(500, "stub failure")
        if fault == "429":
            raise from_upstream_status(429, "slow down", "0")
        if fault == "malformed":
            raise UpstreamError(f"{self.config.name}: the upstream answered with malformed JSON")

    @staticmethod
    def _words(body: dict[str, Any]) -> list[str]:
        return [f"tok{i}" for i in range(int(body.get("stub_tokens", DEFAULT_TOKENS)))]

    @staticmethod
    def _usage(body: dict[str, Any], words: list[str]) -> dict[str, int]:
        prompt = len(_last_user_text(body).split())
        return {"prompt_tokens": prompt, "completion_tokens": len(words), "total_tokens": prompt + len(words)}

    def _base(self, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-fake{len(self.calls)}",
            "created": int(time.time()),
            "model": body["model"],
            "system_fingerprint": "fp_stub",
            "service_tier": "default",
        }

    # --- the backend ---------------------------------------------------------------------------

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        body, fault = self._accept(body)
        await self._before_answer(body, fault)
        if fault == "bad-choices":
            return {"object": "chat.completion", "choices": [1, "x", None]}
        words = self._words(body)
        content = _last_user_text(body) if body.get("stub_echo") else " ".join(words)
        choices = []
        for i in range(int(body.get("n") or 1)):
            message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
            if body.get("tools"):
                name = body["tools"][0]["function"]["name"]
                function = {"name": name, "arguments": tool_arguments(body)}
                call = {"id": f"call_{i}", "type": "function", "function": function}
                message = {"role": "assistant", "content": None, "refusal": None, "tool_calls": [call]}
            reason = "tool_calls" if body.get("tools") else "stop"
            choices.append({"index": i, "message": message, "logprobs": None, "finish_reason": reason})
        usage = self._usage(body, words)
        return {**self._base(body), "object": "chat.completion", "choices": choices, "usage": usage}

    async def stream(self, body: dict[str, Any]) -> AsyncGenerator[bytes, None]:
        body, fault = self._accept(body)
        outcome = "aborted"
        try:
            await self._before_answer(body, fault)
            if fault == "not-sse":
                raise UpstreamError(
                    f"{self.config.name}: the upstream answered a stream with 'application/json', not events"
                )
            for event in self._events(body, fault):
                if isinstance(event, UpstreamError):
                    raise event
                if event is None:
                    await asyncio.sleep(float(body.get("stub_token_interval", 0.0)))
                    continue
                yield event
            outcome = "complete"
        finally:
            self.streams.append(outcome)

    def _events(self, body: dict[str, Any], fault: str) -> Iterable[bytes | UpstreamError | None]:
        """The stream's events; ``None`` is a pause between words, an error ends the stream."""
        n = int(body.get("n") or 1)
        words = self._words(body)
        chunk = {**self._base(body), "object": "chat.completion.chunk"}

        def event(data: dict[str, Any]) -> bytes:
            return b"data: " + orjson.dumps({**chunk, **data}) + b"\n\n"

        for i in range(n):
            first = {"role": "assistant", "content": "", "refusal": None}
            yield event({"choices": [{"index": i, "delta": first, **OPEN}]})
        for j, word in enumerate(words):
            if j == len(words) // 2 and fault == "cut":
                yield UpstreamError(f"{self.config.name}: the upstream's stream ended before data: [DONE]")
            if j == len(words) // 2 and fault == "reset":
                yield UpstreamError(f"{self.config.name}: the connection to the upstream failed (reset)")
            if j == len(words) // 2 and fault == "not-json":
                yield UpstreamError(f"{self.config.name}: the upstream sent an event that is not a JSON object")
            if body.get("stub_token_interval"):
                yield None
            for i in range(n):
                yield event({"choices": [{"index": i, "delta": {"content": (" " if j else "") + word}, **OPEN}]})
        for i in range(n):
            yield event({"choices": [{"index": i, "delta": {}, "logprobs": None, "finish_reason": "stop"}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            yield event({"choices": [], "usage": self._usage(body, words)})

    async def aclose(self) -> None:
        return None


def calls_of(upstreams: Iterable[object]) -> list[dict[str, Any]]:
    """The request bodies the fake models among ``upstreams`` received, oldest first."""
    timed = [
        (order, call)
        for up in upstreams
        if isinstance(up, FakeUpstream)
        for order, call in zip(up._order, up.calls, strict=True)
    ]
    return [call for _, call in sorted(timed, key=lambda pair: pair[0])]
