"""Any provider litellm knows (Anthropic, Bedrock, Vertex, Azure, Ollama...).

litellm's import takes seconds (and, without ``LITELLM_LOCAL_MODEL_COST_MAP=True``, reaches for
the network), so it is done once, on a worker thread, by :meth:`LiteLLMUpstream.warmup`, which the
server's start-up calls for every litellm model; a request that comes first waits for that same
import instead of running it on the event loop. litellm's own retries are off: steer's router
retries and falls back.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator
from typing import Any

import orjson

from steer.errors import InvalidRequest, RateLimited, SteerError, UpstreamError, UpstreamTimeout
from steer.settings import ModelConfig, Settings
from steer.upstreams import backends


def _import_litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    litellm.drop_params = True
    return litellm


def _map_error(name: str, exc: Exception) -> SteerError:
    kind = type(exc).__name__
    status = getattr(exc, "status_code", None)
    if kind == "Timeout" or isinstance(exc, asyncio.TimeoutError):
        return UpstreamTimeout(f"{name}: the upstream timed out", detail=str(exc))
    if kind == "RateLimitError" or status == 429:
        return RateLimited(f"{name}: {exc}")
    if kind in ("BadRequestError", "UnprocessableEntityError", "ContextWindowExceededError") or status == 400:
        return InvalidRequest(f"{name}: upstream rejected the request: {exc}", code="upstream_bad_request")
    # litellm's text may name the provider's address: the client gets the kind, the log the text
    return UpstreamError(f"{name}: the upstream failed ({kind})", upstream_status=status, detail=str(exc))


def _has_delta(choice: Any) -> bool:
    delta = getattr(choice, "delta", None)
    fields = ("role", "content", "tool_calls", "function_call", "reasoning_content")
    return delta is not None and any(getattr(delta, f, None) for f in fields)


DROPPED = "provider_specific_fields"  # litellm's own, in no OpenAI schema


def _wire(obj: Any, chunk: bool) -> dict[str, Any]:
    """A litellm response object as the OpenAI wire shape: fields litellm leaves unset (None) are
    dropped, except those the spec requires even when null (each choice's ``logprobs`` with their
    ``content`` and ``refusal``, a message's ``content`` and ``refusal``, a chunk's ``finish_reason``),
    and litellm's ``provider_specific_fields`` are removed wherever they appear."""
    data: dict[str, Any] = _drop(orjson.loads(obj.model_dump_json(exclude_none=True)))
    for choice in data.get("choices") or ():
        choice.setdefault("logprobs", None)
        if isinstance(choice["logprobs"], dict):
            choice["logprobs"].setdefault("content", None)
            choice["logprobs"].setdefault("refusal", None)
        if chunk:
            choice.setdefault("finish_reason", None)
        message = choice.get("message")
        if isinstance(message, dict):
            message.setdefault("content", None)
            message.setdefault("refusal", None)
    return data


def _drop(node: Any) -> Any:
    """``node`` without ``provider_specific_fields`` at any depth (changed in place)."""
    if isinstance(node, dict):
        node.pop(DROPPED, None)
        for value in node.values():
            _drop(value)
    elif isinstance(node, list):
        for value in node:
            _drop(value)
    return node


def _text_chunk(data: dict[str, Any]) -> dict[str, Any]:
    """A text completion chunk as the API sends it: no null usage, and text '' rather than null."""
    if data.get("usage") is None:
        data.pop("usage", None)
    for choice in data.get("choices") or ():
        if isinstance(choice, dict) and choice.get("text") is None:
            choice["text"] = ""
    return data


@backends.register("litellm")
class LiteLLMUpstream:
    def __init__(self, config: ModelConfig, settings: Settings) -> None:
        self.config = config
        self._litellm: Any = None
        self._import_lock = asyncio.Lock()

    @property
    def loaded(self) -> bool:
        return self._litellm is not None

    async def warmup(self) -> None:
        """Import litellm off the event loop (once, however many callers wait)."""
        async with self._import_lock:
            if self._litellm is None:
                self._litellm = await asyncio.to_thread(_import_litellm)

    async def _client(self) -> Any:
        if self._litellm is None:
            await self.warmup()
        return self._litellm

    def _kwargs(self, body: dict[str, Any]) -> dict[str, Any]:
        kw = {**self.config.extra_body, **body, "model": self.config.model}
        kw.update(timeout=self.config.timeout, num_retries=0)
        if self.config.api_base:
            kw["api_base"] = self.config.api_base
        key = self.config.key
        if key:
            kw["api_key"] = key
        return kw

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            litellm = await self._client()
            resp = await litellm.acompletion(**self._kwargs({**body, "stream": False}))
        except SteerError:
            raise
        except Exception as exc:
            raise _map_error(self.config.name, exc) from exc
        return _wire(resp, chunk=False)

    async def stream(self, body: dict[str, Any]) -> AsyncGenerator[bytes, None]:
        """litellm's chunks, re-framed. litellm raises on a stream cut before its finish, but answers a
        body that is not a stream at all with a made-up final chunk and nothing else: a stream in which
        no chunk carries any delta (role, text or tool call) is refused as an upstream error."""
        try:
            litellm = await self._client()
            resp = await litellm.acompletion(**self._kwargs({**body, "stream": True}))
            answered = False
            async for chunk in resp:
                answered = answered or any(_has_delta(c) for c in getattr(chunk, "choices", None) or ())
                yield b"data: " + orjson.dumps(_wire(chunk, chunk=True)) + b"\n\n"
            if not answered:
                raise UpstreamError(f"{self.config.name}: the upstream's stream carried no answer")
        except SteerError:
            raise
        except Exception as exc:
            raise _map_error(self.config.name, exc) from exc

    def supports(self, path: str) -> bool:
        return path in ("/embeddings", "/completions")

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """``/embeddings`` through ``litellm.aembedding``, ``/completions`` through ``litellm.atext_completion``."""
        try:
            litellm = await self._client()
            call = litellm.aembedding if path == "/embeddings" else litellm.atext_completion
            kw = self._kwargs(body)
            if path == "/embeddings":
                kw.pop("num_retries", None)
                for key in self.config.extra_body:  # extra_body is for chat
                    if key not in body:
                        kw.pop(key, None)
            resp = await call(**{**kw, "stream": False} if path == "/completions" else kw)
        except SteerError:
            raise
        except Exception as exc:
            raise _map_error(self.config.name, exc) from exc
        data: dict[str, Any] = orjson.loads(resp.model_dump_json())
        return data

    async def post_stream(self, path: str, body: dict[str, Any]) -> AsyncGenerator[bytes, None]:
        """A text completion's stream, re-framed (embeddings have none)."""
        if path != "/completions":
            raise InvalidRequest(f"{path} has no stream", param="stream")
        try:
            litellm = await self._client()
            resp = await litellm.atext_completion(**{**self._kwargs(body), "stream": True})
            async for chunk in resp:
                yield b"data: " + orjson.dumps(_text_chunk(orjson.loads(chunk.model_dump_json()))) + b"\n\n"
        except SteerError:
            raise
        except Exception as exc:
            raise _map_error(self.config.name, exc) from exc
        yield b"data: [DONE]\n\n"

    async def aclose(self) -> None:
        return None
