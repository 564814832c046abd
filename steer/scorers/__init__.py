"""Scoring candidates on named reward attributes: the scorer registry.

A scorer (:class:`steer.pipeline.ports.Scorer`) rates each candidate answer to a conversation on a
fixed list of named attributes (``attributes``, with a ``(low, high)`` range each). The rerank stage
combines those scores with the user's weights over the same attributes (the user's preference
:class:`~steer.pipeline.ports.Direction`); the RPS sample stage conditions each candidate on a
direction near the user's and lets rerank pick, always projecting on the user's own direction.

Built-in scorers live in this package (``features``, ``judge``, ``reward_model``) and register with
``@scorers.register("name")``; the registry imports them on its first lookup. A scorer's factory
is given the ports a scorer may use (:class:`~steer.pipeline.ports.ScorerDeps`) and its options.
"""

from __future__ import annotations

from typing import Any, Protocol

from steer.pipeline.ports import Conversation, Direction, Scorer, ScorerDeps
from steer.registry import Registry

__all__ = ["Conversation", "Direction", "Scorer", "ScorerFactory", "scorers"]


class ScorerFactory(Protocol):
    def __call__(self, deps: ScorerDeps, options: dict[str, Any]) -> Scorer: ...


scorers: Registry[ScorerFactory] = Registry(
    "scorer", ["steer.scorers.features", "steer.scorers.judge", "steer.scorers.reward_model"]
)
