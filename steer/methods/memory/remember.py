"""``remember``: new preferences extracted from the user's latest turn, after the answer is sent.

It reads the newest user message (and the assistant message just before it, so that a choice
among offered options can be understood), extracts preference statements, merges restatements,
lets a newer statement supersede an older contradicting one, and keeps provenance: the
conversation (``metadata.conversation_id`` when the client sends one, else the trace id) and
the turn. It runs in the background phase, never on the response path.

Bounds (settings ``memory.*``): the extractor reads the first ``max_turn_chars`` characters of each
turn; at most ``max_per_turn`` preferences of a turn are kept (the first ones); each is queued for
the background writer (``MemoryService.remember``), which refuses more than ``max_pending_per_user``
queued for one user and stores none past ``max_per_user``. Whatever is cut or dropped is counted in
``/metrics``. The stage's timeout ends its wait, never the queued writes. Writes carry the request's
start time: a user forgotten after it gets none of them.

Policy config (``stages.remember``)::

    extractor: rules        # the offline rules (default), or the name of a model in `models`,
                            # asked for the preferences as JSON (steer.methods.memory.extractors)
    fallback: rules         # when the model fails or answers no JSON: rules | none
    timeout_s: 30
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Literal, Protocol

from pydantic import Field

from retrieval.extract import Extracted
from steer.errors import SteerError
from steer.methods.memory.extractors import RULES, ExtractionFailed, TurnExtractor, build_extractor
from steer.pipeline.ports import Memory, Router
from steer.pipeline.stage import Context, Phase, StageConfig, stages
from steer.protocol import message_text
from steer.settings import Settings

log = logging.getLogger("steer.remember")


class RememberDeps(Protocol):
    @property
    def memory(self) -> Memory: ...

    @property
    def router(self) -> Router: ...

    @property
    def settings(self) -> Settings: ...


class RememberConfig(StageConfig):
    timeout_s: float = 30.0
    extractor: str = Field(default=RULES, min_length=1)
    fallback: Literal["rules", "none"] = "rules"


def latest_turns(
    messages: list[dict[str, Any]], max_chars: int | None = None
) -> tuple[list[dict[str, str]], int, bool]:
    """The last user turn (with the assistant turn before it), that user turn's index, and whether a
    turn was cut to its first ``max_chars`` characters."""
    user_turns = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    if not user_turns:
        return [], -1, False
    last = user_turns[-1]
    window = messages[max(0, last - 1) : last + 1]
    out = []
    cut = False
    for m in window:
        if m.get("role") in ("user", "assistant"):
            text = message_text(m.get("content"))
            if max_chars is not None and len(text) > max_chars:
                text, cut = text[:max_chars], True
            out.append({"role": str(m["role"]), "content": text})
    return out, len(user_turns) - 1, cut


@stages.register("remember")
class Remember:
    name: ClassVar[str] = "remember"
    phase: ClassVar[Phase] = "background"
    needs_user: ClassVar[bool] = True
    Config: ClassVar[type[StageConfig]] = RememberConfig

    def __init__(self, deps: RememberDeps) -> None:
        self.memory = deps.memory
        self.router = deps.router
        self.limits = deps.settings.memory
        self._extractors: dict[str, TurnExtractor] = {}

    async def warmup(self) -> None:
        await self.memory.recaller()

    def extractor(self, name: str) -> TurnExtractor:
        found = self._extractors.get(name)
        if found is None:
            found = self._extractors[name] = build_extractor(name, self.router)
        return found

    async def _extract(
        self, turns: list[dict[str, str]], config: RememberConfig
    ) -> tuple[list[Extracted], str]:
        """The items found, and which extractor found them (with the reason for a fallback)."""
        extractor = self.extractor(config.extractor)
        try:
            return await extractor.extract(turns), extractor.name
        except (ExtractionFailed, SteerError) as exc:
            if config.fallback == "none" or extractor.name == RULES:
                raise
            log.info("extractor %s failed (%s); falling back to the rules", extractor.name, exc)
            return await self.extractor(RULES).extract(turns), f"{RULES} (fallback: {exc})"[:300]

    async def run(self, ctx: Context, config: RememberConfig) -> dict[str, Any]:
        assert ctx.user is not None
        began = ctx.began  # before any await: the request's start, for the forget check
        # the user's words, not the aligner's
        turns, turn_index, cut = latest_turns(ctx.users_own_messages(), self.limits.max_turn_chars)
        if not turns:
            return {"added": [], "reason": "no user turn"}
        if cut:
            self.memory.truncated_turn()
        metadata = ctx.request.get("metadata") or {}
        conversation = str(metadata.get("conversation_id") or ctx.trace_id)
        items, used = await self._extract(turns, config)
        found = len(items)
        if found > self.limits.max_per_turn:
            self.memory.dropped("turn_cap", found - self.limits.max_per_turn)
            items = items[: self.limits.max_per_turn]
        result = await self.memory.remember(ctx.identity.tenant, ctx.user, items, conversation, began)
        dropped = {r: result.dropped.count(r) for r in sorted(set(result.dropped))}
        if found > len(items):
            dropped["turn_cap"] = found - len(items)
        return {
            "extractor": used,
            "found": found,
            "added": [m.id for m in result.added],
            "merged": [m.id for m in result.merged],
            "superseded": [m.id for m in result.superseded],
            **({"dropped": dropped} if dropped else {}),
            "turn": turn_index,
            **({"truncated": True} if cut else {}),
        }
