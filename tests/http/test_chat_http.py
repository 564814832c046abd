"""The OpenAI wire format through steer's HTTP routes (in process), driven by the official openai client."""

from __future__ import annotations

import openai
import orjson
import pytest

MSG = [{"role": "user", "content": "hello there"}]


def sse_events(raw: bytes) -> list[bytes]:
    return [line[6:] for line in raw.split(b"\n") if line.startswith(b"data: ")]


def test_non_streaming_completion_comes_back_with_trace_header(make_app):
    s = make_app()
    raw = s.client().chat.completions.with_raw_response.create(model="stub", messages=MSG)
    assert len(raw.headers["x-steer-trace-id"]) == 32
    completion = raw.parse()
    assert completion.choices[0].message.content == " ".join(f"tok{i}" for i in range(8))
    assert completion.usage.completion_tokens == 8


def test_streaming_chunks_share_one_id_end_with_done_and_carry_usage(make_app):
    s = make_app()
    body = {"model": "stub", "messages": MSG, "stream": True, "stream_options": {"include_usage": True}}
    r = s.http.post(s.url + "/chat/completions", json=body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.content)
    assert events[-1] == b"[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 8
    text = "".join(ch["delta"].get("content", "") for c in chunks for ch in c["choices"])
    assert text.split() == [f"tok{i}" for i in range(8)]


def test_openai_client_streams_through_steer(make_app):
    s = make_app()
    stream = s.client().chat.completions.create(model="stub", messages=MSG, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text.split()[0] == "tok0" and len(text.split()) == 8


def test_n_above_one_returns_n_choices(make_app):
    s = make_app()
    completion = s.client().chat.completions.create(model="stub", messages=MSG, n=3)
    assert [c.index for c in completion.choices] == [0, 1, 2]


def test_tools_pass_through_and_tool_calls_come_back(make_app):
    s = make_app()
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    completion = s.client().chat.completions.create(
        model="stub", messages=MSG, tools=tools, tool_choice="auto"
    )
    assert completion.choices[0].message.tool_calls[0].function.name == "get_weather"
    sent = s.calls[-1]
    assert sent["tools"] == tools and sent["tool_choice"] == "auto"


def test_sampling_fields_and_unknown_fields_reach_the_upstream_unchanged(make_app):
    s = make_app()
    s.client().chat.completions.create(
        model="stub",
        messages=MSG,
        temperature=0.3,
        top_p=0.9,
        seed=7,
        max_completion_tokens=20,
        stop=["\n"],
        response_format={"type": "json_object"},
        metadata={"k": "v"},
        user="alice",
        extra_body={"top_k": 40, "repetition_penalty": 1.1},
    )
    sent = s.calls[-1]
    for key, value in {
        "temperature": 0.3,
        "top_p": 0.9,
        "seed": 7,
        "max_completion_tokens": 20,
        "stop": ["\n"],
        "response_format": {"type": "json_object"},
        "metadata": {"k": "v"},
        "user": "alice",
        "top_k": 40,
        "repetition_penalty": 1.1,
    }.items():
        assert sent[key] == value, key


def test_models_lists_configured_models(make_app):
    s = make_app()
    ids = [m.id for m in s.client().models.list()]
    assert ids == ["stub"]


def test_health_ready_and_metrics_endpoints(make_app):
    s = make_app()
    s.client().chat.completions.create(model="stub", messages=MSG)
    assert s.http.get(s.server.url + "/healthz").json() == {"status": "ok"}
    ready = s.client().health()
    assert ready["status"] == "ready" and ready["models"] == ["stub"]
    metrics = s.http.get(s.server.url + "/metrics").text
    assert 'steer_requests_total{route="chat",status="200"} 1.0' in metrics
    assert "steer_upstream_seconds_bucket" in metrics and 'model="stub"' in metrics


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        (b'{"model": "stub", "messages": [', 400, None, "invalid_json"),
        (b'["not", "an", "object"]', 400, None, "invalid_body"),
        (b'{"model": "stub"}', 400, "messages", "invalid_value"),
        (b'{"model": "stub", "messages": []}', 400, "messages", "invalid_value"),
        (
            b'{"model": "stub", "messages": [{"role": "wizard", "content": "x"}]}',
            400,
            "messages.0.role",
            "invalid_value",
        ),
        (
            b'{"model": "stub", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}',
            400,
            "temperature",
            "invalid_value",
        ),
        (
            b'{"model": "stub", "messages": [{"role": "user", "content": "x"}], "max_tokens": -5}',
            400,
            "max_tokens",
            "invalid_value",
        ),
        (
            b'{"model": "stub", "messages": [{"role": "user", "content": "x"}], "n": 100000}',
            400,
            "n",
            "invalid_value",
        ),
        (
            b'{"model": "nope", "messages": [{"role": "user", "content": "x"}]}',
            404,
            "model",
            "model_not_found",
        ),
        (
            b'{"model": "stub", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
            400,
            None,
            "invalid_json",
        ),
    ],
)
def test_bad_requests_get_openai_shaped_errors(make_app, body, status, param, code):
    s = make_app()
    r = s.http.post(s.url + "/chat/completions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["param"] == param and err["code"] == code and err["message"]
    assert r.headers["x-steer-trace-id"]


def test_body_over_the_limit_is_refused_with_413(make_app):
    s = make_app(max_body_bytes=1000)
    big = {"model": "stub", "messages": [{"role": "user", "content": "x" * 2000}]}
    r = s.http.post(s.url + "/chat/completions", json=big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


def test_body_over_the_limit_without_content_length_is_refused(make_app):
    s = make_app(max_body_bytes=1000)

    def chunks():
        yield b'{"model": "stub", "messages": [{"role": "user", "content": "'
        for _ in range(50):
            yield b"x" * 100
        yield b'"}]}'

    # no keys: the body must be declared JSON (else 415 before it is read)
    r = s.http.post(s.url + "/chat/completions", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_unknown_route_and_wrong_method_get_json_errors(make_app):
    s = make_app()
    r = s.http.get(s.url + "/nothing-here")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    r = s.http.get(s.url + "/chat/completions")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_openai_client_raises_its_own_not_found_for_unknown_model(make_app):
    s = make_app()
    with pytest.raises(openai.NotFoundError) as info:
        s.client().chat.completions.create(model="gpt-17", messages=MSG)
    assert info.value.body["code"] == "model_not_found"


def test_default_settings_answer_offline_with_the_embedded_model(make_app):
    s = make_app(models=[{"name": "local/smollm2"}])
    completion = s.client().chat.completions.create(
        model="local/smollm2",
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=4,
        temperature=0,
    )
    assert completion.choices[0].message.content.strip()
    assert 1 <= completion.usage.completion_tokens <= 4
