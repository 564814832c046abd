"""Durability under mixed load, and a clean drain on shutdown, with a real ``python -m steer serve``.

SIGKILL: clients chat (streaming and not, remember on) and write, edit and delete memories through
the API with scoped keys; the server is killed at a seeded random moment, restarted, and every
acknowledged write must be there (created and edited memories with their text, deleted ones gone),
with each user's vector count in ``user_state`` and the rebuilt index equal to the table's.
(tests/durability/test_memory_durability.py covers bursts of memory POSTs alone.)

SIGTERM: a slow stream in flight when the server is told to stop still completes with [DONE].
"""

from __future__ import annotations

import functools
import random
import signal
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import MEMORY_POLICY as POLICY
from helpers import SteerProcess, free_port, wait_for

SEEDS = (11, 12, 13)
CLIENTS = 6
TENANT = "t1"
FOODS = ("olives", "kimchi", "rye bread", "durian", "oysters", "tofu", "goat cheese", "pickles", "figs")
GENRES = ("sea shanties", "baroque opera", "drum and bass", "bluegrass", "k-pop", "gregorian chant")
ACTS = ("hiking in fog", "night swimming", "crossword puzzles", "bird watching", "pottery", "fencing")


ADMIN = {"Authorization": "Bearer admin"}


class Server(SteerProcess):
    def __init__(self, tmp: Path, stub_url: str) -> None:
        port = free_port()
        (tmp / "policies").mkdir(exist_ok=True)
        (tmp / "policies" / "default.yaml").write_text(POLICY)
        self.database = tmp / "steer.db"
        keys = "".join(f"  - {{key: key-u{i}, tenant: {TENANT}, users: [u{i}]}}\n" for i in range(CLIENTS))
        config = tmp / "steer.yaml"
        config.write_text(
            f"host: 127.0.0.1\nport: {port}\ndatabase: {self.database}\npolicies: {tmp / 'policies'}\n"
            f"policy_reload: false\nlog_level: warning\nmodels:\n  - {{name: stub, api_base: '{stub_url}/v1'}}\n"
            f"keys:\n  - {{key: admin, tenant: {TENANT}, admin: true}}\n{keys}"
        )
        super().__init__(config, port, tmp / "serve.log", "/users/u0/memories", ADMIN)


@dataclass
class Acks:
    """What the server acknowledged to one client (one user): id -> text, and deleted ids."""

    live: dict[int, str] = field(default_factory=dict)
    deleted: set[int] = field(default_factory=set)
    uncertain: set[int] = field(default_factory=set)  # an edit sent but never answered
    deleting: set[int] = field(default_factory=set)  # a delete sent but never answered: may be gone
    ops: int = 0


def client_loop(server: Server, user: str, rng: random.Random, acks: Acks, stop: threading.Event) -> None:
    headers = {"Authorization": f"Bearer key-{user}"}
    base = f"{server.url}/users/{user}/memories"
    with httpx.Client(timeout=30, headers=headers) as http:
        while not stop.is_set():
            op = rng.choice(("add", "add", "add", "patch", "delete", "chat", "chat_stream"))
            target = rng.choice(sorted(acks.live)) if acks.live and op in ("patch", "delete") else None
            mood = rng.choice(("love", "avoid"))
            text = f"I {mood} {rng.choice(FOODS)} and {rng.choice(GENRES)} {rng.random():.6f}"
            try:
                if op == "add" or (target is None and op in ("patch", "delete")):
                    r = http.post(base, json={"text": text})
                    if r.status_code in (200, 201):
                        acks.live[r.json()["id"]] = r.json()["text"]
                elif op == "patch":
                    acks.uncertain.add(target)
                    r = http.patch(f"{base}/{target}", json={"text": text})
                    if r.status_code == 200:
                        acks.live[target] = r.json()["text"]
                        acks.uncertain.discard(target)
                elif op == "delete":
                    acks.deleting.add(target)
                    r = http.delete(f"{base}/{target}")
                    if r.status_code == 200:
                        del acks.live[target]
                        acks.deleted.add(target)
                        acks.deleting.discard(target)
                else:
                    body = {
                        "model": "stub",
                        "messages": [{"role": "user", "content": f"I really enjoy {rng.choice(ACTS)}. Ideas?"}],
                        "stream": op == "chat_stream",
                    }
                    r = http.post(f"{server.url}/chat/completions", json=body)
                    assert r.status_code == 200, r.text
                acks.ops += 1
            except (httpx.HTTPError, OSError):
                if stop.is_set():
                    return
                time.sleep(0.01)


