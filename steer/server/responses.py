"""``/v1/responses``: the OpenAI Responses API on top of steer's chat pipeline.

    POST   /v1/responses          create (streaming or not)
    GET    /v1/responses/{id}     a stored response
    GET    /v1/responses/{id}/input_items   the input items it answered, a page at a time
    DELETE /v1/responses/{id}     delete a stored response

A create request is translated to a chat completion (``steer.server.responses_translate``) and served by
the same code as ``/v1/chat/completions`` (identity, policy, recall, align, sample, rerank, remember,
request log, metrics); the chat completion, or its stream (``steer.server.responses_stream``), is
translated back. A model marked ``responses: native`` (an upstream that serves the Responses API itself)
is forwarded as is instead, with the upstream's own state, when the user's plan has no stage to run.

``store`` defaults to false: nothing is kept unless the client asks. With ``store: true`` the response
and the input items it answered are kept per (tenant, user) (``steer.storage.responses``) and a later
request may continue it with ``previous_response_id``; an id that is unknown, deleted, or another
tenant's or user's is a 404 (so is its ``input_items``, listed by ``steer.server.responses_items``).
Stored responses are in the user's export and go with a forget.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from steer.errors import InvalidRequest, NotFound
from steer.identity import Identity
from steer.protocol import parse_json
from steer.server import responses_items as ri
from steer.server import responses_stream as rs
from steer.server import responses_translate as tr
from steer.server.auth import resolve_user
from steer.server.chat import chat_completion
from steer.server.passthrough import forward
from steer.server.routes import endpoint, json_response, read_body
from steer.server.services import Services
from steer.storage import responses as store
from steer.storage.database import Database

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise InvalidRequest(f"{name} must be a boolean", param=name, code="invalid_value")
    return bool(value)


def _db(services: Services) -> Database:
    assert services.db is not None
    return services.db


def _not_found(response_id: str, param: str | None = None) -> NotFound:
    return NotFound(
        f"no stored response {response_id[:80]!r} for this user (unknown, deleted, or stored without store: true)",
        param=param,
        code="response_not_found",
    )


async def create(request: Request, services: Services, caller: Identity, trace_id: str) -> Response:
    began = time.time()
    body = parse_json(await read_body(request, services.settings.max_body_bytes))
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object", code="invalid_body")
    streaming, keep = _flag(body, "stream"), _flag(body, "store")
    identity = resolve_user(caller, request.headers, body, services.user_ids, services.settings.identity.sources)
    cfg = services.router.config(body.get("model") if isinstance(body.get("model"), str) else None)
    if cfg.responses == "native" and not services.plan(services.policies.resolve(identity), identity):
        return await forward(services, identity, trace_id, "/responses", body, streaming)

    history: list[dict[str, Any]] = []
    previous = body.get("previous_response_id")
    if previous is not None:
        if not isinstance(previous, str) or not previous:
            raise InvalidRequest("previous_response_id must be a string", param="previous_response_id")
        prev = await asyncio.to_thread(store.load, _db(services), identity.tenant, identity.user, previous)
        if prev is None:
            raise _not_found(previous, "previous_response_id")
        history = [*prev.input, *prev.response.get("output", [])]
    chat_body = tr.to_chat(body, history, streaming)
    items = ri.with_ids([*history, *tr.input_items(body)])  # what this response answered, kept with it when stored
    debug = request.headers.get("x-steer-debug", "").lower() in ("1", "true", "yes")
    # the user as resolved from the Responses body (some of whose fields, like metadata, the chat body lacks)
    headers = {**request.headers, **({"x-steer-user": identity.given_user} if identity.given_user else {})}
    result = await chat_completion(services, chat_body, caller, headers, trace_id, debug)
    response_id, created_at = tr.new_id("resp"), int(time.time())

    async def keep_it(response: dict[str, Any]) -> None:
        if keep and response.get("status") in ("completed", "incomplete"):
            kept = {k: v for k, v in response.items() if k != "steer"}
            stored = store.StoredResponse(response_id, time.time(), cfg.name, items, kept)
            await asyncio.to_thread(store.save, _db(services), identity.tenant, identity.user, stored, began)

    if result.stream is not None:
        translator = rs.Translator(body, response_id, created_at, cfg.name, keep)
        events = rs.translate(result.stream, translator, keep_it)
        return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)
    assert result.body is not None
    response = tr.from_completion(body, result.body, response_id, created_at, cfg.name, keep)
    await keep_it(response)
    return json_response(response)


async def _stored(request: Request, services: Services, caller: Identity) -> store.StoredResponse:
    """The stored response the path names, of the caller's (tenant, user); else the 404."""
    identity = resolve_user(caller, request.headers, {}, services.user_ids, services.settings.identity.sources)
    response_id = str(request.path_params["response_id"])
    found = await asyncio.to_thread(store.load, _db(services), identity.tenant, identity.user, response_id)
    if found is None:
        raise _not_found(response_id)
    return found


async def get(request: Request, services: Services, caller: Identity, trace_id: str) -> Response:
    return json_response((await _stored(request, services, caller)).response)


async def input_items(request: Request, services: Services, caller: Identity, trace_id: str) -> Response:
    found = await _stored(request, services, caller)
    return json_response(ri.item_list(found.input, found.id, request.query_params))


async def delete(request: Request, services: Services, caller: Identity, trace_id: str) -> Response:
    identity = resolve_user(caller, request.headers, {}, services.user_ids, services.settings.identity.sources)
    response_id = str(request.path_params["response_id"])
    if not await asyncio.to_thread(store.delete, _db(services), identity.tenant, identity.user, response_id):
        raise _not_found(response_id)
    return json_response({"id": response_id, "object": "response", "deleted": True})


def response_routes() -> list[Route]:
    return [
        Route("/v1/responses", endpoint("responses", create), methods=["POST"]),
        Route("/responses", endpoint("responses", create), methods=["POST"]),
        Route("/v1/responses/{response_id}", endpoint("responses", get), methods=["GET"]),
        Route("/v1/responses/{response_id}/input_items", endpoint("responses", input_items), methods=["GET"]),
        Route("/v1/responses/{response_id}", endpoint("responses", delete), methods=["DELETE"]),
    ]
