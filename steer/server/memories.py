"""Per-user endpoints: memories, export, and forgetting a user entirely.

    GET    /v1/users/{user}/memories[?history=true]   list (with superseded history on request)
    POST   /v1/users/{user}/memories                  {"text", "kind"?} -> 201, or 200 when merged
    GET    /v1/users/{user}/memories/{id}
    PATCH  /v1/users/{user}/memories/{id}             {"text"?, "kind"?}
    DELETE /v1/users/{user}/memories/{id}
    GET    /v1/users/{user}/export                    everything steer holds on the user, as JSON
    DELETE /v1/users/{user}                           memories (rows and vectors), request log, profiles, feedback,
                                                      stored responses

An admin key reaches any user of its tenant; a scoped key only its own users.

Forgetting is final. The forget files a tombstone for the user in each database (the main file and
the memory store's) before it deletes anything, dated ``FORGET_HOLD_S`` ahead so that no write lands
while it runs, and dates it to the moment it answers when done. Every later write of the user's
data made for a request or job (memories, request log, served completions, feedback, profile,
align cache) checks the tombstone in its own transaction against the time that work began: work
that began before the answer writes nothing; work that begins after it is stored as usual.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from steer.errors import InvalidRequest, NotFound
from steer.identity import Identity
from steer.methods.memory.service import unavailable
from steer.pipeline.stage import stages
from steer.server.auth import authorize_user
from steer.server.routes import endpoint, json_response, read_json_object
from steer.server.services import Services
from steer.storage import responses as stored_responses
from steer.storage.forgotten import mark_forgotten

MAX_BODY = 64 * 1024
# how far ahead a forget dates the user's tombstone while it runs (moved back to its end when done); a
# forget cut short (the process killed) refuses the user's writes for at most this long
FORGET_HOLD_S = 300.0


class MemoryLimit(InvalidRequest):
    status = 409
    default_code = "memory_limit_reached"


def path_user(request: Request, caller: Identity) -> str:
    """The stored key of the user a per-user route names (``{user}``: the id as the client gives it,
    URL-encoded; a bad id is a 400 ``invalid_user``), once the caller may act for that user (else a
    403). The API's routes and the inspector's pages read it here."""
    services: Services = request.app.state.services
    return authorize_user(caller, str(request.path_params["user"]), services.user_ids)


def path_memory_id(request: Request) -> int:
    """The ``{memory_id}`` of a route; anything but a whole number of up to 18 digits is a 404."""
    raw = str(request.path_params["memory_id"])
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:  # "²".isdigit(), but int("²") fails
        raise NotFound(f"no memory {raw!r}")
    return int(raw)


def memory_fields(
    fields: Mapping[str, Any], services: Services, *, partial: bool = False
) -> tuple[str | None, str | None]:
    """A memory's ``text`` and ``kind`` as a client sends them (the API's JSON body, the inspector's
    forms): the text checked by ``check_text``, required unless ``partial`` (then None when absent);
    the kind None or a short identifier."""
    text = fields.get("text")
    return (None if text is None and partial else check_text(text, services)), check_kind(fields.get("kind"))


def check_text(text: Any, services: Services) -> str:
    """A memory's text as given by a client: a non-empty string within ``memory.max_chars``, stripped."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidRequest("text must be a non-empty string", param="text", code="invalid_value")
    limit = services.settings.memory.max_chars
    if len(text) > limit:
        raise InvalidRequest(f"text is over {limit} characters", param="text", code="memory_too_long")
    return text.strip()


def check_kind(kind: Any) -> str | None:
    """A memory's kind as given by a client: None, or a short identifier."""
    if kind is not None and (not isinstance(kind, str) or not kind.isidentifier() or len(kind) > 32):
        raise InvalidRequest("kind must be a short identifier", param="kind", code="invalid_value")
    return kind


async def call_memory(services: Services, method: str, *args: Any, **kwargs: Any) -> Any:
    from retrieval import MemoryNotFound
    from retrieval.store import OwnerForgotten

    try:
        return await services.memory.call(method, *args, **kwargs)
    except MemoryNotFound as exc:
        raise NotFound(
            f"no memory {exc.args[0] if exc.args else ''} for this user".replace("  ", " ")
        ) from exc
    except OwnerForgotten as exc:  # forgotten while this request ran: its memory is gone alike
        raise NotFound("no such memory for this user: the user was forgotten meanwhile") from exc