@functools.cache
def embedder() -> Any:
    from retrieval.embeddings import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder()


def check(server: Server, all_acks: dict[str, Acks]) -> None:
    from retrieval.sqlite_store import SqliteFaissStore
    from steer.storage import open_database

    for user, acks in all_acks.items():
        listed = httpx.get(f"{server.url}/users/{user}/memories", headers=ADMIN, timeout=30).json()["data"]
        have = {m["id"]: m["text"] for m in listed}
        for mid, text in acks.live.items():
            if mid not in have and mid in acks.deleting:
                continue  # its delete reached the server, the answer did not reach the client
            assert mid in have, f"{user}: acknowledged memory {mid} lost"
            assert mid in acks.uncertain or have[mid] == text, f"{user}: acknowledged edit of {mid} lost"
        assert not (acks.deleted & set(have)), f"{user}: acknowledged deletes came back"
    with sqlite3.connect(server.database) as conn:
        states = dict(((t, u), n) for t, u, n in conn.execute("SELECT tenant, user, n_vectors FROM user_state"))
        sums = dict(
            ((t, u), n)
            for t, u, n in conn.execute(
                "SELECT tenant, user, sum(n_vectors) FROM memories WHERE superseded_by IS NULL GROUP BY 1, 2"
            )
        )
    for owner, n in sums.items():
        assert states.get(owner) == n, f"user_state of {owner} says {states.get(owner)} vectors, table has {n}"
    store = SqliteFaissStore(open_database(server.database), embedder())
    try:
        for (tenant, user), n in sums.items():
            assert store.index_size(tenant, user) == n
        for user, acks in all_acks.items():
            for mid, text in list(acks.live.items())[:5]:
                if mid not in acks.uncertain | acks.deleting:
                    assert mid in [h.memory.id for h in store.search(TENANT, user, text, k=3)]
    finally:
        store.close()


def test_every_acknowledged_write_survives_sigkill_under_mixed_load(tmp_path, stub):
    server = Server(tmp_path, stub.url)
    all_acks = {f"u{i}": Acks() for i in range(CLIENTS)}
    server.start()
    try:
        for seed in SEEDS:
            rng = random.Random(seed)
            stop = threading.Event()
            threads = [
                threading.Thread(
                    target=client_loop,
                    args=(server, user, random.Random(f"{seed}-{user}"), acks, stop),
                    daemon=True,
                )
                for user, acks in all_acks.items()
            ]
            done_before = sum(a.ops for a in all_acks.values())
            for t in threads:
                t.start()
            # a loaded machine can take seconds before the first answers: kill once work is flowing
            goal = done_before + CLIENTS
            assert wait_for(lambda goal=goal: sum(a.ops for a in all_acks.values()) >= goal, 60)
            time.sleep(rng.uniform(0.5, 1.5))
            server.signal(signal.SIGKILL)
            stop.set()
            assert server.wait(30) == -signal.SIGKILL
            for t in threads:
                t.join(30)
            assert sum(a.ops for a in all_acks.values()) > done_before, server.log.read_text()[-2000:]
            server.start()
            check(server, all_acks)
        assert sum(len(a.live) for a in all_acks.values()) > 0
        assert sum(len(a.deleted) for a in all_acks.values()) > 0
    finally:
        server.stop()


def test_sigterm_drains_an_in_flight_stream_to_done_and_refuses_new_connections(tmp_path, stub):
    server = Server(tmp_path, stub.url)
    server.start()
    body = {
        "model": "stub",
        "messages": [{"role": "user", "content": "tell me a long story"}],
        "stream": True,
        "stub_tokens": 30,
        "stub_token_interval": 0.05,
    }
    try:
        with (
            httpx.Client(timeout=30) as http,
            http.stream("POST", server.url + "/chat/completions", json=body, headers=ADMIN) as r,
        ):
            assert r.status_code == 200
            chunks = r.iter_bytes()
            received = next(chunks)  # the stream has started: now ask the server to stop
            server.signal(signal.SIGTERM)
            time.sleep(0.3)
            with pytest.raises(httpx.ConnectError):
                httpx.get(server.url.removesuffix("/v1") + "/healthz", timeout=5)
            for chunk in chunks:
                received += chunk
        assert received.endswith(b"data: [DONE]\n\n") and b"tok29" in received
        assert server.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once drained
        assert "Traceback" not in server.log.read_text()
    finally:
        server.stop()
