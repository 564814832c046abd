"""Stages, their failure rules, policies and their reload, through the real HTTP path."""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

from helpers import wait_for

from steer.pipeline.stage import Context, StageConfig, stages

MSG = [{"role": "system", "content": "client rules"}, {"role": "user", "content": "hi"}]
DEBUG = {"X-Steer-Debug": "1"}


class _TestStage:
    phase: ClassVar[str] = "request"
    needs_user: ClassVar[bool] = False
    Config: ClassVar[type[StageConfig]] = StageConfig
    runs: ClassVar[list[str]] = []

    def __init__(self, services: Any) -> None:
        pass


@stages.register("test_explode")
class Explode(_TestStage):
    name: ClassVar[str] = "test_explode"

    async def run(self, ctx: Context, config: StageConfig) -> dict[str, Any]:
        ctx.request["messages"] = [{"role": "user", "content": "half-edited"}]
        raise RuntimeError("boom")


@stages.register("test_slow")
class Slow(_TestStage):
    name: ClassVar[str] = "test_slow"

    async def run(self, ctx: Context, config: StageConfig) -> dict[str, Any]:
        await asyncio.sleep(30)
        return {}


@stages.register("test_personal")
class Personal(_TestStage):
    name: ClassVar[str] = "test_personal"
    needs_user: ClassVar[bool] = True

    async def run(self, ctx: Context, config: StageConfig) -> dict[str, Any]:
        Personal.runs.append(ctx.user or "")
        return {"saw": ctx.user}


@stages.register("test_stuck_background")
class StuckBackground(_TestStage):
    name: ClassVar[str] = "test_stuck_background"
    phase: ClassVar[str] = "background"

    async def run(self, ctx: Context, config: StageConfig) -> dict[str, Any]:
        await asyncio.sleep(30)
        return {}


def chat(s, headers=None, **body):
    return s.http.post(
        s.url + "/chat/completions",
        json={"model": "stub", "messages": MSG, **body},
        headers=headers or {},
        timeout=30,
    )


def policy(name: str, stages_yaml: str, match: str = "") -> str:
    return f"name: {name}\nextends: none\n{match}stages:\n{stages_yaml}"


def test_passthrough_trace_shows_no_stages_and_the_fast_path(make_app):
    s = make_app()
    r = chat(s, DEBUG, user="u1")
    trace = r.json()["steer"]
    assert trace["stages"] == [] and trace["policy"] == "default" and trace["model"] == "stub"
    assert trace["total_ms"] > 0


def test_system_prompt_stage_inserts_after_client_system_messages(make_app):
    s = make_app(policies={"default": policy("default", "  system_prompt: {text: Be brief.}\n")})
    r = chat(s, DEBUG, user="u1")
    assert r.json()["steer"]["stages"][0]["name"] == "system_prompt"
    sent = s.calls[-1]["messages"]
    assert [m["content"] for m in sent] == ["client rules", "Be brief.", "hi"]


def test_failing_stage_degrades_to_passing_the_request_on(make_app):
    s = make_app(
        policies={"default": policy("default", "  test_explode: {}\n  system_prompt: {text: X}\n")}
    )
    r = chat(s, DEBUG, user="u1")
    assert r.status_code == 200
    records = {st["name"]: st for st in r.json()["steer"]["stages"]}
    assert records["test_explode"]["status"] == "failed" and "boom" in records["test_explode"]["error"]
    assert records["system_prompt"]["status"] == "ok"
    sent = s.calls[-1]["messages"]
    assert [m["content"] for m in sent] == ["client rules", "X", "hi"]  # the half-made edit was undone
    metrics = s.http.get(s.server.url + "/metrics").text
    assert 'steer_stage_failures_total{stage="test_explode",status="failed"} 1.0' in metrics


def test_stage_over_its_timeout_is_skipped(make_app):
    s = make_app(policies={"default": policy("default", "  test_slow: {timeout_s: 0.1}\n")})
    r = chat(s, DEBUG, user="u1")
    assert r.status_code == 200
    assert r.json()["steer"]["stages"][0]["status"] == "timeout"


def test_stage_with_on_error_fail_turns_failure_into_an_error(make_app):
    s = make_app(policies={"default": policy("default", "  test_explode: {on_error: fail}\n")})
    r = chat(s, user="u1")
    assert r.status_code == 500 and r.json()["error"]["code"] == "stage_failed"


