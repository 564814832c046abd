"""``GET /v1/responses/{id}/input_items``: the input items a stored response answered, as the OpenAI API
lists them (``ResponseItemList``: ``object: "list"``, ``data``, ``first_id``, ``last_id``, ``has_more``).

The items are those the model was given for the response: the input items and output items of the
responses it continued (``previous_response_id``) first, then the request's own ``input``. Each item
gets an id when it is stored (``msg_``, ``fc_``, ``fco_``, ``rs_``, ``item_`` and 32 hex digits; an id
the client gave is kept) so that a page's ``after`` names the same item on every call; a response
stored before items had ids gets ids made from the response's id and the item's place. Listed, each
item takes the shape of the API's ``ItemResource``: a message's string content becomes one
``input_text`` part (``output_text`` for an assistant's), and ``status`` is ``completed`` where the
client sent none.

Query parameters, as the API's: ``limit`` (1-100, default 20), ``order`` (``desc``, the default, newest
first; or ``asc``), ``after`` (an item id of this list: the page starts after it) and ``include``
(``include=a&include=b`` or ``include[]=``; any of the API's ``IncludeEnum`` values is accepted; steer
keeps the items as they were given, image URLs included, so none changes what is listed). A bad value
is a 400 ``invalid_value`` naming the parameter. A page with no item (``after`` the last one) has
``first_id`` and ``last_id`` ``""`` (the document requires strings).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from typing import Any

from starlette.datastructures import QueryParams

from steer.errors import InvalidRequest

MAX_LIMIT = 100
DEFAULT_LIMIT = 20
# the API's IncludeEnum (the OpenAPI document's components.schemas.IncludeEnum)
INCLUDE = frozenset({
    "file_search_call.results", "web_search_call.results", "web_search_call.action.sources",
    "message.input_image.image_url", "computer_call_output.output.image_url", "code_interpreter_call.outputs",
    "reasoning.encrypted_content", "message.output_text.logprobs",
})  # fmt: skip
PREFIXES = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs"}


def _prefix(item: Mapping[str, Any]) -> str:
    return PREFIXES.get(str(item.get("type", "message")), "item")


def with_ids(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``items`` (to be stored), each with an ``id``: the one it has, else a new one."""
    return [item if isinstance(item.get("id"), str) else {**item, "id": f"{_prefix(item)}_{uuid.uuid4().hex}"}
            for item in items]  # fmt: skip


def _kept_id(response_id: str, index: int, item: Mapping[str, Any]) -> str:
    """The id of an item stored without one: the same on every call, for the same response and place."""
    digest = hashlib.sha256(f"{response_id}:{index}".encode()).hexdigest()[:32]
    return f"{_prefix(item)}_{digest}"


def _part(part: Any, assistant: bool) -> Any:
    text = part if isinstance(part, str) else part.get("text") if isinstance(part, dict) else None
    if isinstance(part, dict) and part.get("type") not in (None, "text", "input_text", "output_text"):
        return part  # an image, a file or a refusal: as given
    if not isinstance(text, str):
        return part
    if assistant:
        extra = part if isinstance(part, dict) and part.get("type") == "output_text" else {}
        return {"annotations": [], "logprobs": [], **extra, "type": "output_text", "text": text}
    return {"type": "input_text", "text": text}


def as_resource(item: Mapping[str, Any], response_id: str, index: int) -> dict[str, Any]:
    """A stored input item in the shape of the API's ``ItemResource``."""
    out = dict(item)
    out.setdefault("type", "message")
    if not isinstance(out.get("id"), str):
        out["id"] = _kept_id(response_id, index, item)
    if out["type"] == "message":
        assistant = out.get("role") == "assistant"
        content = out.get("content")
        parts = [content] if isinstance(content, str) else content if isinstance(content, list) else []
        out["content"] = [_part(p, assistant) for p in parts]
    if out["type"] in ("message", "function_call", "function_call_output"):
        out.setdefault("status", "completed")
    return out


def _limit(query: QueryParams) -> int:
    raw = query.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be a whole number from 1 to {MAX_LIMIT}", param="limit", code="invalid_value")
    return int(raw)


def _order(query: QueryParams) -> str:
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("order must be 'asc' or 'desc'", param="order", code="invalid_value")
    return order


def _check_include(query: QueryParams) -> None:
    for value in [*query.getlist("include"), *query.getlist("include[]")]:
        if value not in INCLUDE:
            raise InvalidRequest(
                f"include {value[:80]!r} is not one of {', '.join(sorted(INCLUDE))}",
                param="include",
                code="invalid_value",
            )


def item_list(items: list[dict[str, Any]], response_id: str, query: QueryParams) -> dict[str, Any]:
    """One page of a stored response's input items (``ResponseItemList``), as ``query`` asks."""
    limit, order = _limit(query), _order(query)
    _check_include(query)
    listed = [as_resource(item, response_id, i) for i, item in enumerate(items)]
    if order == "desc":
        listed.reverse()
    after = query.get("after")
    if after is not None:
        at = next((i for i, item in enumerate(listed) if item["id"] == after), None)
        if at is None:
            raise InvalidRequest(
                f"after {after[:80]!r} is not the id of an input item of this response", param="after",
                code="invalid_value",
            )  # fmt: skip
        listed = listed[at + 1 :]
    page = listed[:limit]
    return {
        "object": "list",
        "data": page,
        # strings, as the document requires them: empty on an empty page (no item after ``after``)
        "first_id": page[0]["id"] if page else "",
        "last_id": page[-1]["id"] if page else "",
        "has_more": len(listed) > limit,
    }
