"""Per-user latent preference profiles: storage, the online update, and the user's direction.

Each user is a weight vector over a scorer's named attributes, drawn from a PAL-style prior
(``steer.methods.profiles.math``): K prototypes shared by a tenant's users, per-user mixture logits and a
small per-user offset. Everything lives in the main SQLite file, keyed by (tenant, user):

    profile_priors       (tenant, scorer) -> prototypes, population logits, a sample of fitted users
                                             (``steer profiles fit``)
    user_profiles        (tenant, user, scorer) -> mixture, offset, seeds, pins, events
    served_completions   (tenant, completion_id) -> user, candidates' scores, what was returned
    feedback             one row per feedback event, with the pairs it produced

Writes made for a request (``began``: when it began) check the user's tombstone in their own
statement (``steer.storage.database.NOT_FORGOTTEN``) and raise ``OwnerForgotten`` instead of writing for a
user forgotten since. ``served_completions.context`` (the system messages and the last user turn,
kept to score an edit) is filled only when the user's policy has ``log_prompts: true``.

For the RPS stage: ``await preference_direction(services, ctx)`` -> (scorer, Direction).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from retrieval.store import OwnerForgotten
from steer.methods.profiles.math import Hyper, Prior, UserParams, default_prior, fresh_user
from steer.scorers import Direction, Scorer, scorers
from steer.storage.database import NOT_FORGOTTEN, tombstone_args

if TYPE_CHECKING:
    from retrieval.embeddings import Embedder
    from steer.pipeline.stage import Context
    from steer.server.auth import Identity
    from steer.server.services import Services
    from steer.storage.database import Database

DEFAULT_SCORER = "features"


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


class ProfileStore:
    """Blocking SQLite calls (run them in a worker thread). Every call names tenant and user."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def _write(self, head: str, values: Sequence[Any], tenant: str, user: str, began: float | None) -> None:
        """``head`` VALUES (``values``); with ``began``, only if the user was not forgotten since
        (``OwnerForgotten`` otherwise), checked by the statement itself."""
        marks = ",".join("?" * len(values))
        if began is None:
            self.db.execute(f"{head} VALUES ({marks})", values)
            return
        args = tombstone_args(tenant, user, began)
        if args is None or not self.db.execute(
            f"{head} SELECT {marks} WHERE {NOT_FORGOTTEN} RETURNING 1", (*values, *args)
        ):
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
            "INSERT OR REPLACE INTO profile_priors (tenant, scorer, attributes, prototypes, logits, users, events, "
            "fitted_at, support) VALUES (?,?,?,?,?,?,?,?,?)",
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
            "WHERE tenant = ? AND user = ? AND scorer = ?",
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
            "INSERT OR REPLACE INTO user_profiles",
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
            "INSERT OR REPLACE INTO served_completions",
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
            "SELECT user, scorer, attributes, scores, returned, chosen, context FROM served_completions "
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
            "INSERT INTO feedback (tenant, user, completion_id, created_at, kind, rating, choice, edit, scorer, "
            "attributes, pairs)",
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
            "SELECT attributes, pairs FROM feedback WHERE tenant = ? AND user = ? AND scorer = ? AND id > ? "
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
            "SELECT f.user, f.attributes, f.pairs FROM feedback f LEFT JOIN user_profiles u "
            "ON u.tenant = f.tenant AND u.user = f.user AND u.scorer = f.scorer "
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
                f"SELECT {', '.join(cols)} FROM {table} WHERE tenant = ? AND user = ?", (tenant, user)
            )
            out[table] = [dict(zip(cols, row, strict=True)) for row in rows]
        return out

    def forget(self, tenant: str, user: str) -> int:
        """Delete everything profiles hold on one user, their row in a fitted prior's population sample
        included; the number of rows removed."""
        removed = 0
        for table in self.USER_TABLES:
            before = self.db.execute(f"SELECT count(*) FROM {table} WHERE tenant = ? AND user = ?", (tenant, user))
            self.db.execute(f"DELETE FROM {table} WHERE tenant = ? AND user = ?", (tenant, user))
            removed += int(before[0][0])
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


