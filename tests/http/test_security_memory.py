"""Issue 14, the memory findings, tried as an attacker would through the real HTTP path.

Two tenants (t1, t2), each with an admin key, and keys scoped to one user; an upstream stub (its
latency set per request, so a request can be kept in flight). What these tests protect:

- forget is final: nothing a request or queued job already under way writes after
  ``DELETE /v1/users/{id}`` is answered (memories, request log, served completions, align cache),
  with the memories in the main file or in a file of their own; the user starts clean and what they
  say after the answer is stored;
- memory writes are bounded and fair: one flooding turn keeps ``max_per_turn`` memories, a user's
  backlog delays another user's statement by one item, a timed-out ``remember`` still writes its
  item (counted as late), a user holds at most ``max_per_user`` memories, and SIGTERM is bounded;
- prompts and memory text stay only where the README says: no kept context without
  ``log_prompts``, retention covers every table with user text, a deleted or edited memory leaves
  no text in the file, its WAL or the export;
- the align cache is per user only: ``cache_scope: tenant`` is refused, anonymous requests are not
  cached;
- the export names the embedding model, not a server path; memory ids are random, not a sequence
  shared by tenants.
"""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import MEMORY_POLICY as MEMORY
from helpers import SteerProcess, free_port, wait_for

KEYS = [
    {"key": "t1-admin", "tenant": "t1", "admin": True},
    {"key": "t1-alice", "tenant": "t1", "users": ["alice"]},
    {"key": "t2-admin", "tenant": "t2", "admin": True},
]
T1 = {"Authorization": "Bearer t1-admin"}
ALICE = {"Authorization": "Bearer t1-alice"}
T2 = {"Authorization": "Bearer t2-admin"}
# everyday interests, from general vocabulary: distinct enough that no two statements merge
THINGS = [
    "chess", "tennis", "sailing", "pottery", "origami", "karaoke", "knitting", "archery", "fencing", "rowing",
    "surfing", "skiing", "snowboarding", "climbing", "kayaking", "canoeing", "cycling", "jogging", "swimming",
    "diving", "yoga", "pilates", "boxing", "judo", "karate", "baking", "grilling", "gardening", "birdwatching",
    "stargazing", "astronomy", "geology", "botany", "poetry", "opera", "jazz", "blues", "reggae", "salsa", "tango",
    "ballet", "theatre", "cinema", "photography", "painting", "sculpture", "calligraphy", "woodworking", "welding",
    "quilting", "embroidery", "crochet", "juggling", "magic", "chemistry", "physics", "robotics", "programming",
    "podcasts", "audiobooks", "crosswords", "sudoku", "bowling", "billiards", "darts", "golf", "cricket", "rugby",
    "hockey", "volleyball", "badminton", "squash", "handball", "lacrosse", "polo", "curling", "skating", "sledding",
    "hiking", "camping", "fishing", "hunting", "foraging", "beekeeping", "composting", "recycling", "volunteering",
    "museums", "libraries", "zoos", "aquariums", "castles", "lighthouses", "waterfalls", "volcanoes", "deserts",
    "glaciers", "islands", "vineyards", "breweries", "bakeries", "markets", "festivals", "parades", "fireworks"
]


def chat(s: Any, text: str, headers: dict[str, str], user: str | None = None, **body: Any) -> httpx.Response:
    payload: dict[str, Any] = {"model": "stub", "messages": [{"role": "user", "content": text}], **body}
    if user is not None:
        payload["user"] = user
    headers = {**headers, "X-Steer-Debug": "1"}
    return s.http.post(s.url + "/chat/completions", headers=headers, json=payload, timeout=120)


