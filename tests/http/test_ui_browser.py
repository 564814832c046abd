"""The inspector in a real headless Chromium against a real ``steer serve`` (the fake upstream behind it).

Each flow of the inspector's issue runs here, and each page is saved as a PNG: under the folder named
by ``STEER_UI_SHOTS`` (``STEER_UI_SHOTS=docs/ui`` renews the pictures the README and docs/inspector.md
show), else under a temporary folder, so a test run leaves the checkout as it was.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from chromium import SeenDialog
from helpers import REPO, SteerProcess, free_port, wait_for
from ui_helpers import ALICE, FULL, HOSTILE, KEYS, T1, chat

_SHOTS_AT = os.environ.get("STEER_UI_SHOTS")
SHOTS = REPO / _SHOTS_AT if _SHOTS_AT else Path(tempfile.gettempdir()) / "steer-ui-shots"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, stub: Any) -> Iterator[SteerProcess]:
    """``steer serve`` in a process of its own: keys, traces kept, recall + sample + rerank for every user."""
    work = tmp_path_factory.mktemp("steer-ui")
    (work / "policies").mkdir()
    (work / "policies" / "default.yaml").write_text(FULL)
    config = {
        "port": free_port(),
        "database": str(work / "steer.db"),
        "policies": str(work / "policies"),
        "models": [{"name": "stub", "api_base": stub.url + "/v1", "retries": 1}],
        "keys": KEYS,
        "traces": {"keep": True},
        "gc_freeze": "off",
    }
    (work / "steer.yaml").write_text(yaml.safe_dump(config))
    proc = SteerProcess(work / "steer.yaml", config["port"], work / "steer.log", "/users/probe/memories", T1)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def base(proc: SteerProcess) -> str:
    return f"http://127.0.0.1:{proc.port}"


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def sign_in(page: Any, proc: SteerProcess, key: str, screenshot: bool = False) -> None:
    page.set_viewport_size({"width": 1200, "height": 800})
    page.goto(base(proc) + "/ui/")
    page.wait_for_url("**/ui/login?next=/ui/")
    page.fill("#key", key)
    if screenshot:
        shot(page, "login")
    page.click("#signin")
    page.wait_for_load_state("load")
    assert page.url == base(proc) + "/ui/", page.url + "\n" + page.content()[-1500:]


def api_memories(proc: SteerProcess, headers: dict[str, str], user: str) -> list[str]:
    r = httpx.get(f"{base(proc)}/v1/users/{user}/memories", headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    return [m["text"] for m in r.json()["data"]]


def add(proc: SteerProcess, headers: dict[str, str], user: str, text: str) -> None:
    r = httpx.post(f"{base(proc)}/v1/users/{user}/memories", headers=headers, json={"text": text}, timeout=60)
    assert r.status_code in (200, 201), r.text


def test_a_scoped_key_signs_in_and_sees_only_its_user(page: Any, served: SteerProcess) -> None:
    add(served, T1, "alice", "I am vegetarian.")
    add(served, T1, "bob", "I love steak.")
    sign_in(page, served, "t1-alice", screenshot=True)
    page.click("a.own")
    page.wait_for_url("**/ui/users/alice")
    assert "I am vegetarian." in page.inner_text("table.memories")
    assert page.locator("a[href='/ui/users']").count() == 0  # no tenant-wide pages for a scoped key
    page.goto(base(served) + "/ui/users/bob")
    assert "404" in page.inner_text("h1") and "steak" not in page.content()
    cookie = next(c for c in page.context.cookies() if c["name"] == "steer_ui")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"


def test_add_edit_delete_a_memory_from_the_page_and_the_api_agrees(page: Any, served: SteerProcess) -> None:
    sign_in(page, served, "t1-alice")
    page.goto(base(served) + "/ui/users/alice")
    page.fill("#new-text", "I like jazz on Sundays.")
    page.click("#add")
    page.wait_for_url("**/ui/users/alice?done=added")
    assert "I like jazz on Sundays." in api_memories(served, ALICE, "alice")
    shot(page, "user")
    row = page.locator("tr.memory", has_text="I like jazz on Sundays.")
    row.locator("a.edit").click()
    page.wait_for_url("**/ui/users/alice/memories/*")
    page.fill("#edit-text", "I like blues on Sundays.")
    shot(page, "memory")
    page.click("#save")
    page.wait_for_url("**/ui/users/alice?done=edited")
    texts = api_memories(served, ALICE, "alice")
    assert "I like blues on Sundays." in texts and "I like jazz on Sundays." not in texts
    page.locator("tr.memory", has_text="I like blues on Sundays.").locator("form.delete button").click()
    page.wait_for_url("**/ui/users/alice?done=deleted")
    assert "I like blues on Sundays." not in api_memories(served, ALICE, "alice")
    assert "I like blues on Sundays." not in page.inner_text("table.memories")


def test_a_trace_of_recall_sample_rerank_shows_the_memories_candidates_and_winner(
    page: Any, served: SteerProcess
) -> None:
    add(served, T1, "carol", "I am vegetarian and I avoid meat.")
    trace_id = chat(base(served), T1, "Suggest a restaurant for dinner tonight.", "carol").headers["x-steer-trace-id"]
    sign_in(page, served, "t1-admin")
    link = f"a.trace[href='/ui/traces/{trace_id}']"
    assert wait_for(lambda: page.reload() is not None and page.locator(link).count() == 1, 20)
    shot(page, "home")
    page.click(link)  # one click from the home page
    page.wait_for_url(f"**/ui/traces/{trace_id}")
    recalled = page.inner_text("table.recalled")
    assert "I am vegetarian and I avoid meat." in recalled
    candidates = page.locator("tr.candidate")
    assert candidates.count() == 3
    assert page.locator("tr.candidate.winner").count() == 1
    assert "winner" in page.inner_text("tr.candidate.winner")
    stages = page.inner_text("table.stages")
    assert all(name in stages for name in ("recall", "sample", "rerank"))
    shot(page, "trace")
    page.click("#trace-user")
    page.wait_for_url("**/ui/users/carol")
    page.click("a[href='/ui/users/carol/profile']")
    page.wait_for_url("**/ui/users/carol/profile")
    assert page.locator("svg.chart").count() == 3
    shot(page, "profile")


def test_a_hostile_memory_opens_no_dialog_and_shows_as_text(
    page: Any, served: SteerProcess, dialogs: list[SeenDialog], page_errors: list[str]
) -> None:
    for text in HOSTILE:
        add(served, T1, "mallory", text)
    chat(base(served), T1, "Recommend a film.", "mallory")
    sign_in(page, served, "t1-admin")
    for path in ("/ui/users/mallory", "/ui/users", "/ui/"):
        page.goto(base(served) + path)
        page.wait_for_load_state("load")
    page.goto(base(served) + "/ui/users/mallory")
    shown = page.locator("tr.memory span.text").all_inner_texts()
    assert sorted(shown) == sorted(HOSTILE)
    assert dialogs == [] and page_errors == []


def test_forget_a_user_from_the_page(page: Any, served: SteerProcess) -> None:
    add(served, T1, "dave", "I prefer window seats.")
    sign_in(page, served, "t1-admin")
    page.click("a[href='/ui/users']")
    page.wait_for_url("**/ui/users")
    page.fill("input[name=q]", "dav")
    page.click("#search button")
    page.click("a.user[href='/ui/users/dave']")
    page.wait_for_url("**/ui/users/dave")
    page.click("#forget")
    page.wait_for_url("**/ui/users/dave/forget")
    shot(page, "forget")
    page.fill("#confirm", "dave")
    page.click("#forget-now")
    page.wait_for_url("**/ui/users?done=forgotten")
    assert "forgotten" in page.inner_text("#done")
    assert api_memories(served, T1, "dave") == []
    page.goto(base(served) + "/ui/users/dave")
    assert "404" in page.inner_text("h1")


def test_a_tenant_admin_cannot_open_another_tenants_user_by_editing_the_url(page: Any, served: SteerProcess) -> None:
    add(served, T1, "erin", "I like tea.")
    trace_id = chat(base(served), T1, "What should I drink?", "erin").headers["x-steer-trace-id"]
    sign_in(page, served, "t2-admin")
    for path in ("/ui/users/erin", f"/ui/traces/{trace_id}", "/ui/users/erin/profile", "/ui/users/erin/forget"):
        response = page.goto(base(served) + path)
        assert response is not None and response.status in (403, 404), path
        assert "I like tea." not in page.content()


def test_admin_pages_users_policies_and_health(page: Any, served: SteerProcess) -> None:
    chat(base(served), T1, "Hello there.", "frank")
    sign_in(page, served, "t1-admin")
    for name in ("users", "policies", "health"):
        page.click(f"header nav a[href='/ui/{name}']")
        page.wait_for_url(f"**/ui/{name}")
        shot(page, name)
    assert "ready" in page.inner_text("#ready")
