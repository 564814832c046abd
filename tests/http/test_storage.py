"""The SQLite file: WAL, versioned migrations, the request log."""

from __future__ import annotations

import sqlite3

import pytest
from helpers import wait_for

from steer.storage.database import SchemaTooNew, SqliteDatabase
from steer.storage.migrations import MIGRATIONS


def test_migrations_apply_once_and_record_their_version(tmp_path):
    path = tmp_path / "s.db"
    db = SqliteDatabase(path)
    assert db.version == max(v for v, _ in MIGRATIONS)
    db.close()
    db = SqliteDatabase(path)  # re-opening applies nothing twice
    assert db.execute("SELECT count(*) FROM schema_version")[0][0] == len(MIGRATIONS)
    assert db.execute("PRAGMA journal_mode")[0][0] == "wal"
    db.close()


def test_a_later_migration_is_applied_to_an_existing_file(tmp_path):
    path = tmp_path / "s.db"
    SqliteDatabase(path).close()
    db = SqliteDatabase(path, [*MIGRATIONS, (99, "CREATE TABLE extra (x INTEGER)")])
    assert db.version == 99 and db.execute("SELECT count(*) FROM extra")[0][0] == 0
    db.close()
    with pytest.raises(SchemaTooNew):
        SqliteDatabase(path)


def test_requests_are_logged_without_prompts_unless_the_policy_opts_in(make_app):
    s = make_app(
        policies={
            "default": "name: default\nextends: none\nstages: {}\n",
            "audited": "name: audited\nextends: none\nlog_prompts: true\nmatch: {users: [audited]}\nstages: {}\n",
        }
    )
    for user in ("plain", "audited"):
        s.http.post(
            s.url + "/chat/completions",
            json={"model": "stub", "user": user, "messages": [{"role": "user", "content": f"secret {user}"}]},
        )

    def rows():
        with sqlite3.connect(s.settings.database) as conn:
            return dict(conn.execute("SELECT user, prompt FROM request_log").fetchall())

    assert wait_for(lambda: len(rows()) == 2)
    assert rows() == {"plain": None, "audited": "secret audited"}