def test_streaming_request_runs_request_stages_too(make_app):
    s = make_app(policies={"default": policy("default", "  system_prompt: {text: Streamed.}\n")})
    r = chat(s, DEBUG, user="u1", stream=True)
    assert r.status_code == 200 and b'"steer"' in r.content and r.content.endswith(b"data: [DONE]\n\n")
    assert s.calls[-1]["messages"][1]["content"] == "Streamed."


def test_anonymous_requests_skip_stages_that_need_a_user(make_app):
    s = make_app(policies={"default": policy("default", "  test_personal: {}\n")})
    Personal.runs.clear()
    r = chat(s, DEBUG)
    assert r.json()["steer"]["policy"] == "anonymous" and r.json()["steer"]["stages"] == []
    r = chat(s, DEBUG, user="zoe")
    assert r.json()["steer"]["stages"][0]["saw"] == "zoe"
    assert Personal.runs == ["zoe"]


def test_user_policy_beats_glob_beats_default(make_app):
    s = make_app(
        policies={
            "default": policy("default", "  {}\n"),
            "exact": policy("exact", "  system_prompt: {text: A}\n", "match: {users: [team-lead]}\n"),
            "glob": policy("glob", "  system_prompt: {text: B}\n", "match: {users: ['team-*']}\n"),
        }
    )
    assert chat(s, DEBUG, user="team-lead").json()["steer"]["policy"] == "exact"
    assert chat(s, DEBUG, user="team-x").json()["steer"]["policy"] == "glob"
    assert chat(s, DEBUG, user="other").json()["steer"]["policy"] == "default"


def test_policy_change_on_disk_is_picked_up_and_a_bad_one_keeps_the_last_good(make_app):
    s = make_app(policies={"default": policy("default", "  {}\n")})
    path = s.policies / "vip.yaml"
    time.sleep(0.01)
    path.write_text(policy("vip", "  system_prompt: {text: VIP}\n", "match: {users: [vip]}\n"))
    assert wait_for(lambda: chat(s, DEBUG, user="vip").json()["steer"]["policy"] == "vip", timeout=10)
    path.write_text("name: vip\nstages:\n  system_prompt: {txet: typo}\n")
    assert wait_for(lambda: s.services.policies.last_error is not None, timeout=10)
    assert "vip.yaml:3: stages.system_prompt.txet" in s.services.policies.last_error
    assert chat(s, DEBUG, user="vip").json()["steer"]["policy"] == "vip"
    ready = s.http.get(s.server.url + "/readyz").json()
    assert ready["policy_error"] and "vip" in ready["policies"]
    assert ready["warm"] is True  # the stub model has nothing to load: warmed long before now
    metrics = s.http.get(s.server.url + "/metrics").text
    assert 'steer_policy_reloads_total{result="ok"} 1.0' in metrics
    assert 'steer_policy_reloads_total{result="error"} 1.0' in metrics


def test_background_runs_past_the_limit_are_shed_and_counted_while_answers_still_come(make_app):
    pol = policy("default", "  test_stuck_background: {timeout_s: 5}\n")
    s = make_app(policies={"default": pol}, max_background=2)
    traces = [chat(s, DEBUG).json()["steer"]["background"] for _ in range(3)]
    assert traces == [["test_stuck_background"], ["test_stuck_background"], ["test_stuck_background (shed)"]]
    metrics = s.http.get(s.server.url + "/metrics").text
    assert 'steer_stage_failures_total{stage="test_stuck_background",status="shed"} 1.0' in metrics


def test_request_stages_run_in_pipeline_order_recall_then_align_whatever_the_policy_lists(tmp_path):
    from steer.pipeline.policy import load_policies

    (tmp_path / "default.yaml").write_text(
        "name: default\nextends: none\nstages:\n"
        "  system_prompt: {text: be brief}\n  align: {model: stub}\n  recall: {}\n  remember: {}\n"
    )
    (policy_,) = load_policies(tmp_path).values()
    request = [n for n, _ in policy_.stage_configs() if stages.get(n).phase == "request"]
    assert request == ["recall", "align", "system_prompt"]
