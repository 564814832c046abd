"""``GET /v1/responses/{id}/input_items`` over real HTTP: a real steer on loopback, the stub upstream, the
official openai SDK and raw httpx; every list checked against the OpenAPI ``ResponseItemList`` schema.
The same (tenant, user) scoping and 404 as ``GET /v1/responses/{id}``."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from conformance.openapi import validate
from helpers import RESPONSES_TOOLS
from helpers import TENANT_KEYS as KEYS

ALICE = {"X-Steer-User": "alice"}
ITEMS = [
    {"role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]},
    {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
    {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
    {"role": "assistant", "content": "It is sunny."},
    {"role": "user", "content": "And tomorrow?"},
]


def sdk(url: str, key: str = "none") -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0)


def listed(url: str, response_id: str, key: str = "none", headers: dict[str, str] | None = None, **params: Any) -> Any:
    """The raw answer of the route, its JSON checked against the OpenAPI document when it is a 200."""
    r = httpx.get(
        f"{url}/responses/{response_id}/input_items",
        params=params,
        headers={"Authorization": f"Bearer {key}", **ALICE, **(headers or {})},
        timeout=60,
    )
    if r.status_code == 200:
        validate(r.json(), "ResponseItemList")
    return r


def test_the_items_a_stored_response_answered_newest_first_in_the_apis_shape(make_steer: Any) -> None:
    s = make_steer()
    client = sdk(s.url)
    r = client.responses.create(model="stub", input=ITEMS, tools=RESPONSES_TOOLS, user="alice", store=True)
    page = listed(s.url, r.id).json()
    assert page["object"] == "list" and page["has_more"] is False
    assert [i["type"] for i in page["data"]] == ["message", "message", "function_call_output", "function_call",
                                                  "message"]  # fmt: skip
    assert (page["first_id"], page["last_id"]) == (page["data"][0]["id"], page["data"][-1]["id"])
    asc = listed(s.url, r.id, order="asc").json()["data"]
    assert asc == page["data"][::-1]  # the same items, with the same ids, the other way round
    assert asc[0]["content"] == [{"type": "input_text", "text": "Weather in Paris?"}]
    assert asc[1]["call_id"] == "call_1" and asc[1]["id"].startswith("fc_") and asc[1]["status"] == "completed"
    assert asc[2]["output"] == "sunny" and asc[2]["id"].startswith("fco_")
    assert asc[3]["role"] == "assistant" and asc[3]["content"][0]["type"] == "output_text"
    assert asc[4]["content"] == [{"type": "input_text", "text": "And tomorrow?"}]
    assert len({i["id"] for i in asc}) == 5 and all(i["id"].startswith(("msg_", "fc_", "fco_")) for i in asc)
    # the official SDK reads it
    items = client.responses.input_items.list(r.id, order="asc", extra_headers=ALICE)
    assert [i.id for i in items.data] == [i["id"] for i in asc]


def test_a_continued_response_lists_the_earlier_turns_first(make_steer: Any) -> None:
    s = make_steer()
    client = sdk(s.url)
    first = client.responses.create(model="stub", input="My name is Ada.", user="alice", store=True)
    second = client.responses.create(
        model="stub", input="What is my name?", user="alice", previous_response_id=first.id, store=True
    )
    first_items = listed(s.url, first.id, order="asc").json()["data"]
    data = listed(s.url, second.id, order="asc").json()["data"]
    assert [(i["role"], i["content"][0]["text"]) for i in data] == [
        ("user", "My name is Ada."), ("assistant", first.output_text), ("user", "What is my name?"),
    ]  # fmt: skip
    assert data[0]["id"] == first_items[0]["id"]  # an item keeps its id down the chain
    assert data[1]["id"] == first.output[0].id  # the earlier answer's output message, as it was


def test_pages_follow_after_until_has_more_is_false(make_steer: Any) -> None:
    s = make_steer()
    client = sdk(s.url)
    texts = [f"Message {n}." for n in range(7)]
    r = client.responses.create(
        model="stub", input=[{"role": "user", "content": t} for t in texts], user="alice", store=True
    )
    seen: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3, "order": "asc", **({"after": after} if after else {})}
        page = listed(s.url, r.id, **params).json()
        pages += 1
        seen += [i["content"][0]["text"] for i in page["data"]]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen == texts and pages == 3
    # the SDK's auto-pagination walks the same pages (newest first by default)
    walked = [i.content[0].text for i in client.responses.input_items.list(r.id, limit=2, extra_headers=ALICE)]
    assert walked == texts[::-1]
    assert len(listed(s.url, r.id).json()["data"]) == 7  # default limit 20
    last = listed(s.url, r.id, order="asc").json()["last_id"]
    empty = listed(s.url, r.id, order="asc", after=last).json()
    assert empty == {"object": "list", "data": [], "first_id": "", "last_id": "", "has_more": False}


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"order": "newest"}, "order"),
        ({"after": "msg_not_here"}, "after"),
        ({"include": "bogus.field"}, "include"),
        ({"include[]": "bogus.field"}, "include"),
    ],
)
def test_bad_parameters_are_a_400_naming_the_parameter(make_steer: Any, params: dict[str, str], param: str) -> None:
    s = make_steer()
    r = sdk(s.url).responses.create(model="stub", input="hi", user="alice", store=True)
    bad = listed(s.url, r.id, **params)
    assert bad.status_code == 400, bad.text
    validate(bad.json(), "ErrorResponse")
    assert bad.json()["error"]["param"] == param and bad.json()["error"]["code"] == "invalid_value"


def test_include_takes_the_apis_values_and_lists_the_same_items(make_steer: Any) -> None:
    s = make_steer()
    r = sdk(s.url).responses.create(model="stub", input="hi", user="alice", store=True)
    plain = listed(s.url, r.id).json()
    for key in ("include", "include[]"):
        with_include = listed(s.url, r.id, **{key: ["message.input_image.image_url", "reasoning.encrypted_content"]})
        assert with_include.status_code == 200 and with_include.json() == plain


def test_another_users_another_tenants_and_unknown_ids_are_the_same_404_as_get(make_steer: Any) -> None:
    s = make_steer(keys=KEYS)
    mine = sdk(s.url, "alice-key").responses.create(model="stub", input="secret plan", store=True)
    assert listed(s.url, mine.id, "alice-key").status_code == 200
    assert listed(s.url, mine.id, "t1-admin").status_code == 200  # the admin, for alice

    def both(key: str, response_id: str, headers: dict[str, str]) -> tuple[httpx.Response, httpx.Response]:
        h = {"Authorization": f"Bearer {key}", **headers}
        got = httpx.get(f"{s.url}/responses/{response_id}", headers=h, timeout=60)
        items = httpx.get(f"{s.url}/responses/{response_id}/input_items", headers=h, timeout=60)
        return got, items

    cases = [
        ("bob-key", mine.id, {}),  # another user of the tenant
        ("t2-admin", mine.id, ALICE),  # another tenant, naming the same user id
        ("t1-admin", mine.id, {}),  # anonymous is not alice
        ("alice-key", "resp_" + "0" * 32, {}),  # unknown
    ]
    for key, response_id, headers in cases:
        got, items = both(key, response_id, headers)
        assert got.status_code == items.status_code == 404, (key, items.text)
        validate(items.json(), "ErrorResponse")
        assert items.json() == got.json() and items.json()["error"]["code"] == "response_not_found"
    with pytest.raises(openai.NotFoundError):
        sdk(s.url, "bob-key").responses.input_items.list(mine.id)
    with pytest.raises(openai.PermissionDeniedError):  # a scoped key cannot claim to be alice
        sdk(s.url, "bob-key").responses.input_items.list(mine.id, extra_headers=ALICE)
    sdk(s.url, "alice-key").responses.delete(mine.id)
    got, items = both("alice-key", mine.id, {})
    assert got.status_code == items.status_code == 404 and items.json() == got.json()


def test_a_response_not_stored_has_no_input_items(make_steer: Any) -> None:
    s = make_steer()
    r = sdk(s.url).responses.create(model="stub", input="hi", user="alice")
    gone = listed(s.url, r.id)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "response_not_found"
