"""Model-assisted recall through a served steer, the chat model being the stub upstream: the model
is asked, and a model slower than ``assist_timeout_s`` leaves the offline recall in place."""

from __future__ import annotations

from typing import Any

import httpx

ADMIN = {"Authorization": "Bearer admin"}
KEYS = [{"key": "admin", "tenant": "t1", "admin": True}]


def policy(mode: str, model: str, timeout_s: float) -> str:
    return (
        "name: default\nextends: none\nstages:\n"
        f"  recall: {{assist: {mode}, assist_model: {model}, assist_timeout_s: {timeout_s}}}\n"
    )


def models(stub: Any) -> list[dict[str, Any]]:
    return [
        {"name": "stub", "api_base": stub.url + "/v1", "retries": 0},
        # answers with the prompt it was sent: the numbered memories, so every number parses
        {"name": "echo", "api_base": stub.url + "/v1", "retries": 0, "extra_body": {"stub_echo": True}},
        {"name": "slow", "api_base": stub.url + "/v1", "retries": 0, "extra_body": {"stub_latency": 2.0}},
    ]


def recall_trace(s: Any, user: str) -> dict[str, Any]:
    for text in ("I'm allergic to peanuts.", "I love jazz concerts."):
        httpx.post(f"{s.url}/users/{user}/memories", headers=ADMIN, json={"text": text}, timeout=60)
    r = httpx.post(
        s.url + "/chat/completions",
        headers={**ADMIN, "X-Steer-Debug": "1"},
        json={"model": "stub", "user": user, "messages": [{"role": "user", "content": "Any snack ideas?"}]},
        timeout=60,
    )
    assert r.status_code == 200
    return next(st for st in r.json()["steer"]["stages"] if st["name"] == "recall")


def test_rerank_asks_the_configured_model_about_the_users_memories(make_steer, stub) -> None:
    s = make_steer(policies={"default": policy("rerank", "echo", 10)}, models=models(stub), keys=KEYS)
    trace = recall_trace(s, "ann")
    assert trace["status"] == "ok" and trace["assist"] == {"mode": "rerank", "model": "echo", "outcome": "used"}
    # the session's stub serves other tests and endpoints too: find the question about ann's memories
    asked = [str(c["messages"][-1].get("content")) for c in stub.app.state.calls if c.get("messages")]
    assert any("Statements:" in text and "allergic to peanuts" in text for text in asked)
    assert {m["text"] for m in trace["injected"]} == {"I'm allergic to peanuts.", "I love jazz concerts."}


def test_a_model_slower_than_the_timeout_leaves_the_offline_recall(make_steer, stub) -> None:
    for mode in ("rerank", "expand"):
        s = make_steer(policies={"default": policy(mode, "slow", 0.2)}, models=models(stub), keys=KEYS)
        trace = recall_trace(s, f"bo-{mode}")
        assert trace["status"] == "ok" and trace["assist"]["outcome"] == "timeout"
        assert len(trace["injected"]) == 2  # the offline recall, unchanged
