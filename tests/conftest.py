"""Shared fixtures: steer in process (``make_app``) or on loopback (``make_steer``, with the stub upstream).

``make_app`` is the fast layer: the app and its lifespan in this process, requests through httpx's
``ASGITransport``, models answered by the ``fake`` backend (``steer.testing.fake``). ``make_steer``
serves steer over real HTTP on loopback, for tests of the network path (streams a client leaves,
connection errors, the stub's faults on the wire).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from helpers import ServerThread, start_steer

# Fixture plugins (tests/*.py): a real PostgreSQL server, a real headless Chromium.
pytest_plugins = ["postgres_server", "chromium"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture(scope="session")
def stub() -> Iterator[ServerThread]:
    from steer.testing.stub import create_stub

    server = ServerThread(create_stub(latency_s=0.0, tokens=8)).start()
    yield server
    server.stop()


@dataclass
class Steer:
    server: ServerThread
    settings: Any
    policies: Path

    @property
    def url(self) -> str:
        return self.server.url + "/v1"

    @property
    def services(self) -> Any:
        return self.server.app.state.services

    def client(self, **kw: Any) -> Any:
        import steer

        return steer.Client(base_url=self.url, **kw)


DEFAULT_POLICY = "name: default\nextends: none\nstages: {}\n"


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


FAKE_MODELS: list[dict[str, Any]] = [{"name": "stub", "backend": "fake", "retries": 1}]
IN_PROCESS = "http://localhost"  # no socket: the transport hands requests to the app


@dataclass
class AppSteer:
    """steer in this process: ``http`` is an ``httpx.Client`` whose requests reach the app directly."""

    thread: Any  # steer.testing.asgi.AppThread
    settings: Any
    policies: Path
    http: Any  # httpx.Client
    url: str = IN_PROCESS + "/v1"
    root: str = IN_PROCESS

    @property
    def app(self) -> Any:
        return self.thread.app

    @property
    def server(self) -> Any:
        """What ``make_steer``'s ``server`` offers: the root URL and the app."""
        return SimpleNamespace(url=self.root, app=self.app)

    @property
    def services(self) -> Any:
        return self.app.state.services

    @property
    def calls(self) -> list[dict[str, Any]]:
        """The bodies the fake models received, oldest first (the stub's ``app.state.calls``)."""
        from steer.testing.fake import calls_of

        router = self.services.router
        return calls_of(router.upstream(m.name) for m in self.settings.models if m.backend == "fake")

    def fake(self, model: str = "stub") -> Any:
        """The fake upstream of ``model`` (its ``calls`` and ``streams``)."""
        return self.services.router.upstream(model)

    def run(self, coro: Any) -> Any:
        """Run a coroutine on the app's event loop (to call its services directly)."""
        return self.thread.run(coro)

    def client(self, **kw: Any) -> Any:
        import httpx

        import steer

        return steer.Client(base_url=self.url, http_client=httpx.Client(transport=self.thread.transport), **kw)


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Callable[..., AppSteer]]:
    """Build steer's app in process (lifespan run, no socket); models are fake unless ``models`` is given."""
    from steer.server.app import create_app
    from steer.settings import load_settings
    from steer.testing.asgi import AppThread

    started: list[AppThread] = []
    clients: list[Any] = []

    def make(
        policies: dict[str, str] | None = None, models: list[dict[str, Any]] | None = None, **settings: Any
    ) -> AppSteer:
        workdir = tmp_path / f"app{len(started)}"
        pdir = workdir / "policies"
        pdir.mkdir(parents=True, exist_ok=True)
        for name, text in (policies or {"default": DEFAULT_POLICY}).items():
            (pdir / f"{name}.yaml").write_text(text)
        cfg = load_settings(
            None, policies=str(pdir), database=str(workdir / "steer.db"), models=models or FAKE_MODELS, **settings
        )
        thread = AppThread(create_app(cfg))
        started.append(thread)
        thread.start()
        http = thread.client(base_url=IN_PROCESS, timeout=120)
        clients.append(http)
        return AppSteer(thread, cfg, pdir, http)

    try:
        yield make
    finally:
        for client in clients:
            client.close()
        for thread in started:
            thread.stop()
