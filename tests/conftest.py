"""Shared fixtures: steer in process (``make_app``) or on loopback (``make_steer``, with the stub upstream).

``make_app`` is the fast layer: the app and its lifespan in this process, requests through httpx's
``ASGITransport``, models answered by the ``fake`` backend (``steer.testing.fake``). ``make_steer``
serves steer over real HTTP on loopback, for tests of the network path (streams a client leaves,
connection errors, the stub's faults on the wire).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# tests/http must stay a plain folder: with an __init__.py it is a package named ``http`` that hides
# the standard library's (httpx, urllib and uvicorn import http.client), and nothing imports at all.
if (Path(__file__).parent / "http" / "__init__.py").exists():
    raise pytest.UsageError("remove tests/http/__init__.py: a package named http hides the standard library's")

import pytest_asyncio
from helpers import DEFAULT_POLICY, AppSteer, ServerThread, Steer, app_settings, start_app, start_steer

# Fixture plugins (tests/*.py): a real PostgreSQL server, a real headless Chromium, steer processes.
pytest_plugins = ["postgres_server", "chromium", "processes"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture(scope="session")
def stub() -> Iterator[ServerThread]:
    from steer.testing.stub import create_stub

    server = ServerThread(create_stub(latency_s=0.0, tokens=8)).start()
    yield server
    server.stop()




@pytest.fixture
def make_steer(tmp_path: Path, stub: ServerThread) -> Iterator[Callable[..., Steer]]:
    """Start a real steer on loopback; models point at the stub unless ``models`` is given."""
    started: list[ServerThread] = []

    def make(
        policies: dict[str, str] | None = None, models: list[dict[str, Any]] | None = None, **settings: Any
    ) -> Steer:
        workdir = tmp_path / f"steer{len(started)}"
        server = start_steer(workdir, stub.url, policies or {"default": DEFAULT_POLICY}, models, **settings)
        started.append(server)
        return Steer(server, server.app.state.services.settings, workdir / "policies")

    try:
        yield make
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Callable[..., AppSteer]]:
    """Build steer's app in process (lifespan run, no socket); models are fake unless ``models`` is given."""
    started: list[AppSteer] = []

    def make(
        policies: dict[str, str] | None = None, models: list[dict[str, Any]] | None = None, **settings: Any
    ) -> AppSteer:
        app = start_app(tmp_path / f"app{len(started)}", policies or {"default": DEFAULT_POLICY}, models, **settings)
        started.append(app)
        return app

    try:
        yield make
    finally:
        for app in started:
            app.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def make_asgi(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """``await make_asgi(policies=..., models=..., **settings)``: an ``httpx.AsyncClient`` on steer's app
    through ``ASGITransport``, inside the app's lifespan (no socket, no thread); fake models by default.
    The app is ``client.app``. Use it from tests marked ``@pytest.mark.asyncio(loop_scope="session")``."""
    from steer.server.app import create_app
    from steer.testing.asgi import app_client

    async with contextlib.AsyncExitStack() as stack:
        made: list[Any] = []

        async def make(
            policies: dict[str, str] | None = None, models: list[dict[str, Any]] | None = None, **settings: Any
        ) -> Any:
            workdir = tmp_path / f"asgi{len(made)}"
            cfg = app_settings(workdir, policies or {"default": DEFAULT_POLICY}, models, **settings)
            app = create_app(cfg)
            client = await stack.enter_async_context(app_client(app))
            client.app = app  # type: ignore[attr-defined]
            made.append(client)
            return client

        yield make
