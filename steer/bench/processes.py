"""The processes a benchmark starts (stub, steer, LiteLLM's proxy), and stopping them all."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# the folder holding the steer package running this benchmark: the servers it starts import the same one
STEER_ROOT = str(Path(__file__).resolve().parents[2])


def same_steer(env: dict[str, str]) -> dict[str, str]:
    """``env`` with STEER_ROOT first on PYTHONPATH: a ``python -m steer ...`` started in another folder
    runs the code that runs the benchmark, not whichever steer the interpreter has installed."""
    paths = [STEER_ROOT, *(p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != STEER_ROOT)]
    return {**env, "PYTHONPATH": os.pathsep.join(paths)}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class StartupError(RuntimeError):
    pass


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    port: int

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Processes:
    """The processes one run starts; ``close`` stops them all (their whole process groups)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.servers: dict[str, Server] = {}
        self.others: list[subprocess.Popen[bytes]] = []

    def start(
        self, name: str, cmd: list[str], port: int, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> Server:
        log = self.workdir / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=same_steer({**os.environ, **(env or {})}),
                cwd=str(cwd or self.workdir),
                start_new_session=True,
            )
        server = self.servers[name] = Server(name, proc, log, port)
        return server

    def wait_ready(self, server: Server, path: str, timeout: float) -> float:
        """Poll ``GET path`` until it answers 200; the seconds it took."""
        t0 = time.monotonic()
        url = f"http://127.0.0.1:{server.port}{path}"
        while True:
            if server.proc.poll() is not None:
                raise StartupError(
                    f"{server.name} exited with code {server.proc.returncode} before it was ready:\n{server.log_tail()}"
                )
            with contextlib.suppress(OSError, urllib.error.URLError), urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise StartupError(f"{server.name} was not ready within {timeout:.0f}s ({url}):\n{server.log_tail()}")
            time.sleep(0.2)

    @staticmethod
    def stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)  # the process's own session, started by us
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def close(self) -> None:
        for proc in [*self.others, *(s.proc for s in reversed(self.servers.values()))]:
            self.stop(proc)
        self.others.clear()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP unwind as KeyboardInterrupt, so the ``finally`` that stops the servers
    runs (SIGINT too when the shell started us with it ignored, as it does for background jobs)."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