async def list_memories(request: Request, services: Services, caller: Identity, trace_id: str) -> Response:
    user = path_user(request, caller)
    history = request.query_params.get("history", "").lower() in ("1", "true", "yes")
    memories = await call_memory(services, "list", caller.tenant, user, include_history=history)
    return json_response({"object": "list", "data": [m.to_dict() for m in memories]})


async def add_memory(request: Request, services: Services, caller: Identity, trace_id: str) -> Response:
    began = time.time()
    user = path_user(request, caller)
    body = await read_json_object(request, MAX_BODY)
    text, kind = memory_fields(body, services)
    assert text is not None
    memory, created = await add_user_memory(services, caller.tenant, user, text, kind, f"api:{trace_id}", began)
    return json_response({**memory.to_dict(), "merged": not created}, status=201 if created else 200)


async def add_user_memory(
    services: Services, tenant: str, user: str, text: str, kind: str | None, source: str, began: float
) -> tuple[Any, bool]:
    """Add one memory for the user (``text`` already checked by ``check_text``), or find the same one
    held already: (the memory, True when it was added). The API and the inspector both add through here."""
    from retrieval import MemoryDraft
    from retrieval.store import MemoryLimitReached, OwnerForgotten

    store = await services.memory.store()

    def write() -> tuple[Any, bool]:
        with store.owner_lock(tenant, user):  # two identical POSTs at once: one adds, one merges
            existing = store.search(tenant, user, text, k=1)
            if existing and existing[0].score >= 0.97:
                return existing[0].memory, False
            draft = MemoryDraft(text, kind or "manual", source, None, {})
            limit = services.settings.memory.max_per_user
            # another process may store the same statement meanwhile: the database keeps one (add_new)
            ((memory, created),) = store.add_new(tenant, user, [draft], began=began, limit=limit)
            return memory, created

    try:
        return await asyncio.to_thread(write)
    except sqlite3.OperationalError as exc:  # locked or full: refused, never acknowledged
        raise unavailable(exc) from exc
    except MemoryLimitReached as exc:
        services.memory.dropped("user_cap")
        raise MemoryLimit(
            f"this user already holds {services.settings.memory.max_per_user} memories (memory.max_per_user); "
            "delete some first",
            param="text",
        ) from exc
    except OwnerForgotten as exc:  # the user was forgotten while this request ran
        raise NotFound("this user was forgotten while the memory was being added; nothing was stored") from exc


async def get_memory(request: Request, services: Services, caller: Identity, trace_id: str) -> Response:
    user = path_user(request, caller)
    memory = await call_memory(services, "get", caller.tenant, user, path_memory_id(request))
    return json_response(memory.to_dict())


async def patch_memory(request: Request, services: Services, caller: Identity, trace_id: str) -> Response:
    began = time.time()
    user = path_user(request, caller)
    memory_id = path_memory_id(request)
    body = await read_json_object(request, MAX_BODY)
    unknown = set(body) - {"text", "kind"}
    if unknown:
        raise InvalidRequest(f"unknown field(s): {', '.join(sorted(unknown))}", param=sorted(unknown)[0])
    text, kind = memory_fields(body, services, partial=True)
    memory = await call_memory(services, "update", caller.tenant, user, memory_id, text=text, kind=kind, began=began)
    return json_response(memory.to_dict())


async def delete_memory(request: Request, services: Services, caller: Identity, trace_id: str) -> Response:
    user = path_user(request, caller)
    memory_id = path_memory_id(request)
    await call_memory(services, "delete", caller.tenant, user, memory_id)
    return json_response({"id": memory_id, "object": "memory.deleted", "deleted": True})


async def export_user(request: Request, services: Services, caller: Identity, trace_id: str) -> Response:
    user = path_user(request, caller)
    return json_response(await export_user_data(services, caller.tenant, user))