def texts(s: Any, user: str, headers: dict[str, str] = T1, history: bool = False) -> list[str]:
    params = {"history": str(history).lower()}
    r = s.http.get(f"{s.url}/users/{user}/memories", params=params, headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    return [m["text"] for m in r.json()["data"]]


def metric(s: Any, name: str, **labels: str) -> float:
    """A sample of steer's /metrics (0 when absent)."""
    body = s.http.get(s.server.url + "/metrics", timeout=30).text
    want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in body.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return 0.0


def settled(s: Any, timeout: float = 120) -> bool:
    """Background work done: remember runs finished, the writer's queue empty, the request log flushed."""
    services = s.services
    writer = getattr(services.memory, "writer", None)  # None before the fair writer: then no queue outlives a run

    def done() -> bool:
        return not services.background and (writer is None or writer.pending() == 0) and not services.request_log.rows

    if not wait_for(done, timeout):
        return False
    # the log's queue is empty while a flush writes what it took from it: one more flush returns only
    # after that write (and writes anything queued since)
    s.run(services.request_log.flush())
    return True


def file_bytes(path: str | Path) -> bytes:
    """The SQLite file with its WAL and shared-memory files."""
    p = Path(path)
    return b"".join(f.read_bytes() for f in p.parent.glob(p.name + "*"))


def rows(db: str | Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, args).fetchall()


def statements(start: int, n: int) -> str:
    return " ".join(f"I enjoy {thing}." for thing in THINGS[start : start + n])


# --- 2. forget is final ------------------------------------------------------------------------------


def race_models() -> list[dict[str, Any]]:
    return [
        {"name": "stub", "backend": "fake", "retries": 0},
        # the aligner: a fake like the target, answering slowly (its answer does not parse: the outcome is cached too)
        {"name": "slow-aligner", "backend": "fake", "retries": 0, "extra_body": {"stub_latency": 1.0}},
    ]


RACE_POLICY = (
    "name: default\nextends: none\nlog_prompts: true\nstages:\n  recall: {}\n"
    "  align: {model: slow-aligner, timeout_s: 20, rewrite_timeout_s: 15, min_words: 1}\n"
    "  candidates: {n: 2}\n  rerank: {}\n  remember: {}\n"
)


@pytest.mark.parametrize("memory_file", ["main", "separate"])
def test_a_chat_in_flight_when_the_user_is_forgotten_writes_nothing_and_later_statements_are_stored(
    make_app, tmp_path, memory_file
):
    marker = "quorvian-5127"
    memory = {"database": str(tmp_path / "memories.db")} if memory_file == "separate" else {}
    s = make_app(policies={"default": RACE_POLICY}, models=race_models(), keys=KEYS, memory=memory)
    main_db = s.settings.database
    memory_db = s.settings.memory.database or main_db
    # alice holds a memory in t1, and another alice in t2 holds one too
    for headers in (ALICE, T2):
        r = s.http.post(f"{s.url}/users/alice/memories", headers=headers, json={"text": "I love jazz."}, timeout=60)
        assert r.status_code == 201, r.text
    answered: list[httpx.Response] = []
    # in flight for about two seconds: the aligner's answer, then the upstream's
    racing = threading.Thread(
        target=lambda: answered.append(
            chat(s, f"I really enjoy hiking near {marker} lake. Any tips?", ALICE, stub_latency=1.0)
        )
    )
    racing.start()
    time.sleep(0.4)
    r = s.http.delete(f"{s.url}/users/alice", headers=T1, timeout=60)
    assert r.status_code == 200 and r.json()["memories_removed"] == 1
    racing.join(60)
    assert answered and answered[0].status_code == 200, answered and answered[0].text
    assert settled(s)

    assert texts(s, "alice") == []
    assert texts(s, "alice", T2) == ["I love jazz."]  # the other tenant's alice is untouched
    for table in ("request_log", "served_completions", "align_cache"):
        assert rows(main_db, f"SELECT count(*) FROM {table} WHERE tenant = 't1' AND user = 'alice'") == [(0,)], table
    assert rows(memory_db, "SELECT count(*) FROM memories WHERE tenant = 't1' AND user = 'alice'") == [(0,)]
    export = s.http.get(f"{s.url}/users/alice/export", headers=T1, timeout=60).json()
    assert export["memories"] == export["requests"] == export["served_completions"] == export["align_cache"] == []
    assert marker.encode() not in file_bytes(main_db) + file_bytes(memory_db)
    assert metric(s, "steer_memory_dropped_total", reason="forgotten") >= 1

    # what alice says after the answer is hers again, stored as usual
    assert chat(s, "I am allergic to peanuts.", ALICE).status_code == 200
    assert settled(s)
    assert texts(s, "alice") == ["I am allergic to peanuts."]
    assert rows(main_db, "SELECT count(*) FROM request_log WHERE tenant = 't1' AND user = 'alice'") == [(1,)]


def test_queued_remember_writes_of_a_forgotten_user_are_dropped_and_counted(make_app):
    s = make_app(policies={"default": MEMORY}, keys=KEYS)
    for turn in range(5):  # a hundred statements queued for the writer
        assert chat(s, statements(20 * turn, 20), ALICE).status_code == 200
    assert wait_for(lambda: len(texts(s, "alice")) >= 1, 60)
    r = s.http.delete(f"{s.url}/users/alice", headers=ALICE, timeout=60)  # her own key may forget her
    assert r.status_code == 200
    assert settled(s)
    assert texts(s, "alice", history=True) == []
    assert metric(s, "steer_memory_dropped_total", reason="forgotten") >= 1
    assert chat(s, "I prefer green tea over coffee.", ALICE).status_code == 200
    assert settled(s)
    assert texts(s, "alice") == ["I prefer green tea over coffee."]


def test_feedback_and_profile_writes_begun_before_a_forget_are_refused_in_their_statement(tmp_path):
    from retrieval.store import OwnerForgotten
    from steer.methods.profiles.math import UserParams
    from steer.storage.database import SqliteDatabase
    from steer.storage.forgotten import mark_forgotten
    from steer.storage.profiles import ProfileStore, Served

    db = SqliteDatabase(tmp_path / "steer.db")
    store = ProfileStore(db)
    began = time.time()
    mark_forgotten(db, "t1", "alice", time.time())
    with pytest.raises(OwnerForgotten):
        store.add_feedback("t1", "alice", "c1", "rating", {"rating": 1}, "features", ["a"], [], began)
    with pytest.raises(OwnerForgotten):
        store.save_user("t1", "alice", "features", ["a"], UserParams([0.0], [0.0]), began)
    with pytest.raises(OwnerForgotten):
        store.record_served(Served("t1", "c1", "alice", "features", ("a",), [[1.0]], [0], 0, None), began)
    store.add_feedback("t2", "alice", "c1", "rating", {"rating": 1}, "features", ["a"], [], began)  # other tenant
    time.sleep(0.01)
    store.add_feedback("t1", "alice", "c2", "rating", {"rating": 1}, "features", ["a"], [], time.time())  # after
    assert db.execute("SELECT tenant, completion_id FROM feedback ORDER BY id") == [("t2", "c1"), ("t1", "c2")]
    assert db.execute("SELECT count(*) FROM forgotten WHERE owner LIKE '%alice%'") == [(0,)]  # a digest only
    db.close()


# --- 3. bounded, fair memory writes ----------------------------------------------------------------


def test_one_flooding_turn_keeps_max_per_turn_memories_and_another_users_statement_still_lands(make_app):
    s = make_app(policies={"default": MEMORY}, keys=KEYS)
    flood = " ".join(f"I like item number {i}." for i in range(5000))
    assert chat(s, flood, T1, user="mallory").status_code == 200
    time.sleep(1)
    assert chat(s, "I am vegetarian and I never eat meat.", T2, user="bob").status_code == 200
    assert wait_for(lambda: any("vegetarian" in t for t in texts(s, "bob", T2)), 30)
    assert settled(s)
    limits = s.settings.memory
    assert 1 <= len(texts(s, "mallory")) <= limits.max_per_turn
    assert metric(s, "steer_memory_dropped_total", reason="turn_cap") >= 1
    assert metric(s, "steer_memory_truncated_turns_total") == 1


def test_a_users_backlog_delays_another_users_statement_by_about_one_item(make_app):
    s = make_app(policies={"default": MEMORY}, keys=KEYS)
    for turn in range(5):
        assert chat(s, statements(20 * turn, 20), T1, user="mallory").status_code == 200
    assert chat(s, "I am allergic to shellfish.", T2, user="bob").status_code == 200
    assert wait_for(lambda: texts(s, "bob", T2) == ["I am allergic to shellfish."], 60)
    stored_before_bob = len(texts(s, "mallory"))
    assert settled(s)
    total = len(texts(s, "mallory"))
    assert total >= 90  # the backlog itself was written (restatements aside)
    assert stored_before_bob < total / 2, (stored_before_bob, total)  # not queued behind all of it


def test_a_remember_that_times_out_behind_a_backlog_still_writes_its_statement_and_counts_it(make_app):
    impatient = MEMORY.replace("remember: {}", "remember: {timeout_s: 0.001}")  # every wait times out
    s = make_app(policies={"default": impatient}, keys=KEYS)
    for turn in range(5):
        assert chat(s, statements(20 * turn, 20), T1, user="mallory").status_code == 200
    assert chat(s, "I am allergic to shellfish.", T1, user="bob").status_code == 200
    assert settled(s)
    assert texts(s, "bob") == ["I am allergic to shellfish."]
    assert metric(s, "steer_stage_failures_total", stage="remember", status="timeout") >= 1
    assert metric(s, "steer_memory_late_writes_total") >= 1


def test_a_user_holds_at_most_max_per_user_memories_whatever_the_path(make_app):
    s = make_app(policies={"default": MEMORY}, keys=KEYS, memory={"max_per_user": 3})
    for thing in THINGS[:3]:
        r = s.http.post(f"{s.url}/users/alice/memories", headers=ALICE, json={"text": f"I enjoy {thing}."}, timeout=60)
        assert r.status_code == 201
    r = s.http.post(f"{s.url}/users/alice/memories", headers=ALICE, json={"text": "I enjoy curling."}, timeout=60)
    assert r.status_code == 409 and r.json()["error"]["code"] == "memory_limit_reached"
    assert chat(s, "I really like board games. I hate spiders.", ALICE).status_code == 200
    assert settled(s)
    assert len(texts(s, "alice")) == 3
    assert metric(s, "steer_memory_dropped_total", reason="user_cap") >= 3
    r = s.http.post(f"{s.url}/users/bob/memories", headers=T1, json={"text": "I enjoy curling."}, timeout=60)
    assert r.status_code == 201  # the cap is per user


def test_sigterm_drops_the_writers_backlog_after_the_grace_and_exits_in_bounded_time(tmp_path, stub):
    port = free_port()
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "default.yaml").write_text(MEMORY)
    config = tmp_path / "steer.yaml"
    config.write_text(
        json.dumps(
            {
                "port": port,
                "database": str(tmp_path / "steer.db"),
                "policies": str(tmp_path / "policies"),
                "models": [{"name": "stub", "api_base": stub.url + "/v1", "retries": 0}],
                "keys": KEYS,
            }
        )
    )
    log = tmp_path / "steer.log"
    proc = SteerProcess(config, port, log, "/users/warmup/memories", headers=T1)
    proc.start()
    try:
        url = proc.url + "/chat/completions"

        def flood(user: int) -> None:
            # unique texts (no embedding is cached): each statement costs the writer real work
            text = " ".join(f"I enjoy {thing} with friend number {user}." for thing in THINGS[:20])
            body = {"model": "stub", "user": f"u{user}", "messages": [{"role": "user", "content": text}]}
            assert httpx.post(url, headers=T1, json=body, timeout=60).status_code == 200

        threads = [threading.Thread(target=flood, args=(u,)) for u in range(100)]  # 2,000 statements to write
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert wait_for(lambda: rows(tmp_path / "steer.db", "SELECT count(*) FROM memories")[0][0] > 0, 60)
        t0 = time.monotonic()
        proc.signal(signal.SIGTERM)
        assert proc.wait(60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once shut down
        took = time.monotonic() - t0
        stored = rows(tmp_path / "steer.db", "SELECT count(*) FROM memories")[0][0]
    finally:
        proc.stop()
    # shutdown_grace_s (5 s by default) plus the write in progress and the rest of the shutdown
    assert took < 15, f"SIGTERM took {took:.1f}s"
    assert stored < 2000, "the backlog outlasted the grace: what was left is dropped, not written"
    assert re.search(r"shutdown: \d+ queued memory writes dropped", log.read_text())


def test_the_fair_writer_serves_owners_round_robin_and_refuses_past_max_pending():
    from steer.methods.memory.fair_writer import Dropped, FairWriter

    done: list[str] = []
    gate = threading.Event()
    drops: list[tuple[str, int]] = []
    started = threading.Event()
    writer = FairWriter(max_pending=3, on_drop=lambda reason, n: drops.append((reason, n)))
    first = writer.submit(("t", "a"), [lambda: (started.set(), gate.wait())])  # holds the thread meanwhile
    assert started.wait(10)
    a = writer.submit(("t", "a"), [lambda i=i: done.append(f"a{i}") for i in range(4)])
    b = writer.submit(("t", "b"), [lambda: done.append("b0")])
    c = writer.submit(("t", "c"), [lambda i=i: done.append(f"c{i}") for i in range(2)])
    assert isinstance(a[3].exception(timeout=1), Dropped) and drops == [("queue_full", 1)]
    gate.set()
    for f in [*first, *a[:3], *b, *c]:
        f.result(timeout=10)
    assert done == ["a0", "b0", "c0", "a1", "c1", "a2"]
    assert writer.close(grace_s=1) == 0


# --- 8. prompts and memory text only where the README says -------------------------------------------

RERANK = "name: default\nextends: none\nstages:\n  recall: {}\n  candidates: {n: 2}\n  rerank: {}\n"


def test_without_log_prompts_rerank_keeps_no_context_and_an_edit_is_a_clear_400(make_app):
    s = make_app(policies={"default": RERANK}, keys=KEYS)
    marker = "zindrak-3390"
    r = chat(s, f"What should I pack for a week on {marker} island?", ALICE)
    assert r.status_code == 200
    assert rows(s.settings.database, "SELECT context FROM served_completions") == [(None,)]
    body = {"completion_id": r.json()["id"], "edit": "a better answer"}
    edit = s.http.post(s.url + "/feedback", headers=ALICE, json=body, timeout=30)
    assert edit.status_code == 400 and edit.json()["error"]["code"] == "no_context"
    assert settled(s)
    assert marker not in s.http.get(f"{s.url}/users/alice/export", headers=ALICE, timeout=30).text
    assert marker.encode() not in file_bytes(s.settings.database)


def test_retention_purges_old_prompts_and_user_text_from_every_table(make_app, tmp_path):
    from steer.storage.database import SqliteDatabase

    db_path = tmp_path / "app0" / "steer.db"  # where make_app puts its first steer's database
    db = SqliteDatabase(db_path)
    old, new = time.time() - 40 * 86400, time.time() - 86400
    for label, at in (("old", old), ("new", new)):
        db.execute(
            "INSERT INTO request_log VALUES (?,?,'t1','alice','default','stub',200,0,1.0,NULL,NULL,'[]',?)",
            (f"{label}-trace", at, f"{label}-prompt-k7"),
        )
        db.execute(
            "INSERT INTO served_completions VALUES ('t1',?, 'alice', ?, 'features', '[]', '[]', '[0]', 0, ?)",
            (f"{label}-c", at, json.dumps([{"role": "user", "content": f"{label}-context-k7"}])),
        )
        db.execute(
            "INSERT INTO feedback (tenant, user, completion_id, created_at, kind, rating, choice, edit, scorer, "
            "attributes, pairs) VALUES ('t1', 'alice', ?, ?, 'edit', NULL, NULL, ?, 'features', '[]', '[]')",
            (f"{label}-c", at, f"{label}-edit-k7"),
        )
        db.execute(
            "INSERT INTO align_cache VALUES ('t1', 'alice', 'm', ?, ?, 'parsed', ?, 'alice')",
            (f"{label}-key", f"{label}-rewrite-k7", at),
        )
    db.close()
    s = make_app(policies={"default": MEMORY}, keys=KEYS, retention_days=30)
    db_file = s.settings.database
    assert db_file == str(db_path)

    def purged() -> bool:
        return rows(db_file, "SELECT count(*) FROM request_log WHERE trace_id = 'old-trace'") == [(0,)]

    assert wait_for(purged, 30)
    gone = [f"old-{what}-k7".encode() for what in ("prompt", "context", "edit", "rewrite")]
    assert wait_for(lambda: not any(g in file_bytes(db_file) for g in gone), 30)
    for table in ("request_log", "served_completions", "align_cache"):
        assert rows(db_file, f"SELECT count(*) FROM {table}") == [(1,)], table
    assert rows(db_file, "SELECT completion_id, edit FROM feedback ORDER BY id") == [
        ("old-c", None),  # the learned pairs stay; the text goes
        ("new-c", "new-edit-k7"),
    ]
    raw = file_bytes(db_file)
    assert all(f"new-{what}-k7".encode() in raw for what in ("prompt", "context", "edit", "rewrite"))


def test_a_deleted_or_edited_memory_leaves_no_text_in_the_file_its_wal_or_the_export(make_app):
    s = make_app(policies={"default": RERANK}, keys=KEYS)
    secret, edited = "I am allergic to vellomint-8842.", "I am allergic to drasquel-1193."
    base = f"{s.url}/users/alice/memories"
    first = s.http.post(base, headers=ALICE, json={"text": secret}, timeout=60).json()["id"]
    second = s.http.post(base, headers=ALICE, json={"text": edited}, timeout=60).json()["id"]
    r = chat(s, "Which snacks should I buy for the road trip?", ALICE)
    injected = [m["text"] for m in next(st for st in r.json()["steer"]["stages"] if st["name"] == "recall")["injected"]]
    assert secret in injected  # the recalled block carried it into the request
    assert settled(s)
    assert s.http.delete(f"{base}/{first}", headers=ALICE, timeout=60).status_code == 200
    patched = s.http.patch(f"{base}/{second}", headers=ALICE, json={"text": "I am allergic to cats."}, timeout=60)
    assert patched.status_code == 200
    export = s.http.get(f"{s.url}/users/alice/export", headers=ALICE, timeout=60).text
    raw = file_bytes(s.settings.database)
    for text in (secret, edited):
        word = text.split()[-1].rstrip(".")
        assert word not in export, word
        assert word.encode() not in raw, word


# --- 9. the align cache is per user --------------------------------------------------------------------


def test_a_policy_with_a_tenant_wide_align_cache_is_refused_with_a_clear_error(make_app, tmp_path):
    from steer.pipeline.policy import load_policies
    from steer.settings import ConfigError

    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "default.yaml").write_text(
        "name: default\nextends: none\nstages:\n  align: {model: stub, cache_scope: tenant}\n"
    )
    with pytest.raises(ConfigError) as refused:
        load_policies(tmp_path / "p")
    assert "cache_scope" in str(refused.value) and "per user" in str(refused.value)
    with pytest.raises(ConfigError):
        make_app(policies={"default": (tmp_path / "p" / "default.yaml").read_text()})


