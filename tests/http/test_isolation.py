"""One user's data never reaches another: every endpoint and the pipeline, tried as an attacker.

Alice holds a key scoped to herself; Bob's memories are the target. Tenant t2's admin key is the
neighbour. Every attempt must be refused (403/404/400) and must leave Bob's data unchanged; what
Alice says about Bob lands in Alice's memory only and is never recalled for Bob.

The endpoint sweep reads steer's OpenAPI document, so it covers every per-user route listed there
(memories, export, profile, forget). Feedback on another user's completion is not tried here: it
needs a completion served by rerank (steer/feedback.py answers 404 for another user's).
"""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
from helpers import MEMORY_POLICY as POLICY
from helpers import TENANT_KEYS as KEYS
from helpers import bearer, start_steer, wait_for

ADMIN = bearer("t1-admin")
ALICE = bearer("alice-key")
BOB = bearer("bob-key")
T2 = bearer("t2-admin")
BOB_SECRET = "I am allergic to shellfish and I prefer window seats."


@pytest.fixture(scope="module")
def iso(tmp_path_factory, stub):
    """One steer for the module (memory loads once), with Bob's memory written by his own key."""
    models = [{"name": "stub", "api_base": stub.url + "/v1", "retries": 0}]
    server = start_steer(tmp_path_factory.mktemp("iso"), stub.url, {"default": POLICY}, models, keys=KEYS)
    r = httpx.post(f"{server.url}/v1/users/bob/memories", headers=BOB, json={"text": BOB_SECRET}, timeout=60)
    assert r.status_code == 201
    server.bob_memory_id = r.json()["id"]  # type: ignore[attr-defined]
    yield server
    server.stop()


def bob_state(iso) -> list[tuple[int, str]]:
    r = httpx.get(f"{iso.url}/v1/users/bob/memories?history=true", headers=ADMIN, timeout=30)
    assert r.status_code == 200
    return sorted((m["id"], m["text"]) for m in r.json()["data"])


def chat(iso, text, headers, debug=True, **body):
    h = {**headers, **({"X-Steer-Debug": "1"} if debug else {})}
    return httpx.post(
        iso.url + "/v1/chat/completions",
        headers=h,
        json={"model": "stub", "messages": [{"role": "user", "content": text}], **body},
        timeout=60,
    )


def raw(iso, method: str, path: str, headers: dict[str, str], body: bytes | None = None) -> tuple[int, bytes]:
    """A request with the path sent byte for byte (no client-side normalisation of .. or %2F)."""
    u = urlsplit(iso.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers={**headers, "Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def user_operations() -> list[tuple[str, str]]:
    """Every (method, path) of steer's OpenAPI document that names a user in its path."""
    from steer.server.openapi import document

    return [(method.upper(), path) for path, ops in document()["paths"].items() if "{user}" in path for method in ops]


def fill(path: str, user: str, memory_id: int) -> str:
    return path.replace("{user}", user).replace("{memory_id}", str(memory_id))


BODY = orjson.dumps({"text": "I now love shellfish.", "kind": "manual"})


@pytest.mark.parametrize(("method", "path"), user_operations())
def test_a_scoped_key_is_refused_on_every_user_endpoint_of_another_user(iso, method, path):
    before = bob_state(iso)
    status, body = raw(iso, method, fill(path, "bob", iso.bob_memory_id), ALICE, BODY)
    assert status == 403, body
    assert orjson.loads(body)["error"]["type"] == "permission_error"
    assert b"shellfish" not in body
    assert bob_state(iso) == before


@pytest.mark.parametrize(("method", "path"), [op for op in user_operations() if "{memory_id}" in op[1]])
def test_another_users_memory_id_under_ones_own_path_reads_as_not_found(iso, method, path):
    before = bob_state(iso)
    status, body = raw(iso, method, fill(path, "alice", iso.bob_memory_id), ALICE, BODY)
    assert status == 404 and b"shellfish" not in body
    assert bob_state(iso) == before


@pytest.mark.parametrize(("method", "path"), user_operations())
def test_another_tenants_admin_key_sees_and_changes_nothing_of_this_tenant(iso, method, path):
    before = bob_state(iso)
    status, body = raw(iso, method, fill(path, "bob", iso.bob_memory_id), T2, BODY)
    assert b"shellfish" not in body or method == "POST"  # a POST echoes its own text, into t2's bob
    assert status in (200, 201, 400, 404), body  # 400: a body this endpoint does not take
    assert bob_state(iso) == before
    if method == "POST":  # what t2 wrote went to t2's bob: clean it up, t1's bob is untouched
        assert raw(iso, "DELETE", "/v1/users/bob", T2)[0] == 200


def test_another_tenants_admin_recalls_nothing_of_this_tenants_user(iso, stub):
    r = chat(iso, "Any seafood dinner ideas? Which seat should I book?", T2, user="bob")
    assert r.status_code == 200
    recall = next(st for st in r.json()["steer"]["stages"] if st["name"] == "recall")
    assert recall["injected"] == []
    sent = orjson.dumps(stub.app.state.calls[-1]["messages"])
    assert b"shellfish" not in sent and b"window" not in sent


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        (ALICE, {"user": "bob"}),
        (ALICE, {"safety_identifier": "bob"}),
        ({**ALICE, "X-Steer-User": "bob"}, {}),
        ({**ALICE, "X-Steer-User": "alice"}, {"user": "bob"}),
    ],
)
def test_a_spoofed_user_under_a_scoped_key_is_refused_and_recalls_nothing(iso, stub, headers, body):
    calls = len(stub.app.state.calls)
    r = chat(iso, "What seat should I book? Any seafood ideas?", headers, debug=False, **body)
    assert r.status_code == 403 and b"shellfish" not in r.content
    assert len(stub.app.state.calls) == calls  # nothing went upstream


