"""Privacy: prompts are neither logged nor stored unless a policy opts in, old request logs expire,
forgetting a user leaves nothing of theirs in the SQLite file or the index, CORS is off by default,
and a server without keys refuses to listen beyond loopback."""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

import pytest
from helpers import MEMORY_POLICY as MEMORY
from helpers import AppSteer, start_app, wait_for

KEYS = [{"key": "admin", "tenant": "t1", "admin": True}]
ADMIN = {"Authorization": "Bearer admin"}
MARKER = "zebracorn-7731"


def chat(s, text, user="alice", **body):
    return s.http.post(
        s.url + "/chat/completions",
        headers=ADMIN,
        json={"model": "stub", "messages": [{"role": "user", "content": text}], "user": user, **body},
        timeout=60,
    )


def stored_prompts(db: str, user: str) -> list[str | None]:
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT prompt FROM request_log WHERE user = ?", (user,))]


def test_prompts_are_not_logged_or_stored_unless_the_policy_opts_in(make_app, caplog):
    caplog.set_level(logging.DEBUG)
    s = make_app(
        policies={
            "default": MEMORY,
            "audited": "name: audited\nextends: none\nlog_prompts: true\n"
            "match: {users: [audited-*], tenants: [t1]}\nstages: {}\n",
        },
        keys=KEYS,
        log_level="debug",
    )
    assert chat(s, f"I love {MARKER} pizza, what wine goes with it?").status_code == 200
    assert chat(s, f"{MARKER} again", stub_fault="500").status_code == 502  # errors are logged too
    assert chat(s, f"audit me {MARKER}", user="audited-1").status_code == 200
    assert wait_for(lambda: len(stored_prompts(s.settings.database, "alice")) >= 1)
    assert set(stored_prompts(s.settings.database, "alice")) == {None}
    assert wait_for(lambda: stored_prompts(s.settings.database, "audited-1") == [f"audit me {MARKER}"])
    assert caplog.records, "logging was captured"
    assert not [r for r in caplog.records if MARKER in r.getMessage() or MARKER in str(r.exc_info)]


def start(tmp: Path, **settings) -> AppSteer:
    return start_app(tmp, {"default": MEMORY}, keys=KEYS, **settings)


def test_request_log_rows_older_than_retention_days_are_deleted(tmp_path):
    from steer.storage.database import SqliteDatabase

    db = SqliteDatabase(tmp_path / "steer.db")
    now = time.time()
    row = ("t1", "alice", "default", "stub", 200, 0, 1.0, None, None, "[]", None)
    db.executemany(
        "INSERT INTO request_log VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        [("old-1", now - 40 * 86400, *row), ("old-2", now - 31 * 86400, *row), ("new-1", now - 29 * 86400, *row)],
    )
    db.close()
    server = start(tmp_path, retention_days=30)
    try:
        assert chat(server, "hello").status_code == 200

        def traces() -> set[str]:
            with sqlite3.connect(tmp_path / "steer.db") as conn:
                return {r[0] for r in conn.execute("SELECT trace_id FROM request_log")}

        assert wait_for(lambda: len(traces()) == 2)
        assert "new-1" in traces() and not {"old-1", "old-2"} & traces()
    finally:
        server.stop()


def test_without_retention_days_old_request_logs_are_kept(tmp_path):
    from steer.storage.database import SqliteDatabase

    db = SqliteDatabase(tmp_path / "steer.db")
    db.executemany(
        "INSERT INTO request_log VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        [("ancient", time.time() - 3650 * 86400, "t1", "u", "default", "stub", 200, 0, 1.0, None, None, "[]", None)],
    )
    db.close()
    server = start(tmp_path)
    try:
        assert server.http.get(server.root + "/readyz").status_code == 200
        time.sleep(0.2)
        with sqlite3.connect(tmp_path / "steer.db") as conn:
            assert conn.execute("SELECT count(*) FROM request_log WHERE trace_id = 'ancient'").fetchone()[0] == 1
    finally:
        server.stop()


