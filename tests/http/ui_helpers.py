"""Shared by the inspector's tests: the keys, the policy that runs recall + sample + rerank, a signed-in
httpx client and the CSRF token of a page."""

from __future__ import annotations

import re
from typing import Any

import httpx

KEYS = [
    {"key": "t1-admin", "tenant": "t1", "admin": True, "name": "ops"},
    {"key": "t1-alice", "tenant": "t1", "users": ["alice"]},
    {"key": "t2-admin", "tenant": "t2", "admin": True},
]
T1 = {"Authorization": "Bearer t1-admin"}
ALICE = {"Authorization": "Bearer t1-alice"}
T2 = {"Authorization": "Bearer t2-admin"}
# recall, then RPS draws candidates around the user's direction, then rerank picks the winner; the
# features scorer without embeddings needs no model to score
FULL = (
    "name: default\nextends: none\nstages:\n  recall: {}\n"
    "  sample: {k: 3, candidate_timeout_s: 5, timeout_s: 10}\n"
    "  rerank: {options: {embeddings: false}, record: false}\n"
)
PASSTHROUGH = "name: passthrough\nextends: none\nmatch: {users: [anon-fast], tenants: [t1]}\nstages: {}\n"
HOSTILE = ["<img src=x onerror=alert(1)>", "</script><script>alert(2)</script>"]
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def signed_in(base: str, key: str) -> httpx.Client:
    """A client holding an inspector session for ``key`` (signed in through the login form)."""
    client = httpx.Client(base_url=base, timeout=60, follow_redirects=False)
    form = client.get("/ui/login")
    token = re.search(r'name="login_token" value="([^"]+)"', form.text)
    assert token, form.text
    r = client.post("/ui/login", data={"key": key, "login_token": token.group(1), "next": "/ui/"})
    assert r.status_code == 303, r.text
    return client


def csrf_of(client: httpx.Client, path: str) -> str:
    r = client.get(path)
    assert r.status_code == 200, r.text
    m = CSRF.search(r.text)
    assert m, r.text
    return m.group(1)


def chat(base: str, headers: dict[str, str], text: str, user: str | None = None, **extra: Any) -> httpx.Response:
    body: dict[str, Any] = {"model": "stub", "messages": [{"role": "user", "content": text}], **extra}
    if user:
        body["user"] = user
    r = httpx.post(base + "/v1/chat/completions", json=body, headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    return r
