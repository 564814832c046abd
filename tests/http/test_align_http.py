"""The align stage through the real HTTP path: steer on loopback, the stub as target, a fake P-Aligner server
(marker format) or the stub's echo as aligner, the real embedding model."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from steer.methods.align.aligner import END_OPT, END_RAW, HEADER, START_OPT, START_RAW, shared_embedder

DEBUG = {"X-Steer-Debug": "1"}
QUESTION = "What are some highly-rated movies I can watch this weekend with my family?"
EXTRA = " Please suggest five, with the year, the age rating and one sentence on why each fits a family."
INVENTED = " I love spicy food, so suggest spicy dishes."


def fake_p_aligner() -> Starlette:
    """Rewrites like P-Aligner: the raw instruction plus a clarification; 'ocean' prompts drift away."""
    calls: list[str] = []

    async def chat(request: Request) -> Response:
        body = orjson.loads(await request.body())
        prompt = body["messages"][-1]["content"]
        raw = prompt.split(START_RAW + "\n", 1)[1].split("\n" + END_RAW, 1)[0]
        calls.append(raw)
        rewrite = "Compose a sonnet about volcanoes and lava." if "ocean" in raw else raw + EXTRA
        if "dinner" in raw:  # information augmentation: words the user never said, in the first person
            rewrite = raw + INVENTED
        text = f"The Optimized Prompt:\n\n{START_OPT}\n{rewrite}\n{END_OPT}"
        answer = {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        return Response(orjson.dumps(answer), media_type="application/json")

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    app.state.calls = calls
    return app


@pytest.fixture(scope="module")
def aligner_server(stub: Any) -> Iterator[Any]:
    shared_embedder(None)  # load the embedding model once, before any steer starts
    server = type(stub)(fake_p_aligner()).start()  # conftest's ServerThread: a real server on loopback
    yield server
    server.stop()


def make(make_app: Any, aligner: Any, extra_stages: str = "", **options: Any) -> Any:
    stage = {"model": "p-aligner", "timeout_s": 30, "rewrite_timeout_s": 10, **options}
    policy = "name: default\nextends: none\nstages:\n  align: " + orjson.dumps(stage).decode() + "\n" + extra_stages
    models = [
        {"name": "stub", "backend": "fake", "retries": 0},
        {"name": "p-aligner", "api_base": aligner.url + "/v1", "retries": 0},
        {
            "name": "echo",
            "model": "echo",
            "backend": "fake",
            "retries": 0,
            "extra_body": {"stub_echo": True},
        },
    ]
    return make_app(policies={"default": policy}, models=models)


def chat(s: Any, messages: list[dict[str, Any]], **body: Any) -> httpx.Response:
    r = s.http.post(
        s.url + "/chat/completions",
        headers=DEBUG,
        timeout=60,
        json={"model": "stub", "user": "ann", "messages": messages, **body},
    )
    assert r.status_code == 200, r.text
    return r


def align_record(r: httpx.Response) -> dict[str, Any]:
    return next(st for st in r.json()["steer"]["stages"] if st["name"] == "align")


def test_replace_mode_sends_the_rewrite_upstream_and_keeps_the_original_in_the_trace(make_app, aligner_server):
    s = make(make_app, aligner_server)
    r = chat(s, [{"role": "system", "content": "Be kind."}, {"role": "user", "content": QUESTION}])
    rec = align_record(r)
    assert (rec["status"], rec["decision"], rec["reason"]) == ("ok", "applied", "ok")
    assert rec["original"] == QUESTION and rec["rewrite"] == QUESTION + EXTRA and rec["similarity"] >= 0.6
    sent = s.calls[-1]["messages"]
    assert sent == [{"role": "system", "content": "Be kind."}, {"role": "user", "content": QUESTION + EXTRA}]
    answer = r.json()["choices"][0]["message"]["content"]
    assert START_OPT not in answer and HEADER not in answer  # the aligner's exchange never reaches the client


def test_guidance_mode_adds_the_rewrite_beside_the_unchanged_instruction(make_app, aligner_server):
    s = make(make_app, aligner_server, mode="guidance")
    rec = align_record(chat(s, [{"role": "user", "content": QUESTION}]))
    assert rec["decision"] == "applied" and rec["mode"] == "guidance"
    sent = s.calls[-1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user"] and sent[1]["content"] == QUESTION
    assert sent[0]["content"].endswith(QUESTION + EXTRA)


def test_a_drifting_rewrite_is_rejected_counted_and_the_original_sent(make_app, aligner_server):
    s = make(make_app, aligner_server)
    question = "Which beaches along the ocean coast are good for surfing lessons for beginners?"
    rec = align_record(chat(s, [{"role": "user", "content": question}]))
    assert (rec["decision"], rec["reason"], rec["original"]) == ("kept", "drift", question)
    assert rec["rewrite"] == "Compose a sonnet about volcanoes and lava." and rec["similarity"] < 0.6
    assert s.calls[-1]["messages"] == [{"role": "user", "content": question}]
    metrics = s.http.get(s.server.url + "/metrics").text
    assert 'steer_align_decisions_total{decision="kept",reason="drift"} 1.0' in metrics


def test_an_aligner_that_ignores_the_format_is_rejected_as_unparsed(make_app, aligner_server):
    s = make(make_app, aligner_server, model="echo")  # the stub echoes the aligner prompt back
    rec = align_record(chat(s, [{"role": "user", "content": QUESTION}]))
    assert (rec["decision"], rec["reason"]) == ("kept", "unparsed")
    sent = s.calls[-1]["messages"]
    assert sent == [{"role": "user", "content": QUESTION}]


def test_the_second_identical_request_is_answered_from_the_cache(make_app, aligner_server):
    s = make(make_app, aligner_server)
    question = "Can you suggest some fun casual games to play on my phone during short breaks?"
    before = aligner_server.app.state.calls.count(question)
    first = align_record(chat(s, [{"role": "user", "content": question}]))
    second = align_record(chat(s, [{"role": "user", "content": question}]))
    assert (first["cached"], second["cached"], second["reason"]) == (False, True, "cache")
    assert aligner_server.app.state.calls.count(question) == before + 1
    assert s.calls[-1]["messages"][0]["content"] == question + EXTRA
    rows = s.services.db.execute("SELECT tenant, user, model, outcome FROM align_cache")
    assert ("default", "ann", "p-aligner", "parsed") in rows
    metrics = s.http.get(s.server.url + "/metrics").text
    assert 'steer_align_decisions_total{decision="applied",reason="cache"} 1.0' in metrics


def test_forgetting_a_user_drops_their_cached_rewrites(make_app, aligner_server):
    s = make(make_app, aligner_server)
    question = "Could you recommend a few podcasts about the history of science for my commute?"
    chat(s, [{"role": "user", "content": question}])
    assert s.services.db.execute("SELECT count(*) FROM align_cache WHERE user = 'ann'")[0][0] == 1
    r = s.http.delete(s.url + "/users/ann")
    assert r.status_code == 200 and r.json()["stage_rows_removed"]["align"] == 1
    assert s.services.db.execute("SELECT count(*) FROM align_cache WHERE user = 'ann'")[0][0] == 0
    again = align_record(chat(s, [{"role": "user", "content": question}]))
    assert again["cached"] is False  # the in-memory cache was dropped too


def test_a_users_rewrites_are_in_their_export_only_and_go_when_they_are_forgotten(make_app, aligner_server):
    s = make(make_app, aligner_server)
    question = "What are a few good board games for a family evening with young children?"
    chat(s, [{"role": "user", "content": question}])
    exported = s.http.get(s.url + "/users/ann/export").json()["align_cache"]
    assert [r["outcome"] for r in exported] == ["parsed"]
    assert s.http.get(s.url + "/users/bob/export").json()["align_cache"] == []
    r = s.http.delete(s.url + "/users/ann")
    assert r.status_code == 200 and r.json()["stage_rows_removed"]["align"] == 1
    assert s.services.db.execute("SELECT count(*) FROM align_cache")[0][0] == 0


def test_tool_calls_and_tool_results_pass_untouched(make_app, aligner_server):
    s = make(make_app, aligner_server)
    messages = [
        {"role": "user", "content": "Look up the weather forecast in Lisbon for tomorrow morning."},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Lisbon"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": '{"forecast": "sunny", "high_c": 24}'},
    ]
    before = len(aligner_server.app.state.calls)
    rec = align_record(chat(s, messages))
    assert (rec["decision"], rec["reason"]) == ("skipped", "tool_result")
    assert s.calls[-1]["messages"] == messages
    assert len(aligner_server.app.state.calls) == before


def test_a_follow_up_and_non_text_content_are_left_alone(make_app, aligner_server):
    s = make(make_app, aligner_server)
    follow = [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": "Try Paddington."},
        {"role": "user", "content": "Is it suitable for very young kids though?"},
    ]
    assert align_record(chat(s, follow))["reason"] == "follow_up"
    assert s.calls[-1]["messages"] == follow
    image = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What breed is the dog in this photo?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ],
        }
    ]
    assert align_record(chat(s, image))["reason"] == "non_text"
    assert s.calls[-1]["messages"] == image


def test_a_streamed_request_is_rewritten_too(make_app, aligner_server):
    s = make(make_app, aligner_server)
    question = "Recommend three board games for a group of six adults who like strategy."
    r = chat(s, [{"role": "user", "content": question}], stream=True)
    assert r.content.endswith(b"data: [DONE]\n\n") and b'"decision":"applied"' in r.content
    assert s.calls[-1]["messages"] == [{"role": "user", "content": question + EXTRA}]


def test_remember_stores_the_users_own_words_not_the_aligners_rewrite(make_app, aligner_server):
    from helpers import wait_for

    s = make(make_app, aligner_server, extra_stages="  remember: {}\n")
    said = "I'm vegan, so I never eat meat or dairy. What should I cook for dinner tonight?"
    rec = align_record(chat(s, [{"role": "user", "content": said}]))
    assert rec["decision"] == "applied" and rec["rewrite"] == said + INVENTED
    assert s.calls[-1]["messages"][-1]["content"] == said + INVENTED  # the target got the rewrite

    def stored() -> list[str]:
        return [m["text"] for m in s.http.get(s.url + "/users/ann/memories", timeout=30).json()["data"]]

    assert wait_for(lambda: len(stored()) >= 1, timeout=60)
    texts = stored()
    assert any("vegan" in t.lower() for t in texts) and not any("spicy" in t.lower() for t in texts)
