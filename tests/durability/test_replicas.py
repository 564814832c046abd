"""Several real ``steer serve`` processes on one store stay coherent (issue 17, item 4 and 5).

Two layouts, each against every backend present:

* ``two-processes``: replicas A and B, two ``python -m steer serve`` processes on their own ports
  sharing one database;
* ``workers2``: one ``steer serve --workers 2``; A and B are the same port, and every request opens a
  fresh connection, so the kernel spreads them over both workers; each check is repeated on several
  connections so that both workers answer it.

Backends: SQLite (one WAL file); PostgreSQL when the ``pgstore`` work is present
(``steer.storage.postgres`` importable), on a fresh database of the test run's real server.

The upstream is the fake of ``test_rerank_http`` (its choices differ, so reranking shows).
"""

from __future__ import annotations

import importlib.util
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import SteerProcess, free_port, wait_for
from rerank_upstream import SHORT, create_fake_upstream

HAS_POSTGRES = importlib.util.find_spec("steer.storage.postgres") is not None
MODES = ["two-processes", "workers2"]
NO_POSTGRES = pytest.mark.skipif(
    not HAS_POSTGRES, reason="the PostgreSQL backend (steer.storage.postgres, pgstore branch) is not present"
)
LAYOUTS = [pytest.param(("sqlite", m), id=f"sqlite-{m}") for m in MODES] + [
    pytest.param(("postgresql", m), id=f"postgresql-{m}", marks=NO_POSTGRES) for m in MODES
]
POLICY = (
    "name: default\nextends: none\nstages:\n  recall: {}\n  remember: {}\n"
    "  rerank: {options: {embeddings: false}}\n"
)
SPREAD = 6  # fresh connections per check in the workers layout: both workers answer with near certainty


class Process(SteerProcess):
    """A ``steer serve`` with extra options (``--workers 2``)."""

    def __init__(self, config: Path, port: int, log: Path, extra: list[str]) -> None:
        super().__init__(config, port, log, "/users/probe/memories", extra=extra, ready_s=180)

    def workers(self) -> list[int]:
        """The pids of this server's workers (``--workers``)."""
        assert self.proc is not None
        out = subprocess.run(["ps", "--ppid", str(self.proc.pid), "-o", "pid="], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]


@dataclass
class Replicas:
    mode: str
    a: Process
    b: Process  # the same process as ``a`` in the workers layout

    @property
    def checks(self) -> int:
        return SPREAD if self.mode == "workers2" else 1

    def kill_a(self) -> None:
        """SIGKILL replica A (in the workers layout: one worker; its supervisor restarts it)."""
        if self.mode == "workers2":
            os.kill(self.a.workers()[0], signal.SIGKILL)
        else:
            self.a.kill()


@pytest.fixture(scope="module")
def upstream(stub: Any) -> Iterator[Any]:
    server = type(stub)(create_fake_upstream()).start()
    yield server
    server.stop()


@pytest.fixture(scope="module", params=LAYOUTS)
def replicas(request: Any, tmp_path_factory: Any, upstream: Any) -> Iterator[Replicas]:
    backend, mode = request.param
    tmp = tmp_path_factory.mktemp(f"replicas-{backend}-{mode}")
    database = str(tmp / "steer.db") if backend == "sqlite" else request.getfixturevalue("postgres").create_database()
    policies = tmp / "policies"
    policies.mkdir()
    (policies / "default.yaml").write_text(POLICY)

    def process(name: str, extra: list[str]) -> Process:
        port = free_port()
        config = tmp / f"{name}.yaml"
        config.write_text(
            f"host: 127.0.0.1\nport: {port}\ndatabase: {database}\npolicies: {policies}\n"
            "log_level: warning\npolicy_reload: false\n"
            f"models:\n  - {{name: fake, api_base: '{upstream.url}/v1', retries: 0}}\n"
        )
        return Process(config, port, tmp / f"{name}.log", extra)

    started: list[Process] = []
    try:
        if mode == "workers2":
            both = process("workers", ["--workers", "2"])
            started.append(both)
            both.start()
            yield Replicas(mode, both, both)
        else:
            a, b = process("a", []), process("b", [])
            started += [a, b]
            a.start()
            b.start()
            yield Replicas(mode, a, b)
    finally:
        for p in started:
            p.stop()


