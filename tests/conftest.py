"""Shared fixtures: real HTTP servers on loopback (a stub upstream and steer itself)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import ServerThread

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture(scope="session")
def stub() -> Iterator[ServerThread]:
    from steer.bench.stub import create_stub

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
    from steer.app import create_app
    from steer.settings import load_settings

    started: list[ServerThread] = []

    def make(
        policies: dict[str, str] | None = None, models: list[dict[str, Any]] | None = None, **settings: Any
    ) -> Steer:
        pdir = tmp_path / f"policies{len(started)}"
        pdir.mkdir()
        for name, text in (policies or {"default": DEFAULT_POLICY}).items():
            (pdir / f"{name}.yaml").write_text(text)
        if models is None:
            models = [{"name": "stub", "api_base": stub.url + "/v1", "retries": 1}]
        cfg = load_settings(
            None,
            policies=str(pdir),
            database=str(tmp_path / f"steer{len(started)}.db"),
            models=models,
            **settings,
        )
        server = ServerThread(create_app(cfg)).start()
        started.append(server)
        return Steer(server, cfg, pdir)

    yield make
    for server in started:
        server.stop()
