"""The overhead benchmark's lean upstream (steer.bench.lean_stub): what steer's fast path reads from an
upstream, over real keep-alive connections, and what an OpenAI client does with it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import httpx
import orjson
import pytest
from helpers import free_port, wait_for

from steer.protocol import check_completion

pytestmark = pytest.mark.timeout(60)


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/models", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def lean() -> Iterator[str]:
    port = free_port()
    cmd = [sys.executable, "-m", "steer.bench.lean_stub", "--port", str(port), "--latency-ms", "10", "--tokens", "4"]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        assert wait_for(lambda: _up(url), timeout=20), "the lean stub did not start"
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _events(body: bytes) -> list[bytes]:
    return [e[6:] for e in body.split(b"\n\n") if e.startswith(b"data: ")]


def test_a_whole_completion_echoes_the_model_and_passes_steers_shape_check(lean: str) -> None:
    with httpx.Client() as client:
        answers = [
            client.post(f"{lean}/chat/completions", json={"model": f"m{i}", "messages": []}) for i in range(3)
        ]
    for i, r in enumerate(answers):  # one keep-alive connection, three answers in order
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        data = r.json()
        check_completion("m", data)
        assert data["model"] == f"m{i}"
        assert data["choices"][0]["message"]["content"] == "tok0 tok1 tok2 tok3"
        assert data["usage"]["completion_tokens"] == 4


def test_a_stream_is_chunks_of_the_same_words_then_usage_when_asked_then_done(lean: str) -> None:
    body = {"model": "m", "messages": [], "stream": True}
    with httpx.Client() as client:
        plain = client.post(f"{lean}/chat/completions", json=body)
        usage = client.post(f"{lean}/chat/completions", json={**body, "stream_options": {"include_usage": True}})
    assert plain.headers["content-type"] == "text/event-stream"
    events = _events(plain.content)
    assert events[-1] == b"[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "m" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == "tok0 tok1 tok2 tok3"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    with_usage = [orjson.loads(e) for e in _events(usage.content)[:-1]]
    assert with_usage[-1]["choices"] == [] and with_usage[-1]["usage"]["completion_tokens"] == 4
    assert "usage" not in chunks[-1]


def test_models_unknown_routes_and_bad_bodies(lean: str) -> None:
    with httpx.Client() as client:
        models = client.get(f"{lean}/models")
        missing = client.post(f"{lean}/embeddings", json={})
        bad = client.post(f"{lean}/chat/completions", content=b"[1]")
        still = client.post(f"{lean}/chat/completions", json={"model": "m", "messages": []})
    assert models.status_code == 200 and models.json()["data"][0]["id"] == "stub"
    assert missing.status_code == 404 and bad.status_code == 400
    assert still.status_code == 200  # the connection serves on after an error
