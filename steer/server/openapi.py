"""``GET /openapi.json``: an OpenAPI 3.1 document of steer's own routes.

The chat request schema comes from the pydantic models in ``steer.protocol`` (so it cannot drift
from what steer validates); the per-user endpoints have small hand-written schemas. The document
is built once per process, on first request. It drives the hostile-input fuzz tests and any
client generator.
"""

from __future__ import annotations

import unicodedata
from functools import cache
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from steer.identity import MAPPED, MAX_GIVEN_CHARS, Identity
from steer.server.responses_items import DEFAULT_LIMIT, INCLUDE, MAX_LIMIT
from steer.server.routes import endpoint, json_response
from steer.server.services import Services
from steer.version import __version__

REF = "#/components/schemas/{model}"

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
USER_ID_DESCRIPTION = (
    "The end user's id as the client gives it (in a path, URL-encoded). An id of 1-128 ASCII letters, digits "
    "and . _ @ : + | = -, starting with a letter or digit, is stored as it is; any other (spaces, non-ASCII, "
    f"up to {MAX_GIVEN_CHARS} characters) is stored under a mapped key ({MAPPED} and 40 hex digits of an HMAC "
    "of its NFC form), which the debug trace and the request log show. Refused with a 400 invalid_user: / or "
    "\\, . and .., control or invisible formatting characters (Unicode Cc, Cf, Cs, Zl, Zp; the pattern "
    f"lists those of the Basic Multilingual Plane), leading or trailing white space, and a leading {MAPPED} "
    "(a mapped key is never taken as an id)."
)
MEMORY_IN = {
    "type": "object",
    "required": ["text"],
    "properties": {"text": {"type": "string", "minLength": 1}, "kind": {"type": "string"}},
}
MEMORY_PATCH = {
    "type": "object",
    "properties": {"text": {"type": "string", "minLength": 1}, "kind": {"type": "string"}},
    "additionalProperties": False,
}
MEMORY = {
    "type": "object",
    "required": ["id", "text", "kind"],
    "properties": {
        "id": {"type": "integer"},
        "text": {"type": "string"},
        "kind": {"type": "string"},
        "source_conversation": {"type": ["string", "null"]},
        "source_turn": {"type": ["integer", "null"]},
        "created_at": {"type": "number"},
        "updated_at": {"type": "number"},
        "superseded_by": {"type": ["integer", "null"]},
        "meta": {"type": "object"},
    },
}
ANY_OBJECT = {"type": "object"}
FEEDBACK = {
    "type": "object",
    "required": ["completion_id"],
    "properties": {
        "completion_id": {"type": "string"},
        "rating": {"type": "number", "minimum": -1, "maximum": 1},
        "choice": {"type": "integer", "minimum": 0},
        "edit": {"type": "string"},
        "index": {"type": "integer", "minimum": 0},
        "user": {"$ref": REF.format(model="UserId")},
    },
}
PROFILE_PUT = {
    "type": "object",
    "properties": {
        "scorer": {"type": "string"},
        "weights": {"type": "object", "additionalProperties": {"type": "number"}},
        "pinned": {"type": "object", "additionalProperties": {"type": "number"}},
        "reset": {"type": "boolean"},
    },
}


RESPONSES_REQUEST = {
    "type": "object",
    "properties": {
        "model": {"type": "string"},
        "input": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]},
        "instructions": {"type": "string"},
        "tools": {"type": "array", "items": {"type": "object"}},
        "tool_choice": {"anyOf": [{"type": "string"}, {"type": "object"}]},
        "text": {"type": "object"},
        "max_output_tokens": {"type": "integer", "minimum": 1},
        "stream": {"type": "boolean"},
        "store": {"type": "boolean"},
        "previous_response_id": {"type": "string"},
        "user": {"type": "string"},
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
EMBEDDINGS_REQUEST = {
    "type": "object",
    "required": ["input"],
    "properties": {
        "model": {"type": "string"},
        "input": {"anyOf": [{"type": "string"}, {"type": "array"}]},
        "user": {"type": "string"},
    },
}
ITEM_LIST = {
    "type": "object",
    "required": ["object", "data", "first_id", "last_id", "has_more"],
    "properties": {
        "object": {"const": "list"},
        "data": {"type": "array", "items": {"type": "object", "required": ["id", "type"]}},
        "first_id": {"type": "string", "description": "the first item's id; empty when data is"},
        "last_id": {"type": "string", "description": "the last item's id; empty when data is"},
        "has_more": {"type": "boolean"},
    },
}
COMPLETIONS_REQUEST = {
    "type": "object",
    "required": ["prompt"],
    "properties": {
        "model": {"type": "string"},
        "prompt": {"anyOf": [{"type": "string"}, {"type": "array"}]},
        "stream": {"type": "boolean"},
        "max_tokens": {"type": "integer", "minimum": 1},
        "user": {"type": "string"},
    },
}


