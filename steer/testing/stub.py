"""A stub OpenAI-compatible upstream: fixed latency, fixed token rate, injectable faults.

Used by the benchmarks and the tests (a real HTTP server on loopback). Faults are chosen per
request by the ``X-Stub-Fault`` header or by a ``stub_fault`` field in the body, so the steer
under test forwards them untouched: ``500``, ``429`` (with Retry-After), ``timeout`` (sleeps
past any sane client timeout), ``malformed`` (invalid JSON), ``reset`` (drops the connection
mid-stream), ``fail-once:<key>`` (500 the first time a key is seen, then normal), and answers
that are well-formed HTTP but not what the API promises: ``bad-choices`` (a 200 whose choices
are not objects), ``not-sse`` (a whole JSON completion for a stream), ``cut`` (a stream that ends
halfway, cleanly, without ``[DONE]``), ``not-json`` (a ``data:`` line that is not JSON, halfway),
``error-event`` (the last deltas and an error event in one network write, then the end).

Answers carry what the OpenAI API sends, required nulls included (``refusal``, ``logprobs``, a
chunk's ``finish_reason``), with ``system_fingerprint`` and ``service_tier``. With ``tools`` the
answer calls the first tool (streamed as tool-call fragments: id and name, then the arguments in
pieces); with ``logprobs: true`` each token's log probability comes back (``top_logprobs`` of
them per token); a ``stub_refusal`` text in the body is answered as a refusal; a ``json_schema``
``response_format`` is answered with an object holding each property at a value of its type.

A tool call's arguments fit the tool's parameters when they name properties (each at a value of its
type), else they are ``TOOL_ARGUMENTS``; once the last message is a tool's result the answer is text
(``tool said: <result>``, see ``_scripted``). Besides chat: ``/v1/embeddings``, ``/v1/completions``
and ``/v1/responses`` (a native Responses answer) for the passthrough tests (faults ``500``, and
``reset`` after the first event of a stream).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route


def _text_of(body: dict[str, Any]) -> str:
    for m in reversed(body.get("messages") or []):
        if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str):
            return str(m["content"])
    return ""


TOOL_ARGUMENTS = '{"q": "x"}'  # the arguments of every tool call the stub makes


_EXAMPLES = {"string": "x", "integer": 1, "number": 1.5, "boolean": True, "array": [], "null": None}


def tool_arguments(body: dict[str, Any]) -> str:
    """The arguments of the stub's call of the request's first tool: values fitting its parameters when
    they name properties, else ``TOOL_ARGUMENTS``."""
    params = body["tools"][0]["function"].get("parameters") if body.get("tools") else None
    if isinstance(params, dict) and params.get("properties"):
        return orjson.dumps(_example(params)).decode()
    return TOOL_ARGUMENTS


def _example(schema: dict[str, Any]) -> Any:
    """A value that satisfies a simple JSON schema: every property of an object set to a value of its type."""
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        return {name: _example(sub) for name, sub in (schema.get("properties") or {}).items()}
    if "enum" in schema:
        return schema["enum"][0]
    return _EXAMPLES.get(kind if isinstance(kind, str) else "string", "x")


def _logprob(token: str, top: int) -> dict[str, Any]:
    """A made-up but well-formed token log probability, with ``top`` alternatives."""
    entry = {"token": token, "logprob": -0.5, "bytes": list(token.encode())}
    return {**entry, "top_logprobs": [{**entry, "logprob": -0.5 - k} for k in range(top)]}


def create_stub(latency_s: float = 0.02, tokens: int = 16, token_interval_s: float = 0.0) -> Starlette:
    seen: set[str] = set()
    calls: list[dict[str, Any]] = []
    streams: list[str] = []  # "complete" or "aborted" (the client went away mid-stream)

    async def chat(request: Request) -> Response:
        body = orjson.loads(await request.body())
        calls.append(body)
        fault = request.headers.get("x-stub-fault") or body.get("stub_fault") or ""
        if fault.startswith("fail-once:"):
            first_time = fault not in seen
            seen.add(fault)
            fault = "500" if first_time else ""
        if fault == "timeout":
            await asyncio.sleep(3600)
        await asyncio.sleep(float(body.get("stub_latency", latency_s)))
        if fault == "500":
            return Response(b'{"error":{"message":"stub failure","type":"server_error"}}', status_code=500)
        if fault == "429":
            return Response(
                b'{"error":{"message":"slow down"}}', status_code=429, headers={"Retry-After": "0"}
            )
        if fault == "malformed":
            return Response(b'{"choices": [', media_type="application/json")
        if fault == "bad-choices":
            return Response(b'{"object": "chat.completion", "choices": [1, "x", null]}', media_type="application/json")
        scripted = _scripted(body)  # structured output, streamed tool calls, the turn after a tool's result
        if scripted is not None:
            return scripted
        n = int(body.get("n") or 1)
        words = [f"tok{i}" for i in range(int(body.get("stub_tokens", tokens)))]
        echo = _text_of(body)
        content = " ".join(words) if not body.get("stub_echo") else echo
        refusal = body.get("stub_refusal")
        tool = body["tools"][0]["function"]["name"] if body.get("tools") else None
        finish = "tool_calls" if tool else "stop"
        cid = "chatcmpl-stub" + str(len(calls))
        usage = {
            "prompt_tokens": len(echo.split()),
            "completion_tokens": len(words),
            "total_tokens": len(echo.split()) + len(words),
        }
        base = {
            "id": cid,
            "created": int(time.time()),
            "model": body.get("model", "stub"),
            "system_fingerprint": "fp_stub",
            "service_tier": "default",
        }
        top = int(body.get("top_logprobs") or 0)

        def logprobs(pieces: list[str]) -> dict[str, Any] | None:
            if not body.get("logprobs"):
                return None
            return {"content": [_logprob(p, top) for p in pieces], "refusal": None}

        arguments = tool_arguments(body)

        def call(i: int, arguments: str) -> dict[str, Any]:
            return {"id": f"call_{i}", "type": "function", "function": {"name": tool, "arguments": arguments}}

        schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema")
        if schema and not (tool or refusal):
            content = orjson.dumps(_example(schema)).decode()
            words = [content]
        if not body.get("stream") or fault == "not-sse":
            choices = []
            for i in range(n):
                message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
                if refusal:
                    message = {"role": "assistant", "content": None, "refusal": refusal}
                elif tool:
                    calls_made = [call(i, arguments)]
                    message = {"role": "assistant", "content": None, "refusal": None, "tool_calls": calls_made}
                pieces = [w if j == 0 else " " + w for j, w in enumerate(words)] if message["content"] else []
                choices.append({"index": i, "message": message, "logprobs": logprobs(pieces), "finish_reason": finish})
            return Response(
                orjson.dumps({**base, "object": "chat.completion", "choices": choices, "usage": usage}),
                media_type="application/json",
            )

        async def events() -> AsyncIterator[bytes]:
            outcome = "aborted"
            try:
                async for event in _events():
                    yield event
                outcome = "complete"
            finally:
                streams.append(outcome)

        interval = float(body.get("stub_token_interval", token_interval_s))
        head = {**base, "object": "chat.completion.chunk"}

        def chunk(i: int, delta: dict[str, Any], finish_reason: str | None = None, lp: Any = None) -> bytes:
            choice = {"index": i, "delta": delta, "logprobs": lp, "finish_reason": finish_reason}
            return b"data: " + orjson.dumps({**head, "choices": [choice]}) + b"\n\n"

        async def _events() -> AsyncIterator[bytes]:
            for i in range(n):
                yield chunk(i, {"role": "assistant", "content": "" if not (tool or refusal) else None, "refusal": None})
            if refusal:
                for i in range(n):
                    yield chunk(i, {"refusal": refusal})
            elif tool:
                for i in range(n):  # the call's id and name first, then its arguments in fragments
                    yield chunk(i, {"tool_calls": [{"index": 0, **call(i, "")}]})
                    for piece in (arguments[:6], arguments[6:]):
                        yield chunk(i, {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
            for j, w in enumerate([] if tool or refusal else words):
                if fault == "reset" and j == len(words) // 2:
                    raise ConnectionResetError("stub reset")
                if fault == "cut" and j == len(words) // 2:
                    return
                if fault == "not-json" and j == len(words) // 2:
                    yield b"data: not json\n\n"
                if fault == "error-event" and j == len(words) // 2:
                    last = b"".join(chunk(i, {"content": " " + w}) for i in range(n))
                    yield last + b'data: {"error":{"message":"stub stream error","type":"server_error"}}\n\n'
                    return
                if interval:
                    await asyncio.sleep(interval)
                for i in range(n):
                    piece = (" " if j else "") + w
                    yield chunk(i, {"content": piece}, lp=logprobs([piece]))
            for i in range(n):
                yield chunk(i, {}, finish)
            if (body.get("stream_options") or {}).get("include_usage"):
                yield b"data: " + orjson.dumps({**head, "choices": [], "usage": usage}) + b"\n\n"
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def models(request: Request) -> Response:
        return Response(
            b'{"object":"list","data":[{"id":"stub","object":"model"}]}', media_type="application/json"
        )

    async def other(request: Request) -> Response:
        body = orjson.loads(await request.body())
        calls.append({**body, "stub_path": request.url.path})
        fault = request.headers.get("x-stub-fault") or body.get("stub_fault") or ""
        if fault == "500":
            return Response(b'{"error":{"message":"stub failure","type":"server_error"}}', status_code=500)
        answer = _other_endpoint(request.url.path, body)
        if fault == "reset" and body.get("stream"):  # the first event, then the connection drops

            async def cut() -> AsyncIterator[bytes]:
                yield bytes(answer.body).split(b"\n\n")[0] + b"\n\n"
                await asyncio.sleep(0.05)
                raise ConnectionResetError("stub reset")

            return StreamingResponse(cut(), media_type="text/event-stream")
        return answer

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/embeddings", other, methods=["POST"]),
            Route("/v1/completions", other, methods=["POST"]),
            Route("/v1/responses", other, methods=["POST"]),
        ]
    )
    app.state.calls = calls
    app.state.streams = streams
    return app


def _sse(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _scripted(body: dict[str, Any]) -> Response | None:
    """The answer the plain stub does not give: a text answer once the last message is a tool's result
    (``tool said: <result>``), whole or streamed."""
    messages = body.get("messages") or []
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    if not (body.get("tools") and last.get("role") == "tool"):
        return None
    text = f"tool said: {last.get('content')}"
    base = {"id": "chatcmpl-scripted", "created": int(time.time()), "model": body.get("model", "stub")}
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    if not body.get("stream"):
        choice = {"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                  "logprobs": None, "finish_reason": "stop"}  # fmt: skip
        return Response(
            orjson.dumps({**base, "object": "chat.completion", "choices": [choice], "usage": usage}),
            media_type="application/json",
        )
    chunk = {**base, "object": "chat.completion.chunk"}

    def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _sse({**chunk, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]})

    out = [event({"role": "assistant", "content": ""})]
    out += [event({"content": text[i : i + 8]}) for i in range(0, len(text), 8)]
    out.append(event({}, "stop"))
    if (body.get("stream_options") or {}).get("include_usage"):
        out.append(_sse({**chunk, "choices": [], "usage": usage}))
    out.append(b"data: [DONE]\n\n")
    return Response(b"".join(out), media_type="text/event-stream")


def _other_endpoint(path: str, body: dict[str, Any]) -> Response:
    """``/v1/embeddings`` (a 4-d vector per input, from its length), ``/v1/completions`` (``tok0 tok1``, or
    its stream) and ``/v1/responses`` (a native Responses answer, text ``native: <input>``)."""
    model = body.get("model", "stub")
    if path.endswith("/embeddings"):
        inputs = body.get("input")
        inputs = inputs if isinstance(inputs, list) else [inputs]
        data = [
            {"object": "embedding", "index": i, "embedding": [float(len(str(t)) % (k + 2)) for k in range(4)]}
            for i, t in enumerate(inputs)
        ]
        usage = {"prompt_tokens": len(inputs), "total_tokens": len(inputs)}
        return Response(orjson.dumps({"object": "list", "data": data, "model": model, "usage": usage}),
                        media_type="application/json")  # fmt: skip
    if path.endswith("/completions"):
        base = {"id": "cmpl-stub", "object": "text_completion", "created": int(time.time()), "model": model}
        if body.get("stream"):
            pieces = [
                _sse({**base, "choices": [{"text": w, "index": 0, "logprobs": None, "finish_reason": finish}]})
                for w, finish in (("tok0", None), (" tok1", None), ("", "stop"))
            ]
            return Response(b"".join(pieces) + b"data: [DONE]\n\n", media_type="text/event-stream")
        choice = {"text": "tok0 tok1", "index": 0, "logprobs": None, "finish_reason": "stop"}
        usage = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
        return Response(orjson.dumps({**base, "choices": [choice], "usage": usage}), media_type="application/json")
    from steer.server import responses_translate as tr

    text = f"native: {body.get('input')}"
    response = tr.response_object(body, "resp_native", int(time.time()), str(model), status="completed",
                                  output=[tr.message_item("msg_native", text, None, [])])  # fmt: skip
    if not body.get("stream"):
        return Response(orjson.dumps(response), media_type="application/json")
    events = [{"type": "response.created", "sequence_number": 0, "response": {**response, "status": "in_progress",
                                                                             "output": []}},
              {"type": "response.completed", "sequence_number": 1, "response": response}]  # fmt: skip
    raw = b"".join(b"event: " + str(e["type"]).encode() + b"\n" + _sse(e) for e in events)
    return Response(raw, media_type="text/event-stream")


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    p = argparse.ArgumentParser(description="stub OpenAI-compatible upstream")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9400)
    p.add_argument("--latency-ms", type=float, default=20.0)
    p.add_argument("--tokens", type=int, default=16)
    p.add_argument("--token-interval-ms", type=float, default=0.0)
    a = p.parse_args(argv)
    app = create_stub(a.latency_ms / 1000, a.tokens, a.token_interval_ms / 1000)
    uvicorn.run(app, host=a.host, port=a.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
