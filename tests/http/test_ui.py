"""The inspector over real HTTP on loopback, without a browser: access rules, sessions, CSRF, escaping,
the security headers, traces (kept, exported, forgotten, bounded) and the page speed."""

from __future__ import annotations

import asyncio
import html
import re
import statistics
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from helpers import wait_for
from ui_helpers import ALICE, FULL, HOSTILE, KEYS, PASSTHROUGH, T1, chat, csrf_of, signed_in

from steer.storage.database import SqliteDatabase
from steer.storage.traces import TraceLog


@pytest.fixture
def steer_keys(make_steer: Any) -> Any:
    return make_steer(policies={"default": FULL, "passthrough": PASSTHROUGH}, keys=KEYS, traces={"keep": True})


def memories(base: str, headers: dict[str, str], user: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{base}/v1/users/{user}/memories", headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


def add(base: str, headers: dict[str, str], user: str, text: str) -> int:
    r = httpx.post(f"{base}/v1/users/{user}/memories", headers=headers, json={"text": text}, timeout=60)
    assert r.status_code in (200, 201), r.text
    return int(r.json()["id"])


def page_error(page: httpx.Response) -> str:
    """The message of the inspector's error page, unescaped."""
    return html.unescape(page.text.split('<p class="error" id="error">')[1].split("</p>")[0])


def test_no_keys_the_inspector_answers_loopback_only_with_a_session_and_strict_headers(make_steer: Any) -> None:
    s = make_steer()
    base = s.server.url
    r = httpx.get(base + "/ui/", timeout=30)
    assert r.status_code == 200
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert "script-src 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui" in cookie
    refused = httpx.get(base + "/ui/", headers={"Host": "rebound.example"}, timeout=30)
    assert refused.status_code == 421
    assert "<script" not in r.text.lower()  # no page needs a script


def test_with_keys_a_page_needs_a_session_and_a_wrong_key_is_refused(steer_keys: Any) -> None:
    base = steer_keys.server.url
    r = httpx.get(base + "/ui/users/alice", timeout=30)
    assert r.status_code == 303 and r.headers["location"] == "/ui/login?next=/ui/users/alice"
    with httpx.Client(base_url=base, timeout=30) as client:
        form = client.get("/ui/login")
        token = form.text.split('name="login_token" value="')[1].split('"')[0]
        bad = client.post("/ui/login", data={"key": "not-a-key", "login_token": token})
        assert bad.status_code == 401 and "not one of this steer" in bad.text
        assert "steer_ui=" not in bad.headers.get("set-cookie", "")
        forged = client.post("/ui/login", data={"key": "t1-admin", "login_token": "forged"})
        assert forged.status_code == 403
    client = signed_in(base, "t1-admin")
    assert client.get("/ui/").status_code == 200
    cookie = next(c for c in client.cookies.jar if c.name == "steer_ui")
    assert cookie.has_nonstandard_attr("HttpOnly")
    assert "t1-admin" not in cookie.value  # the session holds a digest, never the key


def test_a_scoped_key_sees_only_its_user(steer_keys: Any) -> None:
    base = steer_keys.server.url
    add(base, T1, "alice", "I am vegetarian.")
    add(base, T1, "bob", "I love steak.")
    alice = signed_in(base, "t1-alice")
    assert "vegetarian" in alice.get("/ui/users/alice").text
    assert alice.get("/ui/users/bob").status_code == 404
    assert alice.get("/ui/users/bob/export").status_code == 404
    home = alice.get("/ui/").text
    assert 'href="/ui/users/alice"' in home and "bob" not in home
    users = alice.get("/ui/users").text
    assert "alice" in users and "bob" not in users
    assert alice.get("/ui/policies").status_code == 403
    assert alice.get("/ui/health").status_code == 403


def test_every_form_needs_its_csrf_token_and_a_same_origin(steer_keys: Any) -> None:
    base = steer_keys.server.url
    admin = signed_in(base, "t1-admin")
    add(base, T1, "carol", "I prefer tea.")
    token = csrf_of(admin, "/ui/users/carol")
    no_token = admin.post("/ui/users/carol/memories", data={"text": "I hate mornings."})
    assert no_token.status_code == 403
    wrong = admin.post("/ui/users/carol/memories", data={"text": "I hate mornings.", "csrf": "x" * 40})
    assert wrong.status_code == 403
    cross = admin.post(
        "/ui/users/carol/memories",
        data={"text": "I hate mornings.", "csrf": token},
        headers={"Origin": "https://evil.example"},
    )
    assert cross.status_code == 403
    assert [m["text"] for m in memories(base, T1, "carol")] == ["I prefer tea."]
    other = signed_in(base, "t1-admin")  # another session's token is not this one's
    assert other.post("/ui/users/carol/memories", data={"text": "I hate mornings.", "csrf": token}).status_code == 403
    ok = admin.post("/ui/users/carol/memories", data={"text": "I hate mornings.", "csrf": token})
    assert ok.status_code == 303
    assert sorted(m["text"] for m in memories(base, T1, "carol")) == ["I hate mornings.", "I prefer tea."]
    assert admin.get("/ui/logout").status_code == 405  # signing out is a POST too


def test_add_edit_delete_through_the_page_agree_with_the_api(steer_keys: Any) -> None:
    base = steer_keys.server.url
    alice = signed_in(base, "t1-alice")
    token = csrf_of(alice, "/ui/users/alice")
    assert alice.post("/ui/users/alice/memories", data={"text": "I like jazz.", "csrf": token}).status_code == 303
    (m,) = memories(base, ALICE, "alice")
    assert m["text"] == "I like jazz." and m["source_conversation"] == "inspector"
    edit = alice.get(f"/ui/users/alice/memories/{m['id']}")
    assert edit.status_code == 200 and 'value="I like jazz."' in edit.text
    r = alice.post(f"/ui/users/alice/memories/{m['id']}/edit", data={"text": "I like blues.", "csrf": token})
    assert r.status_code == 303
    assert [x["text"] for x in memories(base, ALICE, "alice")] == ["I like blues."]
    too_long = alice.post(f"/ui/users/alice/memories/{m['id']}/edit", data={"text": "x" * 5000, "csrf": token})
    assert too_long.status_code == 400 and "characters" in too_long.text
    assert alice.post(f"/ui/users/alice/memories/{m['id']}/delete", data={"csrf": token}).status_code == 303
    assert memories(base, ALICE, "alice") == []


def test_the_add_form_and_the_api_refuse_the_same_inputs_with_the_same_errors(steer_keys: Any) -> None:
    base = steer_keys.server.url
    admin = signed_in(base, "t1-admin")
    add(base, T1, "erin", "I prefer tea.")
    token = csrf_of(admin, "/ui/users/erin")
    bad: list[dict[str, str]] = [
        {"text": ""}, {"text": "   "}, {"text": "x" * 5000}, {"text": "I like jazz.", "kind": "not an id"},
        {"text": "I like jazz.", "kind": "k" * 40}, {"text": "I like jazz.", "kind": "  "},
    ]  # fmt: skip
    for fields in bad:
        api = httpx.post(f"{base}/v1/users/erin/memories", headers=T1, json=fields, timeout=60)
        page = admin.post("/ui/users/erin/memories", data={**fields, "csrf": token})
        assert api.status_code == page.status_code == 400, (fields, api.text)
        assert page_error(page) == api.json()["error"]["message"], fields
    # a blank field of the form is one not sent: no kind is the API's absent kind
    assert admin.post("/ui/users/erin/memories", data={"text": "I like jazz.", "kind": "", "csrf": token}).is_redirect
    assert sorted((m["text"], m["kind"]) for m in memories(base, T1, "erin")) == [
        ("I like jazz.", "manual"), ("I prefer tea.", "manual"),
    ]  # fmt: skip
    for user in ("~" + "0" * 4, " alice", "a\u200bb"):  # refused as ids by both, with the same 400
        api = httpx.get(f"{base}/v1/users/{quote(user, safe='')}/memories", headers=T1, timeout=60)
        page = admin.get(f"/ui/users/{quote(user, safe='')}")
        assert api.status_code == page.status_code == 400, (user, api.text)
        assert api.json()["error"]["code"] == "invalid_user"
        assert page_error(page) == api.json()["error"]["message"]


def test_the_inspector_reads_a_mapped_user_id_as_the_api_does_and_forgets_that_user(steer_keys: Any) -> None:
    base = steer_keys.server.url
    given = "Zoë Martin"  # stored under a mapped key (~ and 40 hex digits)
    add(base, T1, quote(given), "I am allergic to peanuts.")
    add(base, T1, "zoe", "I love peanuts.")  # another user, untouched by the forget
    admin = signed_in(base, "t1-admin")
    path = f"/ui/users/{quote(given, safe='')}"
    assert "allergic to peanuts" in admin.get(path).text
    # the users list links the mapped user by its stored key, which opens the same page for a tenant-wide
    # viewer; another tenant's admin gets the 404 of a user that never was
    (stored,) = re.findall(r'href="/ui/users/(~[0-9a-f]{40})"', admin.get("/ui/users").text)
    assert "allergic to peanuts" in admin.get(f"/ui/users/{stored}").text
    assert signed_in(base, "t2-admin").get(f"/ui/users/{stored}").status_code == 404
    token = csrf_of(admin, path + "/forget")
    wrong = admin.post(path + "/forget", data={"csrf": token, "confirm": "zoe"})
    assert wrong.status_code == 400 and memories(base, T1, quote(given)) != []
    assert admin.post(path + "/forget", data={"csrf": token, "confirm": given}).status_code == 303
    assert memories(base, T1, quote(given)) == []
    assert [m["text"] for m in memories(base, T1, "zoe")] == ["I love peanuts."]


def test_hostile_memories_and_user_text_render_as_text(steer_keys: Any) -> None:
    base = steer_keys.server.url
    for text in HOSTILE:
        add(base, T1, "mallory", text)
    admin = signed_in(base, "t1-admin")
    for path in ("/ui/users/mallory", "/ui/users", "/ui/"):
        page = admin.get(path).text
        assert "<img src=x" not in page and "<script>alert" not in page
    page = admin.get("/ui/users/mallory").text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "&lt;/script&gt;&lt;script&gt;alert(2)&lt;/script&gt;" in page
    # an id with markup is stored under a mapped key, by the API and the page alike; the page shows it as text
    add(base, T1, "%3Cb%3Ex", "I like tables.")
    page = admin.get("/ui/users/%3Cb%3Ex")
    assert page.status_code == 200 and "I like tables." in page.text and "<b>x" not in page.text


def test_another_tenants_admin_gets_404_for_the_user_and_the_trace(steer_keys: Any) -> None:
    base = steer_keys.server.url
    add(base, T1, "dave", "I am allergic to peanuts.")
    trace_id = chat(base, T1, "Suggest a snack for me.", "dave").headers["x-steer-trace-id"]
    t1 = signed_in(base, "t1-admin")
    assert wait_for(lambda: t1.get(f"/ui/traces/{trace_id}").status_code == 200, 20)
    t2 = signed_in(base, "t2-admin")
    assert t2.get("/ui/users/dave").status_code == 404
    assert t2.get(f"/ui/traces/{trace_id}").status_code == 404
    assert "dave" not in t2.get("/ui/").text and "dave" not in t2.get("/ui/users").text


def test_a_trace_shows_the_injected_memories_the_candidates_and_the_winner(steer_keys: Any) -> None:
    base = steer_keys.server.url
    mid = add(base, T1, "erin", "I am vegetarian.")
    r = chat(base, T1, "Where should we go for dinner tonight?", "erin")
    trace_id = r.headers["x-steer-trace-id"]
    admin = signed_in(base, "t1-admin")
    assert wait_for(lambda: admin.get(f"/ui/traces/{trace_id}").status_code == 200, 20)
    page = admin.get(f"/ui/traces/{trace_id}").text
    assert "I am vegetarian." in page and f'<td class="n">{mid}</td>' in page
    for stage in ("recall", "sample", "rerank"):
        assert f"<td>{stage}</td>" in page
    assert page.count('<tr class="candidate') == 3 and page.count("winner</b>") == 1
    # the page links back to the user and the user's page lists the request with its trace
    assert 'href="/ui/users/erin"' in page
    assert f'href="/ui/traces/{trace_id}"' in admin.get("/ui/users/erin").text
    assert f'href="/ui/traces/{trace_id}"' in admin.get("/ui/").text


def test_a_kept_trace_holds_no_memory_text_nor_prompt_without_log_prompts(steer_keys: Any) -> None:
    base = steer_keys.server.url
    add(base, T1, "fay", "I collect vintage zorblat-7731 stamps.")
    trace_id = chat(base, T1, "Any weekend plan ideas with qwixel-5512?", "fay").headers["x-steer-trace-id"]
    services = steer_keys.services
    assert wait_for(lambda: services.traces.get("t1", trace_id) is not None, 20)
    raw = str(services.traces.get("t1", trace_id))
    assert "zorblat-7731" not in raw and "qwixel-5512" not in raw
    recall = next(st for st in services.traces.get("t1", trace_id)["stages"] if st["name"] == "recall")
    assert recall["injected"] and "text" not in recall["injected"][0] and recall["budget_tokens"] > 0


def test_traces_are_exported_and_forgotten_with_the_user(steer_keys: Any) -> None:
    base = steer_keys.server.url
    add(base, T1, "gus", "I like hiking.")
    trace_id = chat(base, T1, "Plan my Saturday.", "gus").headers["x-steer-trace-id"]
    export = httpx.get(f"{base}/v1/users/gus/export", headers=T1, timeout=60).json()
    assert [t["trace_id"] for t in export["traces"]] == [trace_id]
    admin = signed_in(base, "t1-admin")
    page_export = admin.get("/ui/users/gus/export")
    assert page_export.headers["content-disposition"].startswith("attachment")
    assert page_export.json()["traces"] == export["traces"]
    token = csrf_of(admin, "/ui/users/gus/forget")
    wrong = admin.post("/ui/users/gus/forget", data={"csrf": token, "confirm": "nope"})
    assert wrong.status_code == 400 and memories(base, T1, "gus")
    done = admin.post("/ui/users/gus/forget", data={"csrf": token, "confirm": "gus"})
    assert done.status_code == 303
    assert memories(base, T1, "gus") == []
    assert steer_keys.services.traces.get("t1", trace_id) is None
    assert admin.get("/ui/users/gus").status_code == 404


def test_the_fast_path_and_traces_off_keep_no_trace(make_steer: Any) -> None:
    s = make_steer(policies={"default": FULL, "passthrough": PASSTHROUGH}, keys=KEYS, traces={"keep": True})
    trace_id = chat(s.server.url, T1, "hello", "anon-fast").headers["x-steer-trace-id"]
    time.sleep(1.2)  # two flushes of the trace writer
    assert s.services.traces.get("t1", trace_id) is None
    off = make_steer(policies={"default": FULL}, keys=KEYS)
    assert off.services.traces is None
    add(off.server.url, T1, "hal", "I like tea.")
    trace_id = chat(off.server.url, T1, "Drinks?", "hal").headers["x-steer-trace-id"]
    admin = signed_in(off.server.url, "t1-admin")
    r = admin.get(f"/ui/traces/{trace_id}")
    assert r.status_code == 404 and "traces.keep" in r.text


def test_trace_retention_bounds_rows_and_days(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "t.db")
    log = TraceLog(db, max_rows=3, max_days=1)

    def trace(i: int) -> dict[str, Any]:
        return {"trace_id": f"t{i}", "tenant": "t1", "user": "u", "policy": "p", "model": "m", "total_ms": 1.0,
                "stages": []}  # fmt: skip

    for i in range(5):
        log.add(trace(i), 200, time.time())
    asyncio.run(log.flush())
    db.execute("UPDATE request_traces SET created_at = created_at - 2 * 86400 WHERE trace_id = 't4'")
    db.execute("UPDATE request_traces SET created_at = created_at - 10 + 1 WHERE trace_id = 't0'")
    assert log.purge() == 2  # t4 is older than a day; of the 4 left, the oldest (t0) is over max_rows
    assert sorted(r[0] for r in db.execute("SELECT trace_id FROM request_traces")) == ["t1", "t2", "t3"]


def test_policies_and_health_pages_for_an_admin(steer_keys: Any) -> None:
    base = steer_keys.server.url
    chat(base, T1, "hello there", "ivy")
    admin = signed_in(base, "t1-admin")
    policies = admin.get("/ui/policies").text
    assert "passthrough" in policies and "All policy files are valid" in policies
    (steer_keys.policies / "broken.yaml").write_text("name: broken\nstages: {nope: {}}\n")
    assert wait_for(lambda: "Last reload error" in admin.get("/ui/policies").text, 20)
    health = admin.get("/ui/health").text
    assert 'id="ready">ready' in health and "<td>chat</td>" in health and "<td>recall</td>" in health


def test_page_speed_user_with_500_memories_and_a_trace(steer_keys: Any, capsys: Any) -> None:
    """Median time of 50 GETs of each page, measured from the client (printed for docs/inspector.md)."""
    from retrieval import MemoryDraft

    base = steer_keys.server.url
    add(base, T1, "jo", "I am vegetarian.")
    store = asyncio.run(steer_keys.services.memory.store())  # loaded by the add above
    drafts = [MemoryDraft(f"I like hobby number {i} on day {i % 7}.", "manual", "bench", None, {}) for i in range(499)]
    store.add("t1", "jo", drafts)
    trace_id = chat(base, T1, "Where should we eat?", "jo").headers["x-steer-trace-id"]
    admin = signed_in(base, "t1-admin")
    assert wait_for(lambda: admin.get(f"/ui/traces/{trace_id}").status_code == 200, 20)
    first = admin.get("/ui/users/jo").text
    assert "Memories (500)" in first and first.count('class="memory"') == 100 and 'id="older"' in first
    assert admin.get("/ui/users/jo?page=5").text.count('class="memory"') == 100
    figures = {}
    for name, path in (("user page, 500 memories", "/ui/users/jo"), ("trace page", f"/ui/traces/{trace_id}")):
        times = []
        for _ in range(50):
            t0 = time.perf_counter()
            assert admin.get(path).status_code == 200
            times.append((time.perf_counter() - t0) * 1000)
        figures[name] = statistics.median(times)
    with capsys.disabled():
        print("\ninspector page medians (ms):", {k: round(v, 1) for k, v in figures.items()})
    assert all(v > 0 for v in figures.values())
