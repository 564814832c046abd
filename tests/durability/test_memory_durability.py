"""Every acknowledged memory write is durable: ``steer serve`` is SIGKILLed during a burst of writes,
restarted, and must list every memory whose POST was answered 2xx, with the index matching the table.

The server is a real ``python -m steer serve`` process on loopback with its own config, policies and
SQLite file; one kill per seed, and each restart both checks the previous burst and takes the next.
"""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import SteerProcess, free_port

from retrieval.sqlite_store import SqliteFaissStore
from steer.storage import open_database

SEEDS = (1, 2, 3)
VERBS = ("love", "avoid", "collect", "can't stand", "always order", "never buy", "read about", "dream of")
THINGS = ("jazz records", "gluten", "red wine", "horror films", "sailing boats", "wool socks", "chess", "opera")
PLACES = ("in winter", "at airports", "on weekends", "in Lisbon", "after work", "with friends", "online")
WRITERS = 4
TENANT = "default"  # no API keys configured: every caller is the default tenant


class _NoEmbedder:
    """Opens the store to count rows and vectors; never embeds."""

    dim = 384
    name = "none"

    def encode(self, texts: Any) -> Any:  # pragma: no cover - never called
        raise AssertionError("the check must not embed")


class Server(SteerProcess):
    def __init__(self, tmp: Path) -> None:
        port = free_port()
        policies = tmp / "policies"
        policies.mkdir(exist_ok=True)
        (policies / "default.yaml").write_text("name: default\nextends: none\nstages:\n  remember: {}\n")
        self.database = tmp / "steer.db"
        config = tmp / "steer.yaml"
        config.write_text(
            f"host: 127.0.0.1\nport: {port}\ndatabase: {self.database}\npolicies: {policies}\n"
            "log_level: warning\npolicy_reload: false\n"
        )
        super().__init__(config, port, tmp / "serve.log", "/users/probe/memories")


def burst(url: str, seed: int, kill: Any) -> dict[str, dict[int, str]]:
    """Writers post memories until ``kill`` fires (after a seeded number of acknowledgements)."""
    kill_after = random.Random(seed).randint(15, 45)
    acked: dict[str, dict[int, str]] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def writer(w: int) -> None:
        user = f"s{seed}-u{w}"
        rng = random.Random(seed * 100 + w)
        mine = acked.setdefault(user, {})
        with httpx.Client(timeout=30) as client:
            for i in range(10_000):
                if stop.is_set():
                    return
                text = f"I {rng.choice(VERBS)} {rng.choice(THINGS)} {rng.choice(PLACES)} ({seed}/{w}/{i})."
                try:
                    r = client.post(f"{url}/users/{user}/memories", json={"text": text})
                except httpx.HTTPError:
                    return  # the server is gone: this write was never acknowledged
                if r.status_code in (200, 201):  # 201 stored; 200 merged into the memory it returns
                    with lock:
                        mine[r.json()["id"]] = r.json()["text"]
                        total = sum(len(a) for a in acked.values())
                    if total >= kill_after and not stop.is_set():
                        stop.set()
                        kill()

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert stop.is_set(), "the burst ended before the server was killed"
    return acked


@pytest.fixture
def server(tmp_path: Path) -> Any:
    s = Server(tmp_path)
    yield s
    s.stop()


def test_every_acknowledged_memory_survives_sigkill_and_the_index_matches_the_table(server: Server) -> None:
    server.start()
    bursts: list[dict[str, dict[int, str]]] = []
    for seed in SEEDS:
        bursts.append(burst(server.url, seed, server.kill))
        server.start()  # restart: the next burst and the checks run against the restarted server
        for acked in bursts:
            for user, written in acked.items():
                listed = httpx.get(f"{server.url}/users/{user}/memories", timeout=30).json()["data"]
                by_id = {m["id"]: m["text"] for m in listed}
                lost = {i: t for i, t in written.items() if by_id.get(i) != t}
                assert not lost, f"acknowledged but lost after SIGKILL (seed {seed}): {lost}"
    assert sum(len(a) for b in bursts for a in b.values()) >= 15 * len(SEEDS)

    store = SqliteFaissStore(open_database(server.database), _NoEmbedder())  # type: ignore[arg-type]
    try:
        for acked in bursts:
            for user in acked:
                c = store.consistency(TENANT, user)
                assert c["index"] == c["table"] == c["recorded"] and c["memories"] >= len(acked[user]), c
    finally:
        store.close()
