"""Issue 14, items 1, 7 and 11: tenant-aware policy matching, a policy watcher that survives every
OSError, and a /readyz that tells callers without an admin key only whether steer is ready.

Two tenants (acme, globex), each with an admin and an application key, against the stub upstream
(its recorded request bodies show what reached the model) and the real request log.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import REPO, start_app, start_steer, wait_for

from steer.settings import ConfigError

KEYS = [
    {"key": "acme-admin", "tenant": "acme", "admin": True},
    {"key": "acme-app", "tenant": "acme"},
    {"key": "globex-admin", "tenant": "globex", "admin": True},
    {"key": "globex-app", "tenant": "globex"},
]
DEFAULT = "name: default\nextends: none\nstages: {}\n"
SECRET = "ACME-CONFIDENTIAL-7f3a"


def policy(name: str, match: str, prompt: str = "", log_prompts: bool = False) -> str:
    stages = f"\n  system_prompt: {{text: {prompt}}}" if prompt else " {}"
    return f"name: {name}\nextends: none\nlog_prompts: {str(log_prompts).lower()}\nmatch:\n{match}stages:{stages}\n"


def put(path: Path, text: str) -> None:
    """Write a policy file as editors do, via a hidden temporary file and a rename (no half-written file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def chat(s: Any, key: str, user: str, text: str = "hello", debug: bool = False) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", **({"X-Steer-Debug": "1"} if debug else {})}
    body = {"model": "stub", "user": user, "messages": [{"role": "user", "content": text}]}
    r = s.http.post(s.url + "/chat/completions", headers=headers, json=body, timeout=30)
    assert r.status_code == 200, r.text
    return r


def policy_of(s: Any, admin_key: str, user: str) -> str:
    return str(chat(s, admin_key, user, debug=True).json()["steer"]["policy"])


def upstream_saw(s: Any, text: str) -> str:
    """Everything the upstream received in the request whose user turn was ``text``."""
    calls = [c for c in s.calls if c["messages"][-1].get("content") == text]
    assert len(calls) == 1, calls
    return " ".join(str(m.get("content")) for m in calls[0]["messages"])


def readyz(s: Any, key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return s.http.get(s.server.url + "/readyz", headers=headers, timeout=10)


# --- item 1: users and tenants are AND'd -------------------------------------------------------


def test_a_users_and_tenants_policy_reaches_neither_another_tenants_user_nor_another_user_of_its_tenant(
    make_app
):
    s = make_app(
        keys=KEYS,
        policies={
            "default": DEFAULT,
            "acme-alice": policy("acme-alice", "  users: [alice]\n  tenants: [acme]\n", SECRET, log_prompts=True),
        },
    )
    sent = {who: f"{who} asks {uuid.uuid4().hex}" for who in ("acme/alice", "globex/alice", "acme/bob")}
    chat(s, "acme-app", "alice", sent["acme/alice"])
    chat(s, "globex-app", "alice", sent["globex/alice"])
    chat(s, "acme-app", "bob", sent["acme/bob"])
    assert SECRET in upstream_saw(s, sent["acme/alice"])
    assert SECRET not in upstream_saw(s, sent["globex/alice"])  # acme's system prompt stays in acme
    assert SECRET not in upstream_saw(s, sent["acme/bob"])  # and with acme's alice

    def rows() -> dict[tuple[str, str], tuple[str, str | None]]:
        with sqlite3.connect(s.settings.database) as conn:
            found = conn.execute("SELECT tenant, user, policy, prompt FROM request_log")
            return {(t, u): (p, pr) for t, u, p, pr in found}

    assert wait_for(lambda: len(rows()) == 3)
    assert rows() == {
        ("acme", "alice"): ("acme-alice", sent["acme/alice"]),
        ("globex", "alice"): ("default", None),  # acme's log_prompts does not store globex's prompt
        ("acme", "bob"): ("default", None),
    }


def test_two_policies_naming_the_same_user_for_different_tenants_each_apply_in_their_own(make_app):
    s = make_app(
        keys=KEYS,
        policies={
            "default": DEFAULT,
            "acme-alice": policy("acme-alice", "  users: [alice]\n  tenants: [acme]\n", "A"),
            "any-alice": policy("any-alice", "  users: [alice]\n  tenants: ['*']\n", "B"),
            "globex-alice": policy("globex-alice", "  users: [alice]\n  tenants: [globex]\n", "C"),
        },
    )
    assert policy_of(s, "acme-admin", "alice") == "acme-alice"
    assert policy_of(s, "globex-admin", "alice") == "globex-alice"
    (s.policies / "globex-alice.yaml").unlink()  # then globex's alice falls to the every-tenant rule
    assert wait_for(lambda: policy_of(s, "globex-admin", "alice") == "any-alice")
    assert policy_of(s, "acme-admin", "alice") == "acme-alice"  # its own tenant's rule still first


def test_resolution_goes_exact_id_then_longest_glob_then_tenant_then_default_within_the_tenant(make_app):
    s = make_app(
        keys=KEYS,
        policies={
            "default": DEFAULT,
            "lead": policy("lead", "  users: [team-lead]\n  tenants: [acme]\n"),
            "team": policy("team", "  users: ['team-*']\n  tenants: [acme]\n"),
            "team-l": policy("team-l", "  users: ['team-l*']\n  tenants: [acme]\n"),
            "acme-all": policy("acme-all", "  tenants: [acme]\n"),
        },
    )
    assert policy_of(s, "acme-admin", "team-lead") == "lead"
    assert policy_of(s, "acme-admin", "team-lx") == "team-l"  # the longer of two matching globs
    assert policy_of(s, "acme-admin", "team-x") == "team"
    assert policy_of(s, "acme-admin", "zed") == "acme-all"
    for user in ("team-lead", "team-x", "zed"):
        assert policy_of(s, "globex-admin", user) == "default"  # none of acme's rules reach globex


def test_two_policies_naming_the_same_user_for_the_same_tenant_are_refused_naming_both(tmp_path, stub):
    one = policy("one", "  users: [alice]\n  tenants: [acme, globex]\n")
    two = policy("two", "  users: [alice]\n  tenants: [globex]\n")
    with pytest.raises(ConfigError, match=r"user id 'alice' for tenant 'globex' is named by both one \(.*one\.yaml\)"):
        start_steer(tmp_path, stub.url, {"default": DEFAULT, "one": one, "two": two}, keys=KEYS)


def test_a_policy_naming_users_but_no_tenant_is_refused_with_keys_but_not_with_every_tenant_or_without_keys(
    tmp_path, stub, make_app
):
    users_only = policy("vip", "  users: [vip]\n")  # match: on line 4, users: on line 5
    with pytest.raises(ConfigError, match=r"vip\.yaml:5: match\.users: names users but no tenant"):
        start_steer(tmp_path / "keys", stub.url, {"default": DEFAULT, "vip": users_only}, keys=KEYS)
    every = policy("vip", "  users: [vip]\n  tenants: ['*']\n")
    s = make_app(keys=KEYS, policies={"default": DEFAULT, "vip": every})
    assert policy_of(s, "acme-admin", "vip") == policy_of(s, "globex-admin", "vip") == "vip"
    s = make_app(policies={"default": DEFAULT, "vip": users_only})  # no keys: one tenant
    r = s.http.post(
        s.url + "/chat/completions",
        headers={"X-Steer-Debug": "1"},
        json={"model": "stub", "user": "vip", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.json()["steer"]["policy"] == "vip"


# --- `steer policy check --tenant --user` ------------------------------------------------------


def steer_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "steer", *args], capture_output=True, text=True, timeout=60, cwd=REPO)


def test_policy_check_explains_which_policy_a_tenant_and_user_get_and_applies_the_servers_key_rule(tmp_path):
    folder = tmp_path / "policies"
    folder.mkdir()
    files = {
        "default": DEFAULT,
        "acme-alice": policy("acme-alice", "  users: [alice]\n  tenants: [acme]\n"),
        "acme-team": policy("acme-team", "  users: ['team-*']\n  tenants: [acme]\n"),
        "globex": policy("globex", "  tenants: [globex]\n"),
    }
    for name, text in files.items():
        (folder / f"{name}.yaml").write_text(text)
    cases = {
        ("acme", "alice"): ("acme-alice", "user id 'alice' for tenant 'acme'"),
        ("acme", "team-7"): ("acme-team", "glob 'team-*' for tenant 'acme'"),
        ("globex", "alice"): ("globex", "every user of tenant 'globex'"),
        ("initech", "alice"): ("default", "no policy names this user or tenant"),
    }
    for (tenant, user), (name, why) in cases.items():
        r = steer_cli("policy", "check", str(folder), "--multi-tenant", "--tenant", tenant, "--user", user)
        assert r.returncode == 0, r.stderr
        assert f"tenant {tenant!r}, user {user!r}: policy {name}\n  why: {why}" in r.stdout
        assert str(folder / f"{name}.yaml") in r.stdout  # the file that decided

    (folder / "vip.yaml").write_text(policy("vip", "  users: [vip]\n"))
    config = tmp_path / "steer.yaml"
    config.write_text("keys:\n  - {key_sha256: '" + "0" * 64 + "', tenant: acme}\n")
    r = steer_cli("policy", "check", str(folder), "--config", str(config))
    assert r.returncode == 1 and f"{folder / 'vip.yaml'}:5: match.users: names users but no tenant" in r.stderr
    r = steer_cli("policy", "check", str(folder))  # no keys anywhere: one tenant, a users-only policy is fine
    assert r.returncode == 0 and "ok  vip" in r.stdout


def test_shipped_policies_and_examples_pass_the_multi_tenant_rule():
    for folder in ("policies", "policies/examples"):
        r = steer_cli("policy", "check", folder, "--multi-tenant")
        assert r.returncode == 0, r.stderr


# --- item 7: the watcher survives every OSError and reports it --------------------------------


def test_editor_lock_links_and_backups_are_not_read_as_policies(tmp_path):
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / ".#default.yaml").symlink_to(tmp_path / "nowhere" / "emacs-lock")  # dangling, as emacs leaves it
    (folder / "default.yaml~").write_text("not: [a policy")
    server = start_app(tmp_path, {"default": DEFAULT}, keys=KEYS)
    try:
        services = server.app.state.services
        (folder / ".#vip.yaml").symlink_to(tmp_path / "nowhere" / "again")
        put(folder / "vip.yaml", policy("vip", "  users: [vip]\n  tenants: [acme]\n"))
        assert wait_for(lambda: "vip" in services.policies.current.policies)
        r = server.http.get(server.root + "/readyz", headers={"Authorization": "Bearer acme-admin"})
        assert r.json()["policy_error"] is None
    finally:
        server.stop()


def test_an_unreadable_policy_file_is_reported_to_admins_and_in_the_log_and_a_later_good_edit_applies(
    make_app, caplog
):
    caplog.set_level(logging.INFO, logger="steer.pipeline.policy")
    s = make_app(keys=KEYS, policies={"default": DEFAULT})
    (s.policies / "x.yaml").mkdir()  # a name the loader must read but cannot
    assert wait_for(lambda: readyz(s, "acme-admin").json()["policy_error"] is not None)
    assert f"{s.policies / 'x.yaml'}: cannot read" in readyz(s, "acme-admin").json()["policy_error"]
    assert any("x.yaml: cannot read" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    time.sleep(2.5)  # retried at every check, reported once
    assert 'steer_policy_reloads_total{result="error"} 1.0' in s.http.get(s.server.url + "/metrics").text
    (s.policies / "x.yaml").rmdir()
    put(s.policies / "vip.yaml", policy("vip", "  users: [vip]\n  tenants: [acme]\n"))
    assert wait_for(lambda: policy_of(s, "acme-admin", "vip") == "vip")
    assert readyz(s, "acme-admin").json()["policy_error"] is None


@pytest.mark.parametrize("where", ["read", "list"])
def test_a_transient_oserror_while_reloading_is_logged_counted_and_the_edit_still_applies(
    make_app, caplog, monkeypatch, where
):
    caplog.set_level(logging.INFO, logger="steer.pipeline.policy")
    s = make_app(keys=KEYS, policies={"default": DEFAULT})
    failed: list[Path] = []
    name, original = ("read_text", Path.read_text) if where == "read" else ("glob", Path.glob)

    def once(self: Path, *args: Any, **kw: Any) -> Any:
        hit = self.name == "vip.yaml" if where == "read" else self == s.policies and (s.policies / "vip.yaml").exists()
        if hit and not failed:
            failed.append(self)
            raise OSError(errno.EMFILE, "Too many open files")
        return original(self, *args, **kw)

    monkeypatch.setattr(Path, name, once)
    put(s.policies / "vip.yaml", policy("vip", "  users: [vip]\n  tenants: [acme]\n"))
    assert wait_for(lambda: policy_of(s, "acme-admin", "vip") == "vip")
    assert failed, "the OSError was raised"
    assert any("Too many open files" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    metrics = s.http.get(s.server.url + "/metrics").text
    assert 'steer_policy_reloads_total{result="error"} 1.0' in metrics
    assert 'steer_policy_reloads_total{result="ok"} 1.0' in metrics
    assert readyz(s, "acme-admin").json()["policy_error"] is None


# --- item 11: /readyz without an admin key says ready or not, nothing more ---------------------


def test_readyz_answers_only_ready_or_starting_without_an_admin_key_and_the_details_with_one(make_app):
    s = make_app(keys=KEYS, policies={"default": DEFAULT, "acme-alice": policy("acme-alice", "  tenants: [acme]\n")})
    for key in (None, "wrong-key", "acme-app"):  # a load balancer's probe, a bad key, an application key
        r = readyz(s, key)
        assert (r.status_code, r.json()) == (200, {"status": "ready"})
    details = readyz(s, "acme-admin").json()
    assert details["policies"] == ["acme-alice", "default"] and details["models"] == ["stub"]
    assert set(details) == {"status", "warm", "policies", "policy_error", "models"}

    put(s.policies / "broken.yaml", f"name: broken\nstages:\n  {SECRET}: [unclosed\n")
    assert wait_for(lambda: readyz(s, "acme-admin").json()["policy_error"] is not None)
    assert "broken.yaml" in readyz(s, "acme-admin").json()["policy_error"]
    r = readyz(s)
    assert r.json() == {"status": "ready"} and SECRET not in r.text and "broken" not in r.text

    s.services.ready = False  # as while starting or draining
    try:
        r = readyz(s)
        assert (r.status_code, r.json()) == (503, {"status": "starting"})
    finally:
        s.services.ready = True
