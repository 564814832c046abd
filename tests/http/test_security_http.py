"""HTTP-level security: no-key mode against web pages, slow clients, malformed upstream answers,
huge bodies, and which user a request is served as.

Everything goes through real HTTP on loopback: a real steer (in a thread, or a real
``python -m steer serve`` where the server's own construction is what is tested) in front of the
stub upstream, whose ``stub_fault`` modes give the broken answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
import uvicorn
from helpers import SteerProcess, free_port

from steer.errors import InvalidRequest
from steer.protocol import parse_json, validate_chat
from steer.server.app import create_app
from steer.server.uvicorn import connection_cap, server_config
from steer.settings import load_settings

MSG = [{"role": "user", "content": "hi"}]
PASSTHROUGH = "name: default\nextends: none\nstages: {}\n"
KEYS = [{"key": "app-secret", "tenant": "acme"}, {"key": "admin-secret", "tenant": "acme", "admin": True}]
JSON = {"content-type": "application/json"}


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": "stub", "messages": MSG, **extra}


def assert_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["code"] == code, err
    return dict(err)


# --- 5. no-key mode and web pages ------------------------------------------------------------------


def test_no_key_mode_answers_only_requests_addressed_to_this_machine_on_every_route(make_app):
    s = make_app()
    base = s.server.url
    calls = len(s.calls)
    port = 8400  # in process there is no port; the Host header names one as a browser's would
    rebound = {"Host": f"attacker.example:{port}"}  # a page whose name now resolves to 127.0.0.1
    for method, path, body in [
        ("GET", "/v1/models", None),
        ("GET", "/v1/users/alice/export", None),
        ("GET", "/v1/users/alice/memories", None),
        ("DELETE", "/v1/users/alice", None),
        ("POST", "/v1/chat/completions", chat_body()),
        ("GET", "/metrics", None),
        ("GET", "/nothing-here", None),  # Starlette's 404
        ("GET", "/v1/chat/completions", None),  # Starlette's 405
    ]:
        r = s.http.request(method, base + path, json=body, headers=rebound, timeout=30)
        err = assert_error(r, 421, "host_not_allowed")
        assert err["type"] == "invalid_request_error" and "allowed_hosts" in err["message"], (path, err)
    assert len(s.calls) == calls  # nothing reached the upstream
    for host in ("127.0.0.1", f"127.0.0.1:{port}", "localhost", "LocalHost:1", "[::1]", "[::1]:8400"):
        assert s.http.get(base + "/v1/models", headers={"Host": host}).status_code == 200, host


def test_allowed_hosts_adds_names_in_no_key_mode_and_keys_lift_the_host_and_body_type_rules(make_app):
    s = make_app(allowed_hosts=["steer.internal"])
    assert s.http.get(s.url + "/models", headers={"Host": "steer.internal:9000"}).status_code == 200
    assert s.http.get(s.url + "/models", headers={"Host": "other.internal"}).status_code == 421
    keyed = make_app(keys=KEYS)
    auth = {"Authorization": "Bearer app-secret"}
    r = keyed.http.get(keyed.url + "/models", headers={"Host": "api.example.com", **auth})
    assert r.status_code == 200
    form = {"content-type": "application/x-www-form-urlencoded", **auth}  # what curl -d sends
    r = keyed.http.post(keyed.url + "/chat/completions", content=orjson.dumps(chat_body()), headers=form)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("ctype", [None, "text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded"])
def test_no_key_mode_refuses_a_body_not_declared_json_before_reading_it(make_app, ctype):
    s = make_app()
    calls = len(s.calls)
    headers = {} if ctype is None else {"content-type": ctype}
    for path, body in [("/chat/completions", chat_body()), ("/users/alice/memories", {"text": "I love olives."})]:
        r = s.http.post(s.url + path, content=orjson.dumps(body), headers=headers, timeout=30)
        assert_error(r, 415, "unsupported_media_type")
    assert len(s.calls) == calls
    for json_type in ("application/json", "application/json; charset=utf-8", "Application/JSON ;charset=UTF-8"):
        headers = {"content-type": json_type}
        r = s.http.post(s.url + "/chat/completions", content=orjson.dumps(chat_body()), headers=headers)
        assert r.status_code == 200, (json_type, r.text)


@pytest.mark.parametrize(
    "browser",
    [
        {"Origin": "http://attacker.example"},
        {"Origin": "null"},  # sandboxed frames, file:// pages
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},  # another port of this host: another origin, same site
    ],
)
def test_no_key_mode_refuses_state_changes_that_a_web_page_started(make_app, browser):
    s = make_app(cors_origins=["http://app.example"])
    calls = len(s.calls)
    r = s.http.post(s.url + "/chat/completions", json=chat_body(), headers=browser)
    assert_error(r, 403, "cross_origin")
    assert_error(s.http.delete(s.url + "/users/alice", headers=browser), 403, "cross_origin")
    assert len(s.calls) == calls
    assert s.http.get(s.url + "/models", headers=browser).status_code == 200  # reads: CORS hides the answer


def test_no_key_mode_lets_listed_origins_and_non_browser_clients_change_state(make_app):
    s = make_app(cors_origins=["http://app.example", "*"])
    listed = {"Origin": "http://app.example", "Sec-Fetch-Site": "cross-site"}
    assert s.http.post(s.url + "/chat/completions", json=chat_body(), headers=listed).status_code == 200
    for same in ({"Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"}, {}):
        assert s.http.post(s.url + "/chat/completions", json=chat_body(), headers=same).status_code == 200
    # "*" lets any page read answers (CORS), never write without a key
    r = s.http.post(s.url + "/chat/completions", json=chat_body(), headers={"Origin": "http://other.example"})
    assert r.status_code == 403


# --- minor: one user per request ------------------------------------------------------------------


@pytest.mark.parametrize("keys", [None, KEYS], ids=["no-keys", "unscoped-key"])
def test_identity_sources_naming_different_users_are_a_400_in_every_key_mode(make_app, keys):
    s = make_app(keys=keys) if keys else make_app()
    auth = {"Authorization": "Bearer app-secret"} if keys else {}
    calls = len(s.calls)
    r = s.http.post(s.url + "/chat/completions", json=chat_body(user="bob"), headers={**auth, "X-Steer-User": "alice"})
    err = assert_error(r, 400, "user_conflict")
    assert err["param"] == "user" and "alice" in err["message"] and "bob" in err["message"]
    r = s.http.post(s.url + "/chat/completions", json=chat_body(user="alice", safety_identifier="carol"), headers=auth)
    assert assert_error(r, 400, "user_conflict")["param"] == "safety_identifier"
    assert len(s.calls) == calls  # the upstream never saw either
    same = {**auth, "X-Steer-User": "alice"}
    r = s.http.post(s.url + "/chat/completions", json=chat_body(user="alice", safety_identifier="alice"), headers=same)
    assert r.status_code == 200 and s.calls[-1]["user"] == "alice"


# --- 10. malformed upstream answers and minor: what a 502 says --------------------------------------


def stub_models(stub: Any, backend: str = "openai") -> list[dict[str, Any]]:
    model: dict[str, Any] = {"name": "stub", "api_base": stub.url + "/v1", "retries": 0, "timeout": 30}
    if backend == "litellm":
        model.update(model="openai/stub", backend="litellm", api_key="unused")
    return [model]


def events_of(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


def test_a_200_whose_choices_are_not_objects_is_an_openai_shaped_502(make_steer, stub):
    s = make_steer(models=stub_models(stub))
    r = httpx.post(s.url + "/chat/completions", json=chat_body(stub_fault="bad-choices"), timeout=60)
    err = assert_error(r, 502, "upstream_failed")
    assert err["type"] == "upstream_error" and err["message"].startswith("stub:")


def test_a_stream_answered_with_a_whole_json_completion_is_a_502(make_steer, stub):
    s = make_steer(models=stub_models(stub))
    r = httpx.post(s.url + "/chat/completions", json=chat_body(stream=True, stub_fault="not-sse"), timeout=30)
    assert "not events" in assert_error(r, 502, "upstream_failed")["message"]


@pytest.mark.parametrize(
    ("backend", "fault"),
    # litellm itself raises on a cut stream or a line that is not JSON; a body that is not a stream
    # at all it answers with a made-up final chunk, which steer now refuses
    [("openai", "cut"), ("openai", "not-json"), ("litellm", "not-sse")],
)
def test_a_broken_stream_ends_with_an_error_event_and_never_done(make_steer, stub, backend, fault):
    s = make_steer(models=stub_models(stub, backend))
    body = chat_body(stream=True, stub_fault=fault, stub_token_interval=0.02)  # the fault after the first event
    r = httpx.post(s.url + "/chat/completions", json=body, timeout=60)
    assert r.status_code == 200
    events = events_of(r.text)
    assert "[DONE]" not in events and "not json" not in events, events
    last = orjson.loads(events[-1])
    assert last["error"]["type"] == "upstream_error" and last["error"]["message"].startswith("stub:"), last
    assert all(e.startswith("{") for e in events)


def test_the_openai_sdk_raises_on_a_stream_cut_before_done(make_steer, stub):
    s = make_steer(models=stub_models(stub))
    client = openai.OpenAI(base_url=s.url, api_key="unused", max_retries=0)
    whole = client.chat.completions.create(model="stub", messages=MSG, stream=True)
    assert "".join(c.delta.content or "" for chunk in whole for c in chunk.choices).split()[-1] == "tok7"
    stream = client.chat.completions.create(model="stub", messages=MSG, stream=True, extra_body={"stub_fault": "cut"})
    text: list[str] = []
    with pytest.raises(openai.APIError, match="ended before"):
        for chunk in stream:
            text.extend(c.delta.content or "" for c in chunk.choices)
    assert "".join(text).split() == ["tok0", "tok1", "tok2", "tok3"]  # what came before the cut still came


def test_a_502_names_the_steer_model_and_the_log_holds_the_address_with_the_trace_id(make_steer, caplog):
    dead = free_port()  # nothing listens there
    s = make_steer(models=[{"name": "stub", "api_base": f"http://127.0.0.1:{dead}/v1", "retries": 0}])
    caplog.set_level(logging.WARNING, logger="steer.http")
    for stream in (False, True):
        r = httpx.post(s.url + "/chat/completions", json=chat_body(stream=stream), timeout=30)
        err = assert_error(r, 502, "upstream_failed")
        assert err["message"].startswith("stub:") and str(dead) not in r.text, err
        trace = r.headers["x-steer-trace-id"]
        logged = [rec.getMessage() for rec in caplog.records if trace in rec.getMessage()]
        assert logged and str(dead) in logged[0], logged


# --- 6 and 12: the server steer serve builds --------------------------------------------------------

HEADER_TIMEOUT = 1.0
MAX_CONNECTIONS = 200
SLOW_HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


@pytest.fixture(scope="module")
def served(tmp_path_factory, stub) -> Iterator[SteerProcess]:
    """A real ``python -m steer serve``: short header timeout, a low connection cap, room for huge bodies."""
    tmp = tmp_path_factory.mktemp("served")
    (tmp / "policies").mkdir()
    (tmp / "policies" / "default.yaml").write_text(PASSTHROUGH)
    port = free_port()
    config = tmp / "steer.yaml"
    config.write_text(
        f"host: 127.0.0.1\nport: {port}\ndatabase: {tmp / 'steer.db'}\npolicies: {tmp / 'policies'}\n"
        f"models:\n  - {{name: stub, api_base: '{stub.url}/v1', retries: 0}}\n"
        f"header_timeout_s: {HEADER_TIMEOUT}\nmax_connections: {MAX_CONNECTIONS}\nmax_body_bytes: 8388608\n"
    )
    proc = SteerProcess(config, port, tmp / "steer.log", "/models")
    proc.start()
    yield proc
    proc.stop()


def root(proc: SteerProcess) -> str:
    return f"http://127.0.0.1:{proc.port}"


def open_slow(port: int, n: int, head: bytes = SLOW_HEAD) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        if head:
            s.sendall(head)
        socks.append(s)
    return socks


def wait_closed(socks: list[socket.socket], timeout: float, drip: float | None = 0.25) -> dict[socket.socket, float]:
    """When the server closed each socket (monotonic time); meanwhile one more header byte goes to
    every open one each ``drip`` seconds, as a slowloris client does to look alive."""
    closed: dict[socket.socket, float] = {}
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    next_drip = time.monotonic() + (drip or timeout)
    while len(closed) < len(socks) and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.05):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            try:
                data = s.recv(4096)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                data = b""
            if not data:
                closed[s] = time.monotonic()
                sel.unregister(s)
        if drip and time.monotonic() >= next_drip:
            next_drip += drip
            for s in socks:
                if s not in closed:
                    with contextlib.suppress(OSError):
                        s.send(b"a")
    sel.close()
    return closed


def close_all(socks: list[socket.socket]) -> None:
    for s in socks:
        s.close()


def test_connections_that_never_finish_their_headers_are_closed_after_the_header_timeout(served):
    first = time.monotonic()
    socks = open_slow(served.port, 150)
    idle = socket.create_connection(("127.0.0.1", served.port))  # one that sends nothing at all
    last = time.monotonic()
    try:
        with httpx.Client(timeout=10) as client:  # well-behaved clients are served throughout
            for _ in range(5):
                assert client.get(served.url + "/models").status_code == 200
        closed = wait_closed(socks, timeout=HEADER_TIMEOUT + 10)
        assert len(closed) == len(socks), f"{len(socks) - len(closed)} slow connections still open"
        closed.update(wait_closed([idle], timeout=HEADER_TIMEOUT + 10, drip=None))
        assert idle in closed, "the idle connection is still open"
        earliest, latest = min(closed.values()), max(closed.values())
        assert earliest - first >= HEADER_TIMEOUT * 0.9, earliest - first  # none before its deadline
        assert latest - last < HEADER_TIMEOUT + 8, latest - last  # all soon after it, though they drip
        assert httpx.get(served.url + "/models", timeout=10).status_code == 200
    finally:
        close_all([*socks, idle])


def test_an_answer_longer_than_the_header_timeout_is_whole_and_the_next_head_gets_the_deadline(served):
    body = orjson.dumps(chat_body(stream=True, stub_token_interval=0.3))  # 8 tokens: over twice the timeout
    head = "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as s:
        started = time.monotonic()
        s.sendall(head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        answer = b""
        while not answer.endswith(b"\r\n0\r\n\r\n"):  # the chunked body's end
            data = s.recv(65536)
            assert data, "the connection was closed in the middle of the answer"
            answer += data
        assert time.monotonic() - started > HEADER_TIMEOUT * 2
        assert answer.startswith(b"HTTP/1.1 200") and b"data: [DONE]" in answer
        s.sendall(SLOW_HEAD)  # the same connection, kept alive: its next head never ends
        answered = time.monotonic()
        assert wait_closed([s], timeout=HEADER_TIMEOUT + 8), "the unfinished second head was never timed out"
        assert time.monotonic() - answered >= HEADER_TIMEOUT * 0.9


def test_connections_over_the_cap_get_a_503_and_healthz_recovers_within_the_header_timeout(served):
    idle = open_slow(served.port, MAX_CONNECTIONS + 40, head=b"")
    saturated = time.monotonic()
    try:
        refused = []
        for s in idle[MAX_CONNECTIONS - 10 :]:  # those accepted past the cap are answered at once
            s.settimeout(5)
            head = s.recv(4096)
            if head.startswith(b"HTTP/1.1 503"):
                refused.append(head)
        assert len(refused) >= 30, len(refused)
        err = orjson.loads(refused[0].split(b"\r\n\r\n", 1)[1])["error"]
        assert err["code"] == "too_many_connections" and err["type"] == "service_unavailable_error"
        down = 0.0
        while True:  # /healthz: refused while the cap is full, then back once the idle ones time out
            try:
                status = httpx.get(root(served) + "/healthz", timeout=5).status_code
            except httpx.TransportError:
                status = 0
            if status == 200:
                break
            down = time.monotonic() - saturated
            assert down < HEADER_TIMEOUT + 8, "healthz did not come back"
            time.sleep(0.05)
        assert down < HEADER_TIMEOUT + 8
    finally:
        close_all(idle)


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_both_uvicorn_protocols_get_the_header_deadline(tmp_path, stub, http):
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "default.yaml").write_text(PASSTHROUGH)
    settings = load_settings(
        None,
        port=free_port(),
        policies=str(tmp_path / "policies"),
        database=str(tmp_path / "steer.db"),
        models=[{"name": "stub", "api_base": stub.url + "/v1"}],
        header_timeout_s=HEADER_TIMEOUT,
    )
    server = uvicorn.Server(server_config(settings, create_app(settings), http=http))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
            time.sleep(0.01)
        url = f"http://127.0.0.1:{settings.port}/v1"
        socks = open_slow(settings.port, 20)
        try:
            body = chat_body(stream=True, stub_token_interval=0.3)
            r = httpx.post(url + "/chat/completions", json=body, timeout=30)  # longer than the timeout
            assert events_of(r.text)[-1] == "[DONE]"
            assert len(wait_closed(socks, timeout=HEADER_TIMEOUT + 8)) == len(socks)
        finally:
            close_all(socks)
    finally:
        server.should_exit = True
        thread.join(15)


def test_the_connection_cap_leaves_two_descriptors_per_connection_within_the_open_file_limit():
    assert connection_cap(4096, None) == 4096
    assert connection_cap(4096, 1_048_576) == 4096
    assert connection_cap(4096, 1024) == (1024 - 64) // 2


def huge_body(messages: int = 120_000) -> bytes:
    """About 3.5 MB: many tiny messages, the last one invalid, so steer validates all, then answers 400."""
    msgs = [{"role": "user", "content": ""}] * (messages - 1) + [{"role": "robot", "content": ""}]
    return orjson.dumps({"model": "stub", "messages": msgs})


def inline_validation_seconds(raw: bytes) -> float:
    """How long parsing and validating this body in one piece takes here, as steer did on its loop."""
    t0 = time.perf_counter()
    with pytest.raises(InvalidRequest):
        validate_chat(parse_json(raw))
    return time.perf_counter() - t0


def test_huge_bodies_are_validated_off_the_event_loop(served, stub):
    msgs = [{"role": "user", "content": f"m{i}"} for i in range(5000)]  # well over the inline size
    r = httpx.post(served.url + "/chat/completions", json={"model": "stub", "messages": msgs}, timeout=60)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"].startswith("tok0")
    assert len(stub.app.state.calls[-1]["messages"]) == 5000
    msgs[1234] = {"role": "user", "content": 5}
    msgs[4321] = {"content": "no role"}
    bad = {"model": "stub", "messages": msgs, "n": 0}
    with pytest.raises(InvalidRequest) as in_one_piece:
        validate_chat(bad)
    err = assert_error(httpx.post(served.url + "/chat/completions", json=bad, timeout=60), 400, "invalid_value")
    assert err["param"] == in_one_piece.value.param == "messages.1234.content.str"
    assert err["message"] == in_one_piece.value.message and "more errors" in err["message"], err

    raw = huge_body()
    url = served.url + "/chat/completions"

    def send() -> None:
        r = httpx.post(url, content=raw, headers=JSON, timeout=120)
        assert r.status_code == 400 and r.json()["error"]["param"] == "messages.119999.role", r.text[:300]

    send()
    inline = min(inline_validation_seconds(raw) for _ in range(2))
    done = threading.Event()
    senders = [threading.Thread(target=lambda: [send() for _ in range(2)]) for _ in range(3)]
    latencies: list[float] = []
    with httpx.Client(timeout=60) as client:
        client.get(root(served) + "/healthz")
        for t in senders:
            t.start()
        watcher = threading.Thread(target=lambda: ([t.join() for t in senders], done.set()))
        watcher.start()
        while not done.is_set():
            t0 = time.perf_counter()
            assert client.get(root(served) + "/healthz").status_code == 200
            latencies.append(time.perf_counter() - t0)
            time.sleep(0.01)
        watcher.join()
    assert len(latencies) >= 10, latencies
    # validated on the loop, a probe waits behind at least one whole validation (and often two or
    # three: six huge bodies arrive together); off the loop, only behind the JSON parse of one
    assert max(latencies) < inline / 2, (max(latencies), inline)
