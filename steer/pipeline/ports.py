"""The ports: what stages and scorers may use of a running steer, each a narrow protocol.

A stage's constructor takes a protocol naming only the ports it uses (``RecallDeps`` beside the
recall stage, and so on); the stage registry's factories take :class:`StageDeps`, every port at
once, and so do the scorers' (:class:`ScorerDeps`, a smaller set). The server's ``Services``
satisfies them structurally; no stage or scorer sees the server itself. The value types that cross
these ports (``Scorer``, ``Direction``, the stored rows) are declared here or below, so a method
never imports another method to talk to it.

Every member is a read-only property or a method: a port says what may be read or called, never
what may be replaced.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from retrieval import Extracted, Ingested, Recaller
    from retrieval.embeddings import Embedder
    from steer.identity import Identity
    from steer.settings import ModelConfig, Settings
    from steer.storage.database import Database
    from steer.storage.profiles import Served

Conversation = Sequence[dict[str, Any]]  # OpenAI chat messages


# --- the model router ------------------------------------------------------------------------------


class Router(Protocol):
    """Model names to upstreams, with retries and fallbacks (``steer.upstreams.router.Router``)."""

    def config(self, name: str | None) -> ModelConfig: ...

    def upstream(self, name: str) -> object:
        """The upstream serving ``name`` (built on first use; it may have an async ``warmup``)."""
        ...

    async def complete(self, name: str, body: dict[str, Any]) -> dict[str, Any]: ...


# --- the shared embedder ---------------------------------------------------------------------------


class Embedders(Protocol):
    async def embedder(self) -> Embedder:
        """The process's sentence embedder (loaded once, in a worker thread, on first use)."""
        ...


# --- preference memory -----------------------------------------------------------------------------


class Memory(Protocol):
    """The preference memory (``steer.methods.memory.service.MemoryService``)."""

    async def recaller(self) -> Recaller:
        """The recaller, the store loaded first (an ``Unavailable`` when it cannot be)."""
        ...

    async def remember(
        self, tenant: str, user: str, items: Sequence[Extracted], conversation: str | None, began: float
    ) -> Ingested: ...

    def dropped(self, reason: str, n: int = 1) -> None:
        """Count ``n`` extracted preferences that were not stored, and why."""
        ...

    def truncated_turn(self) -> None:
        """Count a turn of which the extractor read only the first ``memory.max_turn_chars`` characters."""
        ...


# --- policies --------------------------------------------------------------------------------------


class PolicyView(Protocol):
    """What stages read of a policy (``steer.pipeline.policy.Policy``)."""

    @property
    def name(self) -> str: ...

    @property
    def log_prompts(self) -> bool: ...

    def stage_configs(self) -> Sequence[tuple[str, object]]:
        """The enabled stages' configs, in pipeline order."""
        ...

    def stage_config(self, name: str) -> Any:
        """The config the policy gives stage ``name`` (enabled or not), or None."""
        ...


class PolicySetView(Protocol):
    @property
    def policies(self) -> Mapping[str, PolicyView]: ...


class Policies(Protocol):
    """The live policy set (``steer.pipeline.policy.PolicyStore``): stages' warm-ups read every policy."""

    @property
    def current(self) -> PolicySetView: ...


# --- metrics ---------------------------------------------------------------------------------------


class Metrics(Protocol):
    @property
    def registry(self) -> CollectorRegistry:
        """The app's Prometheus registry: a stage registers its own metrics there."""
        ...


# --- scoring and profiles --------------------------------------------------------------------------


class Scorer(Protocol):
    """Rates candidate answers on named attributes (``steer.scorers``)."""

    attributes: tuple[str, ...]
    ranges: dict[str, tuple[float, float]]

    async def score(self, conversation: Conversation, candidates: Sequence[str]) -> list[list[float]]:
        """One row per candidate, one column per attribute (in ``attributes`` order)."""
        ...


@dataclass(frozen=True)
class Direction:
    """A user's preference direction: unit-norm weights over a scorer's attributes."""

    attributes: tuple[str, ...]
    weights: tuple[float, ...]


class ScorerDeps(Embedders, Protocol):
    """What a scorer may use: the router (a judge model) and the shared embedder."""

    @property
    def router(self) -> Router: ...


class UserProfile(Protocol):
    """A user's profile for one scorer, as a stage uses it."""

    @property
    def weights(self) -> list[float]: ...

    @property
    def direction(self) -> Direction: ...

    def weights_array(self) -> Any:
        """``weights`` as a float64 numpy vector."""
        ...


class Profiles(Embedders, Protocol):
    """Scorers and users' latent preference profiles (``steer.methods.profiles.service.ProfileService``)."""

    def scorer(self, name: str, options: Mapping[str, Any] | None = None) -> Scorer:
        """The scorer ``name`` built with ``options`` (once per name and options)."""
        ...

    async def profile(
        self,
        tenant: str,
        user: str | None,
        scorer_name: str,
        scorer: Scorer,
        seeds: Mapping[str, float] | None = None,
        pins: Mapping[str, float] | None = None,
    ) -> UserProfile: ...

    async def direction(
        self, identity: Identity, policy: PolicyView, scorer_name: str | None = None
    ) -> tuple[Scorer, Direction]:
        """The active scorer and the user's unit-norm weights over its attributes."""
        ...

    def record_served(self, served: Served, began: float | None = None) -> None:
        """Record a served completion (blocking: run it in a worker thread); ``OwnerForgotten`` when the
        user was forgotten after ``began``."""
        ...


# --- all of them -----------------------------------------------------------------------------------


class StageDeps(Protocol):
    """Every port: what the stage registry's factories are given (``Services`` satisfies it)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def router(self) -> Router: ...

    @property
    def memory(self) -> Memory: ...

    @property
    def profiles(self) -> Profiles: ...

    @property
    def policies(self) -> Policies: ...

    @property
    def metrics(self) -> Metrics: ...

    @property
    def db(self) -> Database | None:
        """The database, once the server has started (None before)."""
        ...
