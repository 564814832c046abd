"""The conformance validator accepts what the OpenAI API sends and names the path of what it does not."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from conformance.openapi import SPEC, ConformanceError, OpenAPISpec, allow_null, spec, validate, validate_stream


def chat_completion() -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "stub",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello.", "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
        "system_fingerprint": "fp_stub",
        "service_tier": "default",
    }


def chunks() -> list[dict[str, Any]]:
    head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": "stub"}
    deltas: list[tuple[dict[str, Any], str | None]] = [
        ({"role": "assistant", "content": "", "refusal": None}, None),
        ({"content": "Hel"}, None),
        ({"content": "lo."}, None),
        ({}, "stop"),
    ]
    out = [
        {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        for delta, finish in deltas
    ]
    out.append({**head, "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}})
    return out


def tool_call_completion() -> dict[str, Any]:
    body = chat_completion()
    body["choices"][0]["message"] = {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}],
    }
    body["choices"][0]["finish_reason"] = "tool_calls"
    return body


def responses_object() -> dict[str, Any]:
    text = {"type": "output_text", "text": "Hello.", "annotations": [], "logprobs": []}
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": 1_700_000_000,
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "model": "stub",
        "output": [{"type": "message", "id": "msg_1", "status": "completed", "role": "assistant", "content": [text]}],
        "parallel_tool_calls": True,
        "metadata": {},
        "tool_choice": "auto",
        "tools": [],
        "temperature": 1.0,
        "top_p": 1.0,
        "usage": {
            "input_tokens": 5,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": 2,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 7,
        },
    }


def problem_paths(exc: pytest.ExceptionInfo[ConformanceError]) -> list[str]:
    return [path for path, _ in exc.value.problems]


def test_a_chat_completion_with_required_nulls_validates() -> None:
    validate(chat_completion(), "CreateChatCompletionResponse")
    validate(tool_call_completion(), "CreateChatCompletionResponse")


def test_a_stream_with_null_finish_reasons_and_a_usage_chunk_validates_and_done_may_end_it() -> None:
    events = [json.dumps(c) for c in chunks()] + ["[DONE]"]
    parsed = validate_stream(events, "CreateChatCompletionStreamResponse")
    assert [c["choices"][0]["finish_reason"] for c in parsed[:4]] == [None, None, None, "stop"]


def test_without_the_nullable_rewrite_a_null_finish_reason_would_fail() -> None:
    raw = OpenAPISpec(json.loads(Path(SPEC).read_text()))  # the document as published
    assert raw.problems(chunks()[0], "CreateChatCompletionStreamResponse")
    assert spec().problems(chunks()[0], "CreateChatCompletionStreamResponse") == []


def test_missing_choices_fails_naming_the_property() -> None:
    body = chat_completion()
    del body["choices"]
    with pytest.raises(ConformanceError) as exc:
        validate(body, "CreateChatCompletionResponse")
    assert exc.value.problems == [("$", "'choices' is a required property")]
    assert "CreateChatCompletionResponse" in str(exc.value)


def test_a_wrong_type_fails_with_the_path_of_the_value() -> None:
    body = chat_completion()
    body["created"] = "yesterday"
    body["choices"][0]["index"] = "0"
    with pytest.raises(ConformanceError) as exc:
        validate(body, "CreateChatCompletionResponse")
    assert problem_paths(exc) == ["$.choices[0].index", "$.created"]
    assert "'yesterday' is not of type 'integer'" in str(exc.value)


@pytest.mark.parametrize(
    ("strip", "path", "key"),
    [
        (lambda b: b["choices"][0]["message"].pop("refusal"), "$.choices[0].message", "refusal"),
        (lambda b: b["choices"][0].pop("logprobs"), "$.choices[0]", "logprobs"),
        (lambda b: b["choices"][0]["message"].pop("content"), "$.choices[0].message", "content"),
    ],
    ids=["refusal", "logprobs", "content-with-tool-calls"],
)
def test_a_required_null_stripped_fails_naming_where(strip: Any, path: str, key: str) -> None:
    body = tool_call_completion()
    strip(body)
    with pytest.raises(ConformanceError) as exc:
        validate(body, "CreateChatCompletionResponse")
    assert exc.value.problems == [(path, f"'{key}' is a required property")]


def test_a_stream_chunk_without_the_finish_reason_key_fails_naming_its_event() -> None:
    events = chunks()
    del events[1]["choices"][0]["finish_reason"]
    with pytest.raises(ConformanceError) as exc:
        validate_stream(events, "CreateChatCompletionStreamResponse")
    assert str(exc.value).startswith(f"event 1 of {len(events)}: not a valid CreateChatCompletionStreamResponse")
    assert exc.value.problems == [("$.choices[0]", "'finish_reason' is a required property")]


def test_done_anywhere_but_last_and_an_empty_stream_fail() -> None:
    with pytest.raises(ConformanceError, match=r"\[DONE\] before the end"):
        validate_stream(["[DONE]", json.dumps(chunks()[0])], "CreateChatCompletionStreamResponse")
    with pytest.raises(ConformanceError, match="no events"):
        validate_stream([], "CreateChatCompletionStreamResponse")


def test_an_error_response_validates_and_one_missing_param_and_code_fails() -> None:
    good = {"error": {"message": "model is required", "type": "invalid_request_error", "param": "model", "code": None}}
    validate(good, "ErrorResponse")
    bad = copy.deepcopy(good)
    del bad["error"]["param"], bad["error"]["code"]
    with pytest.raises(ConformanceError) as exc:
        validate(bad, "ErrorResponse")
    assert exc.value.problems == [
        ("$.error", "'code' is a required property"),
        ("$.error", "'param' is a required property"),
    ]


def test_responses_api_object_and_events_validate_and_a_bad_event_is_explained_by_its_type() -> None:
    response = responses_object()
    validate(response, "Response")
    validate_stream(
        [
            {"type": "response.created", "sequence_number": 0, "response": {**response, "status": "in_progress"}},
            {
                "type": "response.output_text.delta",
                "sequence_number": 1,
                "item_id": "msg_1",
                "output_index": 0,
                "content_index": 0,
                "delta": "Hello.",
                "logprobs": [],
            },
            {"type": "response.completed", "sequence_number": 2, "response": response},
        ],
        "ResponseStreamEvent",
    )
    delta = {"type": "response.output_text.delta", "sequence_number": 1, "item_id": "m", "output_index": 0}
    with pytest.raises(ConformanceError) as exc:
        validate({**delta, "content_index": 0, "delta": 5, "logprobs": []}, "ResponseStreamEvent")
    assert exc.value.problems == [("$.delta", "5 is not of type 'string'")]  # not 57 other event types
    with pytest.raises(ConformanceError) as exc:
        validate({"type": "response.made_up"}, "ResponseStreamEvent")
    assert problem_paths(exc) == ["$.type"] and "'response.output_text.delta'" in exc.value.problems[0][1]


def test_embeddings_and_completions_responses_validate() -> None:
    validate(
        {
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.25, -0.5]}],
            "model": "stub",
            "usage": {"prompt_tokens": 2, "total_tokens": 2},
        },
        "CreateEmbeddingResponse",
    )
    completion = {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 1_700_000_000,
        "model": "stub",
        "choices": [{"text": "Hello.", "index": 0, "logprobs": None, "finish_reason": "stop"}],
    }
    validate(completion, "CreateCompletionResponse")
    completion["choices"][0]["finish_reason"] = "done"
    with pytest.raises(ConformanceError) as exc:
        validate(completion, "CreateCompletionResponse")
    assert problem_paths(exc) == ["$.choices[0].finish_reason"]


def test_an_unknown_component_name_is_refused_with_close_names() -> None:
    with pytest.raises(KeyError, match="CreateChatCompletionResponse"):
        validate({}, "CreateChatCompletionResponses")


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "string", "nullable": True}, {"anyOf": [{"type": "string"}, {"type": "null"}]}),
        (
            {"type": "string", "enum": ["stop"], "nullable": True},
            {"anyOf": [{"type": "string", "enum": ["stop"]}, {"type": "null"}]},
        ),
        ({"$ref": "#/x", "nullable": True}, {"anyOf": [{"$ref": "#/x"}, {"type": "null"}]}),
        ({"allOf": [{"$ref": "#/x"}], "nullable": True}, {"anyOf": [{"allOf": [{"$ref": "#/x"}]}, {"type": "null"}]}),
        ({"type": "integer", "nullable": False}, {"type": "integer"}),
        (
            {"type": "object", "properties": {"a": {"type": "array", "items": {"type": "string", "nullable": True}}}},
            {
                "type": "object",
                "properties": {"a": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "null"}]}}},
            },
        ),
        # A property that is itself called "nullable" is a property, not the keyword.
        ({"properties": {"nullable": {"type": "boolean"}}}, {"properties": {"nullable": {"type": "boolean"}}}),
    ],
    ids=["type", "enum", "ref", "allOf", "false", "nested", "property-named-nullable"],
)
def test_nullable_is_rewritten_to_an_anyof_with_null(schema: dict[str, Any], expected: dict[str, Any]) -> None:
    assert allow_null(schema) == expected


def test_validators_are_built_once_per_component() -> None:
    first = spec().validator("CreateChatCompletionResponse")
    validate(chat_completion(), "CreateChatCompletionResponse")
    assert spec().validator("CreateChatCompletionResponse") is first


def test_no_nullable_keyword_is_left_in_the_loaded_components() -> None:
    def flags(node: Any) -> int:
        if isinstance(node, dict):
            return sum(key == "nullable" and isinstance(v, bool) for key, v in node.items()) + sum(
                flags(v) for v in node.values()
            )
        return sum(flags(v) for v in node) if isinstance(node, list) else 0

    published = json.loads(Path(SPEC).read_text())["components"]["schemas"]
    assert flags(published) > 100  # the document as published writes it about 110 times
    assert flags(spec().components) == 0
