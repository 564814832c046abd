"""steer's own ``/openapi.json`` against the app that serves it (in process, through the ASGI transport):
every route the app answers is in the document and every operation of the document is answered, and the
``UserId`` schema of the ``{user}`` path parameter takes exactly the ids the server takes (mapped ids
included)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.routing import Route

from steer.identity import UserIds

ALIASES = ("/chat/completions", "/responses", "/embeddings", "/completions")  # the /v1 paths, without /v1


@pytest.fixture
def app(make_app: Any) -> Any:
    return make_app()


def served(app: Any) -> set[tuple[str, str]]:
    """(METHOD, path) of every route of the app outside the inspector (HEAD, which answers as GET, aside)."""
    out = set()
    for route in app.app.routes:
        assert isinstance(route, Route), route
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)  # {model:path} -> {model}
        if path == "/ui" or path.startswith("/ui/"):
            continue
        out |= {(m, path) for m in route.methods or () if m != "HEAD"}
    return out


def test_the_document_names_every_route_the_app_serves_and_no_other(app: Any) -> None:
    r = app.http.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    documented = {(m.upper(), path) for path, ops in doc["paths"].items() for m in ops}
    routes = served(app)
    aliases = {(m, p) for m, p in routes if p in ALIASES}
    assert {(m, "/v1" + p) for m, p in aliases} <= documented  # an alias is its /v1 route's operation
    assert routes - aliases == documented
    assert ("GET", "/v1/responses/{response_id}/input_items") in documented
    op = doc["paths"]["/v1/responses/{response_id}/input_items"]["get"]
    assert {p["name"]: p["in"] for p in op["parameters"]} == {
        "response_id": "path", "limit": "query", "order": "query", "after": "query", "include": "query",
    }  # fmt: skip
    # every path parameter the document names is one of its path's, and the other way round
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            names = {p["name"] for p in op.get("parameters", ()) if p["in"] == "path"}
            assert names == set(re.findall(r"\{(\w+)\}", path)), (method, path)


def test_the_user_parameter_is_the_mapped_id_rule_not_a_plain_id(app: Any) -> None:
    doc = app.http.get("/openapi.json").json()
    schema = doc["components"]["schemas"]["UserId"]
    for path, ops in doc["paths"].items():
        for op in ops.values():
            for p in op.get("parameters", ()):
                if p["name"] == "user":
                    assert p["schema"] == {"$ref": "#/components/schemas/UserId"}, path
                    assert "mapped key" in p["description"]
    assert schema["maxLength"] == 1024 and "~" in schema["description"]
    assert doc["components"]["schemas"]["Feedback"]["properties"]["user"] == {"$ref": "#/components/schemas/UserId"}


def _valid(schema: dict[str, Any], value: str) -> bool:
    return not list(jsonschema.Draft202012Validator(schema).iter_errors(value))


def _taken(ids: UserIds, value: str) -> bool:
    try:
        ids.key(value)
    except Exception:
        return False
    return True


EDGES = ["alice", "Jane Doe", "Zoë", "~abc", ".", "..", " a", "a ", "a/b", "a\\b", "a\u200bb", "x" * 1024,
         "x" * 1025, "a\u2028b", "\u00a0a", "a\u3000", "0\n", "ab\n"]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(value=st.text(st.characters(max_codepoint=0xFFFF), min_size=1, max_size=12) | st.sampled_from(EDGES))
def test_the_user_id_schema_takes_exactly_what_the_server_takes(value: str) -> None:
    """Over the Basic Multilingual Plane (the pattern's escapes are ``\\uXXXX``: outside it, the description
    names what else is refused)."""
    from steer.server.openapi import user_id_schema

    assert _valid(user_id_schema(), value) == _taken(UserIds(b"k" * 32), value), repr(value)


def test_ids_the_schema_takes_are_served_and_ids_it_refuses_are_a_400(app: Any) -> None:
    schema = app.http.get("/openapi.json").json()["components"]["schemas"]["UserId"]
    for value in ["alice", "Jane Doe", "Zoë", "x" * 1024, "~abc", " a", "a\u200bb", "x" * 1025, "a\u0001b"]:
        r = app.http.get(f"/v1/users/{quote(value, safe='')}/memories")
        if _valid(schema, value):
            assert r.status_code == 200, (value, r.text)
        else:
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_user", (value, r.text)
