"""The Responses API in terms of chat completions: a ``POST /v1/responses`` body becomes a chat body, and
the ``chat.completion`` that answers it becomes a ``response`` object.

Request, Responses -> chat:

- ``instructions`` -> a leading system message (never carried over from a previous response);
- ``input``: a string is one user message; items: messages (``input_text``/``output_text`` parts -> text
  parts, ``input_image`` -> ``image_url``, ``input_file`` -> ``file``), ``function_call`` -> an assistant
  message's ``tool_calls`` (consecutive calls share one message), ``function_call_output`` -> a ``tool``
  message; ``reasoning`` items are left out (chat has no place for them); any other item type is a 400
  naming it;
- ``tools`` (function tools only; a built-in tool is a 400), ``tool_choice``, ``parallel_tool_calls``;
- ``text.format`` -> ``response_format`` (``json_schema``, ``json_object``; ``text`` is the default);
  ``text.verbosity`` -> ``verbosity``; ``reasoning.effort`` -> ``reasoning_effort``;
- ``max_output_tokens`` -> ``max_completion_tokens``; ``top_logprobs`` -> ``logprobs`` + ``top_logprobs``;
- ``metadata`` is echoed in the response (and stored with it), never sent upstream: a chat completion
  takes it only with ``store`` (OpenAI refuses it otherwise), and steer stores nothing upstream;
- ``model``, ``temperature``, ``top_p``, ``user``, ``safety_identifier``,
  ``prompt_cache_key``, ``service_tier``, ``stream`` as they are, and any field steer does not know
  (as on chat: e.g. vLLM's ``top_k``).

Refused with a 400 naming the parameter: ``background: true``, ``conversation``, ``prompt`` (server-side
state steer does not keep) and the items and tools above. Read by steer, not sent: ``store``,
``previous_response_id``, ``include``, ``truncation``, ``max_tool_calls`` (the last three have nothing to
act on when only function tools are allowed: documented as ignored).

Response, chat -> Responses: the first choice's text (or refusal) is one ``message`` item, each tool call
one ``function_call`` item; ``finish_reason: length`` makes the response ``incomplete``
(``max_output_tokens``), ``content_filter`` likewise; usage is renamed (``input_tokens``...).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

from steer.errors import InvalidRequest

# read by steer itself, never part of the chat body
STEER_FIELDS = frozenset({
    "metadata", "store", "previous_response_id", "include", "truncation", "max_tool_calls", "input", "instructions",
    "text", "tools", "tool_choice", "max_output_tokens", "reasoning", "top_logprobs", "stream_options", "background",
    "conversation", "prompt",
})  # fmt: skip
REFUSED = {
    "background": "background responses are not supported by steer",
    "conversation": "conversations are not kept by steer; use previous_response_id with store: true",
    "prompt": "stored prompt templates are not supported by steer; send instructions and input",
}
ROLES = ("user", "assistant", "system", "developer")


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _bad(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="invalid_value")


def input_items(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The request's ``input`` as a list of items (a string is one user message)."""
    raw = body.get("input")
    if raw is None:
        return []
    if isinstance(raw, str):
        return [{"type": "message", "role": "user", "content": raw}]
    if not isinstance(raw, list) or not all(isinstance(i, dict) for i in raw):
        raise _bad("input must be a string or a list of input items (objects)", "input")
    return list(raw)


def _part(part: Any, param: str) -> dict[str, Any]:
    if isinstance(part, str):
        return {"type": "text", "text": part}
    if not isinstance(part, dict):
        raise _bad("a content part must be an object", param)
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        text = part.get("text")
        if not isinstance(text, str):
            raise _bad("a text part needs a string 'text'", param + ".text")
        return {"type": "text", "text": text}
    if kind == "refusal":
        return {"type": "text", "text": str(part.get("refusal") or "")}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str):
            raise _bad("steer translates input_image parts with an image_url only (no file_id)", param + ".image_url")
        image: dict[str, Any] = {"url": url}
        if part.get("detail") is not None:
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        file = {k: part[k] for k in ("file_data", "file_id", "filename") if part.get(k) is not None}
        if not file:
            raise _bad("an input_file part needs file_data or file_id", param)
        return {"type": "file", "file": file}
    raise _bad(f"content part type {kind!r} cannot be translated to a chat completion", param + ".type")