@dataclass
class Profile:
    """A user's profile for one scorer, as served and shown."""

    scorer: str
    attributes: tuple[str, ...]
    prior: Prior
    params: UserParams
    weights: list[float]
    direction: Direction
    anonymous: bool = False

    def weights_array(self) -> Any:
        import numpy as np

        return np.asarray(self.weights, dtype=np.float64)

    def to_dict(self, user: str | None) -> dict[str, Any]:
        import numpy as np

        mixture = np.exp(np.asarray(self.params.mixture) - max(self.params.mixture))
        mixture = mixture / mixture.sum()
        return {
            "object": "profile",
            "user": user,
            "scorer": self.scorer,
            "attributes": list(self.attributes),
            "weights": dict(zip(self.attributes, (round(w, 6) for w in self.weights), strict=True)),
            "direction": dict(zip(self.attributes, (round(w, 6) for w in self.direction.weights), strict=True)),
            "mixture": [round(float(m), 6) for m in mixture],
            "prototypes": self.prior.k,
            "prior_fitted": self.prior.fitted_at is not None,
            "seeds": self.params.seeds,
            "pinned": self.params.pinned,
            "events": self.params.events,
        }


class ProfileService:
    """Scorers, the shared embedder and the profile store of a running steer."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.hyper = Hyper()
        self._scorers: dict[str, Scorer] = {}
        self._embedder_task: asyncio.Task[Embedder] | None = None
        # a user's lock lives while a coroutine holds it: the map never grows with users gone quiet
        self._user_locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = weakref.WeakValueDictionary()

    @property
    def store(self) -> ProfileStore:
        if self.services.db is None:
            raise RuntimeError("profiles: the database is not open yet")
        return ProfileStore(self.services.db)

    async def embedder(self) -> Embedder:
        """The MiniLM embedder the scorers and the ``align`` stage share: the preference memory's own when
        it is loaded, else the process's one (``steer.methods.align.aligner.shared_embedder``), loaded once in a worker
        thread. A caller that gives up (a stage timeout) does not cancel the load; a failed load is retried."""
        parts = getattr(self.services.memory, "_parts", None)
        if parts is not None:
            embedder: Embedder = parts[0].embedder
            return embedder
        task = self._embedder_task
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            from steer.methods.align.aligner import shared_embedder

            model = self.services.settings.memory.embedding_model
            task = self._embedder_task = asyncio.ensure_future(asyncio.to_thread(shared_embedder, model))
        return await asyncio.shield(task)

    def scorer(self, name: str, options: Mapping[str, Any] | None = None) -> Scorer:
        key = name + _dumps(dict(options or {}))
        inst = self._scorers.get(key)
        if inst is None:
            inst = self._scorers[key] = scorers.get(name)(self.services, dict(options or {}))
        return inst

    def user_lock(self, tenant: str, user: str) -> asyncio.Lock:
        lock = self._user_locks.get((tenant, user))
        if lock is None:
            lock = asyncio.Lock()
            self._user_locks[(tenant, user)] = lock
        return lock

    def _load(self, tenant: str, user: str | None, scorer_name: str, scorer: Scorer) -> tuple[Prior, UserParams]:
        attributes = tuple(scorer.attributes)
        store = self.store
        prior = store.prior(tenant, scorer_name)
        if prior is None or prior.attributes != attributes:
            prior = default_prior(attributes, getattr(scorer, "default_weights", None))
        if user is None:
            return prior, fresh_user(prior)
        row = store.user(tenant, user, scorer_name)
        if row is None or row[0] != attributes:
            return prior, fresh_user(prior)
        params = row[1]
        if len(params.mixture) != prior.k:  # the prior was refitted with another K
            params.mixture = list(prior.logits)
        return prior, params

    async def profile(
        self,
        tenant: str,
        user: str | None,
        scorer_name: str,
        scorer: Scorer,
        seeds: Mapping[str, float] | None = None,
        pins: Mapping[str, float] | None = None,
    ) -> Profile:
        from steer.methods.profiles.math import unit, weights

        prior, params = await asyncio.to_thread(self._load, tenant, user, scorer_name, scorer)
        w = weights(prior, params, seeds or {}, pins or {})
        attrs = tuple(scorer.attributes)
        direction = Direction(attrs, tuple(float(v) for v in unit(w)))
        return Profile(scorer_name, attrs, prior, params, [float(v) for v in w], direction, user is None)

    def _learn(
        self,
        tenant: str,
        user: str,
        scorer_name: str,
        scorer: Scorer,
        completion_id: str,
        kind: str,
        value: Mapping[str, Any],
        pairs: list[tuple[list[float], float]],
        seeds: Mapping[str, float],
        pins: Mapping[str, float],
        began: float | None = None,
    ) -> tuple[Prior, UserParams, float]:
        import numpy as np

        from steer.methods.profiles.math import fit_user

        store = self.store
        attrs = tuple(scorer.attributes)
        store.add_feedback(tenant, user, completion_id, kind, value, scorer_name, attrs, pairs, began)
        prior, params = self._load(tenant, user, scorer_name, scorer)
        if pairs:
            rows = store.pairs(tenant, user, scorer_name, attrs, params.since, self.hyper.max_pairs)
            t0 = time.perf_counter()
            deltas = np.array([d for d, _ in rows], dtype=np.float64).reshape(len(rows), len(attrs))
            new = fit_user(prior, params, deltas, np.array([c for _, c in rows]), seeds, pins, self.hyper)
            ms = (time.perf_counter() - t0) * 1000
        else:
            new, ms = params, 0.0
        new.events = params.events + 1
        store.save_user(tenant, user, scorer_name, attrs, new, began)
        return prior, new, ms

    async def learn(
        self,
        tenant: str,
        user: str,
        scorer_name: str,
        scorer: Scorer,
        completion_id: str,
        kind: str,
        value: Mapping[str, Any],
        pairs: list[tuple[list[float], float]],
        seeds: Mapping[str, float],
        pins: Mapping[str, float],
        began: float | None = None,
    ) -> tuple[Profile, float]:
        """Log one feedback event and refit only this user's parameters; (profile, fit ms). ``began``: when
        the feedback request began (``OwnerForgotten`` for a user forgotten since: nothing is written)."""
        from steer.methods.profiles.math import unit, weights

        async with self.user_lock(tenant, user):
            prior, params, ms = await asyncio.to_thread(
                self._learn, tenant, user, scorer_name, scorer, completion_id, kind, value, pairs, seeds, pins, began
            )
        w = weights(prior, params, seeds, pins)
        attrs = tuple(scorer.attributes)
        direction = Direction(attrs, tuple(float(v) for v in unit(w)))
        return Profile(scorer_name, attrs, prior, params, [float(v) for v in w], direction), ms

    async def update_user(
        self,
        tenant: str,
        user: str,
        scorer_name: str,
        scorer: Scorer,
        seeds: Mapping[str, float] | None,
        pinned: Mapping[str, float] | None,
        reset: bool,
        began: float | None = None,
    ) -> None:
        """PUT profile: replace the user's own seeds and/or pins; ``reset`` forgets what was learned."""

        def write() -> None:
            store = self.store
            prior, params = self._load(tenant, user, scorer_name, scorer)
            if reset:
                last = store.db.execute(
                    "SELECT coalesce(max(id), 0) FROM feedback WHERE tenant = ? AND user = ?", (tenant, user)
                )
                params = fresh_user(prior)
                params.since = int(last[0][0])
            if seeds is not None:
                params.seeds = dict(seeds)
                for i, a in enumerate(scorer.attributes):  # the seeded weight holds exactly, from now on
                    if a in seeds:
                        params.offset[i] = 0.0
            if pinned is not None:
                params.pinned = dict(pinned)
            store.save_user(tenant, user, scorer_name, tuple(scorer.attributes), params, began)

        async with self.user_lock(tenant, user):
            await asyncio.to_thread(write)

    def rerank_config(self, identity: Identity) -> Any:
        """The ``rerank`` section of the policy this identity gets (None when it has none)."""
        policy = self.services.policies.resolve(identity)
        stages_cfg = getattr(policy, "stages", None)
        return getattr(stages_cfg, "rerank", None) if stages_cfg is not None else None


def _policy_rerank(ctx: Context) -> Any:
    stages_cfg = getattr(ctx.policy, "stages", None)
    return getattr(stages_cfg, "rerank", None) if stages_cfg is not None else None


async def preference_direction(
    services: Services, ctx: Context, scorer_name: str | None = None
) -> tuple[Scorer, Direction]:
    """The active scorer and the user's unit-norm weights over its attributes.

    The scorer is ``scorer_name``, else the policy's ``rerank.scorer``, else ``features``;
    its options come from the policy's ``rerank.options`` when the names agree. Anonymous
    users get the policy's seeded/pinned weights on the population mean.
    """
    cfg = _policy_rerank(ctx)
    name = scorer_name or (cfg.scorer if cfg is not None else DEFAULT_SCORER)
    options = cfg.options if cfg is not None and cfg.scorer == name else {}
    scorer = services.profiles.scorer(name, options)
    seeds = cfg.weights if cfg is not None else {}
    pins = cfg.pinned if cfg is not None else {}
    profile = await services.profiles.profile(ctx.identity.tenant, ctx.user, name, scorer, seeds, pins)
    return scorer, profile.direction
