"""``/v1/responses`` and the passthrough endpoints over real HTTP: a real steer on loopback, the stub upstream
(``steer.testing.stub``), the official openai SDK and raw httpx.

(No ``__init__.py`` in this folder: a package named ``http`` would shadow the standard library's.)
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from helpers import RESPONSES_TOOLS as TOOLS
from helpers import SYSTEM_PROMPT_POLICY
from helpers import TENANT_KEYS as KEYS
from pydantic import BaseModel


def sdk(url: str, key: str = "none", **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, **kw)


def events(resp: httpx.Response) -> list[dict[str, Any]]:
    """The ``data:`` payloads of a Responses event stream, each checked against its ``event:`` line."""
    out = []
    for block in resp.text.split("\n\n"):
        lines = block.strip().split("\n")
        if lines == [""]:
            continue
        kind = next(line[7:] for line in lines if line.startswith("event: "))
        data = json.loads(next(line[6:] for line in lines if line.startswith("data: ")))
        assert data["type"] == kind
        out.append(data)
    return out


def last_call(stub: Any) -> dict[str, Any]:
    call: dict[str, Any] = stub.app.state.calls[-1]
    return call


def test_text_in_text_out_with_instructions_and_settings(make_steer, stub):
    s = make_steer()
    r = sdk(s.url).responses.create(
        model="stub", input="hello there", instructions="Be brief.", max_output_tokens=50, temperature=0.5,
        metadata={"topic": "greeting"}, user="alice",
    )  # fmt: skip
    assert r.status == "completed" and r.output_text.startswith("tok0")
    assert r.id.startswith("resp_") and r.model == "stub" and r.instructions == "Be brief."
    assert r.usage is not None and r.usage.output_tokens == 8 and r.usage.input_tokens == 2
    assert r.metadata == {"topic": "greeting"} and r.store is False
    sent = last_call(stub)
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}]
    assert sent["max_completion_tokens"] == 50 and sent["temperature"] == 0.5 and sent["user"] == "alice"
    assert "input" not in sent and "instructions" not in sent and "max_output_tokens" not in sent
    assert "metadata" not in sent  # OpenAI's chat refuses metadata without store
    assert 'steer_requests_total{route="responses",status="200"}' in httpx.get(s.server.url + "/metrics").text


def test_input_items_become_chat_messages(make_steer, stub):
    s = make_steer()
    items = [
        {"role": "developer", "content": "Use metric units."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather in "},
                                                         {"type": "input_text", "text": "Paris?"}]},
        {"type": "function_call", "call_id": "call_7", "name": "get_weather", "arguments": '{"city": "Paris"}'},
        {"type": "function_call_output", "call_id": "call_7", "output": "18 C, sunny"},
        {"type": "reasoning", "id": "rs_1", "summary": []},
    ]  # fmt: skip
    r = sdk(s.url).responses.create(model="stub", input=items, tools=TOOLS)
    sent = last_call(stub)["messages"]
    assert sent == [
        {"role": "developer", "content": "Use metric units."},
        {"role": "user", "content": [{"type": "text", "text": "Weather in "}, {"type": "text", "text": "Paris?"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_7", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
        ]},
        {"role": "tool", "tool_call_id": "call_7", "content": "18 C, sunny"},
    ]  # fmt: skip
    assert r.output_text == "tool said: 18 C, sunny"


def test_function_tools_round_trip(make_steer, stub):
    s = make_steer()
    client = sdk(s.url)
    first = client.responses.create(model="stub", input="Weather in Paris?", tools=TOOLS, tool_choice="auto")
    sent = last_call(stub)
    assert sent["tools"] == [{"type": "function", "function": {k: TOOLS[0][k] for k in
                                                               ("name", "description", "parameters", "strict")}}]
    assert sent["tool_choice"] == "auto"
    (call,) = first.output
    assert call.type == "function_call" and call.name == "get_weather" and call.call_id == "call_0"
    second = client.responses.create(
        model="stub", tools=TOOLS,
        input=[{"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
               {"type": "function_call_output", "call_id": call.call_id, "output": "rain"}],
    )  # fmt: skip
    assert second.output_text == "tool said: rain"
    forced = client.responses.create(
        model="stub", input="x", tools=TOOLS, tool_choice={"type": "function", "name": "get_weather"}
    )
    assert last_call(stub)["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert forced.output[0].type == "function_call"


class Weather(BaseModel):
    city: str
    celsius: int


def test_json_schema_text_format_parses_with_the_sdk(make_steer, stub):
    s = make_steer()
    parsed = sdk(s.url).responses.parse(model="stub", input="Weather in Paris as JSON", text_format=Weather)
    assert parsed.output_parsed == Weather(city="x", celsius=1)
    fmt = last_call(stub)["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "Weather"
    assert fmt["json_schema"]["schema"]["properties"]["celsius"] == {"title": "Celsius", "type": "integer"}


def test_streaming_text_events_come_in_the_responses_order(make_steer, stub):
    s = make_steer()
    with httpx.stream("POST", s.url + "/responses", json={"model": "stub", "input": "hi", "stream": True}) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        resp.read()
    evs = events(resp)
    kinds = [e["type"] for e in evs]
    assert kinds == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        *["response.output_text.delta"] * 8,
        "response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed",
    ]  # fmt: skip
    assert [e["sequence_number"] for e in evs] == list(range(len(evs)))
    text = "".join(e["delta"] for e in evs if e["type"] == "response.output_text.delta")
    done = evs[-1]["response"]
    assert done["output"][0]["content"][0]["text"] == text == evs[-4]["text"]
    assert done["usage"]["output_tokens"] == 8 and done["status"] == "completed"
    assert last_call(stub)["stream_options"] == {"include_usage": True}


def test_streaming_tool_call_fragments_and_the_sdk_stream_helper(make_steer, stub):
    s = make_steer()
    body = {"model": "stub", "input": "Weather?", "tools": TOOLS, "stream": True}
    with httpx.stream("POST", s.url + "/responses", json=body) as resp:
        resp.read()
    evs = events(resp)
    kinds = [e["type"] for e in evs]
    assert kinds == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.function_call_arguments.delta", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done", "response.completed",
    ]  # fmt: skip
    assert evs[5]["arguments"] == '{"city":"x"}' and evs[5]["name"] == "get_weather"
    with sdk(s.url).responses.stream(model="stub", input="Weather?", tools=TOOLS) as stream:
        deltas = [e.delta for e in stream if e.type == "response.function_call_arguments.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output[0].arguments == '{"city":"x"}'


def test_sdk_stream_helper_gives_the_same_text_as_create(make_steer):
    s = make_steer()
    client = sdk(s.url)
    with client.responses.stream(model="stub", input="hi") as stream:
        streamed = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert streamed == final.output_text == client.responses.create(model="stub", input="hi").output_text


def test_the_pipeline_runs_for_responses_streaming_or_not(make_steer, stub):
    s = make_steer({"default": SYSTEM_PROMPT_POLICY})
    client = sdk(s.url)
    raw = client.responses.with_raw_response.create(
        model="stub", input="hi", user="alice", extra_headers={"X-Steer-Debug": "1"}
    )
    body = raw.http_response.json()
    assert body["steer"]["user"] == "alice" and body["steer"]["stages"][0]["name"] == "system_prompt"
    assert last_call(stub)["messages"][0] == {"role": "system", "content": "Answer kindly."}
    with client.responses.stream(model="stub", input="hello", user="alice") as stream:
        final = stream.get_final_response()
    assert final.output_text.startswith("tok0")
    assert last_call(stub)["messages"][0] == {"role": "system", "content": "Answer kindly."}


def test_store_and_previous_response_id(make_steer, stub):
    s = make_steer()
    client = sdk(s.url)
    first = client.responses.create(model="stub", input="My name is Ada.", user="alice", store=True)
    assert first.store is True
    assert client.responses.retrieve(first.id, extra_headers={"X-Steer-User": "alice"}).output_text == first.output_text
    second = client.responses.create(
        model="stub", input="What is my name?", user="alice", previous_response_id=first.id, store=True,
        instructions="New instructions.",
    )  # fmt: skip
    assert second.previous_response_id == first.id
    assert last_call(stub)["messages"] == [
        {"role": "system", "content": "New instructions."},
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": "What is my name?"},
    ]
    client.responses.create(model="stub", input="And now?", user="alice", previous_response_id=second.id)
    assert [m["content"] for m in last_call(stub)["messages"]] == [
        "My name is Ada.", first.output_text, "What is my name?", second.output_text, "And now?"
    ]
    # a streamed response is stored too, before its completed event reaches the client
    with client.responses.stream(model="stub", input="Streamed.", user="alice", store=True) as stream:
        streamed = stream.get_final_response()
    client.responses.create(model="stub", input="After.", user="alice", previous_response_id=streamed.id)
    assert [m["content"] for m in last_call(stub)["messages"]][:2] == ["Streamed.", streamed.output_text]
    deleted = client.responses.delete(second.id, extra_headers={"X-Steer-User": "alice"})
    assert deleted is None or getattr(deleted, "deleted", True)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="stub", input="x", user="alice", previous_response_id=second.id)


def test_nothing_is_stored_by_default_and_unknown_ids_are_404(make_steer):
    s = make_steer()
    client = sdk(s.url)
    r = client.responses.create(model="stub", input="hi", user="alice")
    with pytest.raises(openai.NotFoundError) as exc:
        client.responses.create(model="stub", input="x", user="alice", previous_response_id=r.id)
    assert exc.value.body["param"] == "previous_response_id"
    assert exc.value.body["code"] == "response_not_found"
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id, extra_headers={"X-Steer-User": "alice"})


def test_stored_responses_are_isolated_between_users_and_tenants(make_steer):
    s = make_steer(keys=KEYS)
    alice = sdk(s.url, "alice-key")
    mine = alice.responses.create(model="stub", input="secret plan", store=True)  # the key speaks for alice
    assert alice.responses.retrieve(mine.id).id == mine.id
    bob = sdk(s.url, "bob-key")
    with pytest.raises(openai.NotFoundError):
        bob.responses.create(model="stub", input="x", previous_response_id=mine.id)
    with pytest.raises(openai.NotFoundError):
        bob.responses.retrieve(mine.id)
    with pytest.raises(openai.PermissionDeniedError):  # a scoped key cannot claim to be alice
        bob.responses.create(model="stub", input="x", user="alice", previous_response_id=mine.id)
    other_tenant = sdk(s.url, "t2-admin")
    with pytest.raises(openai.NotFoundError):
        other_tenant.responses.create(model="stub", input="x", user="alice", previous_response_id=mine.id)
    with pytest.raises(openai.NotFoundError):
        other_tenant.responses.delete(mine.id, extra_headers={"X-Steer-User": "alice"})
    admin = sdk(s.url, "t1-admin")
    with pytest.raises(openai.NotFoundError):  # anonymous is not alice either
        admin.responses.retrieve(mine.id)
    assert admin.responses.retrieve(mine.id, extra_headers={"X-Steer-User": "alice"}).id == mine.id
    with pytest.raises(openai.AuthenticationError):
        sdk(s.url, "wrong").responses.create(model="stub", input="x")


def test_export_and_forget_cover_stored_responses(make_steer):
    s = make_steer()
    client = sdk(s.url)
    kept = client.responses.create(model="stub", input="remember this", user="carol", store=True)
    client.responses.create(model="stub", input="other user", user="dave", store=True)
    export = httpx.get(s.url + "/users/carol/export", timeout=300).json()
    assert [r["id"] for r in export["responses"]] == [kept.id]
    assert export["responses"][0]["input"][0]["content"] == "remember this"
    assert export["responses"][0]["response"]["output"][0]["content"][0]["text"] == kept.output_text
    forgot = httpx.delete(s.url + "/users/carol", timeout=300).json()
    assert forgot["responses_removed"] == 1
    assert httpx.get(s.url + "/users/carol/export", timeout=300).json()["responses"] == []
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(kept.id, extra_headers={"X-Steer-User": "carol"})
    assert len(httpx.get(s.url + "/users/dave/export", timeout=300).json()["responses"]) == 1


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"input": "x", "tools": [{"type": "web_search"}]}, 400, "tools[0].type"),
        ({"input": "x", "background": True}, 400, "background"),
        ({"input": "x", "conversation": "conv_1"}, 400, "conversation"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, 400, "input[0].type"),
        ({"input": [{"role": "wizard", "content": "x"}]}, 400, "input[0].role"),
        ({"input": "x", "text": {"format": {"type": "json_schema"}}}, 400, "text.format"),
        ({"input": "x", "tool_choice": {"type": "file_search"}}, 400, "tool_choice"),
        ({"input": "x", "stream": "yes"}, 400, "stream"),
        ({}, 400, "input"),
        ({"input": "x", "previous_response_id": 5}, 400, "previous_response_id"),
        ({"input": "x", "model": "nope"}, 404, "model"),
        ({"input": "x", "stub_fault": "500"}, 502, None),
    ],
    ids=["builtin-tool", "background", "conversation", "item-reference", "role", "schema", "tool-choice", "stream",
         "no-input", "previous-type", "model", "upstream-500"],
)  # fmt: skip
def test_errors_have_the_openai_shape_and_name_the_parameter(make_steer, body, status, param):
    s = make_steer()
    resp = httpx.post(s.url + "/responses", json={"model": "stub", **body})
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == param


def test_bad_json_is_a_400(make_steer):
    s = make_steer()
    resp = httpx.post(s.url + "/responses", content=b"{nope", headers={"Content-Type": "application/json"})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_json"


def test_an_upstream_failure_mid_stream_ends_with_error_and_response_failed(make_steer):
    s = make_steer()
    body = {"model": "stub", "input": "hi", "stream": True, "stub_fault": "reset"}
    with httpx.stream("POST", s.url + "/responses", json=body) as resp:
        resp.read()
    evs = events(resp)
    assert [e["type"] for e in evs[-2:]] == ["error", "response.failed"]
    failed = evs[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"


def test_a_native_model_is_forwarded_as_is_when_no_stage_runs(make_steer, stub):
    models = [{"name": "stub", "api_base": stub.url + "/v1", "responses": "native", "retries": 0}]
    s = make_steer(models=models)
    client = sdk(s.url)
    r = client.responses.create(model="stub", input="hi", store=True)
    assert r.output_text == "native: hi" and r.id == "resp_native"
    sent = last_call(stub)
    assert sent["stub_path"] == "/v1/responses" and sent["input"] == "hi" and sent["store"] is True
    with client.responses.stream(model="stub", input="streamed") as stream:
        assert stream.get_final_response().output_text == "native: streamed"
    cut = {"model": "stub", "input": "x", "stream": True, "stub_fault": "reset"}
    with httpx.stream("POST", s.url + "/responses", json=cut) as resp:
        resp.read()
    assert [e["type"] for e in events(resp)] == ["response.created", "error"]
    assert events(resp)[-1]["sequence_number"] == 1
    # with a stage to run, the same model is translated: the pipeline sees a chat turn
    s2 = make_steer({"default": SYSTEM_PROMPT_POLICY}, models=models)
    r2 = sdk(s2.url).responses.create(model="stub", input="hi", user="alice")
    assert r2.output_text.startswith("tok0") and "messages" in last_call(stub)


def test_native_needs_an_openai_compatible_backend():
    from steer.settings import ConfigError, load_settings

    with pytest.raises(ConfigError, match="responses: native needs backend openai"):
        load_settings(None, models=[{"name": "x", "model": "anthropic/claude", "responses": "native"}])


def test_embeddings_and_completions_pass_through(make_steer, stub):
    s = make_steer()
    client = sdk(s.url)
    emb = client.embeddings.create(model="stub", input=["a", "bb"], user="alice")
    assert len(emb.data) == 2 and len(emb.data[0].embedding) == 4
    assert last_call(stub)["stub_path"] == "/v1/embeddings" and last_call(stub)["user"] == "alice"
    comp = client.completions.create(model="stub", prompt="Say", max_tokens=5)
    assert comp.choices[0].text == "tok0 tok1" and last_call(stub)["prompt"] == "Say"
    streamed = "".join(c.choices[0].text for c in client.completions.create(model="stub", prompt="S", stream=True))
    assert streamed == "tok0 tok1"
    metrics = httpx.get(s.server.url + "/metrics").text
    assert 'steer_requests_total{route="embeddings",status="200"}' in metrics
    assert 'steer_requests_total{route="completions",status="200"}' in metrics


def test_passthrough_errors(make_steer, stub):
    from helpers import free_port

    down = f"http://127.0.0.1:{free_port()}/v1"
    models = [
        {"name": "stub", "api_base": stub.url + "/v1", "retries": 0},
        {"name": "down", "api_base": down, "retries": 0},
        {"name": "local/smollm2", "backend": "local"},
    ]
    s = make_steer(models=models, default_model="stub")
    post = lambda path, body: httpx.post(s.url + path, json=body)  # noqa: E731
    assert post("/embeddings", {"model": "nope", "input": "x"}).json()["error"]["code"] == "model_not_found"
    resp = post("/embeddings", {"model": "down", "input": "x"})
    assert resp.status_code == 502 and down not in resp.text
    resp = post("/completions", {"model": "local/smollm2", "prompt": "x"})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "model"
    assert "does not serve /v1/completions" in resp.json()["error"]["message"]
    resp = httpx.post(s.url + "/embeddings", content=b"[", headers={"Content-Type": "application/json"})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_json"
    resp = post("/completions", {"model": "stub", "prompt": "x", "stub_fault": "500"})
    assert resp.status_code == 502


def test_passthrough_needs_the_key_and_its_user_scope(make_steer):
    s = make_steer(keys=KEYS)
    with pytest.raises(openai.AuthenticationError):
        sdk(s.url).embeddings.create(model="stub", input="x")
    with pytest.raises(openai.PermissionDeniedError):
        sdk(s.url, "bob-key").embeddings.create(model="stub", input="x", user="alice")
    assert sdk(s.url, "bob-key").completions.create(model="stub", prompt="x").choices[0].text == "tok0 tok1"


def test_one_agent_turn_with_a_function_tool_through_the_agents_sdk(make_steer, stub):
    agents = pytest.importorskip("agents")
    s = make_steer()
    agents.set_tracing_disabled(True)

    @agents.function_tool
    def get_weather(city: str = "Paris") -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    model = agents.OpenAIResponsesModel(model="stub", openai_client=openai.AsyncOpenAI(base_url=s.url, api_key="x"))
    agent = agents.Agent(name="weather", instructions="Answer with the tool.", tools=[get_weather], model=model)
    result = agents.Runner.run_sync(agent, "What is the weather in Paris?")
    assert result.final_output == "tool said: sunny in x"
    messages = last_call(stub)["messages"]
    assert messages[0] == {"role": "system", "content": "Answer with the tool."}
    assert messages[-1] == {"role": "tool", "tool_call_id": "call_0", "content": "sunny in x"}


async def test_the_async_sdk_creates_streams_and_parses(make_steer):
    s = make_steer()
    client = openai.AsyncOpenAI(base_url=s.url, api_key="none", max_retries=0)
    created = await client.responses.create(model="stub", input="hi", user="alice")
    async with client.responses.stream(model="stub", input="hi", user="alice") as stream:
        streamed = "".join([e.delta async for e in stream if e.type == "response.output_text.delta"])
        final = await stream.get_final_response()
    assert created.output_text == streamed == final.output_text
    parsed = await client.responses.parse(model="stub", input="w", text_format=Weather)
    assert parsed.output_parsed == Weather(city="x", celsius=1)


def test_embeddings_and_completions_through_the_litellm_backend(make_steer, stub):
    from conformance.openapi import validate

    models = [{"name": "ll", "model": "openai/stub", "api_base": stub.url + "/v1", "backend": "litellm",
               "api_key": "x", "retries": 0}]  # fmt: skip
    s = make_steer(models=models)
    client = sdk(s.url, timeout=60)
    emb = client.embeddings.create(model="ll", input=["a", "bb"])
    assert [len(d.embedding) for d in emb.data] == [4, 4] and last_call(stub)["stub_path"] == "/v1/embeddings"
    validate(emb.model_dump(exclude_unset=True), "CreateEmbeddingResponse")
    comp = client.completions.create(model="ll", prompt="Say")
    assert comp.choices[0].text == "tok0 tok1" and last_call(stub)["prompt"] == "Say"
    with httpx.stream("POST", s.url + "/completions", json={"model": "ll", "prompt": "x", "stream": True},
                      timeout=60) as resp:  # fmt: skip
        resp.read()
    chunks = [json.loads(line[6:]) for line in resp.text.split("\n") if line.startswith("data: {")]
    assert "".join(c["choices"][0]["text"] for c in chunks) == "tok0 tok1" and resp.text.endswith("data: [DONE]\n\n")
    validate(chunks[-1], "CreateCompletionResponse")
