"""A test that starts ``steer serve`` and fails leaves no process behind.

Each case runs a small test file in a pytest of its own (a subprocess, with this folder's fixture
plugin) that starts a real ``steer serve``, writes its pid, and fails; the pid must be gone when that
pytest has finished.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

TESTS = Path(__file__).resolve().parents[1]

# a steer with a fake model: nothing else to start
START = """
    from pathlib import Path

    from helpers import SteerProcess, free_port

    def config(tmp_path):
        port = free_port()
        (tmp_path / "p").mkdir()
        (tmp_path / "p" / "default.yaml").write_text("name: default\\nextends: none\\nstages: {}\\n")
        cfg = tmp_path / "steer.yaml"
        cfg.write_text(
            f"host: 127.0.0.1\\nport: {port}\\ndatabase: {tmp_path / 's.db'}\\npolicies: {tmp_path / 'p'}\\n"
            "models:\\n  - {name: stub, backend: fake}\\n"
        )
        return cfg, port
"""

CASES = {
    # the fixture stops what it started, though the test failed
    "fixture": """
        def test_fails_while_serving(steer_process, tmp_path):
            cfg, port = config(tmp_path)
            proc = steer_process(cfg, port)
            Path(PIDFILE).write_text(str(proc.proc.pid))
            assert False, "failing on purpose"
    """,
    # no fixture, no finally: the module check kills it and reports the module as an error
    "bare": """
        def test_fails_while_serving(tmp_path):
            cfg, port = config(tmp_path)
            proc = SteerProcess(cfg, port, tmp_path / "serve.log", "/models")
            proc.start()
            Path(PIDFILE).write_text(str(proc.proc.pid))
            assert False, "failing on purpose"
    """,
}


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_failing_test_leaves_no_steer_serve_running(tmp_path: Path, case: str) -> None:
    pidfile = tmp_path / "pid"
    body = textwrap.dedent(START) + f"\nPIDFILE = {str(pidfile)!r}\n" + textwrap.dedent(CASES[case])
    (tmp_path / "test_inner.py").write_text(body)
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["processes"]\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path)]
    argv += ["-c", os.devnull]
    done = subprocess.run([*argv, str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = done.stdout[-4000:] + done.stderr[-2000:]
    assert pidfile.exists(), out  # steer serve did start
    pid = int(pidfile.read_text())
    assert done.returncode == 1 and "1 failed" in done.stdout, out
    if case == "bare":  # the leak is reported, not silent
        assert "steer serve still running after the module's tests" in done.stdout, out
    assert not alive(pid), f"steer serve (pid {pid}) outlived its failing test:\n{out}"
