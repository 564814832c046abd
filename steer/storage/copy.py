"""``steer db copy``: every row of one database into another (an embedded SQLite file into PostgreSQL).

Rules:
- Both databases are opened (and so migrated) first: the rows move between the same schema.
- Every table of the migration list is copied (``TABLES``; ``schema_version`` is each database's
  own), in batches, each batch in one transaction, rows keeping their ids.
- A row whose key the target already holds is left as it is there (``ON CONFLICT DO NOTHING``): a
  second run copies nothing new, and a copy interrupted half-way is finished by running it again.
- The report is, per table, the rows in the source and the rows the run added to the target.
"""

from __future__ import annotations

from dataclasses import dataclass

from steer.storage.database import Database

# every table steer keeps, in an order that needs no foreign keys (there are none)
TABLES = (
    "memories", "user_state", "store_info", "forgotten", "user_profiles", "profile_priors",
    "served_completions", "feedback", "align_cache", "request_log",
)  # fmt: skip
BATCH = 500


@dataclass(frozen=True)
class Copied:
    table: str
    source: int  # rows in the source
    added: int  # rows this run added to the target


def _count(db: Database, table: str) -> int:
    return int(db.execute(f"SELECT COUNT(*) FROM {table}")[0][0])


def copy_rows(source: Database, target: Database, tables: tuple[str, ...] = TABLES) -> list[Copied]:
    """Copy every row of ``tables`` from ``source`` to ``target`` (rows already there are kept)."""
    report = []
    for table in tables:
        names = source.columns(table)
        missing = set(names) - set(target.columns(table))
        if missing:
            raise ValueError(f"{table}: the target has no column {', '.join(sorted(missing))}")
        cols = ", ".join(f'"{n}"' for n in names)
        insert = f"INSERT INTO {table} ({cols}) VALUES ({', '.join('?' * len(names))}) ON CONFLICT DO NOTHING"
        before = _count(target, table)
        order = ", ".join(str(i + 1) for i in range(len(names)))  # every column: a total order (rows have keys)
        offset = 0
        while True:  # offset paging is fine: the source is not written during a copy
            rows = source.execute(f"SELECT {cols} FROM {table} ORDER BY {order} LIMIT ? OFFSET ?", (BATCH, offset))
            if not rows:
                break
            target.executemany(insert, rows)
            offset += len(rows)
        target.after_copy(table)
        report.append(Copied(table, _count(source, table), _count(target, table) - before))
    return report
