"""``server_secrets``: random secrets a steer server makes once and keeps (one row per name).

The identity secret (``steer.identity.UserIds``) lives here unless the settings give one: made on
the first start, read back on every later one, shared by every replica on the same database. It
is no user's data, so export and forget leave it alone.
"""

from __future__ import annotations

import secrets

from steer.storage.database import Database

IDENTITY = "identity"
INSPECTOR = "inspector"  # signs the inspector's session cookies (steer.server.ui.sessions)


def server_secret(db: Database, name: str) -> str:
    """The secret ``name``: the stored one, or a new random one stored now (the first writer wins
    when several processes start at once)."""
    with db.transaction() as rows:
        rows.execute(
            "INSERT INTO server_secrets (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
            (name, secrets.token_hex(32)),
        )
        found = rows.execute("SELECT value FROM server_secrets WHERE name = ?", (name,))
    return str(found[0][0])