def test_align_cache_hits_never_cross_users_not_even_between_anonymous_requests(make_app):
    models = [
        {"name": "stub", "backend": "fake", "retries": 0},
        {"name": "aligner", "backend": "fake", "retries": 0},
    ]
    policy = "name: default\nextends: none\nstages:\n  align: {model: aligner, timeout_s: 20, rewrite_timeout_s: 15}\n"
    s = make_app(policies={"default": policy}, models=models, keys=KEYS)
    question = "Could you suggest a few quiet places to read in a big city?"

    def cached(headers: dict[str, str], user: str | None) -> bool | None:
        r = chat(s, question, headers, user=user)
        assert r.status_code == 200, r.text
        rec = next(st for st in r.json()["steer"]["stages"] if st["name"] == "align")
        return rec.get("cached")

    assert cached(T1, None) is False
    assert cached(T1, None) is False  # another anonymous caller of the same app learns nothing
    assert cached(T1, "bob") is False
    assert cached(ALICE, "alice") is False  # bob asked the same: alice cannot tell
    assert cached(ALICE, "alice") is True  # her own repeat is hers to hit
    assert rows(s.settings.database, "SELECT DISTINCT user FROM align_cache ORDER BY user") == [("alice",), ("bob",)]


def test_migration_drops_the_tenant_wide_align_rows_of_older_files(tmp_path):
    from steer.storage.database import SqliteDatabase
    from steer.storage.migrations import MIGRATIONS

    old = SqliteDatabase(tmp_path / "s.db", [m for m in MIGRATIONS if m[0] <= 5])
    old.execute("INSERT INTO align_cache VALUES ('t1', '', 'm', 'k1', 'shared', 'parsed', 0, 'bob')")
    old.execute("INSERT INTO align_cache VALUES ('t1', 'bob', 'm', 'k2', 'own', 'parsed', 0, 'bob')")
    old.close()
    db = SqliteDatabase(tmp_path / "s.db")
    assert db.execute("SELECT user, rewrite FROM align_cache") == [("bob", "own")]
    db.close()


