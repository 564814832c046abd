"""The rerank and candidates stages through the real HTTP path, against a fake upstream whose
choices differ (short, long, listed, informal), so the choice the user's weights make shows."""

from __future__ import annotations

import sqlite3
from typing import Any, ClassVar

import httpx
import orjson
import pytest
from helpers import TENANT_KEYS as KEYS
from helpers import bearer, wait_for
from rerank_upstream import CASUAL, JUDGE_MARK, LISTED, LONG, SHORT, TEXTS, create_fake_upstream  # noqa: F401

from steer.scorers import scorers


@pytest.fixture(scope="session")
def fake_upstream(stub):
    server = type(stub)(create_fake_upstream()).start()  # conftest's ServerThread (not imported: two conftests)
    yield server
    server.stop()


def models(upstream: Any) -> list[dict[str, Any]]:
    return [{"name": "fake", "api_base": upstream.url + "/v1", "retries": 0}]


NO_EMB = "options: {embeddings: false}"
ADMIN = bearer("t1-admin")
ALICE = bearer("alice-key")
BOB = bearer("bob-key")


def policy(rerank: str, candidates: int | None = None) -> str:
    text = "name: default\nextends: none\nstages:\n"
    if candidates:
        text += f"  candidates: {{n: {candidates}}}\n"
    return text + f"  rerank: {{{rerank}}}\n"


def chat(s, text="What should I pack?", headers=None, **body):
    return s.http.post(
        s.url + "/chat/completions",
        headers={**(headers or ADMIN), "X-Steer-Debug": "1"},
        json={"model": "fake", "messages": [{"role": "user", "content": text}], **body},
        timeout=60,
    )


def rerank_trace(r: httpx.Response) -> dict[str, Any]:
    return next(s for s in r.json()["steer"]["stages"] if s["name"] == "rerank")


def test_pinned_concise_weight_serves_the_short_answer_and_negative_serves_the_long_one(make_app, fake_upstream):
    short = make_app(
        policies={"default": policy(f"{NO_EMB}, pinned: {{concise: 5.0}}")}, models=models(fake_upstream), keys=KEYS
    )
    r = chat(short, n=4, user="alice")
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == SHORT
    long = make_app(
        policies={"default": policy(f"{NO_EMB}, pinned: {{concise: -5.0}}")}, models=models(fake_upstream), keys=KEYS
    )
    assert chat(long, n=4, user="alice").json()["choices"][0]["message"]["content"] == LONG


def test_client_n_gets_its_n_best_in_order_with_scores_and_totals_in_the_trace(make_app, fake_upstream):
    s = make_app(
        policies={"default": policy(f"{NO_EMB}, pinned: {{structured: 3.0, concise: 1.0}}")},
        models=models(fake_upstream),
        keys=KEYS,
    )
    r = chat(s, n=3, user="alice")
    body = r.json()
    trace = rerank_trace(r)
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert body["choices"][0]["message"]["content"] == LISTED
    assert body["id"] == "chatcmpl-" + body["steer"]["trace_id"]
    assert len(trace["scores"]) == 3 and {"concise", "structured", "formal"} <= set(trace["scores"][0]["attributes"])
    totals = [trace["scores"][i]["total"] for i in trace["returned"]]
    assert totals == sorted(totals, reverse=True) and trace["chosen"] == trace["returned"][0]


def test_candidates_stage_asks_the_upstream_for_more_and_the_client_gets_one(make_app, fake_upstream):
    s = make_app(
        policies={"default": policy(f"{NO_EMB}, pinned: {{concise: 5.0}}", candidates=4)},
        models=models(fake_upstream),
        keys=KEYS,
    )
    r = chat(s, user="alice")
    assert fake_upstream.app.state.calls[-1]["n"] == 4
    assert len(r.json()["choices"]) == 1 and r.json()["choices"][0]["message"]["content"] == SHORT
    assert rerank_trace(r)["candidates"] == 4


