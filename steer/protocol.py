"""Wire models for the OpenAI chat-completions API, in the order of the OpenAI reference.

steer validates what it reads and forwards the body it was given: fields it does not know are
kept and passed to the upstream unchanged (and listed in the debug trace), never dropped.
"""

from __future__ import annotations

import functools
import time
import uuid
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from steer.errors import InvalidRequest, UpstreamError


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool | None = None


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    messages: list[Message] = Field(min_length=1)
    model: str | None = None
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    metadata: dict[str, str] | None = None
    n: int | None = Field(default=None, ge=1)  # null (allowed by the spec): one choice
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    response_format: dict[str, Any] | None = None
    safety_identifier: str | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    user: str | None = None


def message_text(content: Any) -> str:
    """A message's content as text, the one rule steer reads every message by: a string as is; a list of
    content parts, its text parts (``{"type": "text", "text": ...}`` or bare strings) concatenated in
    order with nothing added between them (a client that splits a sentence across parts gets it back
    whole), every other part (image, audio, file) left out; anything else ''."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = (p if isinstance(p, str) else p.get("text") if isinstance(p, dict) else None for p in content)
        return "".join(p for p in parts if isinstance(p, str))
    return ""


def is_text_only(content: Any) -> bool:
    """Whether the content is text and nothing else: a string, or a non-empty list of text parts only."""
    if isinstance(content, str):
        return True
    return (
        isinstance(content, list)
        and bool(content)
        and all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content)
    )


LEADING_ROLES = ("system", "developer")  # the client's own instructions, which keep their place first


def insert_after_system(messages: list[dict[str, Any]], message: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
    """A copy of ``messages`` with ``message`` inserted after the leading system and developer messages,
    and the index it was inserted at."""
    at = 0
    while at < len(messages) and messages[at].get("role") in LEADING_ROLES:
        at += 1
    return [*messages[:at], message, *messages[at:]], at


def last_user_text(messages: list[dict[str, Any]]) -> str:
    """The text of the last user message ('' when there is none)."""
    for m in reversed(messages):
        if m.get("role") == "user":
            return message_text(m.get("content"))
    return ""


def parse_json(raw: bytes) -> Any:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}", code="invalid_json") from exc
    # orjson reads 1024 levels but writes only 254: a body steer could not forward is refused here.
    # Counting brackets is C-speed; the re-encode runs only for bodies that could be that deep.
    if raw.count(b"[") + raw.count(b"{") > 250:
        try:
            orjson.dumps(value)
        except orjson.JSONEncodeError as exc:
            raise InvalidRequest("the request body is nested too deeply", code="invalid_json") from exc
    return value


MESSAGES_PER_SLICE = 1000  # off the loop, messages are validated this many at a time (see validate_chat)


@functools.cache
def _messages() -> TypeAdapter[list[Message]]:
    return TypeAdapter(list[Message])


def validate_chat(body: Any, *, sliced: bool = False) -> ChatCompletionRequest:
    """The request, validated; the first error (and how many more) as a 400 naming its parameter.

    ``sliced`` (on a worker thread): the messages are validated ``MESSAGES_PER_SLICE`` at a time,
    and the request's ``messages`` are then the body's own dicts, checked but not turned into
    models. Validation holds the GIL for as long as one call runs, so one call over 100,000
    messages would stall the event loop's thread even from another thread (between slices it can
    run); and 100,000 models cost about as much to free as to build, on whichever thread lets go
    of them last, which would be the loop's. steer forwards the body, never the models.
    """
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object", code="invalid_body")
    messages = body.get("messages")
    if not sliced or not isinstance(messages, list) or len(messages) <= MESSAGES_PER_SLICE:
        try:
            return ChatCompletionRequest.model_validate(body)
        except ValidationError as exc:
            raise _invalid(exc.errors()) from exc
    errors: list[Any] = []
    for start in range(0, len(messages), MESSAGES_PER_SLICE):
        try:
            _messages().validate_python(messages[start : start + MESSAGES_PER_SLICE])
        except ValidationError as exc:
            errors += [{**e, "loc": ("messages", start + int(e["loc"][0]), *e["loc"][1:])} for e in exc.errors()]
    req: ChatCompletionRequest | None = None
    try:  # every other field, with one (already checked) message standing in for them all
        req = ChatCompletionRequest.model_validate({**body, "messages": messages[:1]})
    except ValidationError as exc:
        errors += [e for e in exc.errors() if e["loc"][:1] != ("messages",)]
    if errors or req is None:
        raise _invalid(errors)
    req.messages = messages
    return req


def _invalid(errors: list[Any]) -> InvalidRequest:
    first = errors[0]
    param = ".".join(str(p) for p in first["loc"]) or None
    if first["type"] == "missing":
        msg = f"missing required parameter: {param}"
    else:
        msg = f"invalid value for {param}: {first['msg']}"
    more = len(errors) - 1
    if more:
        msg += f" (and {more} more error{'s' if more > 1 else ''})"
    return InvalidRequest(msg, param=param, code="invalid_value")


def parse_chat(raw: bytes) -> tuple[Any, ChatCompletionRequest]:
    """A chat body parsed and validated, for a worker thread (the messages in slices).

    A refused body is let go of here: the error raised carries no traceback into the frames that
    hold it, so it is not freed later on the event loop's thread.
    """
    body = parse_json(raw)
    try:
        return body, validate_chat(body, sliced=True)
    except InvalidRequest as exc:
        error = InvalidRequest(exc.message, param=exc.param, code=exc.code)
    del body
    raise error


def check_completion(model: str, data: Any) -> None:
    """Refuse an upstream answer that is not a ``chat.completion``: a non-empty list of choices,
    each an object whose ``message`` is an object with text or null content. Only the shape steer
    and its clients read is checked, in a loop over the choices."""
    choices = data.get("choices") if isinstance(data, dict) else None
    problem = None
    if not isinstance(choices, list) or not choices:
        problem = "no choices"
    else:
        for i, choice in enumerate(choices):
            message = choice.get("message") if isinstance(choice, dict) else None
            if not isinstance(message, dict):
                problem = f"choice {i} has no message object"
            elif not isinstance(message.get("content"), str | None):
                problem = f"choice {i}'s content is neither text nor null"
            elif not isinstance(message.get("tool_calls"), list | None):
                problem = f"choice {i}'s tool_calls is not a list"
            if problem:
                break
    if problem:
        raise UpstreamError(f"{model}: the upstream's answer is not a chat completion ({problem})")


def completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex


def sse(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"


REQUIRED_NULLS = ("content", "refusal")  # message keys the spec requires even when null


def fill_required_nulls(completion: dict[str, Any]) -> dict[str, Any]:
    """``completion`` with the keys the spec requires but an upstream may leave out set to null:
    each choice's ``logprobs`` and its message's ``content`` and ``refusal``. Changed in place."""
    for choice in completion.get("choices") or ():
        if isinstance(choice, dict):
            choice.setdefault("logprobs", None)
            message = choice.get("message")
            if isinstance(message, dict):
                for key in REQUIRED_NULLS:
                    message.setdefault(key, None)
    return completion


# the top-level keys of a completion every chunk of its replay repeats
CHUNK_HEAD_KEYS = ("system_fingerprint", "service_tier")
TEXT_PIECE = 64  # characters of content per replayed chunk (without logprobs)


def completion_chunks(completion: dict[str, Any], include_usage: bool) -> list[dict[str, Any]]:
    """A finished ``chat.completion`` as the chunks of a streamed answer (``chat.completion.chunk``).

    Every chunk carries the completion's id, created, model, ``system_fingerprint`` and
    ``service_tier``; every choice of a chunk carries ``finish_reason`` (null until its last chunk).
    A choice's ``logprobs`` go with its content in one chunk (they are per token, the content is not
    re-split then); its refusal and tool calls each come in one chunk; the usage, when asked for, in a
    last chunk with no choices."""
    head: dict[str, Any] = {
        "id": completion.get("id") or completion_id(),
        "object": "chat.completion.chunk",
        "created": completion.get("created") or int(time.time()),
        "model": completion.get("model", ""),
    }
    head.update({k: completion[k] for k in CHUNK_HEAD_KEYS if completion.get(k) is not None})

    def chunk(index: int, delta: dict[str, Any], finish: Any = None, logprobs: Any = None) -> dict[str, Any]:
        return {**head, "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]}

    out: list[dict[str, Any]] = []
    for choice in completion.get("choices", []):
        idx = choice.get("index", 0)
        msg = choice.get("message") or {}
        content, logprobs = msg.get("content"), choice.get("logprobs")
        out.append(chunk(idx, {"role": "assistant", "content": "" if content is not None else None}))
        if content and logprobs is not None:
            out.append(chunk(idx, {"content": content}, logprobs=logprobs))
        elif content:
            out += [chunk(idx, {"content": content[i : i + TEXT_PIECE]}) for i in range(0, len(content), TEXT_PIECE)]
        elif logprobs is not None:
            out.append(chunk(idx, {}, logprobs=logprobs))
        if msg.get("refusal"):
            out.append(chunk(idx, {"refusal": msg["refusal"]}))
        if msg.get("tool_calls"):
            calls = [{**c, "index": j} for j, c in enumerate(msg["tool_calls"])]
            out.append(chunk(idx, {"tool_calls": calls}))
        out.append(chunk(idx, {}, choice.get("finish_reason")))
    if include_usage and completion.get("usage"):
        out.append({**head, "choices": [], "usage": completion["usage"]})
    return out


def completion_to_chunks(completion: dict[str, Any], include_usage: bool) -> list[bytes]:
    """Re-frame a finished ``chat.completion`` as the SSE events of a streamed answer."""
    return [sse(c) for c in completion_chunks(completion, include_usage)]
