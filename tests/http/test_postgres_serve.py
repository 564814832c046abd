"""A real steer served over HTTP on a real PostgreSQL server (its own, to stop and start): memory write
-> recall -> export -> forget, then the server stopped mid-load (503 ``store_unavailable`` for what needs
the store, 200 for what does not, /readyz naming the database) and started again (steer recovers by
itself, the request log rows kept meanwhile are written)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from helpers import MEMORY_POLICY, ServerThread, wait_for
from postgres_server import PostgresServer

ADMIN = {"Authorization": "Bearer admin", "X-Steer-Debug": "1"}
KEYS = [{"key": "admin", "tenant": "t1", "admin": True}]
POLICIES = {
    # remember and recall, skipped (with a warning in the trace) when the store is down
    "default": MEMORY_POLICY,
    # recall is required for these users: no answer without their preferences
    "strict": "name: strict\nextends: none\nmatch:\n  users: ['strict-*']\n  tenants: [t1]\n"
    "stages:\n  recall: {on_error: fail}\n",
    "plain": "name: plain\nextends: none\nmatch:\n  users: ['plain-*']\n  tenants: [t1]\nstages: {}\n",
}


@pytest.fixture
def pg(make_postgres: Any) -> PostgresServer:
    server: PostgresServer = make_postgres()
    return server


@pytest.fixture
def steer_on_pg(pg: PostgresServer, stub: ServerThread, tmp_path: Path) -> Iterator[ServerThread]:
    from steer.server.app import create_app
    from steer.settings import load_settings

    pdir = tmp_path / "policies"
    pdir.mkdir()
    for name, text in POLICIES.items():
        (pdir / f"{name}.yaml").write_text(text)
    cfg = load_settings(
        None,
        policies=str(pdir),
        database=pg.url,
        models=[{"name": "stub", "api_base": stub.url + "/v1", "retries": 0}],
        keys=KEYS,
        database_pool_timeout_s=2.0,
    )
    server = ServerThread(create_app(cfg)).start()
    # the start-up warm-up loads the embedding model (minutes on a loaded machine): wait for it
    assert wait_for(lambda: server.app.state.services.warm, timeout=600)
    yield server
    server.stop()


def chat(s: ServerThread, text: str, user: str) -> httpx.Response:
    body = {"model": "stub", "messages": [{"role": "user", "content": text}], "user": user}
    return httpx.post(s.url + "/v1/chat/completions", headers=ADMIN, json=body, timeout=60)


def add_memory(s: ServerThread, user: str, text: str) -> httpx.Response:
    return httpx.post(f"{s.url}/v1/users/{user}/memories", headers=ADMIN, json={"text": text}, timeout=60)


def stage(r: httpx.Response, name: str) -> dict[str, Any]:
    return next(st for st in r.json()["steer"]["stages"] if st["name"] == name)


def metric(s: ServerThread, name: str) -> float:
    for line in httpx.get(s.url + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric {name}")


def rows_with(url: str, needle: str) -> int:
    """Rows of any table in the database holding ``needle`` in any column (read as text)."""
    total = 0
    with psycopg.connect(url) as conn:
        tables = [t for (t,) in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        for table in tables:
            (n,) = conn.execute(f'SELECT count(*) FROM "{table}" t WHERE t::text LIKE %s', (f"%{needle}%",)).fetchone()
            total += n
    return total


def test_memory_write_recall_export_and_forget_over_http_on_postgresql(
    steer_on_pg: ServerThread, pg: PostgresServer, stub: ServerThread
) -> None:
    s = steer_on_pg
    r = add_memory(s, "alice", "I am vegan.")
    assert r.status_code == 201, r.text
    before = len(stub.app.state.calls)
    r = chat(s, "Suggest a dinner for tonight.", "alice")
    assert r.status_code == 200 and stage(r, "recall")["status"] == "ok"
    sent = stub.app.state.calls[before]["messages"]
    assert any("vegan" in str(m.get("content")) for m in sent if m["role"] == "system")  # recalled from PG
    exported = httpx.get(f"{s.url}/v1/users/alice/export", headers=ADMIN, timeout=60)
    assert exported.status_code == 200
    assert "I am vegan." in exported.text
    assert rows_with(pg.url, "I am vegan.") >= 1
    gone = httpx.delete(f"{s.url}/v1/users/alice", headers=ADMIN, timeout=60)
    assert gone.status_code == 200, gone.text
    after = httpx.get(f"{s.url}/v1/users/alice/export", headers=ADMIN, timeout=60)
    assert "vegan" not in after.text
    assert rows_with(pg.url, "vegan") == 0 and rows_with(pg.url, "alice") == 0  # in no table, by text or id
    r = chat(s, "Suggest a dinner for tonight.", "alice")
    assert r.status_code == 200 and not any(
        "vegan" in str(m.get("content")) for m in stub.app.state.calls[-1]["messages"]
    )


def test_postgresql_stopped_mid_load_is_503_store_unavailable_and_steer_recovers_by_itself(
    steer_on_pg: ServerThread, pg: PostgresServer
) -> None:
    s = steer_on_pg
    assert add_memory(s, "strict-bob", "I prefer short answers.").status_code == 201
    assert chat(s, "How do I boil an egg?", "strict-bob").status_code == 200
    assert httpx.get(s.url + "/readyz", headers=ADMIN).json()["status"] == "ready"
    pg.stop("fast")
    t0 = time.monotonic()
    r = add_memory(s, "strict-bob", "I like tea.")
    assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable", r.text
    assert r.json()["error"]["type"] == "service_unavailable_error" and "Retry-After" in r.headers
    r = chat(s, "How do I boil an egg?", "strict-bob")  # its policy needs the store
    assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable", r.text
    statuses = [chat(s, f"question {i}", "plain-carol").status_code for i in range(5)]  # needs no store
    statuses += [chat(s, f"question {i}", "dave").status_code for i in range(3)]  # recall skipped on error
    assert statuses == [200] * 8
    assert time.monotonic() - t0 < 60  # every answer within the pool timeout, no hang
    ready = httpx.get(s.url + "/readyz", headers=ADMIN)
    assert ready.status_code == 200 and ready.json()["status"] == "degraded" and ready.json()["down"] == ["database"]
    assert wait_for(lambda: metric(s, "steer_request_log_failed_flushes") >= 1, timeout=30)
    assert metric(s, "steer_request_log_pending") >= 1 and metric(s, "steer_store_up") == 0

    pg.start()
    assert wait_for(lambda: add_memory(s, "strict-bob", "I like tea.").status_code == 201, timeout=30)
    r = chat(s, "What should I drink?", "strict-bob")
    assert r.status_code == 200 and stage(r, "recall")["status"] == "ok"
    assert httpx.get(s.url + "/readyz", headers=ADMIN).json()["status"] == "ready"
    assert wait_for(lambda: metric(s, "steer_request_log_pending") == 0, timeout=30)
    assert rows_with(pg.url, "plain-carol") == 5  # the request log rows kept while down were written