def test_streaming_client_gets_the_reranked_answer_replayed(make_app, fake_upstream):
    s = make_app(
        policies={"default": policy(f"{NO_EMB}, pinned: {{concise: 5.0}}", candidates=4)},
        models=models(fake_upstream),
        keys=KEYS,
    )
    with s.http.stream(
        "POST",
        s.url + "/chat/completions",
        headers=ADMIN,
        timeout=60,
        json={"model": "fake", "stream": True, "user": "alice", "messages": [{"role": "user", "content": "pack?"}]},
    ) as r:
        text = "".join(r.iter_text())
    deltas = [orjson.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    content = "".join((c["choices"][0]["delta"].get("content") or "") for c in deltas if c.get("choices"))
    assert content == SHORT


def test_ties_go_to_the_earlier_candidate(make_app, fake_upstream):
    s = make_app(
        policies={
            "default": policy(
                f"{NO_EMB}, pinned: {{concise: 0, structured: 0, code: 0, simple: 0, formal: 0, positive: 0, "
                "relevant: 0, adherent: 0}"
            )
        },
        models=models(fake_upstream),
        keys=KEYS,
    )
    r = chat(s, n=4, user="alice")
    assert rerank_trace(r)["returned"] == [0, 1, 2, 3]


@scorers.register("test_broken")
class Broken:
    attributes: ClassVar[tuple[str, ...]] = ("a",)
    ranges: ClassVar[dict[str, tuple[float, float]]] = {"a": (0.0, 1.0)}

    def __init__(self, services: Any, options: dict[str, Any]) -> None:
        pass

    async def score(self, conversation: Any, candidates: Any) -> list[list[float]]:
        raise RuntimeError("scorer exploded")


def test_a_failing_scorer_serves_the_first_candidate_and_the_trace_says_so(make_app, fake_upstream):
    s = make_app(policies={"default": policy("scorer: test_broken")}, models=models(fake_upstream), keys=KEYS)
    r = chat(s, n=2, user="alice")
    assert r.status_code == 200
    assert [c["message"]["content"] for c in r.json()["choices"]] == [LONG, SHORT]
    trace = rerank_trace(r)
    assert trace["status"] == "ok" and "scorer exploded" in trace["fallback"]


WARMED: list[dict[str, Any]] = []


@scorers.register("test_warm")
class Warm:
    attributes: ClassVar[tuple[str, ...]] = ("a",)
    ranges: ClassVar[dict[str, tuple[float, float]]] = {"a": (0.0, 1.0)}

    def __init__(self, services: Any, options: dict[str, Any]) -> None:
        self.options = options

    async def warmup(self) -> None:
        WARMED.append(self.options)

    async def score(self, conversation: Any, candidates: Any) -> list[list[float]]:
        return [[0.0] for _ in candidates]


def test_start_up_warms_the_scorer_the_policy_names_with_its_options(make_app, fake_upstream):
    WARMED.clear()
    s = make_app(
        policies={"default": policy("scorer: test_warm, options: {size: 3}")}, models=models(fake_upstream), keys=KEYS
    )
    assert wait_for(lambda: WARMED == [{"size": 3}], timeout=30)
    assert s.services.profiles._embedder_task is None  # the default features scorer was not loaded instead


def test_served_completions_are_recorded_per_user_and_anonymous_ones_are_not(make_app, fake_upstream):
    s = make_app(policies={"default": policy(NO_EMB)}, models=models(fake_upstream), keys=KEYS)
    r = chat(s, n=2, user="alice")
    anon = chat(s, n=2)
    assert rerank_trace(anon)["recorded"] is False and anon.json()["steer"]["policy"] == "anonymous"
    db = sqlite3.connect(s.settings.database)
    rows = db.execute("SELECT tenant, user, completion_id, returned FROM served_completions").fetchall()
    assert rows == [("t1", "alice", r.json()["id"], orjson.dumps(rerank_trace(r)["returned"]).decode())]


def test_relevance_with_real_embeddings_prefers_the_on_topic_answer(make_app, fake_upstream):
    s = make_app(
        policies={"default": policy("pinned: {relevant: 5.0, concise: 0.0}")}, models=models(fake_upstream), keys=KEYS
    )
    r = chat(s, "Which items should I put in my suitcase for a trip?", n=4, user="alice")
    trace = rerank_trace(r)
    rel = {i: sc["attributes"]["relevant"] for i, sc in enumerate(trace["scores"])}
    assert rel[2] > rel[3] and rel[1] > rel[3]  # packing lists beat the content-free casual reply
    assert trace["chosen"] == max(rel, key=lambda i: rel[i])


def test_judge_scorer_rates_through_the_router_and_drives_the_choice(make_app, fake_upstream):
    s = make_app(
        policies={
            "default": policy(
                "scorer: judge, options: {attributes: [helpful, concise, thorough, formal]}, "
                "pinned: {concise: 2.0, helpful: 0.0}"
            )
        },
        models=models(fake_upstream),
        keys=KEYS,
    )
    r = chat(s, n=4, user="alice")
    trace = rerank_trace(r)
    assert "fallback" not in trace, trace
    assert r.json()["choices"][0]["message"]["content"] == SHORT
    assert trace["scores"][0]["attributes"]["thorough"] == 100.0
