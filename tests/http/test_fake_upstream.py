"""The in-process layer answers as the network path does.

The same requests go to steer on loopback with the stub server as upstream (``make_steer``) and to
steer in process with the ``fake`` backend (``make_app``); what a client gets back must be the same,
answers, streams and errors alike, once ids and timestamps are set aside. The async form
(``make_asgi``: an ``httpx.AsyncClient`` over ``ASGITransport``, no thread) is checked too.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

MSG = [{"role": "user", "content": "hello there, fake"}]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
VOLATILE = {"id", "created", "system_fingerprint"}


def same_shape(body: Any) -> Any:
    """The body without what differs from one answer to the next (ids, timestamps)."""
    if isinstance(body, dict):
        return {k: same_shape(v) for k, v in body.items() if k not in VOLATILE}
    if isinstance(body, list):
        return [same_shape(v) for v in body]
    return body


def events(text: str) -> list[Any]:
    out: list[Any] = []
    for line in text.splitlines():
        if line.startswith("data: "):
            data = line[6:]
            out.append(data if data == "[DONE]" else same_shape(orjson.loads(data)))
    return out


def answer(r: httpx.Response) -> tuple[int, Any]:
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        return r.status_code, events(r.text)
    body = r.json()
    if "error" in body:  # the message names the model and the fault; the rest is the contract
        return r.status_code, {k: v for k, v in body["error"].items() if k != "message"}
    return r.status_code, same_shape(body)


def post(s: Any, **body: Any) -> httpx.Response:
    client = getattr(s, "http", None) or httpx
    return client.post(s.url + "/chat/completions", json={"model": "stub", "messages": MSG, **body}, timeout=60)


REQUESTS = {
    "plain": {},
    "n": {"n": 3},
    "tools": {"tools": TOOLS, "tool_choice": "auto"},
    "echo": {"stub_echo": True},
    "short": {"stub_tokens": 3},
    "stream": {"stream": True},
    "stream-usage": {"stream": True, "stream_options": {"include_usage": True}, "n": 2},
    "500": {"stub_fault": "500"},
    "429": {"stub_fault": "429"},
    "malformed": {"stub_fault": "malformed"},
    "bad-choices": {"stub_fault": "bad-choices"},
    "fail-once": {"stub_fault": "fail-once:parity"},
    "stream-500": {"stream": True, "stub_fault": "500"},
    "stream-not-sse": {"stream": True, "stub_fault": "not-sse"},
    # the pause between words puts the fault after the first event on the wire too (one network read
    # could otherwise carry the whole stream, and the fault would come before anything was sent)
    "stream-cut": {"stream": True, "stub_fault": "cut", "stub_token_interval": 0.02},
    "stream-not-json": {"stream": True, "stub_fault": "not-json", "stub_token_interval": 0.02},
}


@pytest.mark.parametrize("case", list(REQUESTS))
def test_the_fake_backend_answers_as_the_stub_server_does(make_steer: Any, make_app: Any, case: str) -> None:
    wire, fake = make_steer(), make_app()
    body = REQUESTS[case]
    status, got = answer(post(fake, **body))
    expected = answer(post(wire, **body))
    if case == "stream-not-json":
        # on the wire the word before the bad line comes in the same network read as that line, and
        # the HTTP backend drops the whole read; in process each event stands alone
        assert status == expected[0] and got[-1] == expected[1][-1], (got, expected)
        assert got[: len(expected[1]) - 1] == expected[1][:-1], (got, expected)
    else:
        assert (status, got) == expected, f"in process: {(status, got)}\non the wire: {expected}"
    fault = str(body.get("stub_fault", ""))
    if not fault or fault.startswith("fail-once"):
        assert status == 200, got  # fail-once: the retry answered
    elif case in ("stream-cut", "stream-not-json"):  # after the first event: an error event ends the stream
        assert status == 200 and got[-1]["error"]["type"] == "upstream_error" and "[DONE]" not in got
    else:
        assert status >= 400, got


def test_an_upstream_timeout_is_the_same_504(make_steer: Any, make_app: Any, stub: Any) -> None:
    wire = make_steer(models=[{"name": "stub", "api_base": stub.url + "/v1", "timeout": 0.3, "retries": 0}])
    fake = make_app(models=[{"name": "stub", "backend": "fake", "timeout": 0.3, "retries": 0}])
    got = answer(post(fake, stub_fault="timeout"))
    assert got == answer(post(wire, stub_fault="timeout")) and got[0] == 504


def test_what_the_upstream_received_is_the_same(make_steer: Any, make_app: Any, stub: Any) -> None:
    wire, fake = make_steer(), make_app()
    body = {"temperature": 0.3, "user": "alice", "metadata": {"k": "v"}, "top_k": 40}
    post(wire, **body)
    post(fake, **body)
    assert fake.calls[-1] == stub.app.state.calls[-1]


@pytest.mark.asyncio(loop_scope="session")
async def test_the_async_client_speaks_to_the_app_with_its_lifespan_run(make_asgi: Any) -> None:
    client = await make_asgi()
    r = await client.post("/v1/chat/completions", json={"model": "stub", "messages": MSG, "stream": True})
    assert r.status_code == 200 and events(r.text)[-1] == "[DONE]"
    assert (await client.get("/readyz")).json()["status"] == "ready"  # the lifespan started the services
    assert client.app.state.services.ready
