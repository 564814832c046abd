"""Scoring candidates on named reward attributes: the ``Scorer`` protocol and its registry.

A scorer rates each candidate answer to a conversation on a fixed list of named attributes
(``attributes``, with a ``(low, high)`` range each). The rerank stage combines those scores with
the user's weights over the same attributes (the user's preference direction); the RPS sample
stage conditions each candidate on a direction near the user's and lets rerank pick, always
projecting on the user's own direction.

Built-in scorers live in ``steer/scorers/`` and register with ``@scorers.register("name")``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from steer.registry import Registry

if TYPE_CHECKING:
    from steer.server.services import Services

Conversation = Sequence[dict[str, Any]]  # OpenAI chat messages


class Scorer(Protocol):
    attributes: tuple[str, ...]
    ranges: dict[str, tuple[float, float]]

    async def score(self, conversation: Conversation, candidates: Sequence[str]) -> list[list[float]]:
        """One row per candidate, one column per attribute (in ``attributes`` order)."""
        ...


class ScorerFactory(Protocol):
    def __call__(self, services: Services, options: dict[str, Any]) -> Scorer: ...


scorers: Registry[ScorerFactory] = Registry(
    "scorer", ["steer.scorers.features", "steer.scorers.judge", "steer.scorers.reward_model"]
)


@dataclass(frozen=True)
class Direction:
    """A user's preference direction: unit-norm weights over a scorer's attributes."""

    attributes: tuple[str, ...]
    weights: tuple[float, ...]
