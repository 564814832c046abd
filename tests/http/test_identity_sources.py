"""Identity as clients send it: every configured source names the end user (the first present one
wins; the others, when present, must agree), LiteLLM-style ids are stored under a keyed hash that
stays the same across restarts, path tricks and look-alikes of a mapped key are refused, and
``x-litellm-api-key`` authenticates like ``Authorization: Bearer``."""

from __future__ import annotations

import hashlib
import hmac
import unicodedata
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from helpers import DEFAULT_POLICY, ServerThread, Steer, start_steer

from steer.settings import ConfigError, load_settings

KEYS = [
    {"key": "admin-secret", "tenant": "t1", "admin": True},
    {"key": "alice-secret", "tenant": "t1", "users": ["alice", "Alice Smith"]},
]
ADMIN = {"Authorization": "Bearer admin-secret"}
SOURCES: list[tuple[str, dict[str, str], dict[str, Any]]] = [
    ("X-Steer-User", {"X-Steer-User": "u1"}, {}),
    ("user", {}, {"user": "u1"}),
    ("safety_identifier", {}, {"safety_identifier": "u1"}),
    ("x-litellm-end-user-id", {"x-litellm-end-user-id": "u1"}, {}),
    ("x-litellm-customer-id", {"x-litellm-customer-id": "u1"}, {}),
    ("metadata.user_id", {}, {"metadata": {"user_id": "u1", "app": "web"}}),
    ("litellm_metadata.user", {}, {"litellm_metadata": {"user": "u1"}}),
]


def chat(s: Steer, headers: dict[str, str] | None = None, **body: Any) -> httpx.Response:
    payload = {"model": "stub", "messages": [{"role": "user", "content": body.pop("text", "hi")}], **body}
    headers = {**ADMIN, "X-Steer-Debug": "1", **(headers or {})}
    return httpx.post(s.url + "/chat/completions", json=payload, headers=headers, timeout=30)


def traced_user(r: httpx.Response) -> str:
    assert r.status_code == 200, r.text
    user: str = r.json()["steer"]["user"]
    return user


@pytest.mark.parametrize(("source", "headers", "body"), SOURCES, ids=[s for s, _, _ in SOURCES])
def test_each_default_source_names_the_user(
    make_steer: Callable[..., Steer], source: str, headers: dict[str, str], body: dict[str, Any]
) -> None:
    s = make_steer(keys=KEYS)
    assert traced_user(chat(s, headers, **body)) == "u1"


def test_without_any_source_the_request_is_anonymous(make_steer: Callable[..., Steer]) -> None:
    s = make_steer(keys=KEYS)
    assert chat(s, metadata={"app": "web"}).json()["steer"]["user"] is None


