"""The official openai SDK (sync, async, the streaming helpers, ``.parse``) against a real steer on
loopback, on the fast path, the pipeline path and the replay after rerank: what the SDK builds is
what the wire said, and the debug trace changes nothing the SDK hands back."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
from helpers import Steer
from pydantic import BaseModel

PATHS = {
    "fast": "name: default\nextends: none\nstages: {}\n",
    "pipeline": "name: default\nextends: none\nstages:\n  system_prompt: {text: 'Answer briefly.'}\n",
    "rerank": (
        "name: default\nextends: none\nstages:\n"
        "  rerank: {options: {embeddings: false}, pinned: {concise: 1.0}}\n"
    ),
}
MSG: list[Any] = [{"role": "user", "content": "What should I pack for Lisbon?"}]
DEBUG = {"X-Steer-Debug": "1"}


class Weather(BaseModel):
    q: str


class Packing(BaseModel):
    items: list[str]
    days: int
    carry_on: bool


@pytest.fixture(params=list(PATHS))
def steer_on(request: pytest.FixtureRequest, make_steer: Callable[..., Steer]) -> Iterator[Steer]:
    yield make_steer(policies={"default": PATHS[request.param]})


def client(s: Steer) -> openai.OpenAI:
    return openai.OpenAI(base_url=s.url, api_key="none", max_retries=0, timeout=60)


def test_create_gives_a_whole_completion(steer_on: Steer) -> None:
    completion = client(steer_on).chat.completions.create(model="stub", messages=MSG, user="alice")
    assert completion.choices[0].message.content == " ".join(f"tok{i}" for i in range(8))
    assert completion.choices[0].message.refusal is None and completion.usage is not None


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_the_stream_helper_gives_the_final_completion_with_usage_and_the_streams_id(
    steer_on: Steer, debug: bool
) -> None:
    with client(steer_on).chat.completions.stream(
        model="stub",
        messages=MSG,
        user="alice",
        stream_options={"include_usage": True},
        extra_headers=DEBUG if debug else None,
    ) as stream:
        ids = {event.chunk.id for event in stream if event.type == "chunk"}
        final = stream.get_final_completion()
    assert final.usage is not None and final.usage.total_tokens > 0
    assert ids == {final.id} and final.system_fingerprint == "fp_stub"
    assert final.choices[0].message.content == " ".join(f"tok{i}" for i in range(8))
    assert final.choices[0].finish_reason == "stop"


def test_tool_calls_stream_as_fragments_and_parse_into_their_model(steer_on: Steer) -> None:
    tool = openai.pydantic_function_tool(Weather, name="get_weather")
    with client(steer_on).chat.completions.stream(model="stub", messages=MSG, user="alice", tools=[tool]) as stream:
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather" and call.function.parsed_arguments == Weather(q="x")
    whole = client(steer_on).chat.completions.parse(model="stub", messages=MSG, user="alice", tools=[tool])
    assert whole.choices[0].message.tool_calls[0].function.parsed_arguments == Weather(q="x")  # type: ignore[index]


@pytest.mark.parametrize("stream", [False, True], ids=["parse", "stream"])
def test_structured_output_parses_into_the_model(steer_on: Steer, stream: bool) -> None:
    sdk = client(steer_on)
    if stream:
        with sdk.chat.completions.stream(model="stub", messages=MSG, user="alice", response_format=Packing) as s:
            parsed = s.get_final_completion().choices[0].message.parsed
    else:
        parsed = sdk.chat.completions.parse(
            model="stub", messages=MSG, user="alice", response_format=Packing
        ).choices[0].message.parsed
    assert parsed == Packing(items=[], days=1, carry_on=True)


def test_a_refusal_reaches_the_sdk_as_a_refusal(steer_on: Steer) -> None:
    completion = client(steer_on).chat.completions.parse(
        model="stub", messages=MSG, user="alice", response_format=Packing, extra_body={"stub_refusal": "No."}
    )
    message = completion.choices[0].message
    assert message.refusal == "No." and message.parsed is None and message.content is None


def test_logprobs_reach_the_sdk(steer_on: Steer) -> None:
    completion = client(steer_on).chat.completions.create(
        model="stub", messages=MSG, user="alice", logprobs=True, top_logprobs=2
    )
    content = completion.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and len(content[0].top_logprobs) == 2


async def test_the_async_client_and_its_stream_helper(steer_on: Steer) -> None:
    sdk = openai.AsyncOpenAI(base_url=steer_on.url, api_key="none", max_retries=0, timeout=60)
    whole = await sdk.chat.completions.create(model="stub", messages=MSG, user="alice")
    async with sdk.chat.completions.stream(
        model="stub", messages=MSG, user="alice", stream_options={"include_usage": True}, extra_headers=DEBUG
    ) as stream:
        final = await stream.get_final_completion()
    assert final.choices[0].message.content == whole.choices[0].message.content
    assert final.usage is not None and final.usage.total_tokens == whole.usage.total_tokens  # type: ignore[union-attr]
    await sdk.close()


def test_errors_map_to_the_sdks_exception_classes(make_steer: Callable[..., Steer]) -> None:
    sdk = client(make_steer())
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="no-such-model", messages=MSG)
    with pytest.raises(openai.BadRequestError) as exc:
        sdk.chat.completions.create(model="stub", messages=[])
    assert exc.value.param == "messages"
    with pytest.raises(openai.InternalServerError):
        sdk.chat.completions.create(model="stub", messages=MSG, extra_body={"stub_fault": "500"})


@pytest.mark.skipif(importlib.util.find_spec("langchain_openai") is None, reason="langchain-openai not installed")
def test_langchain_openai_invokes_streams_and_binds_tools(steer_on: Steer) -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model="stub", base_url=steer_on.url, api_key="none", max_retries=0)  # type: ignore[arg-type]
    answer = llm.invoke("What should I pack?", user="alice")
    assert answer.content == " ".join(f"tok{i}" for i in range(8))
    streamed = "".join(str(part.content) for part in llm.stream("What should I pack?", user="alice"))
    assert streamed == answer.content
    called = llm.bind_tools([Weather]).invoke("Weather?", user="alice")
    assert called.tool_calls[0]["name"] == "Weather" and called.tool_calls[0]["args"] == {"q": "x"}
    packed = llm.with_structured_output(Packing, method="json_schema").invoke("Pack.", user="alice")
    assert packed == Packing(items=[], days=1, carry_on=True)