def _content(content: Any, param: str, role: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _bad("content must be a string or a list of content parts", param)
    parts = [_part(p, f"{param}[{i}]") for i, p in enumerate(content)]
    if role in ("assistant", "system", "developer") or all(p["type"] == "text" for p in parts):
        if any(p["type"] != "text" for p in parts):
            raise _bad(f"a {role} message may hold text parts only", param)
        if role == "assistant" or len(parts) == 1:
            return "".join(p["text"] for p in parts)
    return parts


def _tool_output(output: Any, param: str) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        texts = [_part(p, f"{param}[{i}]") for i, p in enumerate(output)]
        if any(p["type"] != "text" for p in texts):
            raise _bad("steer translates text function_call_output only", param)
        return "".join(p["text"] for p in texts)
    raise _bad("output must be a string or a list of content parts", param)


def to_messages(items: list[dict[str, Any]], param: str = "input") -> list[dict[str, Any]]:
    """Chat messages for a list of Responses input items."""
    messages: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        where = f"{param}[{i}]"
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ROLES:
                raise _bad(f"role must be one of {', '.join(ROLES)}", where + ".role")
            messages.append({"role": role, "content": _content(item.get("content"), where + ".content", role)})
        elif kind == "function_call":
            call_id, name, args = item.get("call_id"), item.get("name"), item.get("arguments")
            if not (isinstance(call_id, str) and isinstance(name, str) and isinstance(args, str)):
                raise _bad("a function_call item needs string call_id, name and arguments", where)
            call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and isinstance(last.get("content"), str | None):
                last.setdefault("tool_calls", []).append(call)  # the same turn as the text before it
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            if not isinstance(call_id, str):
                raise _bad("a function_call_output item needs a string call_id", where + ".call_id")
            output = _tool_output(item.get("output"), where + ".output")
            messages.append({"role": "tool", "tool_call_id": call_id, "content": output})
        elif kind == "reasoning":
            continue  # a reasoning model's own notes: chat completions have no place for them
        else:
            raise _bad(
                f"input item type {kind!r} cannot be translated to a chat completion "
                "(steer translates message, function_call, function_call_output and reasoning items)",
                where + ".type",
            )
    return messages


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _bad("tools must be a list", "tools")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else tool
            raise _bad(
                f"tool type {kind!r} is not supported: steer translates function tools only", f"tools[{i}].type"
            )
        if not isinstance(tool.get("name"), str):
            raise _bad("a function tool needs a string name", f"tools[{i}].name")
        fn = {k: tool[k] for k in ("name", "description", "parameters", "strict") if tool.get(k) is not None}
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise _bad("tool_choice must be auto, none, required or a function tool", "tool_choice")


def _response_format(text: Any) -> tuple[dict[str, Any] | None, Any]:
    """(chat ``response_format``, ``verbosity``) for ``text``."""
    if text is None:
        return None, None
    if not isinstance(text, dict):
        raise _bad("text must be an object", "text")
    fmt = text.get("format")
    out: dict[str, Any] | None = None
    if isinstance(fmt, dict):
        kind = fmt.get("type")
        if kind == "json_schema":
            if not isinstance(fmt.get("name"), str) or not isinstance(fmt.get("schema"), dict):
                raise _bad("a json_schema format needs a name and a schema object", "text.format")
            schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if fmt.get(k) is not None}
            out = {"type": "json_schema", "json_schema": schema}
        elif kind == "json_object":
            out = {"type": "json_object"}
        elif kind != "text":
            raise _bad(f"text.format type {kind!r} is not one of text, json_schema, json_object", "text.format.type")
    elif fmt is not None:
        raise _bad("text.format must be an object", "text.format")
    return out, text.get("verbosity")