def chat(url: str, user: str, text: str, **body: Any) -> httpx.Response:
    r = httpx.post(
        url + "/chat/completions",
        headers={"X-Steer-Debug": "1"},
        json={"model": "fake", "user": user, "messages": [{"role": "user", "content": text}], **body},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    return r


def recalled(url: str, user: str, question: str) -> list[str]:
    stages = chat(url, user, question).json()["steer"]["stages"]
    recall = next(s for s in stages if s["name"] == "recall")
    return [m["text"] for m in recall.get("injected", [])]


def add(url: str, user: str, text: str) -> httpx.Response:
    r = httpx.post(f"{url}/users/{user}/memories", json={"text": text}, timeout=120)
    assert r.status_code in (200, 201), r.text
    return r


def listed(url: str, user: str) -> list[str]:
    r = httpx.get(f"{url}/users/{user}/memories", timeout=120)
    assert r.status_code == 200, r.text
    return [m["text"] for m in r.json()["data"]]


def rerank(r: httpx.Response) -> dict[str, Any]:
    return next(s for s in r.json()["steer"]["stages"] if s["name"] == "rerank")


def test_a_memory_written_on_a_is_recalled_on_b_whose_index_was_loaded_before(replicas: Replicas) -> None:
    a, b = replicas.a.url, replicas.b.url
    add(b, "wr", "I am vegetarian and never eat meat.")
    for _ in range(replicas.checks):  # B (each worker) loads the user's index now
        assert any("vegetarian" in t for t in recalled(b, "wr", "What should I cook for dinner?"))
    add(a, "wr", "I am allergic to hazelnuts.")
    for _ in range(replicas.checks):  # B's loaded index is stale: the version read says so, it reloads
        assert any("hazelnut" in t for t in recalled(b, "wr", "Which dessert can I bake with nuts?"))


def test_forget_on_b_means_a_serves_none_of_the_user_on_its_very_next_request(replicas: Replicas) -> None:
    a, b = replicas.a.url, replicas.b.url
    add(a, "fg", "I love sailing boats on weekends.")
    add(a, "fg", "I am lactose intolerant.")
    first = chat(a, "fg", "What should I pack?", n=4)
    r = httpx.post(f"{a}/feedback", json={"completion_id": first.json()["id"], "choice": 1}, timeout=60)
    assert r.status_code == 200, r.text
    for _ in range(replicas.checks):  # A (each worker) holds the user's index and lexical index
        assert any("lactose" in t for t in recalled(a, "fg", "Recommend a milk drink."))
    r = httpx.delete(f"{b}/users/fg", timeout=120)
    assert r.status_code == 200 and r.json()["memories_removed"] == 2, r.text
    for _ in range(replicas.checks):  # at once, on A: no memory, no profile row
        assert recalled(a, "fg", "Recommend a milk drink.") == []
        assert listed(a, "fg") == []
        profile = httpx.get(f"{a}/users/fg/profile", timeout=60).json()
        assert profile["events"] == 0, profile
        export = httpx.get(f"{a}/users/fg/export", timeout=60).json()
        assert export["memories"] == [] and export["feedback"] == [] and export["user_profiles"] == [], export


def test_feedback_on_a_moves_the_rerank_on_b(replicas: Replicas) -> None:
    a, b = replicas.a.url, replicas.b.url
    before = rerank(chat(b, "fb", "What should I pack?", n=4))["weights"]["concise"]
    for _ in range(3):
        r = chat(a, "fb", "What should I pack?", n=4)
        short_at = [c["message"]["content"] for c in r.json()["choices"]].index(SHORT)
        fb = httpx.post(f"{a}/feedback", json={"completion_id": r.json()["id"], "choice": short_at}, timeout=60)
        assert fb.status_code == 200 and fb.json()["pairs"] == 3, fb.text
    for _ in range(replicas.checks):
        after = rerank(chat(b, "fb", "What should I pack?", n=4))["weights"]["concise"]
        assert after > before + 0.1, (before, after)


def test_the_same_statement_at_once_on_both_is_stored_once(replicas: Replicas) -> None:
    a, b = replicas.a.url, replicas.b.url
    things = ("green tea", "sparkling water", "lemonade", "espresso", "ginger beer", "iced coffee")
    texts = [f"I always order {thing} when I eat out." for thing in things]
    for text in texts:
        barrier = threading.Barrier(2)
        codes: list[int] = []

        def post(url: str, text: str = text, barrier: threading.Barrier = barrier, codes: list[int] = codes) -> None:
            barrier.wait()
            codes.append(add(url, "dup", text).status_code)

        threads = [threading.Thread(target=post, args=(u,)) for u in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert sorted(codes) == [200, 201], (text, codes)  # one stored it; the other got that memory back
    held = listed(a, "dup")
    assert sorted(held) == sorted(texts), held

    # the background remember path: the same statement in two chats at once, on A and on B
    statement = "I'm allergic to shellfish."
    threads = [threading.Thread(target=chat, args=(u, "dup2", statement)) for u in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert wait_for(lambda: any("shellfish" in t for t in listed(b, "dup2")), timeout=60)
    time.sleep(2.0)  # the slower of the two background writes lands (or merges) meanwhile
    assert len([t for t in listed(b, "dup2") if "shellfish" in t]) == 1, listed(b, "dup2")


def test_sigkill_of_a_during_a_burst_loses_no_acknowledged_write_and_b_keeps_serving(replicas: Replicas) -> None:
    a, b = replicas.a.url, replicas.b.url
    acked: dict[str, set[str]] = {}
    lock = threading.Lock()
    stop = threading.Event()
    kill_after = random.Random(17).randint(15, 30)

    def writer(w: int) -> None:
        user = f"burst{w}"
        mine = acked.setdefault(user, set())
        for i in range(10_000):
            if stop.is_set():
                return
            text = f"I keep note number {i} of writer {w} about my favourite hiking trails."
            try:
                r = httpx.post(f"{a}/users/{user}/memories", json={"text": text}, timeout=30)
            except httpx.HTTPError:
                if replicas.mode == "workers2":
                    continue  # that worker died; the next connection reaches a live one
                return
            if r.status_code in (200, 201):
                with lock:
                    mine.add(r.json()["text"])
                    total = sum(len(s) for s in acked.values())
                if total >= kill_after and not stop.is_set():
                    stop.set()
                    replicas.kill_a()

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert stop.is_set(), "the burst ended before A was killed"
    for user, written in acked.items():
        missing = written - set(listed(b, user))
        assert not missing, f"acknowledged but missing on B after SIGKILL of A: {missing}"
    add(b, "after-kill", "I prefer window seats on trains.")  # B still serves writes and recalls
    assert any("window" in t for t in recalled(b, "after-kill", "Book me a train seat."))
    if replicas.mode == "workers2":  # the supervisor replaced the dead worker
        assert wait_for(lambda: len(replicas.a.workers()) == 2, timeout=30)


def test_sigterm_stops_the_server_and_every_worker_cleanly(replicas: Replicas) -> None:
    server = replicas.b  # in the workers layout: the supervisor
    workers = server.workers() if replicas.mode == "workers2" else []
    assert len(workers) == (2 if replicas.mode == "workers2" else 0)
    server.signal(signal.SIGTERM)
    # the supervisor exits 0; one uvicorn process re-raises the signal once it has shut down gracefully
    expected = (0,) if replicas.mode == "workers2" else (0, -signal.SIGTERM)
    assert server.wait(90) in expected, server.log.read_text()[-3000:]

    def gone(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    assert all(gone(pid) for pid in workers), workers
