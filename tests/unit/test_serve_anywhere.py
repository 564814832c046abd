"""``steer serve`` as a new user runs it: from any folder, on the shipped policies, importing no
benchmark or evaluation; ``steer eval prefeval`` says which flag its data needs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import REPO, free_port

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
for name in ("STEER_CONFIG", "STEER_POLICIES"):
    ENV.pop(name, None)


@pytest.fixture
def serve_elsewhere(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """``python -m steer serve`` started in an empty folder; stopped (killed) in teardown, pass or fail."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "steer", "serve", "--port", str(port), "--database", str(tmp_path / "s.db")],
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield proc, port
    finally:
        proc.kill()
        proc.wait(10)


def test_serve_from_a_folder_without_policies_runs_on_the_shipped_defaults_and_says_so(serve_elsewhere) -> None:
    proc, port = serve_elsewhere
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "steer: serving" in line, line
    shipped = REPO / "policies"  # in a source tree; an installed steer ships the same files in steer/policies
    assert f"policies: {shipped} (the defaults shipped with steer)" in line
    deadline = time.monotonic() + 60
    while True:
        try:
            ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
            break
        except httpx.HTTPError:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
    assert ready.status_code == 200
    assert ready.json()["policies"] == sorted(p.stem for p in shipped.glob("*.yaml"))  # admin view (no keys)


PROBE = """
import json, sys
from steer.cli import build_parser
from steer.server.app import create_app
from steer.settings import load_settings
args = build_parser().parse_args(["serve", "--port", "1"])
create_app(load_settings(None, database=sys.argv[1]), owns_process=True)
print(json.dumps(sorted(sys.modules)))
"""


def test_steer_serve_imports_no_benchmark_evaluation_or_their_data_loaders(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path / "s.db")], cwd=REPO, env=ENV, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert "steer.server.app" in loaded
    assert [m for m in loaded if m.startswith(("steer.bench", "steer.evals"))] == []


def test_eval_prefeval_without_data_is_refused_naming_the_flag(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "steer", "eval", "prefeval"], cwd=tmp_path, env=ENV, capture_output=True, text=True
    )
    assert out.returncode == 2
    assert "the following arguments are required: --data" in out.stderr
