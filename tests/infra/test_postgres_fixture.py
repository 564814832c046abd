"""The PostgreSQL fixtures start a real server that behaves as PostgreSQL does, and clean up after it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from helpers import wait_for
from postgres_server import PostgresServer


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0) until its parent reaps it.
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def process_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


def cluster_state(server: PostgresServer) -> str:
    out = subprocess.run([str(server.bindir / "pg_controldata"), str(server.data)], capture_output=True, text=True)
    for line in out.stdout.splitlines():
        if line.startswith("Database cluster state:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(out.stdout + out.stderr)


def test_the_session_server_is_a_real_postgresql_running_unprivileged_in_a_temporary_directory(
    postgres: PostgresServer, postgres_url: str
) -> None:
    assert postgres_url.startswith("postgresql://") and postgres.running
    with psycopg.connect(postgres_url) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        data_directory = conn.execute("SHOW data_directory").fetchone()
        fsync = conn.execute("SHOW fsync").fetchone()
        backend_pid = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert backend_pid is not None
        # Read while the connection is open: the backend process exits with its connection.
        backend_uid = process_uid(backend_pid[0])
    assert version is not None and data_directory is not None and fsync is not None and backend_pid is not None
    # The server is the one under the binaries' folder: /usr/lib/postgresql/<major>/bin.
    assert version[0].split(".")[0] == postgres.bindir.parent.name
    assert Path(data_directory[0]) == postgres.data and str(postgres.data).startswith(
        ("/tmp/", os.path.realpath("/tmp"))
    )
    assert fsync[0] == "off"
    assert backend_uid != 0, "PostgreSQL must not run as root"
    assert postgres.proc is not None and process_uid(postgres.proc.pid) == backend_uid


def test_a_table_round_trips_text_json_bytes_and_timestamps(fresh_postgres_db: str) -> None:
    row = ("Ünïcode ✓ 'quoted'", {"likes": ["tea", None], "n": 1}, b"\x00\xffbytes")
    with psycopg.connect(fresh_postgres_db) as conn:
        conn.execute(
            "CREATE TABLE t (id serial PRIMARY KEY, txt text, doc jsonb, raw bytea, at timestamptz DEFAULT now())"
        )
        conn.execute("INSERT INTO t (txt, doc, raw) VALUES (%s, %s, %s)", (row[0], json.dumps(row[1]), row[2]))
        conn.commit()
        got = conn.execute("SELECT txt, doc, raw, at IS NOT NULL FROM t").fetchall()
    assert got == [(row[0], row[1], row[2], True)]


def test_each_fresh_database_is_new_and_empty(postgres: PostgresServer, fresh_postgres_db: str) -> None:
    with psycopg.connect(fresh_postgres_db) as conn:
        conn.execute("CREATE TABLE mine (x int)")
        conn.commit()
    other = postgres.create_database()
    try:
        assert other != fresh_postgres_db
        with psycopg.connect(other) as conn:
            tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
        assert tables == (0,)
    finally:
        postgres.drop_database(other.rsplit("/", 1)[1])
    with psycopg.connect(postgres.url) as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname = %s", (other.rsplit("/", 1)[1],)
        ).fetchone()
    assert left == (0,)


def test_two_connections_see_each_others_commits_and_not_uncommitted_rows(fresh_postgres_db: str) -> None:
    with psycopg.connect(fresh_postgres_db) as a, psycopg.connect(fresh_postgres_db) as b:
        a.execute("CREATE TABLE shared (v text)")
        a.commit()
        a.execute("INSERT INTO shared VALUES ('from a')")
        assert b.execute("SELECT v FROM shared").fetchall() == []  # a has not committed yet
        b.rollback()
        a.commit()
        assert b.execute("SELECT v FROM shared").fetchall() == [("from a",)]
        b.execute("INSERT INTO shared VALUES ('from b')")
        b.commit()
        assert a.execute("SELECT v FROM shared ORDER BY v").fetchall() == [("from a",), ("from b",)]


def test_listen_notify_delivers_a_payload_from_one_connection_to_another(fresh_postgres_db: str) -> None:
    with (
        psycopg.connect(fresh_postgres_db, autocommit=True) as listener,
        psycopg.connect(fresh_postgres_db, autocommit=True) as sender,
    ):
        listener.execute("LISTEN steer_cache")
        sender.execute("SELECT pg_notify('steer_cache', 'tenant/user-1')")
        got = [(n.channel, n.payload) for n in listener.notifies(timeout=10, stop_after=1)]
    assert got == [("steer_cache", "tenant/user-1")]


def test_a_server_stopped_refuses_connections_and_after_start_serves_the_same_data_on_the_same_url(
    make_postgres: Callable[[], PostgresServer],
) -> None:
    server = make_postgres()
    with psycopg.connect(server.url) as conn:
        conn.execute("CREATE TABLE kept (v int)")
        conn.execute("INSERT INTO kept VALUES (1)")
        conn.commit()
        server.stop()
        assert not server.running and cluster_state(server) == "shut down"
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")  # the open connection was cut by the shutdown
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(server.url, connect_timeout=2)
    server.start()
    with psycopg.connect(server.url) as conn:
        assert conn.execute("SELECT v FROM kept").fetchall() == [(1,)]


def test_a_crashed_server_recovers_every_acknowledged_commit_on_restart(
    make_postgres: Callable[[], PostgresServer],
) -> None:
    server = make_postgres()
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute("CREATE TABLE acked (v int)")
        for i in range(50):
            conn.execute("INSERT INTO acked VALUES (%s)", (i,))
    server.crash()  # immediate shutdown: no checkpoint, recovery from WAL on the next start
    assert cluster_state(server) == "in production"  # what a crash leaves; a clean stop says "shut down"
    server.start()
    with psycopg.connect(server.url) as conn:
        assert conn.execute("SELECT count(*) FROM acked").fetchone() == (50,)


def test_closing_a_server_ends_its_process_and_removes_its_directory(
    make_postgres: Callable[[], PostgresServer],
) -> None:
    server = make_postgres()
    assert server.proc is not None
    pid, root = server.proc.pid, server.root
    server.close()
    assert not pid_alive(pid) and not root.exists()


def test_a_test_run_killed_outright_takes_its_postgres_down_with_it(tmp_path: Path) -> None:
    # A child Python starts a server through the same code, reports its pid and exits without
    # any cleanup (as a test run killed by a timeout would): the server must not outlive it.
    script = textwrap.dedent(
        """
        import json, os, sys
        sys.path.insert(0, sys.argv[1])
        from postgres_server import PostgresCluster
        cluster = PostgresCluster()
        server = cluster.server()
        dirs = [str(server.root), str(cluster.template.parent)]
        print(json.dumps({"pid": server.proc.pid, "dirs": dirs}), flush=True)
        os._exit(9)
        """
    )
    tests_dir = str(Path(__file__).resolve().parents[1])
    done = subprocess.run([sys.executable, "-c", script, tests_dir], capture_output=True, text=True, timeout=120)
    assert done.returncode == 9, done.stderr
    info = json.loads(done.stdout.strip().splitlines()[-1])
    try:
        assert wait_for(lambda: not pid_alive(info["pid"]), timeout=30), "postgres outlived the process that started it"
    finally:
        for d in info["dirs"]:
            subprocess.run(["rm", "-rf", d], check=False)
