"""A real PostgreSQL server for the tests, and the pytest fixtures that hand it out.

Rules:
- The server binaries are Debian's (``/usr/lib/postgresql/<version>/bin``, the newest version
  wins; ``STEER_TEST_PG_BIN`` names another folder). ``make test`` installs the package when it is
  missing. Missing binaries fail the tests that need them: they never skip (CI must run them).
  Only an OS that cannot run this server (not Linux) skips.
- PostgreSQL refuses to run as root, so under root the server runs as the ``postgres`` user (the
  Debian package creates it) through ``setpriv``; under any other user it runs as that user.
- Each server has its own temporary data directory (copied from one ``initdb`` made per test
  run), listens on 127.0.0.1 at a free port and on a unix socket in that directory, trusts
  every local connection, and runs with ``fsync`` and ``full_page_writes`` off: an acknowledged
  commit survives a crash of the server (it is in the OS's cache), not a power cut.
- The postmaster is a direct child of the test process with a parent-death signal, so a test
  run that is killed outright still takes its servers down; normal teardown stops them with a
  fast shutdown and removes their directories.

Fixtures:
- ``postgres`` (session): the shared :class:`PostgresServer`; never stop it in a test.
- ``postgres_url`` (session): ``postgresql://postgres@127.0.0.1:PORT/postgres`` of that server.
- ``fresh_postgres_db``: the URL of a new empty database on it, dropped after the test.
- ``make_postgres``: starts dedicated servers for one test (for stop/start and crash tests:
  ``server.stop()``, ``server.start()``, ``server.crash()``, ``server.restart()``), all stopped
  after the test.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import free_port

SUPERUSER = "postgres"
# Settings for a disposable test server: no fsync (the data lives one test run, and a commit still
# reaches the OS before it is acknowledged, so it survives a crash of the server), enough
# connections for several steer replicas with their pools, and logs that say what failed.
SERVER_SETTINGS = {
    "fsync": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "64MB",
    "listen_addresses": "127.0.0.1",
    "log_min_messages": "warning",
    "logging_collector": "off",
}
STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}


class PostgresUnavailable(RuntimeError):
    """The machine cannot run a PostgreSQL server for the tests: the message says what to install."""


def find_bindir() -> Path:
    """The folder holding ``initdb`` and ``postgres``: ``STEER_TEST_PG_BIN``, else Debian's newest."""
    override = os.environ.get("STEER_TEST_PG_BIN")
    candidates = [Path(override)] if override else []
    versions = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(versions, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)
    for folder in candidates:
        if (folder / "postgres").is_file() and (folder / "initdb").is_file():
            return folder
    raise PostgresUnavailable(
        "PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin"
        + (f" nor in STEER_TEST_PG_BIN={override}" if override else "")
        + ": run `make test` (it installs Debian's postgresql package) or `apt-get install postgresql`"
    )


class Runner:
    """Runs the server's programs as an unprivileged user, with a parent-death signal."""

    def __init__(self) -> None:
        self.user: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self.user = pwd.getpwnam(SUPERUSER)
            except KeyError as exc:
                raise PostgresUnavailable(
                    f"running as root and there is no {SUPERUSER!r} user to run PostgreSQL as"
                    " (Debian's postgresql package creates it)"
                ) from exc
            if shutil.which("setpriv") is None:
                raise PostgresUnavailable("running as root and util-linux's setpriv is missing")

    def command(self, argv: list[str], pdeathsig: str | None = None) -> list[str]:
        if self.user is None and pdeathsig is None:
            return argv
        prefix = ["setpriv"]
        if self.user is not None:
            prefix += [f"--reuid={self.user.pw_uid}", f"--regid={self.user.pw_gid}", "--init-groups"]
        if pdeathsig is not None:
            prefix += [f"--pdeathsig={pdeathsig}"]
        return [*prefix, "--", *argv]

    def own(self, path: Path) -> None:
        """Give ``path`` and everything under it to the server's user."""
        if self.user is None:
            return
        for p in [path, *path.rglob("*")]:
            os.lchown(p, self.user.pw_uid, self.user.pw_gid)

    @property
    def env(self) -> dict[str, str]:
        home = self.user.pw_dir if self.user is not None else os.environ.get("HOME", "/")
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C", "HOME": home}


def make_workdir(runner: Runner, prefix: str) -> Path:
    # /tmp, not pytest's tmp_path: the server's user must be able to reach the folder, and
    # pytest's base folder is private to the user running the tests.
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp" if runner.user is not None else None))
    runner.own(path)
    return path


