"""The steer command line, run as a user would run it (subprocesses)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import REPO

STEER = [sys.executable, "-m", "steer"]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*STEER, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)


def test_policy_check_accepts_the_shipped_policies_and_examples():
    for folder in ("policies", "policies/examples"):
        r = run("policy", "check", folder)
        assert r.returncode == 0, r.stderr
        assert "ok  default" in r.stdout


def test_policy_check_lists_every_error_with_file_field_and_line(tmp_path: Path):
    (tmp_path / "default.yaml").write_text("name: default\nstages:\n  system_prompt:\n    txt: hi\n")
    (tmp_path / "other.yaml").write_text("name: other\nmatch:\n  user: [a]\n")
    r = run("policy", "check", str(tmp_path))
    assert r.returncode == 1
    assert f"{tmp_path / 'default.yaml'}:4: stages.system_prompt.txt" in r.stderr
    assert f"{tmp_path / 'other.yaml'}:3: match.user" in r.stderr


def test_serve_with_a_bad_policy_lists_errors_and_exits_non_zero(tmp_path: Path):
    (tmp_path / "default.yaml").write_text("name: default\nlog_prompt: true\n")
    r = run("serve", "--policies", str(tmp_path), "--database", str(tmp_path / "x.db"), "--port", "1")
    assert r.returncode == 2 and "default.yaml:2: log_prompt" in r.stderr


def test_serve_refuses_a_public_address_without_api_keys(tmp_path: Path):
    r = run("serve", "--host", "0.0.0.0", "--database", str(tmp_path / "x.db"))
    assert r.returncode == 2 and "no API keys" in r.stderr


def test_bad_settings_file_names_the_field(tmp_path: Path):
    cfg = tmp_path / "steer.yaml"
    cfg.write_text("models:\n  - name: a\n    retries: -1\n")
    r = run("serve", "--config", str(cfg))
    assert r.returncode == 2 and "models.0.retries" in r.stderr


def test_chat_sends_a_message_in_process_and_prints_the_answer(tmp_path: Path, stub):
    cfg = tmp_path / "steer.yaml"
    cfg.write_text(
        f"database: {tmp_path / 'c.db'}\npolicies: {REPO / 'policies'}\nmodels:\n"
        f"  - name: stub\n    api_base: {stub.url}/v1\n"
    )
    r = run("chat", "--config", str(cfg), "--user", "alice", "-m", "hello")
    assert r.returncode == 0, r.stderr
    assert "assistant> tok0 tok1" in r.stdout