# --- minor: the export's model name, memory ids ----------------------------------------------------------


def test_the_export_names_the_embedding_model_not_a_server_path(make_app):
    s = make_app(policies={"default": MEMORY}, keys=KEYS)
    export = s.http.get(f"{s.url}/users/alice/export", headers=ALICE, timeout=60).json()
    assert export["embedder"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert "/site-packages" not in json.dumps(export) and str(Path.home()) not in json.dumps(export)


def test_memory_ids_are_random_and_say_nothing_of_other_tenants_writes(make_app):
    s = make_app(policies={"default": MEMORY}, keys=KEYS)

    def add(headers: dict[str, str], user: str, text: str) -> int:
        r = s.http.post(f"{s.url}/users/{user}/memories", headers=headers, json={"text": text}, timeout=60)
        assert r.status_code == 201, r.text
        return int(r.json()["id"])

    before = add(ALICE, "alice", "I enjoy chess.")
    for thing in THINGS[1:6]:
        add(T2, "carol", f"I enjoy {thing}.")
    after = add(ALICE, "alice", "I enjoy opera.")
    ids = [before, after, *(add(T1, "alice", f"I enjoy {thing}.") for thing in THINGS[10:18])]
    assert all(0 < i < 2**53 for i in ids)  # exact in JavaScript
    assert after - before != 6  # a sequence would show carol's five writes in between
    assert max(ids) > 2**40  # not a small counter
    got = s.http.get(f"{s.url}/users/alice/memories/{after}", headers=ALICE, timeout=30)
    assert got.status_code == 200 and got.json()["text"] == "I enjoy opera."
    assert texts(s, "alice", ALICE)[:2] == ["I enjoy chess.", "I enjoy opera."]  # listed in the order written


def test_a_memory_file_of_the_older_sequential_schema_stays_readable(make_app, tmp_path):
    path = tmp_path / "old-memories.db"
    with sqlite3.connect(path) as conn:  # the schema before random ids: AUTOINCREMENT
        conn.executescript(
            """
            CREATE TABLE memories (id INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL, user TEXT NOT NULL,
                text TEXT NOT NULL, kind TEXT NOT NULL, source_conversation TEXT, source_turn INTEGER,
                created_at REAL NOT NULL, updated_at REAL NOT NULL, superseded_by INTEGER,
                meta TEXT NOT NULL DEFAULT '{}', expansions TEXT NOT NULL DEFAULT '[]', n_vectors INTEGER NOT NULL,
                embedding BLOB NOT NULL);
            CREATE TABLE user_state (tenant TEXT NOT NULL, user TEXT NOT NULL, version INTEGER NOT NULL,
                n_vectors INTEGER NOT NULL, PRIMARY KEY (tenant, user));
            CREATE TABLE store_info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            INSERT INTO store_info VALUES ('dim', '384');
            """
        )
        vector = bytes(4 * 384)
        conn.execute(
            "INSERT INTO memories (tenant, user, text, kind, created_at, updated_at, n_vectors, embedding) "
            "VALUES ('t1', 'alice', 'I enjoy sailing.', 'manual', 1, 1, 1, ?)",
            (vector,),
        )
        conn.execute("INSERT INTO user_state VALUES ('t1', 'alice', 1, 1)")
    s = make_app(policies={"default": MEMORY}, keys=KEYS, memory={"database": str(path)})
    assert s.http.get(f"{s.url}/users/alice/memories/1", headers=ALICE, timeout=60).json()["text"] == "I enjoy sailing."
    r = s.http.post(f"{s.url}/users/alice/memories", headers=ALICE, json={"text": "I love opera."}, timeout=60)
    assert r.status_code == 201 and r.json()["id"] > 2**20
    assert texts(s, "alice", ALICE) == ["I enjoy sailing.", "I love opera."]
    assert s.http.delete(f"{s.url}/users/alice", headers=T1, timeout=60).status_code == 200
    assert texts(s, "alice", ALICE) == []
