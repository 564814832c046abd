"""Retention: rows holding prompts or user text older than ``retention_days`` are removed or cleared."""

from __future__ import annotations

from steer.storage.database import Database

# every table holding prompts or user text with a timestamp, and what retention does to its old rows:
# deleted, or (feedback: its learned pairs stay) the user's text cleared
RETENTION = {
    "request_log": "DELETE FROM request_log WHERE created_at < ? RETURNING 1",
    "served_completions": "DELETE FROM served_completions WHERE created_at < ? RETURNING 1",
    "align_cache": "DELETE FROM align_cache WHERE created_at < ? RETURNING 1",
    "stored_responses": "DELETE FROM stored_responses WHERE created_at < ? RETURNING 1",
    "request_traces": "DELETE FROM request_traces WHERE created_at < ? RETURNING 1",
    "feedback_edits": "UPDATE feedback SET edit = NULL WHERE edit IS NOT NULL AND created_at < ? RETURNING 1",
}


def purge_expired(db: Database, cutoff: float) -> dict[str, int]:
    """Apply ``RETENTION`` to rows older than ``cutoff`` (a ``time.time()``); rows touched per table. When any
    were, the database is checkpointed, so their text leaves the WAL as well as the file."""
    removed = {name: len(db.execute(sql, (cutoff,))) for name, sql in RETENTION.items()}
    if any(removed.values()):
        db.checkpoint()
    return removed
