"""A chat completion's event stream re-told as the Responses API's events.

Order, as the OpenAI API sends them: ``response.created``, ``response.in_progress``; for the text, once
its first delta comes, ``response.output_item.added`` (a ``message``) and
``response.content_part.added`` (an ``output_text`` part; a ``refusal`` part for a refusal), then one
``response.output_text.delta`` (``response.refusal.delta``) per chat delta; for each tool call, once
its id and name come, ``response.output_item.added`` (a ``function_call``), then one
``response.function_call_arguments.delta`` per fragment. When the chat stream ends, every open item is
closed in output order (``response.output_text.done``, ``response.content_part.done``,
``response.function_call_arguments.done``, ``response.output_item.done``) and ``response.completed``
(``response.incomplete`` for ``finish_reason: length``) carries the whole response and its usage. An
error event of the chat stream becomes ``error`` then ``response.failed``. Every event has its
``sequence_number``, counted from 0, and goes out as ``event: <type>`` + ``data: <json>``.

Only the first choice is read (a Responses request asks for one).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from steer.server import responses_translate as tr


@dataclass
class _Text:
    index: int
    item_id: str
    kind: str  # "output_text" or "refusal"
    text: str = ""
    logprobs: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Call:
    index: int
    item_id: str
    call_id: str
    name: str
    arguments: str = ""


def _chat_events(blocks: bytes) -> list[Any]:
    """The JSON payloads (and ``"[DONE]"``) of a batch of chat SSE events."""
    out: list[Any] = []
    for event in blocks.split(b"\n\n"):
        for line in event.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                out.append("[DONE]")
            elif data:
                try:
                    out.append(orjson.loads(data))
                except orjson.JSONDecodeError:
                    continue
    return out


class Translator:
    """Turns the chat chunks of one stream into Responses events (dicts), in order."""

    def __init__(self, body: dict[str, Any], response_id: str, created_at: int, model: str, store: bool) -> None:
        self.body, self.id, self.created_at, self.model, self.store = body, response_id, created_at, model, store
        self.seq = 0
        self.next_index = 0
        self.message: _Text | None = None
        self.calls: dict[int, _Call] = {}  # by the chat tool call's index
        self.items: dict[int, dict[str, Any]] = {}  # output index -> finished item
        self.finish_reason: Any = None
        self.usage: Any = None
        self.trace: Any = None
        self.final: dict[str, Any] | None = None

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return event

    def _snapshot(self, **kw: Any) -> dict[str, Any]:
        return tr.response_object(self.body, self.id, self.created_at, self.model, store=self.store, **kw)

    def start(self) -> list[dict[str, Any]]:
        snap = self._snapshot()
        return [self._event("response.created", response=snap), self._event("response.in_progress", response=snap)]

    def _open_text(self, kind: str) -> list[dict[str, Any]]:
        out = []
        if self.message is None:
            self.message = _Text(self.next_index, tr.new_id("msg"), kind)
            self.next_index += 1
            item = {"id": self.message.item_id, "type": "message", "status": "in_progress", "role": "assistant",
                    "content": []}  # fmt: skip
            out.append(self._event("response.output_item.added", output_index=self.message.index, item=item))
            part: dict[str, Any] = (
                {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                if kind == "output_text"
                else {"type": "refusal", "refusal": ""}
            )
            out.append(
                self._event("response.content_part.added", item_id=self.message.item_id,
                            output_index=self.message.index, content_index=0, part=part)
            )  # fmt: skip
        return out

    def chunk(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if "steer" in chunk:
            self.trace = chunk["steer"]
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            for kind, key in (("output_text", "content"), ("refusal", "refusal")):
                piece = delta.get(key)
                if isinstance(piece, str) and piece:
                    out += self._open_text(kind)
                    assert self.message is not None
                    lps = tr.logprobs(choice.get("logprobs")) if kind == "output_text" else []
                    self.message.text += piece
                    self.message.logprobs += lps
                    fields: dict[str, Any] = {"item_id": self.message.item_id, "output_index": self.message.index,
                                              "content_index": 0, "delta": piece}  # fmt: skip
                    if kind == "output_text":
                        out.append(self._event("response.output_text.delta", **fields, logprobs=lps))
                    else:
                        out.append(self._event("response.refusal.delta", **fields))
            for call in delta.get("tool_calls") or ():
                out += self._call_delta(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return out

    def _call_delta(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        idx = int(call.get("index", len(self.calls)))
        fn = call.get("function") or {}
        state = self.calls.get(idx)
        if state is None:
            state = self.calls[idx] = _Call(
                self.next_index, tr.new_id("fc"), str(call.get("id") or tr.new_id("call")), str(fn.get("name") or "")
            )
            self.next_index += 1
            item = tr.call_item(state.item_id, state.call_id, state.name, "", status="in_progress")
            out.append(self._event("response.output_item.added", output_index=state.index, item=item))
        args = fn.get("arguments")
        if isinstance(args, str) and args:
            state.arguments += args
            out.append(
                self._event("response.function_call_arguments.delta", item_id=state.item_id,
                            output_index=state.index, delta=args)
            )  # fmt: skip
        return out

    def finish(self) -> list[dict[str, Any]]:
        """Close every open item and complete the response."""
        out: list[dict[str, Any]] = []
        closing: list[tuple[int, Callable[[], list[dict[str, Any]]]]] = []
        if self.message is not None:
            closing.append((self.message.index, self._close_text))
        for state in self.calls.values():
            closing.append((state.index, lambda s=state: self._close_call(s)))  # type: ignore[misc]
        for _, close in sorted(closing, key=lambda c: c[0]):
            out += close()
        if not self.items:  # nothing generated at all: an empty message, as the non-streaming answer has
            out += self._open_text("output_text")
            out += self._close_text()
        status, incomplete = tr.status_of(self.finish_reason)
        output = [self.items[i] for i in sorted(self.items)]
        self.final = self._snapshot(status=status, output=output, usage_=tr.usage(self.usage), incomplete=incomplete)
        if self.trace is not None:
            self.final["steer"] = self.trace
        kind = "response.completed" if status == "completed" else "response.incomplete"
        out.append(self._event(kind, response=self.final))
        return out

    def _close_text(self) -> list[dict[str, Any]]:
        m = self.message
        assert m is not None
        fields = {"item_id": m.item_id, "output_index": m.index, "content_index": 0}
        if m.kind == "output_text":
            part: dict[str, Any] = {"type": "output_text", "text": m.text, "annotations": [], "logprobs": m.logprobs}
            done = self._event("response.output_text.done", **fields, text=m.text, logprobs=m.logprobs)
            item = tr.message_item(m.item_id, m.text, None, m.logprobs)
        else:
            part = {"type": "refusal", "refusal": m.text}
            done = self._event("response.refusal.done", **fields, refusal=m.text)
            item = tr.message_item(m.item_id, None, m.text, [])
        part_done = self._event("response.content_part.done", **fields, part=part)
        self.items[m.index] = item
        return [done, part_done, self._event("response.output_item.done", output_index=m.index, item=item)]

    def _close_call(self, c: _Call) -> list[dict[str, Any]]:
        item = tr.call_item(c.item_id, c.call_id, c.name, c.arguments)
        self.items[c.index] = item
        return [
            self._event("response.function_call_arguments.done", item_id=c.item_id, output_index=c.index,
                        name=c.name, arguments=c.arguments),
            self._event("response.output_item.done", output_index=c.index, item=item),
        ]  # fmt: skip

    def fail(self, error: dict[str, Any], status: int) -> list[dict[str, Any]]:
        message = str(error.get("message") or "the upstream failed")
        code = error.get("code")
        failed = self._snapshot(
            status="failed",
            output=[self.items[i] for i in sorted(self.items)],
            error={"code": tr.error_code(status), "message": message},
        )
        self.final = failed
        return [
            self._event("error", code=code if isinstance(code, str) else None, message=message,
                        param=error.get("param") if isinstance(error.get("param"), str) else None),
            self._event("response.failed", response=failed),
        ]  # fmt: skip


def sse(event: dict[str, Any]) -> bytes:
    kind: str = event["type"]
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


_STATUS_OF_TYPE = {"invalid_request_error": 400, "rate_limit_error": 429}


async def translate(
    chat: AsyncIterator[bytes], translator: Translator, on_done: Callable[[dict[str, Any]], Awaitable[None]]
) -> AsyncGenerator[bytes, None]:
    """The Responses events for a chat stream; ``on_done`` gets the final response object when the stream
    completed (not when it failed or the client went away)."""
    try:
        for event in translator.start():
            yield sse(event)
        async for blocks in chat:
            for payload in _chat_events(blocks):
                if payload == "[DONE]":
                    events = translator.finish()
                    assert translator.final is not None
                    await on_done(translator.final)  # stored before the client learns it is done
                    for event in events:
                        yield sse(event)
                    return
                if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
                    err = payload["error"]
                    for event in translator.fail(err, _STATUS_OF_TYPE.get(str(err.get("type")), 500)):
                        yield sse(event)
                    return
                if isinstance(payload, dict):
                    for event in translator.chunk(payload):
                        yield sse(event)
        for event in translator.fail({"message": "the upstream's stream ended early"}, 502):
            yield sse(event)
    finally:
        aclose = getattr(chat, "aclose", None)
        if aclose is not None:
            await aclose()