async def export_user_data(services: Services, tenant: str, user: str) -> dict[str, Any]:
    """Everything steer holds on the user (``GET /v1/users/{user}/export``, and the inspector's export)."""
    data = await call_memory(services, "export", tenant, user)
    assert services.request_log is not None
    await services.request_log.flush()  # the requests still buffered are the user's too
    requests = await asyncio.to_thread(services.request_log.export, tenant, user)
    profiles = await asyncio.to_thread(services.profiles.store.export, tenant, user)
    held = {}
    for _, export in _user_data_hooks(services, "export"):
        held.update(await asyncio.to_thread(export, tenant, user))
    assert services.db is not None
    responses = await asyncio.to_thread(stored_responses.export, services.db, tenant, user)
    out = {**data, **profiles, **held, "requests": requests, "responses": responses}
    if services.traces is not None:
        await services.traces.flush()
        out["traces"] = await asyncio.to_thread(services.traces.export, tenant, user)
    return out


def _user_data_hooks(services: Services, method: str) -> list[tuple[str, Any]]:
    """(stage name, bound ``method``) of each stage that keeps per-user data (the align cache) and says so
    with ``export`` / ``forget``; only those stages are built here, in use or not."""
    return [
        (name, getattr(services.stage(name), method)) for name in stages.names() if hasattr(stages.get(name), method)
    ]


async def forget_user(request: Request, services: Services, caller: Identity, trace_id: str) -> Response:
    user = path_user(request, caller)
    return json_response(await forget_user_data(services, caller.tenant, user))


async def forget_user_data(services: Services, tenant: str, user: str) -> dict[str, Any]:
    """Forget the user entirely (``DELETE /v1/users/{user}``, and the inspector's forget); what was removed."""
    db, request_log = services.db, services.request_log
    assert db is not None and request_log is not None
    async with services.forgetting:
        hold = time.time() + FORGET_HOLD_S  # no write of the user's lands while the forget runs
        try:
            await asyncio.to_thread(mark_forgotten, db, tenant, user, hold)
            services.memory.forget(tenant, user)  # their queued remember writes
            removed = await call_memory(services, "delete_user", tenant, user, tombstone_at=hold)
            (await services.memory.recaller()).forget(tenant, user)  # anything it holds of the user
            await request_log.flush()
            await asyncio.to_thread(request_log.forget, tenant, user)
            if services.traces is not None:
                await services.traces.flush()
                await asyncio.to_thread(services.traces.forget, tenant, user)
            profile_rows = await asyncio.to_thread(services.profiles.store.forget, tenant, user)  # + feedback
            responses_removed = await asyncio.to_thread(stored_responses.forget, db, tenant, user)
            stage_rows = {}
            for name, forget in _user_data_hooks(services, "forget"):
                stage_rows[name] = await asyncio.to_thread(forget, tenant, user)
        finally:  # from the answer on, work that begins is the user's again
            done = time.time()
            await asyncio.to_thread(mark_forgotten, db, tenant, user, done)
            await services.memory.call("mark_forgotten", tenant, user, done)
    # the WAL still holds the pages as they were before the deletes: fold it into the file and empty it
    await asyncio.to_thread(db.checkpoint)
    return {
        "user": user,
        "object": "user.deleted",
        "deleted": True,
        "memories_removed": removed,
        "profile_rows_removed": profile_rows,
        "stage_rows_removed": stage_rows,
        "responses_removed": responses_removed,
    }


def user_routes() -> list[Route]:
    base = "/v1/users/{user}"
    return [
        Route(base + "/memories", endpoint("memories", list_memories), methods=["GET"]),
        Route(base + "/memories", endpoint("memories", add_memory), methods=["POST"]),
        Route(base + "/memories/{memory_id}", endpoint("memories", get_memory), methods=["GET"]),
        Route(base + "/memories/{memory_id}", endpoint("memories", patch_memory), methods=["PATCH"]),
        Route(base + "/memories/{memory_id}", endpoint("memories", delete_memory), methods=["DELETE"]),
        Route(base + "/export", endpoint("export", export_user), methods=["GET"]),
        Route(base, endpoint("users", forget_user), methods=["DELETE"]),
    ]
