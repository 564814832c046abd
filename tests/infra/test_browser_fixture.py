"""The browser fixtures drive a real headless Chromium against a real local HTTP server."""

from __future__ import annotations

import html
import os
import struct
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from chromium import SeenDialog
from helpers import ServerThread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

HOSTILE = "<img src=x onerror=alert('escaped?')>"


def page_app() -> Starlette:
    def doc(title: str, body: str) -> HTMLResponse:
        return HTMLResponse(f"<!doctype html><html><head><title>{title}</title></head><body>{body}</body></html>")

    async def home(request: Request) -> HTMLResponse:
        return doc("Home", '<h1>Home</h1><p><a id="next" href="/second">Go to the second page</a></p>')

    async def second(request: Request) -> HTMLResponse:
        return doc("Second", "<h1>Second page</h1>")

    async def alerting(request: Request) -> HTMLResponse:
        return doc("Alert", "<script>alert('hello from the page'); confirm('sure?')</script>")

    async def escaped(request: Request) -> HTMLResponse:
        return doc("Escaped", f"<p id=memory>{html.escape(HOSTILE)}</p>")

    async def throwing(request: Request) -> HTMLResponse:
        return doc("Throws", "<script>throw new Error('boom in the page')</script>")

    routes = [
        Route("/", home),
        Route("/second", second),
        Route("/alert", alerting),
        Route("/escaped", escaped),
        Route("/throws", throwing),
    ]
    return Starlette(routes=routes)


@pytest.fixture(scope="module")
def site() -> Iterator[ServerThread]:
    server = ServerThread(page_app()).start()
    yield server
    server.stop()


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_a_link_click_navigates_to_the_linked_page(page: Any, site: ServerThread) -> None:
    page.goto(site.url + "/")
    assert page.title() == "Home"
    page.click("#next")
    page.wait_for_url(site.url + "/second")
    assert page.locator("h1").inner_text() == "Second page"


def test_a_screenshot_is_a_png_of_the_viewport(page: Any, site: ServerThread, tmp_path: Path) -> None:
    page.set_viewport_size({"width": 800, "height": 600})
    page.goto(site.url + "/")
    shot = tmp_path / "home.png"
    page.screenshot(path=str(shot))
    assert png_size(shot) == (800, 600)


async def test_an_async_test_runs_between_browser_tests_on_the_session_loop(site: ServerThread) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(site.url + "/second")
    assert response.status_code == 200 and "Second page" in response.text


def test_dialogs_a_script_opens_are_recorded_and_dismissed(
    page: Any, site: ServerThread, dialogs: list[SeenDialog]
) -> None:
    page.goto(site.url + "/alert")
    page.wait_for_load_state("load")
    assert dialogs == [SeenDialog("alert", "hello from the page"), SeenDialog("confirm", "sure?")]


def test_escaped_markup_shows_as_text_and_opens_no_dialog(
    page: Any, site: ServerThread, dialogs: list[SeenDialog]
) -> None:
    page.goto(site.url + "/escaped")
    page.wait_for_load_state("load")
    assert page.locator("#memory").inner_text() == HOSTILE
    assert dialogs == []


def test_uncaught_script_errors_are_recorded(page: Any, site: ServerThread, page_errors: list[str]) -> None:
    page.goto(site.url + "/throws")
    page.wait_for_load_state("load")
    assert len(page_errors) == 1 and "boom in the page" in page_errors[0]


def test_each_page_gets_a_fresh_context_without_the_cookies_of_the_last(page: Any, site: ServerThread) -> None:
    page.goto(site.url + "/")
    assert page.context.cookies() == []
    page.context.add_cookies([{"name": "session", "value": "x", "url": site.url}])
    assert [c["name"] for c in page.context.cookies()] == ["session"]


def test_a_second_page_does_not_see_the_first_pages_cookie(page: Any, site: ServerThread) -> None:
    page.goto(site.url + "/")
    assert page.context.cookies() == []


# A session of its own, so that the order of async and browser tests is the one written here:
# async before the browser starts, async after, and an async test last (the browser closes then).
MIXED_SESSION = {
    "test_a_first.py": """
        import asyncio

        async def test_async_before_any_browser():
            await asyncio.sleep(0)

        def test_browser_after_async(page):
            page.set_content("<p id=p>one</p>")
            assert page.inner_text("#p") == "one"
    """,
    "test_b_second.py": """
        import asyncio
        import pytest_asyncio

        @pytest_asyncio.fixture(scope="session")
        async def queue():
            yield asyncio.Queue()

        def test_browser_again(page):
            page.set_content("<p id=p>two</p>")
            assert page.inner_text("#p") == "two"

        async def test_async_with_a_session_fixture_after_the_browser(queue):
            await queue.put(1)
            assert await queue.get() == 1
    """,
}


def test_sync_browser_tests_and_async_tests_mix_in_one_session_in_any_order(tmp_path: Path) -> None:
    tests_dir = Path(__file__).resolve().parents[1]
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["chromium"]\n')
    for name, body in MIXED_SESSION.items():
        (tmp_path / name).write_text(textwrap.dedent(body))
    ini = ["-o", "asyncio_mode=auto", "-o", "asyncio_default_fixture_loop_scope=session"]
    strict = ["-p", "no:cacheprovider", "-W", "error::pytest.PytestUnraisableExceptionWarning"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests_dir), os.environ.get("PYTHONPATH", "")])}
    argv = [sys.executable, "-m", "pytest", "-q", *strict, "--rootdir", str(tmp_path), "-c", os.devnull, *ini]
    done = subprocess.run([*argv, str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "4 passed" in done.stdout and "warning" not in done.stdout.lower(), done.stdout[-4000:]
