"""Edges of serving a request: streams that stages reshape, the request log's flushes, policy
plans across a reload, upstream streams closed on stop, the CLI against a server, HTTP errors."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import threading
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
from helpers import REPO

from steer.identity import Identity
from steer.pipeline.policy import PolicySet, load_policies
from steer.pipeline.stage import StageConfig, stages
from steer.server.metrics import Metrics
from steer.server.services import Services
from steer.settings import load_settings
from steer.storage.database import SqliteDatabase
from steer.storage.request_log import RequestLog
from steer.upstreams.router import Router

MSG = [{"role": "user", "content": "hello there"}]
RERANK = "name: default\nextends: none\nstages:\n  candidates: {n: 3}\n  rerank: {options: {embeddings: false}}\n"


def test_a_streamed_request_with_a_response_stage_gets_a_whole_completion_from_an_sse_upstream(make_app):
    s = make_app(policies={"default": RERANK})
    body = {
        "model": "stub",
        "messages": MSG,
        "user": "alice",
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    r = s.http.post(s.url + "/chat/completions", json=body, timeout=30)
    assert r.status_code == 200, r.text
    sent = s.calls[-1]
    assert "stream" not in sent and "stream_options" not in sent and sent["n"] == 3
    events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    text = "".join(ch["delta"].get("content") or "" for c in chunks for ch in c["choices"])
    assert text.split() == [f"tok{i}" for i in range(8)]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 8  # the usage, replayed


def test_an_export_holds_the_request_made_just_before_it(make_app):
    s = make_app()
    export = f"{s.url}/users/alice/export"
    assert s.http.get(export, timeout=60).status_code == 200  # the memory store is loaded from here on
    r = s.http.post(s.url + "/chat/completions", json={"model": "stub", "messages": MSG, "user": "alice"}, timeout=30)
    trace_id = r.headers["x-steer-trace-id"]
    requests = s.http.get(export, timeout=30).json()["requests"]
    assert [q["trace_id"] for q in requests] == [trace_id]


class _BlockingDatabase(SqliteDatabase):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.entered = threading.Event()
        self.release = threading.Event()

    def executemany(self, sql: str, rows: Any) -> None:
        self.entered.set()
        self.release.wait(10)
        super().executemany(sql, rows)


async def test_a_flush_returns_only_after_a_flush_already_writing_has_written(tmp_path: Path):
    db = _BlockingDatabase(tmp_path / "log.db")
    log = RequestLog(db)
    log.add(("t1", 0.0, "default", "alice", "default", "m", 200, 0, 1.0, None, None, "[]", None))
    first = asyncio.create_task(log.flush())
    await asyncio.to_thread(db.entered.wait, 10)  # the first flush holds the row, the insert not yet done
    second = asyncio.create_task(log.flush())  # what forget_user does before it deletes the user's rows
    for _ in range(5):
        await asyncio.sleep(0)
    assert not second.done()
    db.release.set()
    await asyncio.gather(first, second)
    assert db.execute("SELECT user FROM request_log") == [("alice",)]
    db.close()


def test_a_policy_planned_across_a_reload_does_not_leave_its_stale_plan_for_the_new_one(tmp_path: Path):
    pdir = tmp_path / "policies"
    pdir.mkdir()
    (pdir / "default.yaml").write_text("name: default\nextends: none\nstages:\n  system_prompt: {text: old}\n")
    services = Services(load_settings(None, policies=str(pdir), database=str(tmp_path / "s.db")))
    alice = Identity("default", "alice")
    old = services.policies.resolve(alice)
    (pdir / "default.yaml").write_text("name: default\nextends: none\nstages:\n  system_prompt: {text: new}\n")
    services.policies.current = PolicySet(load_policies(pdir))  # the reload lands between resolve and plan
    services.plan(old, alice)
    (_, cfg), = services.plan(services.policies.resolve(alice), alice)
    assert cfg.text == "new"  # type: ignore[attr-defined]


class _Upstream:
    def __init__(self) -> None:
        self.closed = False

    async def stream(self, body: dict[str, Any]) -> AsyncGenerator[bytes, None]:
        try:
            for i in range(100):
                yield b"data: {}\n\n" + str(i).encode()
        finally:
            self.closed = True


async def test_closing_a_routed_stream_closes_the_upstreams_stream_at_once(tmp_path: Path):
    settings = load_settings(None, database=str(tmp_path / "s.db"), models=[{"name": "m", "api_base": "http://x/v1"}])
    router = Router(settings, Metrics())
    upstream = _Upstream()
    router._upstreams["m"] = upstream  # type: ignore[assignment]
    opened = await router.open_stream("m", {"messages": MSG})
    assert opened.first
    await opened.rest.aclose()  # a client that went away (the chat route closes what it was reading)
    assert upstream.closed


def test_chat_against_a_server_uses_the_servers_default_model(make_steer):
    s = make_steer()  # steer chat --server is another process: it needs a real server
    r = subprocess.run(
        [sys.executable, "-m", "steer", "chat", "--server", s.url, "--user", "alice", "-m", "hello"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert r.returncode == 0, r.stderr
    assert "assistant> tok0 tok1" in r.stdout


def test_a_wrong_method_is_an_openai_shaped_405_naming_the_allowed_ones(make_app):
    s = make_app()
    r = s.http.get(s.url + "/chat/completions")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    assert "POST" in r.headers["allow"]


def test_the_models_path_without_a_name_is_not_the_default_model(make_app):
    s = make_app()
    r = s.http.get(s.url + "/models/")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def _log_row(trace_id: str) -> tuple[Any, ...]:
    return (trace_id, 0.0, "default", "alice", "default", "m", 200, 0, 1.0, None, None, "[]", None)


def _flush_while_locked(db: SqliteDatabase, log: RequestLog) -> None:
    """One flush while another connection holds the database exclusively: it must fail."""
    other = sqlite3.connect(db.path, timeout=0)
    other.execute("BEGIN EXCLUSIVE")
    db._conn.execute("PRAGMA busy_timeout=0")
    with pytest.raises(sqlite3.OperationalError):
        asyncio.run(log.flush())
    other.execute("ROLLBACK")
    other.close()


def test_request_log_rows_survive_a_locked_database_and_reach_it_later(tmp_path: Path):
    db = SqliteDatabase(tmp_path / "log.db")
    log = RequestLog(db)
    log.add(_log_row("t1"))
    _flush_while_locked(db, log)
    asyncio.run(log.flush())
    assert db.execute("SELECT trace_id FROM request_log") == [("t1",)]
    db.close()


def test_request_log_held_while_the_database_refuses_writes_keeps_only_the_newest_rows(tmp_path: Path):
    db = SqliteDatabase(tmp_path / "log.db")
    log = RequestLog(db, max_rows=3)
    for i in range(5):
        log.add(_log_row(f"t{i}"))
    _flush_while_locked(db, log)
    assert log.dropped == 2
    asyncio.run(log.flush())
    assert sorted(r[0] for r in db.execute("SELECT trace_id FROM request_log")) == ["t2", "t3", "t4"]
    db.close()


@stages.register("test_unbuildable")
class _Unbuildable:
    """A registered stage no policy uses, that cannot be built here (a missing optional dependency)."""

    name: ClassVar[str] = "test_unbuildable"
    phase: ClassVar[str] = "request"
    needs_user: ClassVar[bool] = False
    Config: ClassVar[type[StageConfig]] = StageConfig

    def __init__(self, services: Any) -> None:
        raise ImportError("no such optional dependency")

    async def run(self, ctx: Any, config: StageConfig) -> None:
        return None


def test_forgetting_a_user_builds_only_the_stages_that_keep_user_data(make_app):
    s = make_app()
    r = s.http.delete(s.url + "/users/alice", timeout=60)
    assert r.status_code == 200 and r.json()["deleted"] is True
    assert "test_unbuildable" not in r.json()["stage_rows_removed"]