def initdb(bindir: Path, runner: Runner) -> Path:
    """A freshly initialised data directory (in its own temporary folder) to copy servers from."""
    root = make_workdir(runner, "steer-pg-template-")
    data = root / "data"
    argv = [str(bindir / "initdb"), "-D", str(data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--no-locale"]
    done = subprocess.run(
        runner.command([*argv, "--no-sync"]), env=runner.env, capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise PostgresUnavailable(f"initdb failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return data


class PostgresServer:
    """One PostgreSQL server: its data directory, port and process; stop and start at will.

    ``stop(mode)`` uses PostgreSQL's shutdown modes: ``smart`` waits for clients to disconnect,
    ``fast`` (the default) aborts their transactions, ``immediate`` (also ``crash()``) exits without
    a checkpoint so the next start runs crash recovery. ``start()`` brings it back on the same port
    and data, so URLs taken before stay valid.
    """

    def __init__(self, bindir: Path, template: Path, runner: Runner) -> None:
        self.bindir, self.runner = bindir, runner
        self.root = make_workdir(runner, "steer-pg-")
        self.data = self.root / "data"
        shutil.copytree(template, self.data, symlinks=True)
        self.runner.own(self.data)
        self.log = self.root / "postgres.log"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, dbname: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    @property
    def socket_dir(self) -> Path:
        return self.root

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 60.0) -> PostgresServer:
        assert not self.running, "server already running"
        settings = {**SERVER_SETTINGS, "port": str(self.port), "unix_socket_directories": str(self.socket_dir)}
        argv = [str(self.bindir / "postgres"), "-D", str(self.data)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.runner.command(argv, pdeathsig="INT"),
                env=self.runner.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise PostgresUnavailable(f"postgres exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with psycopg.connect(self.url, connect_timeout=2):
                    return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    self.stop("immediate")
                    raise PostgresUnavailable(f"postgres did not accept connections: {exc}\n{self.log_tail()}") from exc
            time.sleep(0.05)

    def stop(self, mode: str = "fast", timeout: float = 60.0) -> None:
        """Shut the server down (``smart``, ``fast`` or ``immediate``) and wait for it to exit."""
        if not self.running:
            return
        assert self.proc is not None
        self.proc.send_signal(STOP_SIGNALS[mode])
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGQUIT)
            self.proc.wait(timeout)

    def crash(self) -> None:
        """Exit at once without a checkpoint, as after a crash: the next start recovers from WAL."""
        self.stop("immediate")

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database (from ``template0``) and return its URL."""
        import psycopg
        from psycopg import sql

        name = name or f"test_{uuid.uuid4().hex[:16]}"
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise ValueError(f"database name {name!r}: use lower-case letters, digits and _")
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting its remaining clients."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop("fast")
        shutil.rmtree(self.root, ignore_errors=True)


class PostgresCluster:
    """What a test run needs once: the binaries, the user to run them as, one initdb to copy."""

    def __init__(self) -> None:
        if not sys.platform.startswith("linux"):
            pytest.skip("the PostgreSQL fixtures run Debian's server binaries: Linux only")
        self.bindir = find_bindir()
        self.runner = Runner()
        self.template = initdb(self.bindir, self.runner)
        self.servers: list[PostgresServer] = []

    def server(self) -> PostgresServer:
        server = PostgresServer(self.bindir, self.template, self.runner)
        self.servers.append(server)
        return server.start()

    def close(self) -> None:
        for server in self.servers:
            server.close()
        shutil.rmtree(self.template.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="session")
def postgres(postgres_cluster: PostgresCluster) -> PostgresServer:
    """The test run's shared PostgreSQL server (stopped with the cluster at the end of the run)."""
    return postgres_cluster.server()


@pytest.fixture(scope="session")
def postgres_url(postgres: PostgresServer) -> str:
    return postgres.url


@pytest.fixture
def fresh_postgres_db(postgres: PostgresServer) -> Iterator[str]:
    """The URL of a new, empty database on the shared server; dropped (clients and all) after the test."""
    url = postgres.create_database()
    yield url
    postgres.drop_database(url.rsplit("/", 1)[1])


@pytest.fixture
def make_postgres(postgres_cluster: PostgresCluster) -> Iterator[Callable[..., PostgresServer]]:
    """Start dedicated servers for one test (to stop, crash and restart); all closed after it."""
    started: list[PostgresServer] = []

    def make() -> PostgresServer:
        server = postgres_cluster.server()
        started.append(server)
        return server

    yield make
    for server in started:
        server.close()
        postgres_cluster.servers.remove(server)
