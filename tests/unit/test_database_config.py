"""The ``database`` setting: a SQLite path, a PostgreSQL URL or ``os.environ/NAME``; and the SQL that the
PostgreSQL backend sends for steer's ``?``-placeholder SQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from steer.settings import ConfigError, load_settings
from steer.storage import check_target
from steer.storage.postgres import describe, to_psycopg


def test_a_url_in_the_config_file_is_kept_as_is_and_a_relative_path_is_read_from_the_files_folder(
    tmp_path: Path,
) -> None:
    cfg = tmp_path / "steer.yaml"
    cfg.write_text("database: postgresql://steer:secret@db.internal:5432/steer\n")
    assert load_settings(cfg).database == "postgresql://steer:secret@db.internal:5432/steer"
    cfg.write_text("database: data/steer.db\n")
    assert load_settings(cfg).database == str(tmp_path / "data" / "steer.db")


def test_os_environ_names_the_database_and_an_unset_name_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "steer.yaml"
    cfg.write_text("database: os.environ/STEER_TEST_DB_URL\nmemory:\n  database: os.environ/STEER_TEST_DB_URL\n")
    monkeypatch.setenv("STEER_TEST_DB_URL", "postgresql://steer@db/steer")
    settings = load_settings(cfg)
    assert settings.database == settings.memory.database == "postgresql://steer@db/steer"
    monkeypatch.delenv("STEER_TEST_DB_URL")
    with pytest.raises(ConfigError, match="STEER_TEST_DB_URL is not set"):
        load_settings(cfg)


def test_only_sqlite_and_postgresql_schemes_are_taken() -> None:
    for fine in ("steer.db", "/var/lib/steer.db", "sqlite:///x.db", "postgresql://h/db", "postgres://h/db"):
        check_target(fine)
    with pytest.raises(ValueError, match="unsupported scheme 'redis'"):
        check_target("redis://h/0")


def test_placeholders_are_rewritten_outside_quotes_and_percent_signs_escaped() -> None:
    sql = "SELECT '?', \"a?b\" FROM t WHERE x = ? AND y LIKE '%z' AND z = ?"
    assert to_psycopg(sql) == "SELECT '?', \"a?b\" FROM t WHERE x = %s AND y LIKE '%%z' AND z = %s"


def test_a_url_is_described_without_its_user_or_password() -> None:
    assert describe("postgresql://steer:hunter2@db.internal:6543/prod") == "postgresql://db.internal:6543/prod"
