"""Helpers shared by the tests: free ports, a uvicorn server in a thread, steer in process, polling."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import uvicorn

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerThread:
    """A uvicorn server for an ASGI app, in a thread with its own event loop."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.app = app
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False, lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.run(self.server.serve())

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                self.stop()  # a server that came up late must not outlive the failed start
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


class SteerProcess:
    """``python -m steer serve --config CONFIG`` in a session of its own, for kill and restart tests.

    ``start`` returns once ``GET {url}{probe}`` answers 200 (the probe should need the memory, so
    the embedding model is loaded).
    """

    def __init__(
        self,
        config: Path,
        port: int,
        log: Path,
        probe: str,
        headers: dict[str, str] | None = None,
        *,
        extra: Sequence[str] = (),
        ready_s: float = 120,
    ) -> None:
        self.config, self.port, self.log, self.probe = config, port, log, probe
        self.headers = headers or {}
        self.extra = list(extra)  # options after ``--config`` (e.g. ``--workers 2``)
        self.ready_s = ready_s
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        """Start (or restart) the process; one that does not come up is killed before the error is raised."""
        self.stop()  # a restart never leaves the previous process behind
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "steer", "serve", "--config", str(self.config), *self.extra],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        STARTED.append(self)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.ready_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(self.url + self.probe, headers=self.headers, timeout=30).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("steer did not start:\n" + self.log.read_text()[-3000:])

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def wait(self, timeout: float = 60) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL the process and its whole session (the leader may be gone, its children not)."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and (self.proc.poll() is None or _group_alive(self.proc.pid)):
            self.kill()

    @property
    def running(self) -> bool:
        return self.proc is not None and (self.proc.poll() is None or _group_alive(self.proc.pid))


STARTED: list[SteerProcess] = []  # every SteerProcess started in this test process (the plugin checks them)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def start_steer(
    workdir: Path, stub_url: str, policies: dict[str, str], models: list[dict[str, Any]] | None = None, **settings: Any
) -> ServerThread:
    """A real steer on loopback: policy files and the database under ``workdir``, the stub as upstream."""
    from steer.server.app import create_app
    from steer.settings import load_settings

    pdir = workdir / "policies"
    pdir.mkdir(parents=True, exist_ok=True)
    for name, text in policies.items():
        (pdir / f"{name}.yaml").write_text(text)
    if models is None:
        models = [{"name": "stub", "api_base": stub_url + "/v1", "retries": 1}]
    cfg = load_settings(None, policies=str(pdir), database=str(workdir / "steer.db"), models=models, **settings)
    return ServerThread(create_app(cfg)).start()


FAKE_MODELS: list[dict[str, Any]] = [{"name": "stub", "backend": "fake", "retries": 1}]
IN_PROCESS = "http://localhost"  # no socket: the transport hands requests to the app


@dataclass
class AppSteer:
    """steer in this process: ``http`` is an ``httpx.Client`` whose requests reach the app directly."""

    thread: Any  # steer.testing.asgi.AppThread
    settings: Any
    policies: Path
    http: httpx.Client
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
        """``steer.Client`` speaking to this app (no socket)."""
        import steer

        return steer.Client(base_url=self.url, http_client=httpx.Client(transport=self.thread.transport), **kw)

    def stop(self) -> None:
        self.http.close()
        self.thread.stop()


def start_app(
    workdir: Path, policies: dict[str, str], models: list[dict[str, Any]] | None = None, **settings: Any
) -> AppSteer:
    """steer's app in this process (lifespan run, no socket): policy files and the database under
    ``workdir``, fake models unless ``models`` is given. Stop it with ``stop()``."""
    from steer.server.app import create_app
    from steer.testing.asgi import AppThread

    cfg = app_settings(workdir, policies, models, **settings)
    thread = AppThread(create_app(cfg)).start()
    return AppSteer(thread, cfg, workdir / "policies", thread.client(base_url=IN_PROCESS, timeout=120))


def app_settings(
    workdir: Path, policies: dict[str, str], models: list[dict[str, Any]] | None = None, **settings: Any
) -> Any:
    """Settings with the policy files and the database under ``workdir``; fake models unless ``models``."""
    from steer.settings import load_settings

    pdir = workdir / "policies"
    pdir.mkdir(parents=True, exist_ok=True)
    for name, text in policies.items():
        (pdir / f"{name}.yaml").write_text(text)
    return load_settings(
        None, policies=str(pdir), database=str(workdir / "steer.db"), models=models or FAKE_MODELS, **settings
    )


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
# a request stage only: a request goes through the pipeline, which puts "Answer kindly." first
SYSTEM_PROMPT_POLICY = "name: default\nextends: none\nstages:\n  system_prompt: {text: Answer kindly.}\n"
# the Responses API's function tool (flat: name and parameters beside "type", not under "function")
RESPONSES_TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        "strict": False,
    }
]
# recall and remember on, nothing else
MEMORY_POLICY = "name: default\nextends: none\nstages:\n  recall: {}\n  remember: {}\n"
# keys of two tenants: t1's admin, a key for alice and one for bob (each scoped to that user), t2's admin
TENANT_KEYS: list[dict[str, Any]] = [
    {"key": "t1-admin", "tenant": "t1", "admin": True},
    {"key": "alice-key", "tenant": "t1", "users": ["alice"]},
    {"key": "bob-key", "tenant": "t1", "users": ["bob"]},
    {"key": "t2-admin", "tenant": "t2", "admin": True},
]


def bearer(key: str) -> dict[str, str]:
    """The Authorization header of ``key``."""
    return {"Authorization": f"Bearer {key}"}
