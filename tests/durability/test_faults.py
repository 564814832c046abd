"""Faults: a failing upstream is retried and fallen back from as configured, then reported clearly;
a stage whose backend is down (embedding model missing, SQLite locked, disk full) is skipped with
a warning in the trace, the request still gets its answer, and no acknowledged write is lost.

Upstream basics (500 -> 502 after retries, fail-once, 429 kept, timeout -> 504, malformed -> 502,
dead upstream fallback, reset mid-stream) are in test_upstreams.py; this file adds the rest.
"""

from __future__ import annotations

import sqlite3
import threading

import httpx
import orjson
import pytest
from helpers import MEMORY_POLICY, wait_for

MSG = [{"role": "user", "content": "hi"}]


def post(s, model="stub", headers=None, **body):
    return httpx.post(
        s.url + "/chat/completions",
        json={"model": model, "messages": MSG, **body},
        headers=headers or {},
        timeout=60,
    )


def faulty(stub, name, fault, **cfg):
    """A model whose every upstream call carries the fault (extra_body), so its fallback can be healthy."""
    return {"name": name, "api_base": stub.url + "/v1", "extra_body": {"stub_fault": fault}, **cfg}


def calls_with(stub, since, fault):
    return sum(1 for c in stub.app.state.calls[since:] if c.get("stub_fault") == fault)


# -- upstream faults ----------------------------------------------------------------------------


def test_429_is_retried_as_configured_then_returned_with_retry_after(make_steer, stub):
    s = make_steer(models=[faulty(stub, "stub", "429", retries=2)])
    before = len(stub.app.state.calls)
    r = post(s)
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded"
    assert r.headers["retry-after"] == "0"
    assert calls_with(stub, before, "429") == 3


def test_streaming_429_keeps_its_status_and_retry_after(make_steer, stub):
    s = make_steer(models=[faulty(stub, "stub", "429", retries=0)])
    r = post(s, stream=True)
    assert r.status_code == 429 and r.headers["retry-after"] == "0"
    assert r.json()["error"]["type"] == "rate_limit_error"


@pytest.mark.parametrize("fault", ["429", "500", "malformed", "timeout"])
def test_a_failing_model_is_retried_then_falls_back_to_the_next(make_steer, stub, fault):
    s = make_steer(
        models=[
            faulty(stub, "primary", fault, retries=1, timeout=0.3, fallbacks=["backup"]),
            {"name": "backup", "api_base": stub.url + "/v1", "model": "stub", "retries": 0},
        ]
    )
    before = len(stub.app.state.calls)
    r = post(s, model="primary")
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"].startswith("tok0")
    assert wait_for(lambda: calls_with(stub, before, fault) == 2)  # one try plus one retry, then backup


def test_when_every_model_fails_the_client_gets_the_last_error_clearly(make_steer, stub):
    s = make_steer(
        models=[
            faulty(stub, "primary", "500", retries=0, fallbacks=["backup"]),
            faulty(stub, "backup", "timeout", retries=0, timeout=0.3),
        ]
    )
    r = post(s, model="primary")
    assert r.status_code == 504
    err = r.json()["error"]
    assert err["type"] == "timeout_error" and "backup" in err["message"]


def test_streaming_timeout_before_the_first_chunk_is_a_504(make_steer, stub):
    s = make_steer(models=[faulty(stub, "stub", "timeout", retries=0, timeout=0.3)])
    r = post(s, stream=True)
    assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"


def test_streaming_malformed_upstream_falls_back_before_the_first_chunk(make_steer, stub):
    s = make_steer(
        models=[
            faulty(stub, "primary", "500", retries=0, fallbacks=["backup"]),
            {"name": "backup", "api_base": stub.url + "/v1", "model": "stub"},
        ]
    )
    r = post(s, model="primary", stream=True)
    assert r.status_code == 200 and r.content.endswith(b"data: [DONE]\n\n")
    assert b"tok0" in r.content


def test_a_reset_mid_stream_is_not_retried_into_a_second_answer(make_steer, stub):
    s = make_steer(
        models=[
            faulty(stub, "primary", "reset", retries=2, fallbacks=["backup"]),
            {"name": "backup", "api_base": stub.url + "/v1", "model": "stub"},
        ]
    )
    before = len(stub.app.state.calls)
    r = post(s, model="primary", stream=True)
    events = [line[6:] for line in r.content.split(b"\n") if line.startswith(b"data: ")]
    assert orjson.loads(events[-1])["error"]["type"] == "upstream_error"
    assert len(stub.app.state.calls) - before == 1  # chunks were already sent: no retry, no fallback
    assert sum(e.count(b"tok0") for e in events) == 1


# -- a stage's backend is down ------------------------------------------------------------------

ADMIN = {"Authorization": "Bearer admin", "X-Steer-Debug": "1"}
KEYS = [{"key": "admin", "tenant": "t1", "admin": True}]


