"""The one versioned migration list: every table steer keeps, in the order it came.

Each migration is a numbered SQL script applied once, in order, inside a transaction; the applied
version is kept in ``schema_version``. A database whose version is above the last one here was
written by a newer steer and is refused (``SchemaTooNew``) rather than misread.

The scripts are written once for every SQL dialect: standard SQL, with a ``$token`` where the
dialects' type names differ (:data:`TYPES`: ``$real`` a double-precision float, ``$bigint`` a 64-bit
integer, ``$blob`` bytes, ``$autoid`` an auto-numbered integer primary key), and the column ``user``
always quoted (``"user"``: a reserved word in standard SQL). A second backend adds its row to
:data:`TYPES`; a statement that cannot be written once goes in as a mapping of dialect to script.

Databases made by an older steer: versions 1-6 are the tables of the main file as steer wrote them
before the memory store's tables joined this list; the memory store created ``memories``,
``user_state``, ``store_info`` and ``forgotten`` itself (``CREATE TABLE IF NOT EXISTS``, no
version), in the main file or in its own. Version 7 adds them here with ``IF NOT EXISTS``, so a file
of either kind migrates cleanly and keeps its rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from string import Template

# the DDL's type tokens, per dialect
TYPES: dict[str, dict[str, str]] = {
    "sqlite": {
        "real": "REAL",
        "bigint": "INTEGER",  # SQLite's INTEGER holds 64 bits; "INTEGER PRIMARY KEY" is the rowid itself
        "blob": "BLOB",
        "autoid": "INTEGER PRIMARY KEY AUTOINCREMENT",
    },
}

Script = str | Mapping[str, str]  # one script for every dialect, or one per dialect
Migration = tuple[int, Script]

SCHEMA_VERSION = 'CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at $real)'

MIGRATIONS: tuple[Migration, ...] = (
    (
        1,
        """
        CREATE TABLE request_log (
            trace_id      TEXT PRIMARY KEY,
            created_at    $real NOT NULL,
            tenant        TEXT NOT NULL,
            "user"        TEXT,
            policy        TEXT NOT NULL,
            model         TEXT NOT NULL,
            status        INTEGER NOT NULL,
            stream        INTEGER NOT NULL,
            latency_ms    $real NOT NULL,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            stages        TEXT,
            prompt        TEXT
        );
        CREATE INDEX request_log_user ON request_log (tenant, "user", created_at);
        """,
    ),
    (
        2,
        """
        CREATE TABLE align_cache (
            tenant     TEXT NOT NULL,
            "user"     TEXT NOT NULL,
            model      TEXT NOT NULL,
            key        TEXT NOT NULL,
            rewrite    TEXT,
            outcome    TEXT NOT NULL,
            created_at $real NOT NULL,
            PRIMARY KEY (tenant, "user", model, key)
        );
        """,
    ),
    (
        3,
        """
        CREATE TABLE profile_priors (
            tenant     TEXT NOT NULL,
            scorer     TEXT NOT NULL,
            attributes TEXT NOT NULL,
            prototypes TEXT NOT NULL,
            logits     TEXT NOT NULL,
            users      INTEGER NOT NULL,
            events     INTEGER NOT NULL,
            fitted_at  $real NOT NULL,
            PRIMARY KEY (tenant, scorer)
        );
        CREATE TABLE user_profiles (
            tenant     TEXT NOT NULL,
            "user"     TEXT NOT NULL,
            scorer     TEXT NOT NULL,
            attributes TEXT NOT NULL,
            mixture    TEXT NOT NULL,
            offsets    TEXT NOT NULL,
            seeds      TEXT NOT NULL,
            pinned     TEXT NOT NULL,
            events     INTEGER NOT NULL,
            since      $bigint NOT NULL,
            updated_at $real NOT NULL,
            PRIMARY KEY (tenant, "user", scorer)
        );
        CREATE TABLE served_completions (
            tenant        TEXT NOT NULL,
            completion_id TEXT NOT NULL,
            "user"        TEXT NOT NULL,
            created_at    $real NOT NULL,
            scorer        TEXT NOT NULL,
            attributes    TEXT NOT NULL,
            scores        TEXT NOT NULL,
            returned      TEXT NOT NULL,
            chosen        INTEGER NOT NULL,
            context       TEXT,
            PRIMARY KEY (tenant, completion_id)
        );
        CREATE INDEX served_completions_user ON served_completions (tenant, "user", created_at);
        CREATE TABLE feedback (
            id            $autoid,
            tenant        TEXT NOT NULL,
            "user"        TEXT NOT NULL,
            completion_id TEXT NOT NULL,
            created_at    $real NOT NULL,
            kind          TEXT NOT NULL,
            rating        $real,
            choice        INTEGER,
            edit          TEXT,
            scorer        TEXT NOT NULL,
            attributes    TEXT NOT NULL,
            pairs         TEXT NOT NULL
        );
        CREATE INDEX feedback_user ON feedback (tenant, "user", scorer, id);
        """,
    ),
    (
        4,
        """
        ALTER TABLE profile_priors ADD COLUMN support TEXT;
        """,
    ),
    (
        5,
        """
        ALTER TABLE align_cache ADD COLUMN origin TEXT NOT NULL DEFAULT '';
        CREATE INDEX align_cache_origin ON align_cache (tenant, origin);
        """,
    ),
    (
        6,
        """
        CREATE TABLE IF NOT EXISTS forgotten (owner TEXT PRIMARY KEY, at $real NOT NULL);
        DELETE FROM align_cache WHERE "user" = '';
        """,
    ),
    (
        7,
        """
        CREATE TABLE IF NOT EXISTS memories (
            id                  $bigint PRIMARY KEY,
            tenant              TEXT NOT NULL,
            "user"              TEXT NOT NULL,
            text                TEXT NOT NULL,
            kind                TEXT NOT NULL,
            source_conversation TEXT,
            source_turn         INTEGER,
            created_at          $real NOT NULL,
            updated_at          $real NOT NULL,
            superseded_by       $bigint,
            meta                TEXT NOT NULL DEFAULT '{}',
            expansions          TEXT NOT NULL DEFAULT '[]',
            n_vectors           INTEGER NOT NULL,
            embedding           $blob NOT NULL
        );
        CREATE INDEX IF NOT EXISTS memories_owner ON memories (tenant, "user", superseded_by);
        CREATE TABLE IF NOT EXISTS user_state (
            tenant    TEXT NOT NULL,
            "user"    TEXT NOT NULL,
            version   $bigint NOT NULL,
            n_vectors $bigint NOT NULL,
            PRIMARY KEY (tenant, "user")
        );
        CREATE TABLE IF NOT EXISTS store_info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS forgotten (owner TEXT PRIMARY KEY, at $real NOT NULL);
        """,
    ),
    (
        8,
        """
        CREATE TABLE request_traces (
            trace_id   TEXT PRIMARY KEY,
            created_at $real NOT NULL,
            tenant     TEXT NOT NULL,
            "user"     TEXT,
            policy     TEXT NOT NULL,
            model      TEXT NOT NULL,
            status     INTEGER NOT NULL,
            latency_ms $real NOT NULL,
            trace      TEXT NOT NULL
        );
        CREATE INDEX request_traces_user ON request_traces (tenant, "user", created_at);
        CREATE INDEX request_traces_time ON request_traces (created_at);
        """,
    ),
)


def statements(script: Script, dialect: str) -> list[str]:
    """The statements of one migration script for ``dialect``, its type tokens substituted."""
    text = script if isinstance(script, str) else script[dialect]
    text = Template(text).substitute(TYPES[dialect])
    return [s.strip() for s in text.split(";") if s.strip()]


def latest(migrations: Sequence[Migration]) -> int:
    return max((v for v, _ in migrations), default=0)
