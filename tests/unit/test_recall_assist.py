"""Model-assisted recall's plumbing, with a fake chat model in process: what it asks, what it does
with the answer, and that a timeout, an error or an unusable answer falls back to the offline order."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from steer.methods.memory import assist

MEMORIES = ["I am allergic to peanuts.", "I love jazz.", "I hate flying."]


class FakeModel:
    def __init__(self, answer: str = "", delay_s: float = 0.0, fail: bool = False) -> None:
        self.answer, self.delay_s, self.fail = answer, delay_s, fail
        self.bodies: list[tuple[str, dict[str, Any]]] = []

    async def complete(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        self.bodies.append((name, body))
        await asyncio.sleep(self.delay_s)
        if self.fail:
            raise ConnectionError("upstream down")
        return {"choices": [{"message": {"role": "assistant", "content": self.answer}}]}


def test_rerank_puts_the_models_picks_first_and_keeps_the_rest_in_offline_order() -> None:
    model = FakeModel("3, 1")
    order, outcome = asyncio.run(assist.rerank(model, "m", "Plan my trip to Thailand", MEMORIES, 1.0))
    assert (order, outcome) == ([2, 0, 1], "used")
    name, body = model.bodies[0]
    prompt = body["messages"][0]["content"]
    assert name == "m" and "Plan my trip to Thailand" in prompt and "1. I am allergic to peanuts." in prompt
    assert body["temperature"] == 0


@pytest.mark.parametrize(
    ("model", "outcome"),
    [
        (FakeModel("2", delay_s=0.5), "timeout"),
        (FakeModel(fail=True), "error: ConnectionError"),
        (FakeModel("none of them"), "none"),
        (FakeModel("I cannot tell."), "unparsed answer"),
        (FakeModel("7, 12"), "unparsed answer"),  # numbers naming no memory
    ],
)
def test_rerank_falls_back_to_the_offline_order(model: FakeModel, outcome: str) -> None:
    order, got = asyncio.run(assist.rerank(model, "m", "q", MEMORIES, 0.1))
    assert (order, got) == ([0, 1, 2], outcome)


def test_expand_appends_one_bounded_line_to_the_question() -> None:
    model = FakeModel("diet,\n allergies, budget " + "x" * 1000)
    query, outcome = asyncio.run(assist.expand(model, "m", "Where should I eat in Rome?", 1.0))
    assert outcome == "used" and query.startswith("Where should I eat in Rome?\ndiet, allergies, budget")
    assert len(query.split("\n", 1)[1]) == assist.EXPAND_CHARS


@pytest.mark.parametrize(
    ("model", "outcome"),
    [
        (FakeModel("diet", delay_s=0.5), "timeout"),
        (FakeModel(fail=True), "error: ConnectionError"),
        (FakeModel(""), "empty answer"),
    ],
)
def test_expand_falls_back_to_the_question_alone(model: FakeModel, outcome: str) -> None:
    assert asyncio.run(assist.expand(model, "m", "Where should I eat?", 0.1)) == ("Where should I eat?", outcome)


def test_numbers_are_read_once_each_and_only_when_they_name_an_item() -> None:
    assert assist.parse_numbers("2, 2, 0, 4, 1", 3) == [1, 0]
