"""HTTP endpoints. Each handler is thin: read, call the service, shape the answer."""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from steer.errors import AuthenticationFailed, InvalidRequest, ModelNotFound, RequestTooLarge, SteerError
from steer.identity import Identity
from steer.protocol import ChatCompletionRequest, parse_chat, parse_json
from steer.server.chat import chat_completion, log_error
from steer.server.services import Services
from steer.server.sse import EventStreamResponse

log = logging.getLogger("steer.http")
TRACE_HEADER = "X-Steer-Trace-Id"
Handler = Callable[[Request, Services, Identity, str], Awaitable[Response]]
_TRACE_PREFIX = secrets.token_hex(8)
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # read only
# Chat bodies above this are parsed and validated on the app's body worker thread, off the event
# loop, so that one client's huge body does not hold up every other request; smaller ones, nearly
# every request, stay inline and pay no thread hop. Validation time grows with the number of
# messages, and 64 KiB holds a couple of thousand tiny ones at most.
LARGE_BODY_BYTES = 64 * 1024
_trace_counter = itertools.count()


def new_trace_id() -> str:
    """32 hex digits: a random per-process prefix and a counter (no system call per request)."""
    return f"{_TRACE_PREFIX}{next(_trace_counter) & 0xFFFFFFFFFFFFFFFF:016x}"


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, headers=headers, media_type="application/json")


def error_response(exc: SteerError, trace_id: str) -> Response:
    return Response(
        exc.json(),
        status_code=exc.status,
        media_type="application/json",
        headers={**exc.headers, TRACE_HEADER: trace_id},
    )


async def read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise RequestTooLarge(f"the request body is over the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(f"the request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json_object(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object (steer's own endpoints), at most ``limit`` bytes."""
    body = parse_json(await read_body(request, limit))
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object", code="invalid_body")
    return body


def endpoint(route: str, handler: Handler, *, auth: bool = True) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a handler: no-key mode's browser rules, trace id, authentication, error shape and
    metrics in one place."""

    async def wrapped(request: Request) -> Response:
        services: Services = request.app.state.services
        trace_id = new_trace_id()
        t0 = time.perf_counter()
        try:
            guard = services.keys.guard
            if guard is not None:
                guard.check(request.method, request.scope["headers"])
            caller = services.keys.caller(request.headers) if auth else Identity("", None)
            response = await handler(request, services, caller, trace_id)
        except SteerError as exc:
            services.metrics.errors.labels(exc.type, str(exc.code)).inc()
            log_error(exc, trace_id)
            response = error_response(exc, trace_id)
        except Exception:
            log.exception("unhandled error (trace %s)", trace_id)
            internal = SteerError("internal error; the trace id in X-Steer-Trace-Id identifies it in the logs")
            services.metrics.errors.labels(internal.type, "internal").inc()
            response = error_response(internal, trace_id)
        response.headers[TRACE_HEADER] = trace_id
        services.metrics.request_done(route, response.status_code, time.perf_counter() - t0)
        return response

    return wrapped


async def chat(request: Request, services: Services, caller: Identity, trace_id: str) -> Response:
    raw = await read_body(request, services.settings.max_body_bytes)
    req: ChatCompletionRequest | None = None
    if len(raw) > LARGE_BODY_BYTES:  # one worker: the GIL would run two parses one after the other anyway
        body, req = await asyncio.get_running_loop().run_in_executor(request.app.state.body_worker, parse_chat, raw)
    else:
        body = parse_json(raw)
    debug = request.headers.get("x-steer-debug", "").lower() in ("1", "true", "yes")
    result = await chat_completion(services, body, caller, request.headers, trace_id, debug, req)
    if result.stream is not None:
        return EventStreamResponse(result.stream, headers=STREAM_HEADERS)
    return json_response(result.body)


async def models(request: Request, services: Services, caller: Identity, trace_id: str) -> Response:
    created = int(services.started_at)
    data = [
        {"id": m.name, "object": "model", "created": created, "owned_by": f"steer:{m.backend}"}
        for m in services.settings.models
    ]
    return json_response({"object": "list", "data": data})


async def model(request: Request, services: Services, caller: Identity, trace_id: str) -> Response:
    name = request.path_params["model"]
    if not name:  # /v1/models/: config("") would answer with the default model
        raise ModelNotFound("no model named in the path", param="model")
    cfg = services.router.config(name)
    return json_response(
        {
            "id": cfg.name,
            "object": "model",
            "created": int(services.started_at),
            "owned_by": f"steer:{cfg.backend}",
        }
    )


async def healthz(request: Request, services: Services, caller: Identity, trace_id: str) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request, services: Services, caller: Identity, trace_id: str) -> Response:
    """Ready or not for anyone (load balancers probe without a key); the details for admins only.

    With no keys configured (loopback only) every caller is admin. A missing or wrong key is not
    an error here: it gets the short answer.

    A dependency that is down (the database server) is named in ``down`` and the status is
    ``degraded``, still 200: requests that need no store (passthrough) are served, those that need
    it get 503 ``store_unavailable``, and every replica shares the database, so taking replicas out of
    a load balancer for it would only stop the requests that still work.
    """
    ready = services.ready
    body: dict[str, Any] = {"status": "ready" if ready else "starting"}
    down = await services.down() if ready else []
    if down:
        body["status"], body["down"] = "degraded", down
    try:
        admin = services.keys.caller(request.headers).admin
    except AuthenticationFailed:
        admin = False
    if admin:
        body["warm"] = services.warm  # False while the start-up warm-up loads models: early requests wait for it
        body["policies"] = sorted(services.policies.current.policies)
        body["policy_error"] = services.policies.last_error  # may quote a policy file: admins only
        body["models"] = [m.name for m in services.settings.models]
    return json_response(body, status=200 if ready else 503)


async def metrics(request: Request, services: Services, caller: Identity, trace_id: str) -> Response:
    return Response(services.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


def routes() -> list[Route]:
    return [
        Route("/v1/chat/completions", endpoint("chat", chat), methods=["POST"]),
        Route("/chat/completions", endpoint("chat", chat), methods=["POST"]),
        Route("/v1/models", endpoint("models", models), methods=["GET"]),
        Route("/v1/models/{model:path}", endpoint("models", model), methods=["GET"]),
        Route("/healthz", endpoint("healthz", healthz, auth=False), methods=["GET"]),
        Route("/readyz", endpoint("readyz", readyz, auth=False), methods=["GET"]),
        Route("/metrics", endpoint("metrics", metrics, auth=False), methods=["GET"]),
    ]