def to_chat(body: Mapping[str, Any], history: list[dict[str, Any]], stream: bool) -> dict[str, Any]:
    """The chat body for a Responses body; ``history``: the input items of the previous responses and their
    output, which come before this request's own ``input``."""
    for field, why in REFUSED.items():
        if body.get(field) not in (None, False):
            raise InvalidRequest(why, param=field, code="unsupported_parameter")
    chat: dict[str, Any] = {k: v for k, v in body.items() if k not in STEER_FIELDS}
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise _bad("instructions must be a string", "instructions")
        messages.append({"role": "system", "content": instructions})
    messages += to_messages(history, "previous_response_id")
    messages += to_messages(input_items(body))
    if not any(m["role"] != "system" for m in messages):
        raise InvalidRequest(
            "input is required (a string or a list of items)", param="input", code="missing_required_parameter"
        )
    chat["messages"] = messages
    if body.get("tools"):
        chat["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = _tool_choice(body["tool_choice"])
    response_format, verbosity = _response_format(body.get("text"))
    if response_format is not None:
        chat["response_format"] = response_format
    if verbosity is not None:
        chat["verbosity"] = verbosity
    if body.get("max_output_tokens") is not None:
        chat["max_completion_tokens"] = body["max_output_tokens"]
    if body.get("top_logprobs") is not None:
        chat["logprobs"] = True
        chat["top_logprobs"] = body["top_logprobs"]
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort") is not None:
        chat["reasoning_effort"] = reasoning["effort"]
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    else:
        chat.pop("stream", None)
    return chat


def usage(chat_usage: Any) -> dict[str, Any] | None:
    """A chat ``usage`` in the Responses API's terms."""
    if not isinstance(chat_usage, dict):
        return None
    inp = int(chat_usage.get("prompt_tokens") or 0)
    out = int(chat_usage.get("completion_tokens") or 0)
    cached = (chat_usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (chat_usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {
        "input_tokens": inp,
        "input_tokens_details": {"cached_tokens": int(cached), "cache_write_tokens": 0},
        "output_tokens": out,
        "output_tokens_details": {"reasoning_tokens": int(reasoning)},
        "total_tokens": int(chat_usage.get("total_tokens") or inp + out),
    }


def logprobs(chat_logprobs: Any) -> list[dict[str, Any]]:
    """A chat choice's ``logprobs.content`` as output_text logprobs."""
    content = chat_logprobs.get("content") if isinstance(chat_logprobs, dict) else None
    out = []
    for lp in content or ():
        if not isinstance(lp, dict):
            continue
        top = [
            {"token": t.get("token", ""), "logprob": t.get("logprob", 0.0), "bytes": t.get("bytes") or []}
            for t in lp.get("top_logprobs") or ()
            if isinstance(t, dict)
        ]
        out.append(
            {"token": lp.get("token", ""), "logprob": lp.get("logprob", 0.0), "bytes": lp.get("bytes") or [],
             "top_logprobs": top}
        )  # fmt: skip
    return out


def message_item(item_id: str, text: str | None, refusal: str | None, lps: list[dict[str, Any]],
                 status: str = "completed") -> dict[str, Any]:  # fmt: skip
    content: list[dict[str, Any]] = []
    if refusal:
        content.append({"type": "refusal", "refusal": refusal})
    if text or not refusal:
        content.append({"type": "output_text", "text": text or "", "annotations": [], "logprobs": lps})
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def call_item(item_id: str, call_id: str, name: str, arguments: str, status: str = "completed") -> dict[str, Any]:
    return {"id": item_id, "type": "function_call", "status": status, "call_id": call_id, "name": name,
            "arguments": arguments}  # fmt: skip


def output_of(choice: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The output items for one chat choice."""
    msg = choice.get("message") or {}
    items: list[dict[str, Any]] = []
    text, refusal = msg.get("content"), msg.get("refusal")
    calls = msg.get("tool_calls") or []
    if text or refusal or not calls:
        items.append(message_item(new_id("msg"), text, refusal, logprobs(choice.get("logprobs"))))
    for call in calls:
        fn = call.get("function") or {}
        items.append(
            call_item(new_id("fc"), str(call.get("id") or new_id("call")), str(fn.get("name") or ""),
                      str(fn.get("arguments") or ""))
        )  # fmt: skip
    return items


def status_of(finish_reason: Any) -> tuple[str, dict[str, Any] | None]:
    """(status, incomplete_details) for a chat ``finish_reason``."""
    if finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish_reason == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def response_object(
    body: Mapping[str, Any],
    response_id: str,
    created_at: int,
    model: str,
    *,
    status: str = "in_progress",
    output: list[dict[str, Any]] | None = None,
    usage_: dict[str, Any] | None = None,
    incomplete: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    store: bool = False,
) -> dict[str, Any]:
    """The ``response`` object: the request's settings echoed, with what was generated."""
    text: dict[str, Any] = body["text"] if isinstance(body.get("text"), dict) else {}
    reasoning = body.get("reasoning")
    metadata = body.get("metadata")
    out: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "completed_at": int(time.time()) if status == "completed" else None,
        "error": error,
        "incomplete_details": incomplete,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": model,
        "output": output or [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True) is not False,
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": reasoning if isinstance(reasoning, dict) else None,
        "store": store,
        "temperature": body.get("temperature") if body.get("temperature") is not None else 1.0,
        "text": {"format": text.get("format") or {"type": "text"}, **({"verbosity": text["verbosity"]}
                 if text.get("verbosity") is not None else {})},
        "tool_choice": body.get("tool_choice") if body.get("tool_choice") is not None else "auto",
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p") if body.get("top_p") is not None else 1.0,
        "truncation": body.get("truncation") or "disabled",
        "metadata": metadata if isinstance(metadata, dict) else {},
    }  # fmt: skip
    if usage_ is not None:  # not nullable in the API's schema: absent until known
        out["usage"] = usage_
    if body.get("user") is not None:
        out["user"] = body["user"]
    if body.get("safety_identifier") is not None:
        out["safety_identifier"] = body["safety_identifier"]
    if body.get("top_logprobs") is not None:
        out["top_logprobs"] = body["top_logprobs"]
    return out


def from_completion(
    body: Mapping[str, Any], completion: Mapping[str, Any], response_id: str, created_at: int, model: str, store: bool
) -> dict[str, Any]:
    """The finished ``response`` object for a ``chat.completion``."""
    choices = completion.get("choices") or [{}]
    choice = choices[0]
    status, incomplete = status_of(choice.get("finish_reason"))
    out = response_object(
        body, response_id, created_at, model, status=status, output=output_of(choice),
        usage_=usage(completion.get("usage")), incomplete=incomplete, store=store,
    )  # fmt: skip
    if "steer" in completion:
        out["steer"] = completion["steer"]
    return out


def error_code(status: int) -> str:
    """A ``ResponseErrorCode`` for an error steer raised (the spec's list is short)."""
    return "rate_limit_exceeded" if status == 429 else "invalid_prompt" if 400 <= status < 500 else "server_error"
