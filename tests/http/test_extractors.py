"""The remember stage's extractor backends: the model's JSON answer is checked, and the policy picks
the backend (a real steer on loopback, a fake JSON-answering model as upstream)."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from steer.errors import ModelNotFound
from steer.methods.memory.extractors import (
    SYSTEM_PROMPT,
    ChatModelExtractor,
    ExtractionFailed,
    RuleTurnExtractor,
    build_extractor,
    parse_preferences,
)

TURNS = [
    {"role": "assistant", "content": "1. Ramen 2. A steakhouse 3. A salad bar"},
    {"role": "user", "content": "These days I eat no meat at all, so the salad bar it is."},
]


def test_a_fenced_json_answer_becomes_checked_items() -> None:
    answer = (
        "Sure!\n```json\n"
        + json.dumps(
            {
                "preferences": [
                    {"turn": 1, "text": "I  do not eat meat.", "subject": "meat", "polarity": "negative"},
                    {"turn": 1, "text": "I chose the salad bar.", "kind": "implicit", "polarity": "positive"},
                ]
            }
        )
        + "\n```"
    )
    items = parse_preferences(answer, TURNS)
    assert [(i.text, i.kind, i.turn, i.polarity, i.subject) for i in items] == [
        ("I do not eat meat.", "explicit", 1, "negative", "meat"),
        ("I chose the salad bar.", "implicit", 1, "positive", "I chose the salad bar."),
    ]


def test_items_pointing_at_assistant_turns_or_with_unknown_fields_are_repaired() -> None:
    answer = json.dumps(
        [{"turn": 0, "text": "I hate horror movies.", "polarity": "furious", "kind": "guess"}, {"text": ""}, 7]
    )
    (item,) = parse_preferences(answer, TURNS)
    assert item.turn == 1  # turn 0 is the assistant's: the item is charged to the user's turn
    assert item.polarity == "negative" and item.kind == "explicit"


def test_duplicates_are_dropped_and_items_capped() -> None:
    prefs = [{"text": f"I like topic {i}."} for i in range(10)] + [{"text": "I like topic 0."}]
    items = parse_preferences(json.dumps({"preferences": prefs}), TURNS, max_items=3)
    assert [i.text for i in items] == ["I like topic 0.", "I like topic 1.", "I like topic 2."]


@pytest.mark.parametrize("answer", ["no preferences here", '{"preferences": "none"}', ""])
def test_an_answer_without_a_json_list_raises_extraction_failed(answer: str) -> None:
    with pytest.raises(ExtractionFailed):
        parse_preferences(answer, TURNS)


class FakeRouter:
    def __init__(self, content: str) -> None:
        self.content = content
        self.bodies: list[tuple[str, dict[str, Any]]] = []

    def config(self, name: str) -> None:
        if name != "judge":
            raise ModelNotFound(f"the model {name!r} does not exist", param="model")

    async def complete(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        self.bodies.append((name, body))
        return {"choices": [{"message": {"role": "assistant", "content": self.content}}]}


async def test_the_model_is_asked_for_json_with_the_turns_as_data() -> None:
    router = FakeRouter('{"preferences": [{"turn": 1, "text": "I am vegetarian."}]}')
    extractor = build_extractor("judge", router)  # type: ignore[arg-type]
    assert isinstance(extractor, ChatModelExtractor)
    items = await extractor.extract(TURNS)
    assert [i.text for i in items] == ["I am vegetarian."]
    name, body = router.bodies[0]
    assert name == "judge" and body["temperature"] == 0 and body["response_format"] == {"type": "json_object"}
    assert body["messages"][0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert json.loads(body["messages"][1]["content"])["conversation"][1]["content"] == TURNS[1]["content"]


async def test_no_user_text_means_no_model_call() -> None:
    router = FakeRouter("{}")
    assert await ChatModelExtractor(router, "judge").extract([{"role": "assistant", "content": "hi"}]) == []  # type: ignore[arg-type]
    assert router.bodies == []


def test_rules_by_name_and_an_unknown_model_is_refused() -> None:
    router = FakeRouter("{}")
    assert isinstance(build_extractor("rules", router), RuleTurnExtractor)  # type: ignore[arg-type]
    with pytest.raises(ModelNotFound):
        build_extractor("no-such-model", router)  # type: ignore[arg-type]


# -- through the real HTTP path ------------------------------------------------------------------


def json_model() -> Starlette:
    """An OpenAI-compatible model that answers the extractor's prompt with JSON, anything else in prose."""

    async def chat(request: Request) -> Response:
        body = orjson.loads(await request.body())
        system = body["messages"][0]["content"] if body["messages"][0]["role"] == "system" else ""
        if system == SYSTEM_PROMPT:
            convo = json.loads(body["messages"][1]["content"])["conversation"]
            said = convo[-1]["content"].lower()
            prefs = [{"turn": len(convo) - 1, "text": "I follow a ketogenic diet.", "subject": "diet"}]
            content = json.dumps({"preferences": prefs if "keto" in said else []})
        else:
            content = "Here is an answer."
        return Response(
            orjson.dumps(
                {
                    "id": "x",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body.get("model", "m"),
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
            ),
            media_type="application/json",
        )

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


def wait_for(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


@pytest.fixture
def judge(stub: Any) -> Any:
    server = type(stub)(json_model()).start()  # the conftest's uvicorn-in-a-thread server class
    yield server
    server.stop()


def _policy(extractor: str, fallback: str = "rules") -> str:
    return (
        "name: default\nextends: none\nstages:\n"
        f"  remember: {{extractor: {extractor}, fallback: {fallback}}}\n"
    )


def _memories(s: Any, user: str) -> list[str]:
    r = httpx.get(f"{s.url}/users/{user}/memories", timeout=30)
    return [m["text"] for m in r.json()["data"]]


def _chat(s: Any, user: str, text: str) -> None:
    r = httpx.post(
        s.url + "/chat/completions",
        json={"model": "stub", "user": user, "messages": [{"role": "user", "content": text}]},
        timeout=60,
    )
    assert r.status_code == 200


def test_a_policy_naming_a_model_stores_what_the_model_extracted(make_steer, stub, judge) -> None:
    models = [
        {"name": "stub", "api_base": stub.url + "/v1", "retries": 0},
        {"name": "judge", "api_base": judge.url + "/v1", "retries": 0},
    ]
    s = make_steer(policies={"default": _policy("judge")}, models=models)
    _chat(s, "kim", "Lately it's keto for me, nothing with carbs.")
    assert wait_for(lambda: _memories(s, "kim") == ["I follow a ketogenic diet."], timeout=60)


def test_a_model_answering_no_json_falls_back_to_the_rules_or_stores_nothing(make_steer, stub) -> None:
    models = [{"name": "stub", "api_base": stub.url + "/v1", "retries": 0}]
    s = make_steer(policies={"default": _policy("stub")}, models=models)
    _chat(s, "lee", "I'm allergic to shellfish.")  # the stub answers "tok0 tok1 ...": no JSON
    assert wait_for(lambda: _memories(s, "lee") == ["I'm allergic to shellfish."], timeout=60)

    strict = make_steer(policies={"default": _policy("stub", "none")}, models=models)
    _chat(strict, "lee", "I'm allergic to shellfish.")
    _chat(strict, "lee", "What should I cook tonight?")
    tasks = strict.services.background
    assert wait_for(lambda: not tasks, timeout=30)
    assert _memories(strict, "lee") == []
