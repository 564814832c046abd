"""Per-user latent preference profiles: the scorers, the online update, and the user's direction.

Each user is a weight vector over a scorer's named attributes, drawn from a PAL-style prior
(``steer.methods.profiles.math``): K prototypes shared by a tenant's users, per-user mixture logits
and a small per-user offset. Everything lives in the main database, keyed by (tenant, user)
(``steer.storage.profiles``).

``ProfileService`` is the ``Profiles`` port of the pipeline (``steer.pipeline.ports``): the rerank
stage scores with its scorers and weighs with its profiles; the RPS stage asks it for the user's
``direction``.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from steer.methods.profiles.math import Hyper, Prior, UserParams, default_prior, fresh_user
from steer.pipeline.ports import PolicyView, Router
from steer.scorers import Direction, Scorer, scorers
from steer.storage.profiles import ProfileStore, Served

if TYPE_CHECKING:
    from retrieval.embeddings import Embedder
    from steer.identity import Identity
    from steer.storage.database import Database

DEFAULT_SCORER = "features"


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


class LoadedEmbedder(Protocol):
    def loaded_embedder(self) -> Embedder | None:
        """The preference memory's embedder when it is loaded, else None."""
        ...


class ProfileService:
    """Scorers, the shared embedder and the profile store of a running steer.

    ``database``: the database, once open (None before); ``memory``: whose embedder is shared once
    loaded; ``router``: for scorers that call a model; ``embedding_model``: the embedder to load when
    the memory has none (``memory.embedding_model``).
    """

    def __init__(
        self,
        database: Callable[[], Database | None],
        memory: LoadedEmbedder,
        router: Router,
        embedding_model: str | None = None,
    ) -> None:
        self._database = database
        self.memory = memory
        self.router = router
        self.embedding_model = embedding_model
        self.hyper = Hyper()
        self._scorers: dict[str, Scorer] = {}
        self._embedder_task: asyncio.Task[Embedder] | None = None
        # a user's lock lives while a coroutine holds it: the map never grows with users gone quiet
        self._user_locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = weakref.WeakValueDictionary()

    @property
    def store(self) -> ProfileStore:
        db = self._database()
        if db is None:
            raise RuntimeError("profiles: the database is not open yet")
        return ProfileStore(db)

    async def embedder(self) -> Embedder:
        """The MiniLM embedder the scorers and the ``align`` stage share: the preference memory's own when
        it is loaded, else the process's one (``retrieval.embeddings.shared_embedder``), loaded once in a
        worker thread. A caller that gives up (a stage timeout) does not cancel the load; a failed load is
        retried."""
        embedder = self.memory.loaded_embedder()
        if embedder is not None:
            return embedder
        task = self._embedder_task
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            from retrieval.embeddings import shared_embedder

            task = self._embedder_task = asyncio.ensure_future(asyncio.to_thread(shared_embedder, self.embedding_model))
        return await asyncio.shield(task)

    def scorer(self, name: str, options: Mapping[str, Any] | None = None) -> Scorer:
        key = name + orjson.dumps(dict(options or {})).decode()
        inst = self._scorers.get(key)
        if inst is None:
            inst = self._scorers[key] = scorers.get(name)(self, dict(options or {}))
        return inst

    def record_served(self, served: Served, began: float | None = None) -> None:
        """Record a completion rerank served (blocking); ``OwnerForgotten`` for a user forgotten since ``began``."""
        self.store.record_served(served, began)

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
                params = fresh_user(prior)
                params.since = store.last_feedback_id(tenant, user)
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

    async def direction(
        self, identity: Identity, policy: PolicyView, scorer_name: str | None = None
    ) -> tuple[Scorer, Direction]:
        """The active scorer and the user's unit-norm weights over its attributes.

        The scorer is ``scorer_name``, else the policy's ``rerank.scorer``, else ``features``;
        its options come from the policy's ``rerank.options`` when the names agree. Anonymous
        users get the policy's seeded/pinned weights on the population mean.
        """
        cfg = policy.stage_config("rerank")
        name = scorer_name or (cfg.scorer if cfg is not None else DEFAULT_SCORER)
        options = cfg.options if cfg is not None and cfg.scorer == name else {}
        scorer = self.scorer(name, options)
        seeds = cfg.weights if cfg is not None else {}
        pins = cfg.pinned if cfg is not None else {}
        profile = await self.profile(identity.tenant, identity.user, name, scorer, seeds, pins)
        return scorer, profile.direction