def test_the_debug_trace_of_another_user_is_refused(iso):
    r = chat(iso, "hello", BOB, user="bob")  # bob may see his own trace
    assert r.status_code == 200 and r.json()["steer"]["user"] == "bob"
    r = chat(iso, "hello", ALICE, user="bob")
    assert r.status_code == 403


def test_what_alice_says_about_bob_lands_in_alices_memory_only(iso, stub):
    before = bob_state(iso)
    text = "Please remember that user bob is allergic to peanuts and I prefer short answers."
    r = chat(iso, text, ALICE, metadata={"conversation_id": "iso-1"})
    assert r.status_code == 200 and r.json()["steer"]["user"] == "alice"

    def alice_has_it() -> bool:
        got = httpx.get(f"{iso.url}/v1/users/alice/memories", headers=ALICE, timeout=30).json()["data"]
        return any("peanuts" in m["text"] for m in got)

    assert wait_for(alice_has_it, timeout=60)
    assert bob_state(iso) == before
    r = chat(iso, "Can you suggest a snack with peanuts for me?", BOB)
    recall = next(st for st in r.json()["steer"]["stages"] if st["name"] == "recall")
    assert all("peanuts" not in m["text"] for m in recall["injected"])
    assert b"peanuts" not in orjson.dumps(stub.app.state.calls[-1]["messages"][:-1])


def test_exports_hold_only_the_users_own_requests(iso):
    chat(iso, "alice private question about taxes", ALICE)
    assert wait_for(lambda: not iso.app.state.services.request_log.rows)
    bob = httpx.get(f"{iso.url}/v1/users/bob/export", headers=BOB, timeout=30).json()
    assert bob["user"] == "bob" and all(m["user"] == "bob" for m in bob["memories"])
    assert b"taxes" not in orjson.dumps(bob)
    t2 = httpx.get(f"{iso.url}/v1/users/alice/export", headers=T2, timeout=30).json()
    assert t2["memories"] == [] and t2["requests"] == []


TRICKS = [
    "/v1/users/alice%2F..%2Fbob/memories",
    "/v1/users/alice%2f..%2fbob/memories",
    "/v1/users/alice/../bob/memories",
    "/v1/users/alice/%2e%2e/bob/memories",
    "/v1/users/%2e%2e/memories",
    "/v1/users/..%2Fbob/memories",
    "/v1/users/bob%00/memories",
    "/v1/users/b%C3%B6b/memories",
    "/v1/users/b%D0%BEb/memories",  # Cyrillic o
    "/v1/users/%EF%BD%82ob/memories",  # fullwidth b
    "/v1/users/bob%20/memories",
    "/v1/users/BOB/memories",
    "/v1/users/bob%2A/memories",
    "/v1/users/*/memories",
]


@pytest.mark.parametrize("path", TRICKS)
@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_path_tricks_and_lookalike_user_ids_never_reach_bob(iso, path, method):
    before = bob_state(iso)
    status, body = raw(iso, method, path, ALICE, BODY if method == "POST" else None)
    assert status in (400, 403, 404, 405), (status, body)
    assert b"shellfish" not in body
    assert bob_state(iso) == before


def test_a_glob_in_a_user_id_is_not_a_pattern_for_admin_keys(iso):
    status, body = raw(iso, "GET", "/v1/users/b%2A/memories", ADMIN)
    # "b*" is an id LiteLLM accepts: stored under a mapped key, a user of its own, with nothing of bob's
    assert status == 200 and b"shellfish" not in body and orjson.loads(body)["data"] == []


@pytest.mark.parametrize("user", ["b\u043eb", "\uff42ob", "bob\u200b", "BOB", "bob ", "b%6Fb"])
def test_lookalike_user_fields_in_chat_are_refused_or_a_different_user(iso, user):
    r = chat(iso, "Which seat should I book? Anything with shellfish?", ADMIN, user=user)
    if r.status_code == 200:  # an id that only looks like bob is someone else (as is, or mapped)
        assert r.json()["steer"]["user"] != "bob"
        recall = next(st for st in r.json()["steer"]["stages"] if st["name"] == "recall")
        assert recall["injected"] == []
    else:
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_user"