def _char_class(chars: list[int]) -> str:
    """A regex character class body for the code points ``chars`` (ascending), as ``\\uXXXX`` ranges: read
    alike by ECMA-262 and Python patterns."""
    spans: list[list[int]] = []
    for c in chars:
        if spans and spans[-1][1] == c - 1:
            spans[-1][1] = c
        else:
            spans.append([c, c])
    return "".join(f"\\u{a:04x}" if a == b else f"\\u{a:04x}-\\u{b:04x}" for a, b in spans)


@cache
def user_id_schema() -> dict[str, Any]:
    """The schema of an end-user id as steer takes it (``steer.identity.UserIds``): the same ids pass
    (built once; treat it as read-only)."""
    invisible = ("Cc", "Cf", "Cs", "Zl", "Zp")
    refused = [c for c in range(0x10000) if chr(c) in "/\\" or unicodedata.category(chr(c)) in invisible]
    space = sorted({*refused, *(c for c in range(0x10000) if chr(c).isspace())})
    ends, inner = _char_class(space), _char_class(refused)
    first = _char_class(sorted({*space, ord(MAPPED)}))
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_GIVEN_CHARS,
        # ``(?!\n)``: Python's ``$`` also matches before a final newline, ECMA-262's does not
        "pattern": f"^[^{first}]([^{inner}]*[^{ends}])?$(?!\\n)",
        "not": {"enum": [".", ".."]},
        "description": USER_ID_DESCRIPTION,
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): _json(_ref("Error"), "error") for c in codes}


def _param(name: str, schema: dict[str, Any], where: str = "path") -> dict[str, Any]:
    return {"name": name, "in": where, "required": where == "path", "schema": schema}


def _op(
    summary: str,
    ok: dict[str, Any],
    *,
    body: dict[str, Any] | None = None,
    params: list[dict[str, Any]] | None = None,
    errors: tuple[int, ...] = (400, 401, 403, 404),
    auth: bool = True,
    status: str = "200",
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {status: ok, **_errors(*errors)}}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if params:
        op["parameters"] = params
    if not auth:
        op["security"] = []
    return op