def test_forgetting_a_user_leaves_none_of_their_data_in_the_file_or_the_index(tmp_path):
    server = start(tmp_path)
    url = server.url
    db = tmp_path / "steer.db"
    try:
        secret = f"I am allergic to {MARKER} and I prefer vegetarian food."
        assert server.http.post(f"{url}/users/dora/memories", headers=ADMIN, json={"text": secret}).status_code == 201
        assert chat(server, f"I always prefer {MARKER} tea in the morning.", user="dora").status_code == 200
        other = server.http.post(f"{url}/users/erin/memories", headers=ADMIN, json={"text": "I like chess."})
        assert other.status_code == 201
        services = server.app.state.services
        assert wait_for(lambda: not services.background and not services.request_log.rows)
        assert wait_for(lambda: len(stored_prompts(str(db), "dora")) == 1)

        with sqlite3.connect(db) as conn:  # profile and feedback rows, as the profile service writes them
            conn.execute(
                "INSERT INTO user_profiles VALUES ('t1', 'dora', 'minilm', '[]', '[]', '[]', '[]', '{}', 1, 0, 0)"
            )
            conn.execute(
                "INSERT INTO served_completions VALUES ('t1', 'c-1', 'dora', 0, 'minilm', '[]', '[]', '[]', 0, ?)",
                (MARKER,),
            )
            conn.execute(
                "INSERT INTO feedback (tenant, user, completion_id, created_at, kind, rating, choice, edit, scorer, "
                "attributes, pairs) VALUES ('t1', 'dora', 'c-1', 0, 'edit', NULL, NULL, ?, 'minilm', '[]', '[]')",
                (f"no, {MARKER}",),
            )
        r = server.http.delete(f"{url}/users/dora", headers=ADMIN, timeout=30)
        assert r.status_code == 200 and r.json()["memories_removed"] >= 1
        assert r.json()["profile_rows_removed"] == 3

        with sqlite3.connect(db) as conn:
            tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in tables:
                columns = [c[1] for c in conn.execute(f"PRAGMA table_info({table})")]
                if "user" in columns:
                    n = conn.execute(f"SELECT count(*) FROM {table} WHERE user = 'dora'").fetchone()[0]
                    assert n == 0, f"{table} still holds rows of dora"
            assert conn.execute("SELECT count(*) FROM memories WHERE user = 'erin'").fetchone()[0] == 1
        store = services.memory._parts[0]
        assert store.index_size("t1", "dora") == 0 and store.index_size("t1", "erin") >= 1
        assert store.search("t1", "dora", secret, k=5) == []
        raw = b"".join(p.read_bytes() for p in tmp_path.glob("steer.db*"))  # the file, its WAL and journal
        assert MARKER.encode() not in raw, "deleted text is still readable in the database file"
        export = server.http.get(f"{url}/users/dora/export", headers=ADMIN).json()
        assert export["memories"] == [] and export["requests"] == []
    finally:
        server.stop()


def test_cors_is_off_by_default(make_app):
    s = make_app()
    pre = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    r = s.http.options(s.url + "/chat/completions", headers=pre)
    assert "access-control-allow-origin" not in r.headers
    r = s.http.get(s.url + "/models", headers={"Origin": "https://evil.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_cors_allows_only_the_configured_origins(make_app):
    s = make_app(cors_origins=["https://app.example"])
    ok = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    r = s.http.options(s.url + "/chat/completions", headers=ok)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
    r = s.http.get(s.url + "/models", headers={"Origin": "https://app.example"})
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    assert "x-steer-trace-id" in r.headers["access-control-expose-headers"].lower()
    bad = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    r = s.http.options(s.url + "/chat/completions", headers=bad)
    assert r.status_code == 400 and "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::"])
def test_without_keys_serve_refuses_a_non_loopback_address_and_says_so(host, capsys):
    from steer.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--host", host, "--port", "1"])
    assert exit_.value.code == 2
    assert "no API keys" in capsys.readouterr().err


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_addresses_count_as_loopback(host):
    from steer.cli import is_loopback

    assert is_loopback(host)
