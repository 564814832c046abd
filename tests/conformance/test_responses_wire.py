"""Every answer of ``/v1/responses``, ``/v1/embeddings`` and ``/v1/completions`` against the official OpenAPI
schemas (``Response``, ``ResponseStreamEvent``, ``ErrorResponse``, ``CreateEmbeddingResponse``,
``CreateCompletionResponse``), on the fast path and the pipeline path, and the chat requests steer sends
for a Responses request against ``CreateChatCompletionRequest``. A real steer over HTTP, the stub upstream.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from helpers import RESPONSES_TOOLS as TOOLS
from helpers import SYSTEM_PROMPT_POLICY as PIPELINE

from conformance.openapi import validate, validate_stream

SCHEMA_FORMAT = {
    "type": "json_schema",
    "name": "weather",
    "strict": True,
    "schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "celsius": {"type": "integer"}},
        "required": ["city", "celsius"],
        "additionalProperties": False,
    },
}
ITEMS = [
    {"role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]},
    {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
    {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
]
# (name, request body): every kind of answer steer translates
BODIES: list[tuple[str, dict[str, Any]]] = [
    ("text", {"input": "hello", "instructions": "Be brief.", "max_output_tokens": 40, "metadata": {"k": "v"}}),
    ("tool-call", {"input": "Weather?", "tools": TOOLS, "tool_choice": "auto"}),
    ("tool-output", {"input": ITEMS, "tools": TOOLS}),
    ("json-schema", {"input": "Weather as JSON", "text": {"format": SCHEMA_FORMAT}}),
    ("user", {"input": "hi", "user": "alice", "safety_identifier": "alice", "store": True}),
]


@pytest.fixture(params=["fast", "pipeline"])
def steer_url(request: Any, make_steer: Any) -> str:
    s = make_steer({"default": PIPELINE} if request.param == "pipeline" else None)
    url: str = s.url
    return url


def sse_payloads(text: str) -> list[str]:
    return [line[6:] for line in text.split("\n") if line.startswith("data: ")]


@pytest.mark.parametrize(("name", "body"), BODIES, ids=[n for n, _ in BODIES])
def test_response_objects_validate(steer_url: str, stub: Any, name: str, body: dict[str, Any]) -> None:
    resp = httpx.post(steer_url + "/responses", json={"model": "stub", **body}, headers={"X-Steer-Debug": "1"})
    assert resp.status_code == 200, resp.text
    validate(resp.json(), "Response")
    validate(stub.app.state.calls[-1], "CreateChatCompletionRequest")


@pytest.mark.parametrize(("name", "body"), BODIES, ids=[n for n, _ in BODIES])
def test_stream_events_validate(steer_url: str, name: str, body: dict[str, Any]) -> None:
    for debug in ("0", "1"):
        with httpx.stream(
            "POST", steer_url + "/responses", json={"model": "stub", "stream": True, **body},
            headers={"X-Steer-Debug": debug},
        ) as resp:  # fmt: skip
            assert resp.status_code == 200
            resp.read()
        events = validate_stream(sse_payloads(resp.text), "ResponseStreamEvent")
        assert events[-1]["type"] == "response.completed"
        validate(events[-1]["response"], "Response")


def test_a_failed_stream_validates(make_steer: Any) -> None:
    s = make_steer()
    body = {"model": "stub", "input": "hi", "stream": True, "stub_fault": "reset"}
    with httpx.stream("POST", s.url + "/responses", json=body) as resp:
        resp.read()
    events = validate_stream(sse_payloads(resp.text), "ResponseStreamEvent")
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]


def test_stored_and_incomplete_responses_validate(make_steer: Any) -> None:
    from steer.server.responses_translate import from_completion

    s = make_steer()
    created = httpx.post(s.url + "/responses", json={"model": "stub", "input": "hi", "store": True}).json()
    validate(httpx.get(s.url + f"/responses/{created['id']}").json(), "Response")
    completion = {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "cut", "refusal": None},
                     "logprobs": {"content": [{"token": "cut", "logprob": -0.1, "bytes": [99, 117, 116],
                                               "top_logprobs": [{"token": "cut", "logprob": -0.1, "bytes": None}]}]},
                     "finish_reason": "length"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }  # fmt: skip
    incomplete = from_completion({"input": "x", "top_logprobs": 1}, completion, "resp_1", 1, "stub", False)
    assert incomplete["status"] == "incomplete"
    validate(incomplete, "Response")
    refusal = {"choices": [{"index": 0, "message": {"role": "assistant", "content": None, "refusal": "No."},
                            "finish_reason": "stop"}]}  # fmt: skip
    validate(from_completion({"input": "x"}, refusal, "resp_2", 1, "stub", False), "Response")


@pytest.mark.parametrize(
    "body",
    [
        {"input": "x", "tools": [{"type": "web_search"}]},
        {"input": "x", "model": "nope"},
        {"input": "x", "stub_fault": "500"},
        {"input": "x", "previous_response_id": "resp_unknown"},
        {},
    ],
    ids=["builtin-tool", "model", "upstream", "previous", "no-input"],
)
def test_errors_validate(make_steer: Any, body: dict[str, Any]) -> None:
    s = make_steer(models=None)
    resp = httpx.post(s.url + "/responses", json={"model": "stub", **body})
    assert resp.status_code >= 400
    validate(resp.json(), "ErrorResponse")


def test_embeddings_and_completions_validate(make_steer: Any) -> None:
    s = make_steer()
    emb = httpx.post(s.url + "/embeddings", json={"model": "stub", "input": ["a", "bb"]})
    validate(emb.json(), "CreateEmbeddingResponse")
    comp = httpx.post(s.url + "/completions", json={"model": "stub", "prompt": "x"})
    validate(comp.json(), "CreateCompletionResponse")
    with httpx.stream("POST", s.url + "/completions", json={"model": "stub", "prompt": "x", "stream": True}) as r:
        r.read()
    # forwarded as the upstream sent it; the schema allows no null finish_reason, which the chunks before
    # the last carry (as OpenAI's own do), so the finishing chunk is the one checked
    chunks = [json.loads(p) for p in sse_payloads(r.text) if p != "[DONE]"]
    validate(chunks[-1], "CreateCompletionResponse")
    bad = httpx.post(s.url + "/embeddings", json={"model": "nope", "input": "x"})
    validate(bad.json(), "ErrorResponse")
    assert json.loads(bad.text)["error"]["param"] == "model"