@cache
def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (built once; treat it as read-only)."""
    from pydantic.json_schema import models_json_schema

    from steer.protocol import ChatCompletionRequest

    _, defs = models_json_schema([(ChatCompletionRequest, "validation")], ref_template=REF)
    schemas: dict[str, Any] = {
        **defs.get("$defs", {}),
        "Error": ERROR,
        "MemoryIn": MEMORY_IN,
        "MemoryPatch": MEMORY_PATCH,
        "Memory": MEMORY,
        "Feedback": FEEDBACK,
        "ProfilePut": PROFILE_PUT,
        "ResponseItemList": ITEM_LIST,
        "UserId": user_id_schema(),
        "ResponsesRequest": RESPONSES_REQUEST,
        "EmbeddingsRequest": EMBEDDINGS_REQUEST,
        "CompletionsRequest": COMPLETIONS_REQUEST,
    }
    user = _param("user", _ref("UserId")) | {"description": USER_ID_DESCRIPTION}
    memory_id = _param("memory_id", {"type": "integer", "minimum": 0})
    chat_ok = {
        "description": "a chat.completion, or an SSE stream of chat.completion.chunk events when stream is true",
        "content": {"application/json": {"schema": ANY_OBJECT}, "text/event-stream": {"schema": {"type": "string"}}},
    }
    chat = _op(
        "Create a chat completion (OpenAI-compatible), personalized by the user's policy",
        chat_ok,
        body=_ref("ChatCompletionRequest"),
        errors=(400, 401, 403, 404, 413, 429, 502, 504),
    )
    listing = {"type": "object", "properties": {"object": {"const": "list"}, "data": {"type": "array"}}}
    responses_ok = {
        "description": "a response object, or an SSE stream of Responses events when stream is true",
        "content": {"application/json": {"schema": ANY_OBJECT}, "text/event-stream": {"schema": {"type": "string"}}},
    }
    response_id = _param("response_id", {"type": "string"})
    paths: dict[str, Any] = {
        "/v1/chat/completions": {"post": chat},
        "/v1/responses": {
            "post": _op(
                "Create a response (OpenAI Responses API), run as a chat completion through the user's policy",
                responses_ok,
                body=_ref("ResponsesRequest"),
                errors=(400, 401, 403, 404, 413, 429, 502, 504),
            )
        },
        "/v1/responses/{response_id}": {
            "get": _op("A response stored with store: true", _json(ANY_OBJECT), params=[response_id]),
            "delete": _op("Delete a stored response", _json(ANY_OBJECT), params=[response_id]),
        },
        "/v1/responses/{response_id}/input_items": {
            "get": _op(
                "The input items a stored response answered (those of the responses it continued first), a page",
                _json(_ref("ResponseItemList")),
                params=[
                    response_id,
                    _param(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
                        "query",
                    ),
                    _param("order", {"type": "string", "enum": ["asc", "desc"], "default": "desc"}, "query"),
                    _param("after", {"type": "string"}, "query"),
                    _param("include", {"type": "array", "items": {"type": "string", "enum": sorted(INCLUDE)}}, "query"),
                ],
            )
        },
        "/v1/embeddings": {
            "post": _op(
                "Embeddings, passed through to the model's upstream",
                _json(ANY_OBJECT),
                body=_ref("EmbeddingsRequest"),
                errors=(400, 401, 403, 404, 413, 429, 502, 504),
            )
        },
        "/v1/completions": {
            "post": _op(
                "Text completions (legacy), passed through to the model's upstream",
                responses_ok | {"description": "a text_completion, or its SSE stream when stream is true"},
                body=_ref("CompletionsRequest"),
                errors=(400, 401, 403, 404, 413, 429, 502, 504),
            )
        },
        "/v1/models": {"get": _op("List the models", _json(listing), errors=(401,))},
        "/v1/models/{model}": {
            "get": _op("One model", _json(ANY_OBJECT), params=[_param("model", {"type": "string"})])
        },
        "/v1/users/{user}/memories": {
            "get": _op(
                "List the user's memories",
                _json(listing),
                params=[user, _param("history", {"type": "boolean"}, "query")],
            ),
            "post": _op(
                "Add a memory (200 with merged: true when it restates one already held)",
                _json(_ref("Memory"), "created"),
                body=_ref("MemoryIn"),
                params=[user],
                errors=(400, 401, 403, 413, 503),
                status="201",
            ),
        },
        "/v1/users/{user}/memories/{memory_id}": {
            "get": _op("One memory", _json(_ref("Memory")), params=[user, memory_id]),
            "patch": _op("Edit a memory", _json(_ref("Memory")), body=_ref("MemoryPatch"), params=[user, memory_id]),
            "delete": _op("Delete a memory", _json(ANY_OBJECT), params=[user, memory_id]),
        },
        "/v1/users/{user}/export": {"get": _op("Everything steer holds on the user", _json(ANY_OBJECT), params=[user])},
        "/v1/users/{user}": {
            "delete": _op(
                "Forget the user: memories, vectors, request log, profiles, feedback", _json(ANY_OBJECT), params=[user]
            )
        },
        "/v1/users/{user}/profile": {
            "get": _op(
                "The user's profile (weights, mixture, pins)",
                _json(ANY_OBJECT),
                params=[user, _param("scorer", {"type": "string"}, "query")],
            ),
            "put": _op(
                "Seed, pin or reset the user's profile", _json(ANY_OBJECT), body=_ref("ProfilePut"), params=[user]
            ),
        },
        "/v1/feedback": {
            "post": _op(
                "Feedback on a served completion (rating, choice or edit)", _json(ANY_OBJECT), body=_ref("Feedback")
            )
        },
        "/healthz": {"get": _op("Liveness", _json(ANY_OBJECT), errors=(), auth=False)},
        "/readyz": {"get": _op("Readiness", _json(ANY_OBJECT), errors=(503,), auth=False)},
        "/metrics": {
            "get": _op(
                "Prometheus metrics",
                {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}},
                errors=(),
                auth=False,
            )
        },
        "/openapi.json": {"get": _op("This document", _json(ANY_OBJECT), errors=(), auth=False)},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "steer",
            "version": __version__,
            "description": "Inference-time personalization proxy for LLMs (OpenAI-compatible).",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


async def openapi_json(request: Request, services: Services, caller: Identity, trace_id: str) -> Response:
    return json_response(document())


def openapi_routes() -> list[Route]:
    return [Route("/openapi.json", endpoint("openapi", openapi_json, auth=False), methods=["GET"])]
