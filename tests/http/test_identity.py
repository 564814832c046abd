"""Who the end user is, and what an API key may do."""

from __future__ import annotations

import hashlib

import pytest

MSG = [{"role": "user", "content": "hi"}]
KEYS = [
    {"key": "admin-secret", "tenant": "acme", "admin": True, "name": "ops"},
    {"key_sha256": hashlib.sha256(b"alice-secret").hexdigest(), "tenant": "acme", "users": ["alice"]},
    {"key": "team-secret", "tenant": "acme", "users": ["team-*"]},
    {"key": "app-secret", "tenant": "globex"},
    {"key": "globex-admin", "tenant": "globex", "admin": True},
]


def chat(s, key=None, headers=None, **body):
    h = {"Authorization": f"Bearer {key}"} if key else {}
    h.update(headers or {})
    return s.http.post(s.url + "/chat/completions", json={"model": "stub", "messages": MSG, **body}, headers=h)


def trace_user(r):
    return r.json()["steer"]["user"]


@pytest.fixture
def keyed(make_app):
    return make_app(keys=KEYS)


def test_missing_or_wrong_key_is_401(keyed):
    assert chat(keyed).status_code == 401
    r = chat(keyed, key="guess")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


def test_models_endpoint_needs_a_key_but_health_does_not(keyed):
    assert keyed.http.get(keyed.url + "/models").status_code == 401
    assert keyed.http.get(keyed.root + "/healthz").status_code == 200


def test_user_comes_from_field_header_or_safety_identifier(keyed):
    dbg = {"X-Steer-Debug": "1"}
    assert trace_user(chat(keyed, "admin-secret", dbg, user="bob")) == "bob"
    assert trace_user(chat(keyed, "admin-secret", {**dbg, "X-Steer-User": "carol"})) == "carol"
    assert trace_user(chat(keyed, "admin-secret", dbg, safety_identifier="dave")) == "dave"
    assert trace_user(chat(keyed, "admin-secret", dbg)) is None


def test_scoped_key_refuses_a_spoofed_user_field(keyed):
    r = chat(keyed, "alice-secret", user="bob")
    assert r.status_code == 403 and r.json()["error"]["param"] == "user"
    r = chat(keyed, "alice-secret", {"X-Steer-User": "alice"}, safety_identifier="bob")
    assert r.status_code == 403 and r.json()["error"]["param"] == "safety_identifier"


def test_key_for_one_user_speaks_for_that_user(keyed):
    r = chat(keyed, "alice-secret", {"X-Steer-Debug": "1"})
    assert r.status_code == 200 and trace_user(r) == "alice"
    assert r.json()["steer"]["tenant"] == "acme"


def test_glob_scoped_key_reaches_matching_users_only(keyed):
    assert chat(keyed, "team-secret", user="team-red").status_code == 200
    assert chat(keyed, "team-secret", user="teamster").status_code == 403


def test_debug_trace_needs_admin_or_the_users_own_key(keyed):
    assert chat(keyed, "alice-secret", {"X-Steer-Debug": "1"}, user="alice").status_code == 200
    r = chat(keyed, "app-secret", {"X-Steer-Debug": "1"}, user="erin")
    assert r.status_code == 403
    r = chat(keyed, "app-secret", user="erin")
    assert r.status_code == 200 and "steer" not in r.json()


@pytest.mark.parametrize(
    "bad", ["../etc/passwd", " bob", "bob/../../alice", "bob\n", "bob\x00", "bob\u200b", "~" + "a" * 40]
)
def test_malformed_or_lookalike_user_ids_are_refused(keyed, bad):
    r = chat(keyed, "admin-secret", {}, user=bad)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_user"


def test_tenant_policy_applies_to_that_tenants_users(make_app):
    s = make_app(
        keys=KEYS,
        policies={
            "default": "name: default\nextends: none\nstages: {}\n",
            "globex": "name: globex\nmatch: {tenants: [globex]}\nstages:\n  system_prompt: {text: Be formal.}\n",
        },
    )
    r = chat(s, "admin-secret", {"X-Steer-Debug": "1"}, user="u1")
    assert r.json()["steer"]["policy"] == "default"
    r = chat(s, "globex-admin", {"X-Steer-Debug": "1"}, user="u1")
    assert r.json()["steer"]["policy"] == "globex"
    assert [st["name"] for st in r.json()["steer"]["stages"]] == ["system_prompt"]
