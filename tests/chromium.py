"""A real headless Chromium for the tests, driven by Playwright's sync API, and its fixtures.

Rules:
- The browser is Debian's ``chromium`` package (``/usr/bin/chromium``; ``STEER_TEST_CHROMIUM``
  names another executable), which ``make test`` installs when it is missing. Playwright's own
  browser download is never used. A missing browser fails the tests that need it: they never skip
  (CI must run them). Only an OS other than Linux skips.
- Browser tests are plain (sync) test functions. Playwright's sync API keeps its event loop marked
  as the thread's running loop between calls, which would stop pytest-asyncio from running an
  async test or fixture in the same thread ("Cannot run the event loop while another loop is
  running"). So before each test phase this plugin parks that mark when the test uses no browser
  fixture and puts it back when it does: async tests and browser tests mix in one session, in any
  order. The one thing that cannot work is a Playwright call inside an async test.

Fixtures:
- ``browser`` (session): a Chromium launched once per test run, closed at the end.
- ``page``: a new page in a fresh browser context (no cookies or storage shared between tests),
  closed after the test. Its dialogs (alert, confirm, prompt, beforeunload) are dismissed and
  recorded in ``dialogs``; uncaught script errors are recorded in ``page_errors``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
# As root Chromium's sandbox cannot start, and the tests need no GPU and no call out to Google's
# services (there is no network): each switch below turns one of those off.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BROWSER_FIXTURES = frozenset({"browser", "page", "dialogs", "page_errors"})


@dataclass(frozen=True)
class SeenDialog:
    """A dialog a page opened: its kind (``alert``, ``confirm``, ``prompt``, ``beforeunload``) and text."""

    type: str
    message: str


class LoopMark:
    """Parks and restores the running-loop mark that Playwright's sync API leaves on this thread."""

    def __init__(self) -> None:
        self.parked: asyncio.AbstractEventLoop | None = None

    def park(self) -> None:
        # Between test phases no loop really runs on pytest's thread: a mark found here is Playwright's.
        loop = asyncio._get_running_loop()
        if loop is not None:
            self.parked = loop
            asyncio._set_running_loop(None)

    def restore(self) -> None:
        loop, self.parked = self.parked, None
        if loop is not None and not loop.is_closed():
            asyncio._set_running_loop(loop)


LOOP_MARK = pytest.StashKey[LoopMark]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[LOOP_MARK] = LoopMark()


def _before_phase(item: pytest.Item) -> None:
    mark = item.config.stash[LOOP_MARK]
    if BROWSER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
        mark.restore()
    else:
        mark.park()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _before_phase(item)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    _before_phase(item)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    _before_phase(item)


def chromium_executable() -> str:
    path = os.environ.get("STEER_TEST_CHROMIUM", CHROMIUM)
    if not (Path(path).is_file() and os.access(path, os.X_OK)):
        raise RuntimeError(
            f"Chromium not found at {path}: run `make test` (it installs Debian's chromium package)"
            " or `apt-get install chromium`"
        )
    return path


@pytest.fixture(scope="session")
def browser(pytestconfig: pytest.Config) -> Iterator[Any]:
    """Debian's Chromium, headless, launched once for the test run."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the browser fixtures run Debian's chromium: Linux only")
    from playwright.sync_api import sync_playwright

    executable = chromium_executable()
    pw = sync_playwright().start()
    try:
        chromium = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
    except BaseException:
        pw.stop()
        raise
    yield chromium
    # The last phase may have parked Playwright's loop (a test without the browser ran last).
    pytestconfig.stash[LOOP_MARK].restore()
    try:
        chromium.close()
    finally:
        pw.stop()


@pytest.fixture
def dialogs() -> list[SeenDialog]:
    """The dialogs ``page`` opened during the test, in order (each one dismissed)."""
    return []


@pytest.fixture
def page_errors() -> list[str]:
    """Uncaught script errors of ``page`` during the test, in order."""
    return []


@pytest.fixture
def page(browser: Any, dialogs: list[SeenDialog], page_errors: list[str]) -> Iterator[Any]:
    """A page in a fresh browser context, closed (context and all) after the test."""
    context = browser.new_context()
    try:
        new_page = context.new_page()

        def on_dialog(dialog: Any) -> None:
            dialogs.append(SeenDialog(dialog.type, dialog.message))
            dialog.dismiss()

        new_page.on("dialog", on_dialog)
        new_page.on("pageerror", lambda error: page_errors.append(str(error)))
        yield new_page
    finally:
        context.close()