def chat(s, text, user="alice"):
    return httpx.post(
        s.url + "/chat/completions",
        headers=ADMIN,
        json={"model": "stub", "messages": [{"role": "user", "content": text}], "user": user},
        timeout=60,
    )


def add_memory(s, text, user="alice"):
    return httpx.post(f"{s.url}/users/{user}/memories", headers=ADMIN, json={"text": text}, timeout=60)


def stage(r, name):
    return next(st for st in r.json()["steer"]["stages"] if st["name"] == name)


def stage_count(s, name, status):
    text = httpx.get(s.server.url + "/metrics").text
    for line in text.splitlines():
        mine = f'stage="{name}"' in line and f'status="{status}"' in line
        if line.startswith("steer_stage_seconds_count") and mine:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def logged(s, user):
    with sqlite3.connect(s.settings.database) as conn:
        return conn.execute("SELECT count(*) FROM request_log WHERE user = ?", (user,)).fetchone()[0]


def check_store(s, tenant, user, texts):
    """Every acknowledged text is in the table, and the user's index holds exactly the table's vectors."""
    with sqlite3.connect(s.settings.database) as conn:
        rows = conn.execute(
            "SELECT text, n_vectors FROM memories WHERE tenant = ? AND user = ? AND superseded_by IS NULL",
            (tenant, user),
        ).fetchall()
    assert set(texts) <= {t for t, _ in rows}
    store = s.services.memory._parts[0]
    store.search(tenant, user, "anything", k=1)  # brings the index up to date with the table
    assert store.index_size(tenant, user) == sum(n for _, n in rows)


def test_missing_embedding_model_skips_memory_with_a_warning_and_still_answers(make_steer, tmp_path):
    s = make_steer(
        policies={"default": MEMORY_POLICY}, keys=KEYS, memory={"embedding_model": str(tmp_path / "no-such-model")}
    )
    r = chat(s, "I'm vegan. Suggest a dinner.")
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"].startswith("tok0")
    recall = stage(r, "recall")
    assert recall["status"] == "failed" and "memory" in recall["error"].lower()
    assert wait_for(lambda: stage_count(s, "remember", "failed") >= 1)
    r = add_memory(s, "I prefer tea.")
    assert r.status_code == 503 and r.json()["error"]["code"] == "memory_unavailable"
    assert "embedding" in r.json()["error"]["message"].lower()
    assert wait_for(lambda: logged(s, "alice") == 1)


def test_a_locked_database_skips_the_write_with_an_error_and_loses_nothing_acknowledged(make_steer):
    s = make_steer(policies={"default": MEMORY_POLICY}, keys=KEYS)
    assert add_memory(s, "I love spicy Thai food.").status_code == 201
    locker = sqlite3.connect(s.settings.database, isolation_level=None, check_same_thread=False)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        r = chat(s, "Any dinner ideas for tonight?")
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"].startswith("tok0")
        assert stage(r, "recall")["status"] in ("ok", "failed", "timeout")
        r = add_memory(s, "I never drink coffee.")
        assert r.status_code == 503 and r.json()["error"]["code"] == "memory_unavailable"
        assert "locked" in r.json()["error"]["message"]
    finally:
        threading.Timer(0, locker.execute, ("ROLLBACK",)).run()
        locker.close()
    assert wait_for(lambda: logged(s, "alice") == 1, timeout=40)  # the request log row was kept, then written
    assert add_memory(s, "I never drink coffee.").status_code == 201
    check_store(s, "t1", "alice", ["I love spicy Thai food.", "I never drink coffee."])


def test_a_full_disk_refuses_new_writes_clearly_keeps_answering_and_loses_nothing(make_steer):
    # prompts logged and longer than a page: each request log row needs a new page, so it fails
    s = make_steer(policies={"default": MEMORY_POLICY + "log_prompts: true\n"}, keys=KEYS)
    assert add_memory(s, "I love spicy Thai food.").status_code == 201
    store = s.services.memory._parts[0]
    conns = [store._db._conn, s.services.db._conn]
    with s.services.db._lock, store._lock:
        for conn in conns:  # SQLITE_FULL from here on: no page may be added to the file
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {pages}")
    try:
        long = "I prefer answers that cite their sources. " * 40
        r = add_memory(s, long)
        assert r.status_code == 503 and r.json()["error"]["code"] == "memory_unavailable"
        assert "full" in r.json()["error"]["message"]
        for i in range(3):
            r = chat(s, f"I always prefer aisle seats, question {i} " + "x" * 6000)
            assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"].startswith("tok0")
        assert wait_for(lambda: stage_count(s, "remember", "failed") >= 1)
        assert wait_for(lambda: len(s.services.request_log.rows) == 3 and logged(s, "alice") == 0)
    finally:
        with s.services.db._lock, store._lock:
            for conn in conns:
                conn.execute("PRAGMA max_page_count = 1073741823")
    assert wait_for(lambda: logged(s, "alice") == 3)  # the kept rows are written once there is room
    assert add_memory(s, long).status_code == 201
    check_store(s, "t1", "alice", ["I love spicy Thai food.", long.strip()])
