"""The ``sample`` (RPS) stage through the real HTTP path, with ``rerank`` choosing, streaming and not.

The upstream here is a real HTTP server on loopback that answers each request with the direction
text it was conditioned on (the system message just before the last user turn), so each
candidate says which direction it was drawn from; a 2-attribute test scorer reads the weights
back from the answer. Faults are chosen per direction (``test_faults`` in the body, forwarded
unchanged by steer): ``500`` or ``slow`` for the candidates whose direction text contains a key.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import httpx
import orjson
import pytest
from helpers import ServerThread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from steer.methods.rps import geometry as rps
from steer.scorers import Conversation, scorers

DEBUG = {"X-Steer-Debug": "1"}
QUESTION = [{"role": "system", "content": "client rules"}, {"role": "user", "content": "plan my trip"}]
DPA = re.compile(r"helpfulness\*(-?\d+) \+ verbosity\*(-?\d+)")


@scorers.register("test_hv")
class HelpVerbosity:
    """Reads ``helpfulness*h + verbosity*w`` back from an answer: a candidate scores its own direction."""

    attributes = ("helpfulness", "verbosity")
    ranges = {"helpfulness": (-1.0, 1.0), "verbosity": (-1.0, 1.0)}

    def __init__(self, services: Any, options: dict[str, Any]) -> None:
        pass

    async def score(self, conversation: Conversation, candidates: Sequence[str]) -> list[list[float]]:
        rows = []
        for text in candidates:
            m = DPA.search(text)
            rows.append([int(m.group(1)) / 100, int(m.group(2)) / 100] if m else [0.0, 0.0])
        return rows


def direction_upstream() -> Starlette:
    calls: list[dict[str, Any]] = []

    async def chat(request: Request) -> Response:
        body = orjson.loads(await request.body())
        calls.append(body)
        msgs = body["messages"]
        text = msgs[-2]["content"] if len(msgs) > 1 and msgs[-2]["role"] == "system" else "plain"
        for key, fault in (body.get("test_faults") or {}).items():
            if key in text and fault == "500":
                return Response(b'{"error":{"message":"direction failure"}}', status_code=500)
            if key in text and fault == "slow":
                await asyncio.sleep(2.0)
        n = int(body.get("n") or 1)
        usage = {"prompt_tokens": 10, "completion_tokens": 5 * n, "total_tokens": 10 + 5 * n}
        base = {"id": f"up-{len(calls)}", "created": 1, "model": "dir"}
        if body.get("stream"):

            async def events() -> AsyncIterator[bytes]:
                chunk = {**base, "object": "chat.completion.chunk"}
                for delta in ({"role": "assistant", "content": ""}, {"content": text}):
                    yield b"data: " + orjson.dumps({**chunk, "choices": [{"index": 0, "delta": delta}]}) + b"\n\n"
                end = {"index": 0, "delta": {}, "finish_reason": "stop"}
                yield b"data: " + orjson.dumps({**chunk, "choices": [end]}) + b"\n\n"
                yield b"data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")
        choices = [
            {"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"} for i in range(n)
        ]
        out = {**base, "object": "chat.completion", "choices": choices, "usage": usage}
        return Response(orjson.dumps(out), media_type="application/json")

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    app.state.calls = calls
    return app


@pytest.fixture(scope="module")
def upstream() -> Iterator[ServerThread]:
    server = ServerThread(direction_upstream()).start()
    yield server
    server.stop()


def rps_policy(sample: str = "", rerank: bool = True) -> str:
    text = (
        "name: default\nextends: none\nstages:\n"
        f"  sample: {{conditioning: dpa, candidate_timeout_s: 1, timeout_s: 10{sample}}}\n"
    )
    if rerank:  # the user's direction: 45 degrees (equal weights), off the paper's grid
        text += "  rerank: {scorer: test_hv, weights: {helpfulness: 1.0, verbosity: 1.0}, record: false}\n"
    return text


def start(make_app: Any, upstream: ServerThread, policy: str) -> Any:
    models = [{"name": "dir", "api_base": upstream.url + "/v1", "retries": 0}]
    return make_app(policies={"default": policy}, models=models)


def post(s: Any, **body: Any) -> httpx.Response:
    payload = {"model": "dir", "messages": QUESTION, "user": "alice", **body}
    return s.http.post(s.url + "/chat/completions", json=payload, headers=DEBUG, timeout=30)


def stage(trace: dict[str, Any], name: str) -> dict[str, Any]:
    return next(st for st in trace["stages"] if st["name"] == name)


def new_calls(upstream: ServerThread, before: int) -> list[dict[str, Any]]:
    return list(upstream.app.state.calls[before:])


def test_rps_draws_the_five_grid_neighbours_in_parallel_and_rerank_serves_the_best_on_the_user_direction(
    make_app, upstream
):
    s = start(make_app, upstream, rps_policy())
    before = len(upstream.app.state.calls)
    r = post(s)
    assert r.status_code == 200, r.text
    body = r.json()
    sample = stage(body["steer"], "sample")
    assert sample["status"] == "ok" and sample["target_deg"] == 45.0 and sample["requests"] == 5
    assert [c["deg"] for c in sample["candidates"]] == [40.0, 35.0, 30.0, 25.0, 20.0]
    calls = new_calls(upstream, before)
    texts = sorted(c["messages"][-2]["content"] for c in calls)
    hv = ("helpfulness", "verbosity")
    assert texts == sorted(rps.dpa_text(hv, rps.from_angle(a)) for a in (40, 35, 30, 25, 20))
    assert all(c["temperature"] == 0.7 and c["top_p"] == 0.9 and "stream" not in c for c in calls)
    # the candidate drawn at 40 degrees projects highest on the user's 45-degree direction
    assert body["choices"][0]["message"]["content"].endswith("helpfulness*77 + verbosity*64")
    assert stage(body["steer"], "rerank")["chosen"] == 0
    # usage adds up over the five candidates
    assert body["usage"] == {"prompt_tokens": 50, "completion_tokens": 25, "total_tokens": 75}
    assert all(c["usage"]["completion_tokens"] == 5 for c in sample["candidates"])


def test_candidate_requests_share_a_byte_identical_prefix_before_the_direction(make_app, upstream):
    s = start(make_app, upstream, rps_policy())
    before = len(upstream.app.state.calls)
    assert post(s, temperature=1.3, max_tokens=300).status_code == 200
    calls = new_calls(upstream, before)
    assert len(calls) == 5
    stripped = {orjson.dumps({**c, "messages": c["messages"][:-2] + c["messages"][-1:]}) for c in calls}
    assert len(stripped) == 1  # everything but the direction message is the same, byte for byte
    assert all(c["messages"][:-2] == QUESTION[:-1] for c in calls)


def test_one_failing_and_one_timing_out_candidate_leave_three_to_choose_from(make_app, upstream):
    s = start(make_app, upstream, rps_policy())
    # fail the 40-degree candidate (the best one) and stall the 30-degree one past its timeout
    r = post(s, test_faults={"helpfulness*77": "500", "helpfulness*87": "slow"})
    assert r.status_code == 200, r.text
    body = r.json()
    sample = stage(body["steer"], "sample")
    statuses = {c["deg"]: c["status"] for c in sample["candidates"]}
    assert statuses == {40.0: "failed", 35.0: "ok", 30.0: "timeout", 25.0: "ok", 20.0: "ok"}
    assert sample["failed"] == 1 and sample["timed_out"] == 1
    assert body["choices"][0]["message"]["content"].endswith("helpfulness*82 + verbosity*57")  # 35 degrees
    assert body["usage"]["completion_tokens"] == 15


def test_too_few_candidates_fail_the_stage_and_the_request_falls_back_to_one_completion(make_app, upstream):
    s = start(make_app, upstream, rps_policy(", min_candidates: 5"))
    before = len(upstream.app.state.calls)
    r = post(s, test_faults={"helpfulness*77": "500"})
    assert r.status_code == 200, r.text
    sample = stage(r.json()["steer"], "sample")
    assert sample["status"] == "failed" and "only 4 of 5 candidates" in sample["error"]
    calls = new_calls(upstream, before)
    assert len(calls) == 6 and calls[-1]["messages"] == QUESTION  # the plain default generation


def test_on_error_fail_turns_too_few_candidates_into_an_openai_error(make_app, upstream):
    s = start(make_app, upstream, rps_policy(", min_candidates: 5, on_error: fail"))
    r = post(s, test_faults={"helpfulness*77": "500"})
    err = r.json()["error"]
    assert r.status_code == 500 and err["code"] == "stage_failed" and "only 4 of 5" in err["message"]


def test_best_of_n_mode_draws_every_sample_from_the_target_in_one_request_with_n(make_app, upstream):
    s = start(make_app, upstream, rps_policy(", mode: best_of_n"))
    before = len(upstream.app.state.calls)
    body = post(s).json()
    [call] = new_calls(upstream, before)
    assert call["n"] == 5 and call["messages"][-2]["content"].endswith("helpfulness*71 + verbosity*71")
    sample = stage(body["steer"], "sample")
    assert [c["deg"] for c in sample["candidates"]] == [45.0] * 5
    assert body["usage"] == {"prompt_tokens": 10, "completion_tokens": 25, "total_tokens": 35}


def test_token_budget_caps_every_candidate_at_an_equal_share(make_app, upstream):
    s = start(make_app, upstream, rps_policy(", max_tokens: 400, max_total_tokens: 1000"))
    before = len(upstream.app.state.calls)
    body = post(s, max_tokens=4000).json()
    assert stage(body["steer"], "sample")["max_tokens"] == 200
    assert [c["max_tokens"] for c in new_calls(upstream, before)] == [200] * 5


def test_streamed_rps_answer_is_the_chosen_candidate_replayed_in_chunks(make_app, upstream):
    s = start(make_app, upstream, rps_policy())
    before = len(upstream.app.state.calls)
    payload = {
        "model": "dir",
        "messages": QUESTION,
        "user": "alice",
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with s.http.stream("POST", s.url + "/chat/completions", json=payload, headers=DEBUG, timeout=30) as r:
        assert r.status_code == 200
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text.endswith("helpfulness*77 + verbosity*64")
    assert [c["usage"]["completion_tokens"] for c in chunks if c.get("usage")] == [25]
    trace = chunks[-1]["steer"]
    assert stage(trace, "sample")["requests"] == 5 and stage(trace, "rerank")["chosen"] == 0
    assert len(new_calls(upstream, before)) == 5  # candidates are drawn whole, never streamed upstream


def test_stream_first_conditions_one_stream_on_the_target_direction_without_sampling(make_app, upstream):
    s = start(make_app, upstream, rps_policy(", stream_first: true", rerank=False))
    before = len(upstream.app.state.calls)
    payload = {"model": "dir", "messages": QUESTION, "user": "alice", "stream": True}
    with s.http.stream("POST", s.url + "/chat/completions", json=payload, headers=DEBUG, timeout=30) as r:
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    [call] = new_calls(upstream, before)
    assert call["stream"] is True  # the upstream's own stream, forwarded
    chunks = [orjson.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert "maximize weighted rating" in text  # the policy's seeds give an equal-weight direction here
    sample = stage(chunks[-1]["steer"], "sample")
    assert sample["stream_first"] is True and "requests" not in sample
    # a non-streamed request under the same policy is still sampled
    before = len(upstream.app.state.calls)
    post(s)
    assert len(new_calls(upstream, before)) == 5


def test_client_n_above_one_and_tools_skip_sampling(make_app, upstream):
    s = start(make_app, upstream, rps_policy())
    before = len(upstream.app.state.calls)
    body = post(s, n=2).json()
    assert "n > 1" in stage(body["steer"], "sample")["skipped"]
    assert len(new_calls(upstream, before)) == 1


def test_a_policy_with_a_timeout_below_its_candidate_timeout_is_refused(make_app, upstream):
    with pytest.raises(Exception, match="candidate_timeout_s"):
        start(make_app, upstream, rps_policy(", candidate_timeout_s: 20"))


# --- steer eval rps, on the same direction-echoing upstream ------------------------------------


def test_eval_compares_rps_and_best_of_n_with_the_same_budget_per_angle(upstream):
    from steer.evals.rps import evaluate
    from steer.server.metrics import Metrics
    from steer.settings import load_settings
    from steer.upstreams.router import Router

    scorer = HelpVerbosity(None, {})
    cfg = {
        "k": 5, "t_max": 30.0, "conditioning": "dpa", "placement": "before_last_user", "temperature": 0.7,
        "top_p": 0.9, "max_tokens": 32, "timeout": 5.0, "use_n": True, "raw": True,
    }  # fmt: skip

    async def go() -> dict[str, Any]:
        settings = load_settings(None, models=[{"name": "dir", "api_base": upstream.url + "/v1", "retries": 0}])
        router = Router(settings, Metrics())
        try:
            return await evaluate(
                lambda b: router.complete("dir", b), scorer, ["q1", "q2"], "dir",
                ("helpfulness", "verbosity"), [10.0, 45.0], cfg, progress=lambda _: None,
            )  # fmt: skip
        finally:
            await router.aclose()

    result = asyncio.run(go())

    def best(angle: float, drawn_at: list[float]) -> float:
        """The best projection on the target among answers that state their own (integer) weights."""
        v = rps.from_angle(angle)
        ints = [rps.integer_weights(rps.from_angle(a)) for a in drawn_at]
        return max(v[0] * h / 100 + v[1] * w / 100 for h, w in ints)

    at10, at45 = result["angles"]["10.0"], result["angles"]["45.0"]
    assert at10["prompts"] == 2 == at45["prompts"]
    assert at10["rps_mean"] == pytest.approx(best(10, [10, 5, 15, 0, 20]), abs=1e-6)
    assert at10["best_of_n_mean"] == pytest.approx(best(10, [10]), abs=1e-6)
    # the 5-degree answer (100, 9) out-projects the target's own (98, 17) once rounded: RPS wins
    assert at10["rps_win_share"] == 1.0
    # 45 degrees: RPS's nearest draw is at 40; this scorer rewards exact faithfulness, so best-of-N wins
    assert at45["rps_mean"] == pytest.approx(best(45, [40, 35, 30, 25, 20]), abs=1e-6)
    assert at45["best_of_n_mean"] == pytest.approx(best(45, [45]), abs=1e-6)
    assert at45["rps_win_share"] == 0.0
    assert all(p["rps_candidates"] == 5 and p["best_of_n_candidates"] == 5 for p in at45["per_prompt"])


def test_eval_prompts_are_read_in_place_round_robin_over_files(tmp_path):
    from steer.evals.rps import load_prompts

    (tmp_path / "a.json").write_text(orjson.dumps([{"question": "a1"}, {"question": "a2"}]).decode())
    (tmp_path / "b.json").write_text(orjson.dumps([{"question": "b1"}, {"prompt": "b2"}]).decode())
    assert load_prompts(str(tmp_path), 3) == ["a1", "b1", "a2"]
    text = tmp_path / "p.txt"
    text.write_text("first\n\nsecond\n")
    assert load_prompts(str(text), None) == ["first", "second"]
    with pytest.raises(FileNotFoundError):
        load_prompts(str(tmp_path / "missing"), None)