def test_sources_that_agree_are_one_user_and_sources_that_differ_are_a_400(make_steer: Callable[..., Steer]) -> None:
    s = make_steer(keys=KEYS)
    assert traced_user(chat(s, {"x-litellm-end-user-id": "u1"}, user="u1", metadata={"user_id": "u1"})) == "u1"
    r = chat(s, {"X-Steer-User": "u1"}, metadata={"user_id": "u2"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "user_conflict"
    assert r.json()["error"]["param"] == "metadata.user_id"


def test_a_scoped_key_may_not_name_another_user_in_any_source(make_steer: Callable[..., Steer]) -> None:
    s = make_steer(keys=KEYS)
    alice = {"Authorization": "Bearer alice-secret"}
    for headers, body in [({"x-litellm-end-user-id": "bob"}, {}), ({}, {"litellm_metadata": {"user": "bob"}})]:
        r = chat(s, {**alice, **headers}, **body)
        assert r.status_code == 403, r.text
    assert traced_user(chat(s, alice, metadata={"user_id": "alice"})) == "alice"


def test_configured_sources_replace_the_defaults_in_their_order(make_steer: Callable[..., Steer]) -> None:
    s = make_steer(keys=KEYS, identity={"sources": ["header:X-App-User", "body:metadata.account"]})
    assert traced_user(chat(s, {"X-App-User": "u7"}, user="someone-else")) == "u7"  # body user is not a source
    assert traced_user(chat(s, metadata={"account": "u8"})) == "u8"
    assert chat(s, {"X-Steer-User": "u9"}).json()["steer"]["user"] is None


@pytest.mark.parametrize("bad", ["cookie:x", "header:", "body:metadata..user", "user"])
def test_a_malformed_source_is_a_config_error(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError, match="identity source"):
        load_settings(None, database=str(tmp_path / "x.db"), identity={"sources": [bad]})


LITELLM_IDS = ["Jane Doe", "a" * 200, "Zoë Müller", "用户-42", "jane@example.com (work)"]


@pytest.mark.parametrize("given", LITELLM_IDS, ids=["space", "200-chars", "accents", "cjk", "parens"])
def test_ids_litellm_accepts_are_stored_under_a_mapped_key_and_reach_the_users_endpoints(
    make_steer: Callable[..., Steer], given: str
) -> None:
    s = make_steer(keys=KEYS)
    key = traced_user(chat(s, user=given))
    assert key.startswith("~") and len(key) == 41 and given not in key
    assert traced_user(chat(s, metadata={"user_id": given})) == key  # every source maps alike
    if given.isascii():  # header values are ASCII on the wire
        assert traced_user(chat(s, {"x-litellm-end-user-id": given})) == key
    base = f"{s.url}/users/{quote(given, safe='')}"
    r = httpx.post(base + "/memories", json={"text": "I prefer window seats."}, headers=ADMIN, timeout=60)
    assert r.status_code in (200, 201), r.text
    listed = httpx.get(base + "/memories", headers=ADMIN, timeout=30).json()
    assert [m["text"] for m in listed["data"]] == ["I prefer window seats."]
    assert httpx.get(base + "/export", headers=ADMIN, timeout=30).status_code == 200
    assert httpx.delete(base, headers=ADMIN, timeout=60).json()["deleted"] is True
    assert httpx.get(base + "/memories", headers=ADMIN, timeout=30).json()["data"] == []


def test_the_mapped_key_is_the_same_after_a_restart_and_for_either_unicode_composition(
    tmp_path: Path, stub: ServerThread
) -> None:
    keys: list[str] = []
    for composed in ("NFC", "NFD", "NFC"):  # the third request runs on a restarted steer, same database
        server = start_steer(tmp_path / "steer", stub.url, {"default": DEFAULT_POLICY}, keys=KEYS)
        try:
            s = Steer(server, server.app.state.services.settings, tmp_path / "steer" / "policies")
            keys.append(traced_user(chat(s, user=unicodedata.normalize(composed, "Zoë Müller"))))
        finally:
            server.stop()
    assert keys[0] == keys[1] == keys[2]


def test_a_configured_secret_is_the_hmac_key(make_steer: Callable[..., Steer]) -> None:
    s = make_steer(keys=KEYS, identity={"secret": "s3cret"})
    expected = "~" + hmac.new(b"s3cret", b"Jane Doe", hashlib.sha256).hexdigest()[:40]
    assert traced_user(chat(s, user="Jane Doe")) == expected


REFUSED = ["../alice", "a/b", "a\\b", "..", "bob\x00", "bob\nadmin", "bob\u200b", "\u202ebob", " bob", "bob "]


@pytest.mark.parametrize("bad", REFUSED, ids=[repr(b) for b in REFUSED])
def test_path_tricks_and_invisible_characters_are_refused(make_steer: Callable[..., Steer], bad: str) -> None:
    s = make_steer(keys=KEYS)
    r = chat(s, user=bad)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_user"
    assert r.json()["error"]["param"] == "user"


def test_an_id_that_looks_like_a_mapped_key_is_refused_everywhere(make_steer: Callable[..., Steer]) -> None:
    s = make_steer(keys=KEYS)
    mapped = traced_user(chat(s, user="Jane Doe"))
    r = chat(s, user=mapped)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_user"
    r = chat(s, metadata={"user_id": mapped})
    assert r.status_code == 400 and r.json()["error"]["param"] == "metadata.user_id"
    r = httpx.get(f"{s.url}/users/{quote(mapped, safe='')}/memories", headers=ADMIN, timeout=30)
    assert r.status_code == 400


def test_a_scoped_key_reaches_its_own_mapped_user_and_no_other(make_steer: Callable[..., Steer]) -> None:
    s = make_steer(keys=KEYS)
    alice = {"Authorization": "Bearer alice-secret"}
    assert traced_user(chat(s, alice, user="Alice Smith")).startswith("~")
    assert chat(s, alice, user="Bob Jones").status_code == 403
    assert httpx.get(f"{s.url}/users/Alice%20Smith/memories", headers=alice, timeout=30).status_code == 200
    assert httpx.get(f"{s.url}/users/Bob%20Jones/memories", headers=alice, timeout=30).status_code == 403


@pytest.mark.parametrize("value", ["admin-secret", "Bearer admin-secret"])
def test_x_litellm_api_key_authenticates_like_a_bearer_token(make_steer: Callable[..., Steer], value: str) -> None:
    s = make_steer(keys=KEYS)
    r = httpx.post(
        s.url + "/chat/completions",
        json={"model": "stub", "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-litellm-api-key": value},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    r = httpx.get(s.url + "/models", headers={"x-litellm-api-key": "wrong"}, timeout=30)
    assert r.status_code == 401


def test_identity_fields_are_stripped_before_an_openai_upstream_unless_store_is_on(
    make_steer: Callable[..., Steer], stub: ServerThread
) -> None:
    s = make_steer(keys=KEYS)

    def sent(**body: Any) -> dict[str, Any]:
        marker = uuid.uuid4().hex
        assert chat(s, text=marker, **body).status_code == 200
        return next(c for c in stub.app.state.calls if marker in str(c.get("messages")))

    upstream = sent(metadata={"user_id": "u1", "app": "web"}, litellm_metadata={"user": "u1"}, user="u1")
    assert upstream["metadata"] == {"app": "web"} and "litellm_metadata" not in upstream and upstream["user"] == "u1"
    assert "metadata" not in sent(metadata={"user_id": "u1"})
    kept = sent(metadata={"user_id": "u1"}, store=True)
    assert kept["metadata"] == {"user_id": "u1"}
