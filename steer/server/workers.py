"""``steer serve --workers N``: N server processes on one machine, one port, one store.

The supervisor (the process ``steer serve`` started as) binds the listening sockets itself, then starts
N workers (``python -m steer serve ... --listen-fd FD``), each a whole steer (its own models, caches
and database handles) accepting connections from the socket it inherited. Where the system has
``SO_REUSEPORT`` (Linux, the BSDs) each worker has a socket of its own on the port and the kernel
spreads new connections over them by a hash of their addresses; on one shared socket, as elsewhere,
whichever worker wakes first takes every connection waiting, so a burst of keep-alive connections
could leave one worker with most of them (docs/benchmarks.md).

The workers share the store (SQLite in WAL mode, or a database server), and stay coherent through it:
every per-process cache checks the user's version or tombstone in the database before use
(``steer.server.services.Services.drop_cached`` is only an early notice).

Rules:

* SIGTERM or SIGINT to the supervisor: each worker gets SIGTERM and stops gracefully (requests in
  flight finish, up to uvicorn's graceful timeout); a worker still running ``STOP_GRACE_S`` later is
  killed. The supervisor exits 0.
* A worker that dies on its own (a crash, the OOM killer, a SIGKILL) is restarted at once, on the
  same socket (kept open by the supervisor, so the connections the kernel queued on it meanwhile are
  served by the new worker). More than ``MAX_RESTARTS`` deaths within ``RESTART_WINDOW_S`` mean something is
  wrong beyond one request: the supervisor stops the others and exits 1, saying so.
* A worker notices its supervisor is gone (its parent changes) within a second and stops itself, so
  a SIGKILLed supervisor leaves no worker holding the port.
* ``/metrics`` is per worker: a scrape reaches one worker and reports that worker's counters
  (each carries the label-free process metrics of its own process).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

log = logging.getLogger("steer")

STOP_GRACE_S = 40.0  # uvicorn's graceful shutdown (30 s) and the services' close
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
BACKLOG = 2048


def bind(host: str, port: int, count: int = 1) -> list[socket.socket]:
    """The listening sockets the workers share, inheritable by them: ``count`` sockets on the one port
    where the system balances connections over such sockets (``SO_REUSEPORT``: each new connection goes
    to one socket by a hash of its addresses), else one socket for all."""
    count = count if hasattr(socket, "SO_REUSEPORT") else 1
    if count > 1:
        # a port another server listens on is an error, as for one socket: SO_REUSEPORT would let a second
        # steer of the same user join the first's port and take a share of its connections
        with _listen(host, port, reuse_port=False) as probe:
            port = probe.getsockname()[1]
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            socks.append(_listen(host, port, reuse_port=count > 1))
            port = socks[0].getsockname()[1]  # port 0: every socket on the port the first one got
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def _listen(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


def inherited(fd: int) -> socket.socket:
    """The listening socket a worker was given (``--listen-fd``)."""
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    return sock


def watch_parent(interval: float = 1.0) -> None:
    """In a worker: stop (SIGTERM to itself) once the supervisor that started it is gone."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, name="steer-parent-watch", daemon=True).start()


class Supervisor:
    """Starts ``n`` workers with ``worker_args`` (the ``steer serve`` options to repeat), worker ``i`` on
    ``socks[i % len(socks)]``, and keeps them running until told to stop (see the module's rules). The
    sockets stay open here: a restarted worker takes over its socket, and the connections that arrived
    on it meanwhile."""

    def __init__(self, socks: Sequence[socket.socket], n: int, worker_args: Sequence[str]) -> None:
        self.socks, self.n, self.worker_args = list(socks), n, list(worker_args)
        self.workers: list[subprocess.Popen[bytes] | None] = [None] * n
        self.stopping = False
        self.deaths: deque[float] = deque()

    def _start(self, i: int) -> None:
        fd = self.socks[i % len(self.socks)].fileno()
        cmd = [sys.executable, "-m", "steer", "serve", *self.worker_args, "--listen-fd", str(fd), "--worker-id", str(i)]
        self.workers[i] = subprocess.Popen(cmd, pass_fds=(fd,), stdin=subprocess.DEVNULL)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stopping = True

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        for i in range(self.n):
            self._start(i)
        code = 0
        while not self.stopping:
            time.sleep(0.2)
            for i, proc in enumerate(self.workers):
                if self.stopping or proc is None or proc.poll() is None:
                    continue
                now = time.monotonic()
                self.deaths.append(now)
                while self.deaths and self.deaths[0] < now - RESTART_WINDOW_S:
                    self.deaths.popleft()
                if len(self.deaths) > MAX_RESTARTS:
                    print(
                        f"steer: {len(self.deaths)} worker deaths within {RESTART_WINDOW_S:.0f} s "
                        f"(the last, worker {i}, exited {proc.returncode}); stopping",
                        file=sys.stderr,
                        flush=True,
                    )
                    self.stopping, code = True, 1
                    break
                log.warning("steer worker %d (pid %d) exited %s; restarting it", i, proc.pid, proc.returncode)
                self._start(i)
        self.stop()
        return code

    def stop(self) -> None:
        """SIGTERM to every worker still running; SIGKILL to those still running ``STOP_GRACE_S`` later."""
        running = [p for p in self.workers if p is not None and p.poll() is None]
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in running:
            try:
                proc.wait(max(deadline - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for sock in self.socks:
            sock.close()
