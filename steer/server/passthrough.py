"""Endpoints steer forwards to the model's upstream as they are: ``POST /v1/embeddings``,
``POST /v1/completions`` (legacy text completions, streaming or not), and ``POST /v1/responses`` for a
model marked ``responses: native`` when no stage runs for the request.

What chat has, these have too: the caller's key and the end user it may act as (the same identity
resolution), the model's retries and fallbacks, metrics, a request-log row (no prompt) and errors in the
OpenAI shape (an unknown model is a 404, a backend that does not serve the endpoint a 400 naming the model,
an upstream that is down a 502). No policy stage runs: there is no chat turn to personalise.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncGenerator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from steer.errors import InvalidRequest, SteerError
from steer.identity import Identity
from steer.protocol import parse_json, sse
from steer.server.auth import resolve_user
from steer.server.chat import log_error
from steer.server.routes import endpoint, json_response, read_body
from steer.server.services import Services

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
SEQUENCE = re.compile(rb'"sequence_number":\s*(\d+)')


def _trace(identity: Identity, model: str, trace_id: str, started: float) -> dict[str, Any]:
    return {
        "trace_id": trace_id,
        "tenant": identity.tenant,
        "user": identity.user,
        "policy": "passthrough",
        "model": model,
        "stages": [],
        "total_ms": round((time.perf_counter() - started) * 1000, 3),
    }


async def forward(
    services: Services, identity: Identity, trace_id: str, path: str, body: dict[str, Any], streaming: bool
) -> Response:
    """``body`` to the model's upstream at ``path`` (``/embeddings``...), its answer back as it is."""
    started = time.perf_counter()
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidRequest("model must be a string", param="model", code="invalid_value")
    cfg = services.router.config(model)
    services.router.forwarder(cfg.name, path)  # a backend that cannot serve it: 400 before anything is sent
    if not streaming:
        data = await services.router.post(cfg.name, path, body)
        usage = data.get("usage")
        services.log_request(_trace(identity, cfg.name, trace_id, started), 200, False, usage, None)
        return json_response(data)
    blocks = services.router.post_stream(cfg.name, path, body)
    first = await anext(blocks, None)  # errors before the first bytes get a real HTTP status
    services.metrics.first_chunk(cfg.name).observe(time.perf_counter() - started)
    return StreamingResponse(
        _relay(services, identity, trace_id, cfg.name, started, first, blocks, path == "/responses"),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )


async def _relay(
    services: Services,
    identity: Identity,
    trace_id: str,
    model: str,
    started: float,
    first: bytes | None,
    blocks: AsyncGenerator[bytes, None],
    responses: bool,
) -> AsyncGenerator[bytes, None]:
    status = 499  # the client went away, unless the stream ends or fails first
    last = first or b""
    try:
        if first is not None:
            yield first
        async for block in blocks:
            last = block
            yield block
        status = 200
    except SteerError as exc:  # after the first bytes: an error event ends the stream
        status = exc.status
        services.metrics.errors.labels(exc.type, str(exc.code)).inc()
        log_error(exc, trace_id)
        if responses:  # the Responses API's own error event, numbered after the last one forwarded
            numbers = SEQUENCE.findall(last)
            event = {"type": "error", "code": exc.code, "message": exc.message, "param": exc.param,
                     "sequence_number": int(numbers[-1]) + 1 if numbers else 0}  # fmt: skip
            yield b"event: error\n" + sse(event)
        else:
            yield sse(exc.body())
    finally:
        await blocks.aclose()
        services.log_request(_trace(identity, model, trace_id, started), status, True, None, None)


async def _body(request: Request, services: Services) -> dict[str, Any]:
    body = parse_json(await read_body(request, services.settings.max_body_bytes))
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object", code="invalid_body")
    return body


async def embeddings(request: Request, services: Services, caller: Identity, trace_id: str) -> Response:
    body = await _body(request, services)
    identity = resolve_user(caller, request.headers, body, services.user_ids, services.settings.identity.sources)
    return await forward(services, identity, trace_id, "/embeddings", body, False)


async def completions(request: Request, services: Services, caller: Identity, trace_id: str) -> Response:
    body = await _body(request, services)
    streaming = body.get("stream")
    if streaming is not None and not isinstance(streaming, bool):
        raise InvalidRequest("stream must be a boolean", param="stream", code="invalid_value")
    identity = resolve_user(caller, request.headers, body, services.user_ids, services.settings.identity.sources)
    return await forward(services, identity, trace_id, "/completions", body, bool(streaming))


def passthrough_routes() -> list[Route]:
    return [
        Route("/v1/embeddings", endpoint("embeddings", embeddings), methods=["POST"]),
        Route("/embeddings", endpoint("embeddings", embeddings), methods=["POST"]),
        Route("/v1/completions", endpoint("completions", completions), methods=["POST"]),
        Route("/completions", endpoint("completions", completions), methods=["POST"]),
    ]
