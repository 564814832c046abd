"""``steer serve --workers N``: N server processes on one machine, one listening socket, one store.

The supervisor (the process ``steer serve`` started as) binds the listening socket itself, then starts
N workers (``python -m steer serve ... --listen-fd FD``), each a whole steer (its own models, caches
and database handles) accepting connections from that one inherited socket; the kernel hands each
new connection to one of them. The workers share the store (SQLite in WAL mode, or a database
server), and stay coherent through it: every per-process cache checks the user's version or
tombstone in the database before use (``steer.server.services.Services.drop_cached`` is only an early notice).

Rules:

* SIGTERM or SIGINT to the supervisor: each worker gets SIGTERM and stops gracefully (requests in
  flight finish, up to uvicorn's graceful timeout); a worker still running ``STOP_GRACE_S`` later is
  killed. The supervisor exits 0.
* A worker that dies on its own (a crash, the OOM killer, a SIGKILL) is restarted at once, on the
  same socket. More than ``MAX_RESTARTS`` deaths within ``RESTART_WINDOW_S`` mean something is
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


def bind(host: str, port: int) -> socket.socket:
    """The listening socket the workers share, inheritable by them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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
    """Starts ``n`` workers on ``sock`` with ``worker_args`` (the ``steer serve`` options to repeat) and
    keeps them running until told to stop (see the module's rules)."""

    def __init__(self, sock: socket.socket, n: int, worker_args: Sequence[str]) -> None:
        self.sock, self.n, self.worker_args = sock, n, list(worker_args)
        self.workers: list[subprocess.Popen[bytes] | None] = [None] * n
        self.stopping = False
        self.deaths: deque[float] = deque()

    def _start(self, i: int) -> None:
        fd = self.sock.fileno()
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
        self.sock.close()
