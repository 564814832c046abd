"""Upstream failures: retries, fallbacks, timeouts and malformed answers, over real HTTP."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator

import httpx
import orjson
from helpers import ServerThread, free_port, wait_for
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

MSG = [{"role": "user", "content": "hi"}]


def post(s, **body):
    return httpx.post(
        s.url + "/chat/completions", json={"model": "stub", "messages": MSG, **body}, timeout=30
    )


def test_upstream_500_after_retries_becomes_502(make_steer, stub):
    s = make_steer()
    before = len(stub.app.state.calls)
    r = post(s, stub_fault="500")
    assert r.status_code == 502 and r.json()["error"]["type"] == "upstream_error"
    assert len(stub.app.state.calls) - before == 2  # one try plus retries: 1


def test_a_failure_that_clears_is_retried_to_success(make_steer):
    s = make_steer()
    r = post(s, stub_fault="fail-once:retry-test")
    assert r.status_code == 200
    assert "steer_upstream_retries_total" in httpx.get(s.server.url + "/metrics").text


def test_upstream_429_stays_429_with_retry_after(make_steer):
    s = make_steer()
    r = post(s, stub_fault="429")
    assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limit_error"
    assert r.headers["retry-after"] == "0"


def test_upstream_timeout_becomes_504(make_steer, stub):
    s = make_steer(models=[{"name": "stub", "api_base": stub.url + "/v1", "timeout": 0.3, "retries": 0}])
    r = post(s, stub_fault="timeout")
    assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"


def test_malformed_upstream_json_becomes_502(make_steer):
    s = make_steer()
    r = post(s, stub_fault="malformed")
    assert r.status_code == 502 and "malformed" in r.json()["error"]["message"]


def test_dead_upstream_falls_back_to_the_next_model(make_steer, stub):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    s = make_steer(
        models=[
            {"name": "primary", "api_base": dead, "retries": 1, "fallbacks": ["backup"]},
            {"name": "backup", "api_base": stub.url + "/v1", "model": "stub"},
        ]
    )
    r = httpx.post(s.url + "/chat/completions", json={"model": "primary", "messages": MSG})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"].startswith("tok0")


def test_streaming_falls_back_before_the_first_chunk(make_steer, stub):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    s = make_steer(
        models=[
            {"name": "primary", "api_base": dead, "retries": 0, "fallbacks": ["backup"]},
            {"name": "backup", "api_base": stub.url + "/v1"},
        ]
    )
    r = httpx.post(s.url + "/chat/completions", json={"model": "primary", "messages": MSG, "stream": True})
    assert r.status_code == 200 and r.content.endswith(b"data: [DONE]\n\n")


def test_stream_error_before_first_chunk_gets_a_real_status(make_steer):
    s = make_steer()
    r = post(s, stream=True, stub_fault="500")
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_failed"


def test_connection_reset_mid_stream_ends_with_an_error_event(make_steer):
    s = make_steer()
    r = post(s, stream=True, stub_fault="reset")
    assert r.status_code == 200
    events = [line[6:] for line in r.content.split(b"\n") if line.startswith(b"data: ")]
    assert orjson.loads(events[-1])["error"]["type"] == "upstream_error"
    assert b"[DONE]" not in events


def test_client_disconnect_mid_stream_cancels_the_upstream_call(make_steer, stub):
    s = make_steer()
    before = stub.app.state.streams.count("aborted")
    body = {"model": "stub", "messages": MSG, "stream": True, "stub_tokens": 400, "stub_latency": 0}
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", s.url + "/chat/completions", json={**body, "stub_token_interval": 0.02}) as r,
    ):
        for line in r.iter_lines():
            if line.startswith("data: ") and "tok1" in line:
                break
    assert wait_for(lambda: stub.app.state.streams.count("aborted") > before)
    assert wait_for(lambda: logged_statuses(s) == [499])  # the request log says the client went away


def logged_statuses(s) -> list[int]:
    with sqlite3.connect(s.settings.database) as conn:
        return [row[0] for row in conn.execute("SELECT status FROM request_log")]


def test_litellm_backend_serves_the_same_upstream(make_steer, stub):
    s = make_steer(
        models=[
            {"name": "stub", "api_base": stub.url + "/v1"},  # the default: litellm's model is not
            {
                "name": "via-litellm",
                "model": "openai/stub",
                "backend": "litellm",
                "api_base": stub.url + "/v1",
                "api_key": "dummy",
                "retries": 0,
            }
        ]
    )
    upstream = s.server.app.state.services.router.upstream("via-litellm")
    # imported at start-up, before any request; /readyz says when the warm-up is done
    assert wait_for(lambda: httpx.get(s.server.url + "/readyz").json()["warm"], timeout=60)
    assert upstream.loaded
    r = httpx.post(s.url + "/chat/completions", json={"model": "via-litellm", "messages": MSG}, timeout=60)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"].startswith("tok0")
    r = httpx.post(
        s.url + "/chat/completions",
        json={"model": "via-litellm", "messages": MSG, "stub_fault": "500"},
        timeout=60,
    )
    assert r.status_code == 502


def test_litellm_is_imported_once_off_the_event_loop(monkeypatch):
    import asyncio
    import threading

    from steer.settings import ModelConfig, Settings
    from steer.upstreams import litellm as backend

    threads: list[threading.Thread] = []

    def fake_import() -> object:
        threads.append(threading.current_thread())
        return object()

    monkeypatch.setattr(backend, "_import_litellm", fake_import)
    up = backend.LiteLLMUpstream(ModelConfig(name="m", model="openai/x", backend="litellm"), Settings())

    async def main() -> None:
        assert not up.loaded
        await asyncio.gather(up.warmup(), up.warmup(), up._client())

    asyncio.run(main())
    assert up.loaded and len(threads) == 1 and threads[0] is not threading.main_thread()


def split_error_upstream() -> Starlette:
    """An upstream whose stream sends two deltas, then an error event cut in two network writes."""
    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    deltas = b"".join(
        b"data: " + orjson.dumps({**chunk, "choices": [{"index": 0, "delta": {"content": w}}]}) + b"\n\n"
        for w in ("a", "b")
    )
    error = b'data: {"error":{"message":"the model crashed","type":"server_error"}}\n\n'

    async def chat(request: Request) -> StreamingResponse:
        async def parts() -> AsyncIterator[bytes]:
            yield deltas + error[:20]
            await asyncio.sleep(0.2)  # the rest of the error event comes in a later read
            yield error[20:] + b"data: [DONE]\n\n"

        return StreamingResponse(parts(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


def test_an_error_event_cut_across_two_network_writes_ends_the_stream_after_the_deltas_before_it(make_steer):
    upstream = ServerThread(split_error_upstream()).start()
    try:
        s = make_steer(models=[{"name": "stub", "api_base": upstream.url + "/v1", "retries": 0}])
        r = post(s, stream=True)
    finally:
        upstream.stop()
    assert r.status_code == 200
    events = [line[6:] for line in r.content.split(b"\n") if line.startswith(b"data: ")]
    assert [orjson.loads(e)["choices"][0]["delta"]["content"] for e in events[:-1]] == ["a", "b"]
    error = orjson.loads(events[-1])["error"]
    assert error["type"] == "upstream_error" and "the model crashed" in error["message"]
    assert b"[DONE]" not in r.content
