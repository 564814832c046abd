"""The tables of latent preference profiles, keyed by (tenant, user), and the shapes stored in them:

    profile_priors       (tenant, scorer) -> prototypes, population logits, a sample of fitted users
                                             (``steer profiles fit``)
    user_profiles        (tenant, user, scorer) -> mixture, offset, seeds, pins, events
    served_completions   (tenant, completion_id) -> user, candidates' scores, what was returned
    feedback             one row per feedback event, with the pairs it produced

Writes made for a request (``began``: when it began) check the user's tombstone in their own
statement (``NOT_FORGOTTEN``) and raise ``OwnerForgotten`` instead of writing for a user forgotten
since. ``served_completions.context`` (the system messages and the last user turn, kept to score an
edit) is filled only when the user's policy has ``log_prompts: true``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson

from retrieval.store import OwnerForgotten
from steer.storage.database import Database, upsert
from steer.storage.forgotten import NOT_FORGOTTEN, tombstone_args


@dataclass
class Prior:
    """Shared by the users of a tenant for one scorer: K prototypes and the population mixture."""

    attributes: tuple[str, ...]
    prototypes: list[list[float]]  # K x d
    logits: list[float]  # K: the population's mixture logits (a new user starts here)
    users: int = 0
    events: int = 0
    fitted_at: float | None = None
    # M x (K + d): a sample of the fitted users, each row their mixture probabilities then their offset.
    # The population's distribution over profiles; empty before the first fit (then the update is MAP).
    support: list[list[float]] = field(default_factory=list)
    # whose fit each support row is (user ids, when known): forgetting a user drops their row
    support_users: list[str] = field(default_factory=list)

    @property
    def k(self) -> int:
        return len(self.prototypes)


@dataclass
class UserParams:
    mixture: list[float]  # K logits
    offset: list[float]  # d
    seeds: dict[str, float] = field(default_factory=dict)  # set by the user (PUT profile)
    pinned: dict[str, float] = field(default_factory=dict)
    events: int = 0
    since: int = 0  # feedback rows with id <= since are ignored (a reset)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


@dataclass
class Served:
    tenant: str
    completion_id: str
    user: str
    scorer: str
    attributes: tuple[str, ...]
    scores: list[list[float]]  # raw scorer rows, one per candidate
    returned: list[int]  # candidate indices in the order of the response's choices
    chosen: int
    context: list[dict[str, Any]] | None


PRIOR_COLUMNS = ("tenant", "scorer", "attributes", "prototypes", "logits", "users", "events", "fitted_at", "support")
USER_COLUMNS = (
    "tenant", '"user"', "scorer", "attributes", "mixture", "offsets", "seeds", "pinned", "events", "since",
    "updated_at",
)  # fmt: skip
SERVED_COLUMNS = (
    "tenant", "completion_id", '"user"', "created_at", "scorer", "attributes", "scores", "returned", "chosen",
    "context",
)  # fmt: skip
FEEDBACK_COLUMNS = (
    "tenant", '"user"', "completion_id", "created_at", "kind", "rating", "choice", "edit", "scorer", "attributes",
    "pairs",
)  # fmt: skip


class ProfileStore:
    """Blocking SQLite calls (run them in a worker thread). Every call names tenant and user."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def _write(
        self,
        table: str,
        columns: Sequence[str],
        key: Sequence[str] | None,
        values: Sequence[Any],
        tenant: str,
        user: str,
        began: float | None,
    ) -> None:
        """Insert ``values`` into ``columns`` (replacing the row with the same ``key``, when given); with
        ``began``, only if the user was not forgotten since (``OwnerForgotten`` otherwise), checked by the
        statement itself."""
        marks = ", ".join("?" * len(values))
        source = f"VALUES ({marks})" if began is None else f"SELECT {marks} WHERE {NOT_FORGOTTEN}"
        cols = ", ".join(columns)
        sql = upsert(table, columns, key, source) if key else f"INSERT INTO {table} ({cols}) {source}"
        if began is None:
            self.db.execute(sql, values)
            return
        args = tombstone_args(tenant, user, began)
        if args is None or not self.db.execute(f"{sql} RETURNING 1", (*values, *args)):
            raise OwnerForgotten(user)

    def prior(self, tenant: str, scorer: str) -> Prior | None:
        rows = self.db.execute(
            "SELECT attributes, prototypes, logits, users, events, fitted_at, support FROM profile_priors "
            "WHERE tenant = ? AND scorer = ?",
            (tenant, scorer),
        )
        if not rows:
            return None
        attrs, protos, logits, users, events, fitted_at, support = rows[0]
        sample = {} if support is None else orjson.loads(support)  # {"rows": [...], "users": [...]}
        return Prior(
            tuple(orjson.loads(attrs)),
            orjson.loads(protos),
            orjson.loads(logits),
            users,
            events,
            fitted_at,
            sample.get("rows", []),
            sample.get("users", []),
        )

    def save_prior(self, tenant: str, scorer: str, prior: Prior) -> None:
        self.db.execute(
            upsert("profile_priors", PRIOR_COLUMNS, ("tenant", "scorer")),
            (
                tenant,
                scorer,
                _dumps(list(prior.attributes)),
                _dumps(prior.prototypes),
                _dumps(prior.logits),
                prior.users,
                prior.events,
                prior.fitted_at or time.time(),
                _dumps({"rows": prior.support, "users": prior.support_users}) if prior.support else None,
            ),
        )

    def user(self, tenant: str, user: str, scorer: str) -> tuple[tuple[str, ...], UserParams] | None:
        rows = self.db.execute(
            "SELECT attributes, mixture, offsets, seeds, pinned, events, since FROM user_profiles "
            'WHERE tenant = ? AND "user" = ? AND scorer = ?',
            (tenant, user, scorer),
        )
        if not rows:
            return None
        attrs, mixture, offsets, seeds, pinned, events, since = rows[0]
        params = UserParams(
            orjson.loads(mixture), orjson.loads(offsets), orjson.loads(seeds), orjson.loads(pinned), events, since
        )
        return tuple(orjson.loads(attrs)), params

    def save_user(
        self,
        tenant: str,
        user: str,
        scorer: str,
        attributes: Sequence[str],
        p: UserParams,
        began: float | None = None,
    ) -> None:
        self._write(
            "user_profiles",
            USER_COLUMNS,
            ("tenant", '"user"', "scorer"),
            (
                tenant,
                user,
                scorer,
                _dumps(list(attributes)),
                _dumps(p.mixture),
                _dumps(p.offset),
                _dumps(p.seeds),
                _dumps(p.pinned),
                p.events,
                p.since,
                time.time(),
            ),
            tenant,
            user,
            began,
        )

    def record_served(self, s: Served, began: float | None = None) -> None:
        self._write(
            "served_completions",
            SERVED_COLUMNS,
            ("tenant", "completion_id"),
            (
                s.tenant,
                s.completion_id,
                s.user,
                time.time(),
                s.scorer,
                _dumps(list(s.attributes)),
                _dumps(s.scores),
                _dumps(s.returned),
                s.chosen,
                None if s.context is None else _dumps(s.context),
            ),
            s.tenant,
            s.user,
            began,
        )

    def served(self, tenant: str, completion_id: str) -> Served | None:
        rows = self.db.execute(
            'SELECT "user", scorer, attributes, scores, returned, chosen, context FROM served_completions '

            "WHERE tenant = ? AND completion_id = ?",
            (tenant, completion_id),
        )
        if not rows:
            return None
        user, scorer, attrs, scores, returned, chosen, context = rows[0]
        return Served(
            tenant,
            completion_id,
            user,
            scorer,
            tuple(orjson.loads(attrs)),
            orjson.loads(scores),
            orjson.loads(returned),
            chosen,
            None if context is None else orjson.loads(context),
        )

    def add_feedback(
        self,
        tenant: str,
        user: str,
        completion_id: str,
        kind: str,
        value: Mapping[str, Any],
        scorer: str,
        attributes: Sequence[str],
        pairs: list[tuple[list[float], float]],
        began: float | None = None,
    ) -> None:
        self._write(
            "feedback",
            FEEDBACK_COLUMNS,
            None,
            (
                tenant,
                user,
                completion_id,
                time.time(),
                kind,
                value.get("rating"),
                value.get("choice"),
                value.get("edit"),
                scorer,
                _dumps(list(attributes)),
                _dumps(pairs),
            ),
            tenant,
            user,
            began,
        )

    def pairs(
        self, tenant: str, user: str, scorer: str, attributes: Sequence[str], since: int, limit: int
    ) -> list[tuple[list[float], float]]:
        """The user's latest pairs (normalised x_winner - x_loser, weight), oldest first."""
        rows = self.db.execute(
            'SELECT attributes, pairs FROM feedback WHERE tenant = ? AND "user" = ? AND scorer = ? AND id > ? '
            "ORDER BY id DESC LIMIT ?",
            (tenant, user, scorer, since, limit),
        )
        want = _dumps(list(attributes))
        out: list[tuple[list[float], float]] = []
        for attrs, pairs in reversed(rows):
            if attrs == want:
                out.extend((list(d), float(c)) for d, c in orjson.loads(pairs))
        return out[-limit:]

    def all_pairs(self, tenant: str, scorer: str) -> tuple[tuple[str, ...], dict[str, list[tuple[list[float], float]]]]:
        """Every user's pairs since their last reset, for the latest attribute set of this scorer."""
        rows = self.db.execute(
            'SELECT f."user", f.attributes, f.pairs FROM feedback f LEFT JOIN user_profiles u '
            'ON u.tenant = f.tenant AND u."user" = f."user" AND u.scorer = f.scorer '
            "WHERE f.tenant = ? AND f.scorer = ? AND f.id > coalesce(u.since, 0) ORDER BY f.id",
            (tenant, scorer),
        )
        if not rows:
            return (), {}
        latest = rows[-1][1]
        out: dict[str, list[tuple[list[float], float]]] = {}
        for user, attrs, pairs in rows:
            if attrs == latest:
                out.setdefault(user, []).extend((list(d), float(c)) for d, c in orjson.loads(pairs))
        return tuple(orjson.loads(latest)), out

    def last_feedback_id(self, tenant: str, user: str) -> int:
        """The id of the user's latest feedback row (0 when none): a reset ignores the rows up to it."""
        sql = 'SELECT coalesce(max(id), 0) FROM feedback WHERE tenant = ? AND "user" = ?'
        rows = self.db.execute(sql, (tenant, user))
        return int(rows[0][0])

    def tenants(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT tenant FROM feedback ORDER BY tenant")]

    USER_TABLES: ClassVar[dict[str, tuple[str, ...]]] = {
        "user_profiles": ("scorer", "attributes", "mixture", "offsets", "seeds", "pinned", "events", "updated_at"),
        "served_completions": ("completion_id", "created_at", "scorer", "attributes", "scores", "returned", "chosen",
                               "context"),
        "feedback": ("completion_id", "created_at", "kind", "rating", "choice", "edit", "scorer", "attributes"),
    }  # fmt: skip

    def export(self, tenant: str, user: str) -> dict[str, list[dict[str, Any]]]:
        """Every row profiles hold on one user, table by table."""
        out = {}
        for table, cols in self.USER_TABLES.items():
            rows = self.db.execute(
                f'SELECT {", ".join(cols)} FROM {table} WHERE tenant = ? AND "user" = ?', (tenant, user)
            )
            out[table] = [dict(zip(cols, row, strict=True)) for row in rows]
        return out

    def forget(self, tenant: str, user: str) -> int:
        """Delete everything profiles hold on one user, their row in a fitted prior's population sample
        included; the number of rows removed."""
        removed = 0
        for table in self.USER_TABLES:
            sql = f'DELETE FROM {table} WHERE tenant = ? AND "user" = ? RETURNING 1'
            removed += len(self.db.execute(sql, (tenant, user)))
        for (scorer,) in self.db.execute("SELECT scorer FROM profile_priors WHERE tenant = ?", (tenant,)):
            prior = self.prior(tenant, scorer)
            if prior is None or user not in prior.support_users:
                continue
            keep = [i for i, u in enumerate(prior.support_users) if u != user]
            removed += len(prior.support_users) - len(keep)
            prior.support = [prior.support[i] for i in keep]
            prior.support_users = [prior.support_users[i] for i in keep]
            self.save_prior(tenant, scorer, prior)
        return removed


